//! What a service declares: the [`ServiceSchema`] with its [`ActionDef`]s and [`EventDef`]s,
//! and binding it to the service's instance (typed params in, typed results out).

use std::any::{Any, TypeId};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, BoxFuture};
use moleculer_core::context::deserialize_params;
use moleculer_core::fault_tolerance::InvalidSetting;
use moleculer_core::middleware::{ActionHandler, EventHandler};
use moleculer_core::service_info::{
    versioned_name, ActionInfo, EventInfo, ServiceInfo, Version, Visibility,
};
use moleculer_core::{
    BulkheadOptions, CacheOptions, CircuitBreakerOptions, Context, MoleculerError, Result,
    RetryPolicy,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::BrokerError;

type ActionBinder<S> = Box<dyn Fn(Arc<S>, Arc<str>) -> ActionHandler + Send + Sync>;
type EventBinder<S> = Box<dyn Fn(Arc<S>) -> EventHandler + Send + Sync>;
type FallbackFn<S> =
    Arc<dyn Fn(Arc<S>, Context, MoleculerError) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

/// One action of a service, with its options.
pub struct ActionDef<S> {
    name: String,
    binder: ActionBinder<S>,
    visibility: Option<Visibility>,
    timeout: Option<Duration>,
    strategy: Option<(String, Value)>,
    params: Option<Value>,
    retry_policy: Option<RetryPolicy>,
    circuit_breaker: Option<CircuitBreakerOptions>,
    bulkhead: Option<BulkheadOptions>,
    cache: Option<CacheOptions>,
    fallback: Option<FallbackFn<S>>,
}

impl<S: Send + Sync + 'static> ActionDef<S> {
    /// An action whose params are deserialized into `P` (a mismatch answers `ValidationError`
    /// 422 naming the field) and whose result `R` is serialized back.
    pub fn new<P, R, F, Fut>(name: &str, handler: F) -> Self
    where
        F: Fn(Arc<S>, Context, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let handler = Arc::new(handler);
        let binder: ActionBinder<S> = Box::new(move |svc: Arc<S>, _name: Arc<str>| {
            let handler = handler.clone();
            Arc::new(move |ctx: Context| -> BoxFuture<'static, Result<Value>> {
                let params = match params_into::<P>(ctx.params()) {
                    Ok(p) => p,
                    Err(err) => return Box::pin(future::ready(Err(err))),
                };
                let fut = handler(svc.clone(), ctx, params);
                Box::pin(async move { into_value(fut.await?) })
            })
        });
        Self::from_binder(name, binder)
    }

    /// An action that reads its params untyped from the context (`ctx.params()`).
    pub fn raw<R, F, Fut>(name: &str, handler: F) -> Self
    where
        F: Fn(Arc<S>, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let handler = Arc::new(handler);
        let binder: ActionBinder<S> = Box::new(move |svc: Arc<S>, _name: Arc<str>| {
            let handler = handler.clone();
            Arc::new(move |ctx: Context| -> BoxFuture<'static, Result<Value>> {
                let fut = handler(svc.clone(), ctx);
                Box::pin(async move { into_value(fut.await?) })
            })
        });
        Self::from_binder(name, binder)
    }

    fn from_binder(name: &str, binder: ActionBinder<S>) -> Self {
        Self {
            name: name.to_owned(),
            binder,
            visibility: None,
            timeout: None,
            strategy: None,
            params: None,
            retry_policy: None,
            circuit_breaker: None,
            bulkhead: None,
            cache: None,
            fallback: None,
        }
    }

    /// Who may call it (default: published).
    #[must_use]
    pub fn visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = Some(visibility);
        self
    }

    /// Its own timeout, over the broker's `requestTimeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Its own balancing strategy and options.
    #[must_use]
    pub fn strategy(mut self, name: &str, options: Value) -> Self {
        self.strategy = Some((name.to_owned(), options));
        self
    }

    /// A params schema published in INFO (informational, as Moleculer's `params`).
    #[must_use]
    pub fn params_schema(mut self, schema: Value) -> Self {
        self.params = Some(schema);
        self
    }

    /// Its retry settings, laid over each caller's broker settings (they travel in INFO).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// Its circuit breaker settings, laid over each caller's broker settings.
    #[must_use]
    pub fn circuit_breaker(mut self, options: CircuitBreakerOptions) -> Self {
        self.circuit_breaker = Some(options);
        self
    }

    /// Its bulkhead: at most `concurrency` executions at once on this node, the rest queued.
    #[must_use]
    pub fn bulkhead(mut self, options: BulkheadOptions) -> Self {
        self.bulkhead = Some(options);
        self
    }

    /// Caches its results on the node that runs it, when the broker has a cacher
    /// (Moleculer's action `cache`): `CacheOptions::keys(["id"]).ttl(...)`.
    #[must_use]
    pub fn cache(mut self, options: CacheOptions) -> Self {
        self.cache = Some(options);
        self
    }

    /// What this node answers instead of a failure of the handler (Moleculer's action
    /// `fallback`): the caller sees a normal reply.
    #[must_use]
    pub fn fallback<R, F, Fut>(mut self, fallback: F) -> Self
    where
        F: Fn(Arc<S>, Context, MoleculerError) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |svc, ctx, err| {
            let fut = fallback(svc, ctx, err);
            Box::pin(async move { into_value(fut.await?) })
        }));
        self
    }
}

/// `handler`, answering `fallback`'s reply instead of its errors.
fn with_fallback<S: Send + Sync + 'static>(
    handler: ActionHandler,
    svc: Arc<S>,
    fallback: FallbackFn<S>,
) -> ActionHandler {
    Arc::new(move |ctx: Context| -> BoxFuture<'static, Result<Value>> {
        let run = handler(ctx.clone());
        let (svc, fallback) = (svc.clone(), fallback.clone());
        Box::pin(async move {
            match run.await {
                Ok(value) => Ok(value),
                Err(err) => fallback(svc, ctx, err).await,
            }
        })
    })
}

/// One event subscription of a service.
pub struct EventDef<S> {
    name: String,
    group: Option<String>,
    binder: EventBinder<S>,
    strategy: Option<(String, Value)>,
    bulkhead: Option<BulkheadOptions>,
}

impl<S: Send + Sync + 'static> EventDef<S> {
    /// A subscription to `name` (a pattern with `*`, `**`, `?` is allowed).
    pub fn new<F, Fut>(name: &str, handler: F) -> Self
    where
        F: Fn(Arc<S>, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let binder: EventBinder<S> = Box::new(move |svc: Arc<S>| {
            let handler = handler.clone();
            Arc::new(move |ctx: Context| -> BoxFuture<'static, Result<()>> {
                Box::pin(handler(svc.clone(), ctx))
            })
        });
        Self {
            name: name.to_owned(),
            group: None,
            binder,
            strategy: None,
            bulkhead: None,
        }
    }

    /// The balancing group (default: the service name).
    #[must_use]
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }

    /// Its own balancing strategy and options.
    #[must_use]
    pub fn strategy(mut self, name: &str, options: Value) -> Self {
        self.strategy = Some((name.to_owned(), options));
        self
    }

    /// Its bulkhead: at most `concurrency` deliveries handled at once on this node.
    #[must_use]
    pub fn bulkhead(mut self, options: BulkheadOptions) -> Self {
        self.bulkhead = Some(options);
        self
    }
}

/// What a service declares: name, version, settings, metadata, dependencies, actions, events.
pub struct ServiceSchema<S> {
    name: String,
    version: Option<Version>,
    settings: Map<String, Value>,
    metadata: Map<String, Value>,
    dependencies: Vec<String>,
    strategy: Option<(String, Value)>,
    actions: Vec<ActionDef<S>>,
    events: Vec<EventDef<S>>,
}

impl<S: Send + Sync + 'static> ServiceSchema<S> {
    /// A schema for a service called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: None,
            settings: Map::new(),
            metadata: Map::new(),
            dependencies: Vec::new(),
            strategy: None,
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The version: `2` gives `v2.<name>`, `"beta"` gives `beta.<name>`.
    #[must_use]
    pub fn version(mut self, version: impl Into<Version>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Settings. `$noVersionPrefix`, `$noServiceNamePrefix`, `$secureSettings`,
    /// `$dependencyTimeout` and `$dependencyInterval` are honoured as in Moleculer.
    #[must_use]
    pub fn settings(mut self, settings: Value) -> Self {
        if let Value::Object(map) = settings {
            self.settings = map;
        }
        self
    }

    /// Metadata.
    #[must_use]
    pub fn metadata(mut self, metadata: Value) -> Self {
        if let Value::Object(map) = metadata {
            self.metadata = map;
        }
        self
    }

    /// Services (full names, e.g. `v2.posts`) that must be available before this one starts.
    #[must_use]
    pub fn dependencies<I: IntoIterator<Item = T>, T: Into<String>>(mut self, names: I) -> Self {
        self.dependencies = names.into_iter().map(Into::into).collect();
        self
    }

    /// A balancing strategy for every action and event of this service that sets none.
    #[must_use]
    pub fn strategy(mut self, name: &str, options: Value) -> Self {
        self.strategy = Some((name.to_owned(), options));
        self
    }

    /// Adds a typed action (see [`ActionDef::new`]).
    #[must_use]
    pub fn action<P, R, F, Fut>(self, name: &str, handler: F) -> Self
    where
        F: Fn(Arc<S>, Context, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.action_def(ActionDef::new(name, handler))
    }

    /// Adds an untyped action (see [`ActionDef::raw`]).
    #[must_use]
    pub fn raw_action<R, F, Fut>(self, name: &str, handler: F) -> Self
    where
        F: Fn(Arc<S>, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.action_def(ActionDef::raw(name, handler))
    }

    /// Adds an action with options.
    #[must_use]
    pub fn action_def(mut self, def: ActionDef<S>) -> Self {
        self.actions.push(def);
        self
    }

    /// Adds an event subscription in the service's own group.
    #[must_use]
    pub fn event<F, Fut>(self, name: &str, handler: F) -> Self
    where
        F: Fn(Arc<S>, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.event_def(EventDef::new(name, handler))
    }

    /// Adds an event subscription with options.
    #[must_use]
    pub fn event_def(mut self, def: EventDef<S>) -> Self {
        self.events.push(def);
        self
    }
}

/// A service schema bound to its instance: the description for INFO and the ready handlers.
pub(crate) struct BoundService {
    pub info: ServiceInfo,
    pub actions: Vec<(ActionInfo, ActionHandler)>,
    pub events: Vec<(EventInfo, EventHandler)>,
    pub dependencies: Vec<String>,
    pub dependency_timeout: Option<u64>,
    pub dependency_interval: Option<u64>,
}

impl<S: Send + Sync + 'static> ServiceSchema<S> {
    /// Checks the schema and binds every handler to `svc`.
    pub(crate) fn bind(self, svc: &Arc<S>) -> Result<BoundService, BrokerError> {
        let invalid = |reason: String| BrokerError::Service {
            service: self.name.clone(),
            reason,
        };
        if self.name.is_empty() || self.name.contains(char::is_whitespace) {
            return Err(invalid(
                "the name must be non-empty and without spaces".into(),
            ));
        }
        let flag = |key: &str| {
            self.settings
                .get(key)
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let full_name = if flag("$noVersionPrefix") {
            self.name.clone()
        } else {
            versioned_name(&self.name, self.version.as_ref())
        };
        let prefix = !flag("$noServiceNamePrefix");
        let service_strategy = self.strategy.clone();

        let mut settings = self.settings.clone();
        if let Some(Value::Array(secure)) = settings.remove("$secureSettings") {
            for key in secure.iter().filter_map(Value::as_str) {
                settings.remove(key);
            }
        }
        let mut info = ServiceInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            full_name: full_name.clone(),
            settings: Value::Object(settings),
            metadata: Value::Object(self.metadata.clone()),
            dependencies: (!self.dependencies.is_empty())
                .then(|| Value::from(self.dependencies.clone())),
            ..Default::default()
        };

        let mut actions = Vec::new();
        for def in self.actions {
            if def.name.is_empty() {
                return Err(invalid("an action has an empty name".into()));
            }
            let name = if prefix {
                format!("{full_name}.{}", def.name)
            } else {
                def.name.clone()
            };
            if info.actions.contains_key(&name) {
                return Err(invalid(format!("action `{name}` is defined twice")));
            }
            let (strategy, strategy_options) =
                def.strategy.or_else(|| service_strategy.clone()).unzip();
            let setting = |section: &str, e: InvalidSetting| {
                invalid(format!("action `{name}`: {section}.{} {}", e.key, e.reason))
            };
            if let Some(p) = &def.retry_policy {
                p.validate().map_err(|e| setting("retryPolicy", e))?;
            }
            if let Some(c) = &def.circuit_breaker {
                c.validate().map_err(|e| setting("circuitBreaker", e))?;
            }
            if let Some(b) = &def.bulkhead {
                b.validate().map_err(|e| setting("bulkhead", e))?;
            }
            let action = ActionInfo {
                name: name.clone(),
                raw_name: Some(def.name.clone()),
                visibility: def.visibility,
                params: def.params,
                timeout: def
                    .timeout
                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                strategy,
                strategy_options,
                retry_policy: def.retry_policy,
                circuit_breaker: def.circuit_breaker,
                bulkhead: def.bulkhead,
                cache: def.cache,
                extra: Map::new(),
            };
            let mut handler = (def.binder)(svc.clone(), Arc::from(name.as_str()));
            if let Some(fallback) = def.fallback {
                handler = with_fallback(handler, svc.clone(), fallback);
            }
            info.actions.insert(name, action.clone());
            actions.push((action, handler));
        }
        let mut events = Vec::new();
        for def in self.events {
            if info.events.contains_key(&def.name) {
                return Err(invalid(format!("event `{}` is subscribed twice", def.name)));
            }
            let (strategy, strategy_options) =
                def.strategy.or_else(|| service_strategy.clone()).unzip();
            if let Some(b) = &def.bulkhead {
                b.validate().map_err(|e| {
                    invalid(format!(
                        "event `{}`: bulkhead.{} {}",
                        def.name, e.key, e.reason
                    ))
                })?;
            }
            let event = EventInfo {
                name: def.name.clone(),
                group: def.group,
                strategy,
                strategy_options,
                bulkhead: def.bulkhead,
                extra: Map::new(),
            };
            let handler = (def.binder)(svc.clone());
            info.events.insert(def.name, event.clone());
            events.push((event, handler));
        }
        Ok(BoundService {
            info,
            actions,
            events,
            dependencies: self.dependencies,
            dependency_timeout: self
                .settings
                .get("$dependencyTimeout")
                .and_then(Value::as_u64),
            dependency_interval: self
                .settings
                .get("$dependencyInterval")
                .and_then(Value::as_u64),
        })
    }
}

/// Params into the handler's type. `Value` is handed over without a serde pass and `()`
/// accepts anything, so untyped and parameterless actions cost nothing here.
fn params_into<P: DeserializeOwned + 'static>(params: &Value) -> Result<P> {
    if TypeId::of::<P>() == TypeId::of::<Value>() {
        let mut slot = Some(params.clone());
        if let Some(p) = (&mut slot as &mut dyn Any).downcast_mut::<Option<P>>() {
            return Ok(p.take().expect("slot was just filled"));
        }
    }
    if TypeId::of::<P>() == TypeId::of::<()>() {
        let mut slot = Some(());
        if let Some(p) = (&mut slot as &mut dyn Any).downcast_mut::<Option<P>>() {
            return Ok(p.take().expect("slot was just filled"));
        }
    }
    deserialize_params(params)
}

/// A handler's result as JSON; a `Value` result is passed through without a serde pass.
fn into_value<R: Serialize + 'static>(result: R) -> Result<Value> {
    let mut slot = Some(result);
    if let Some(v) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Value>>() {
        return Ok(v.take().expect("slot was just filled"));
    }
    let result = slot.take().expect("slot was just filled");
    serde_json::to_value(result).map_err(MoleculerError::unserializable_result)
}
