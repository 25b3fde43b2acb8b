//! The public face of the broker: [`ServiceBroker`], and the [`Service`] trait of what it hosts.
//! The two name each other (a service's hooks receive the broker, the broker creates services),
//! so they live together; everything behind them is in the files they delegate to.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use moleculer_core::multi_call::{self, CallSpec, NodeOutcome, Settle};
use moleculer_core::Cacher;
use moleculer_core::{CallOptions, EmitOptions, EventType, MoleculerError, NodeId, Result};
use serde_json::Value;
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::broker_core::BrokerCore;
use crate::broker_state::BrokerState;
use crate::builder::ServiceBrokerBuilder;
use crate::cacher_middleware::{clean_payload, CLEAN_EVENT};
use crate::call_future::CallFuture;
use crate::error::BrokerError;
use crate::event_bus::LocalEvent;
use crate::lifecycle::ServiceHooks;
use crate::options::BrokerOptions;
use crate::service_schema::ServiceSchema;
use crate::shared_registry::BrokerRegistry;
use crate::transit::outbound::{PingResult, TransitStats};

/// A service: a plain struct whose [`schema`](Service::schema) names its actions and events.
///
/// ```
/// use std::sync::Arc;
/// use moleculer_broker::{Service, ServiceSchema};
/// use moleculer_core::{Context, Result};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct AddParams { a: i64, b: i64 }
///
/// struct Math;
///
/// impl Math {
///     async fn add(self: Arc<Self>, _ctx: Context, p: AddParams) -> Result<i64> {
///         Ok(p.a + p.b)
///     }
/// }
///
/// impl Service for Math {
///     fn schema(&self) -> ServiceSchema<Self> {
///         ServiceSchema::new("math").action("add", Math::add)
///     }
/// }
/// ```
pub trait Service: Send + Sync + Sized + 'static {
    /// Name, version, settings, dependencies, actions and events.
    fn schema(&self) -> ServiceSchema<Self>;

    /// Runs once when the service is created on a broker.
    fn created(&self, _broker: &ServiceBroker) {}

    /// Runs when the broker starts, after dependencies are available and before the service's
    /// actions become callable. An error fails the broker's start.
    fn started(self: Arc<Self>, _broker: ServiceBroker) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Runs when the broker stops, after the service's actions were withdrawn.
    fn stopped(self: Arc<Self>, _broker: ServiceBroker) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// A service's hooks as the lifecycle runs them. Weak towards the broker: the broker owns its
/// services, not the other way round.
struct Hooks<S> {
    service: Arc<S>,
    broker: Weak<BrokerCore>,
}

impl<S: Service> Hooks<S> {
    fn broker(&self) -> Result<ServiceBroker> {
        self.broker
            .upgrade()
            .map(|core| ServiceBroker { core })
            .ok_or_else(MoleculerError::broker_disconnected)
    }
}

impl<S: Service> ServiceHooks for Hooks<S> {
    fn started(&self) -> BoxFuture<'static, Result<()>> {
        let (service, broker) = (self.service.clone(), self.broker());
        Box::pin(async move { service.started(broker?).await })
    }

    fn stopped(&self) -> BoxFuture<'static, Result<()>> {
        let (service, broker) = (self.service.clone(), self.broker());
        Box::pin(async move { service.stopped(broker?).await })
    }
}

/// A service broker: hosts services, routes calls and events to them, and (with a transporter)
/// joins a cluster. Cheap to clone: clones share one broker.
///
/// ```
/// use std::sync::Arc;
/// use moleculer_broker::{Service, ServiceBroker, ServiceSchema};
/// use moleculer_core::{Context, Result};
/// use serde_json::{json, Value};
///
/// struct Greeter;
/// impl Service for Greeter {
///     fn schema(&self) -> ServiceSchema<Self> {
///         ServiceSchema::new("greeter").action("hello", |_svc: Arc<Self>, _ctx: Context, p: Value| async move {
///             Ok(format!("Hello {}", p["name"].as_str().unwrap_or("stranger")))
///         })
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let broker = ServiceBroker::builder().node_id("doc-node").build().unwrap();
/// broker.create_service(Greeter).unwrap();
/// broker.start().await.unwrap();
/// let reply = broker.call("greeter.hello", json!({"name": "Ada"})).await.unwrap();
/// assert_eq!(reply, json!("Hello Ada"));
/// broker.stop().await;
/// # });
/// ```
#[derive(Clone)]
pub struct ServiceBroker {
    core: Arc<BrokerCore>,
}

impl std::fmt::Debug for ServiceBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBroker")
            .field("node_id", &self.core.node_id)
            .finish_non_exhaustive()
    }
}

impl ServiceBroker {
    /// A builder with Moleculer's default options.
    pub fn builder() -> ServiceBrokerBuilder {
        ServiceBrokerBuilder::default()
    }

    /// A handle to a broker the builder wired.
    pub(crate) fn from_core(core: Arc<BrokerCore>) -> Self {
        Self { core }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.core.node_id
    }

    /// This process instance's id (changes at every start of the process).
    pub fn instance_id(&self) -> &str {
        &self.core.instance_id
    }

    /// The options the broker runs with.
    pub fn options(&self) -> &BrokerOptions {
        &self.core.options
    }

    /// Whether `start` has completed and `stop` has not begun.
    pub fn is_started(&self) -> bool {
        self.core.lifecycle.state.get() == BrokerState::Started
    }

    /// Seconds since the broker was created, on tokio's clock (the registry's time base).
    pub fn uptime(&self) -> f64 {
        self.core.registry.now()
    }

    /// Runs `f` on the registry (read-only; keep it short, never await inside).
    pub fn with_registry<R>(&self, f: impl FnOnce(&BrokerRegistry) -> R) -> R {
        f(&self.core.registry.read())
    }

    /// Measures the round trip to another node (PING/PONG); the result also feeds the Latency
    /// strategy.
    pub async fn ping(&self, node_id: &str, timeout: Duration) -> Result<PingResult> {
        match self.core.cluster() {
            Some(cluster) => cluster.membership.ping(node_id, timeout).await,
            None => Err(MoleculerError::broker_disconnected()),
        }
    }

    /// What transit dropped (malformed, oversized, wrong version) and ignored (orphan
    /// responses), when the broker has a transporter.
    pub fn transit_stats(&self) -> Option<&TransitStats> {
        self.core.cluster().map(|c| &c.transit.stats)
    }

    /// Whether packets from the cluster reach this broker now (its transporter is connected and
    /// subscribed); `false` without a transporter.
    pub fn is_connected(&self) -> bool {
        self.core
            .cluster()
            .is_some_and(|c| c.transit.transporter.is_ready())
    }

    /// Requests sent to other nodes and not answered yet.
    pub fn pending_requests(&self) -> usize {
        self.core.cluster().map_or(0, |c| c.transit.pending_count())
    }

    /// Subscribes to internal events (`$services.changed`, `$broker.started`, ...).
    pub fn local_events(&self) -> broadcast::Receiver<LocalEvent> {
        self.core.events.subscribe()
    }

    /// Adds a service. Before `start` it starts with the broker; after, it starts at once in
    /// the background (a failure is logged).
    pub fn create_service<S: Service>(&self, service: S) -> Result<(), BrokerError> {
        let service = Arc::new(service);
        let bound = service.schema().bind(&service)?;
        let full_name = bound.info.full_name.clone();
        self.core.lifecycle.check_new(&full_name)?;
        service.created(self);
        let hooks = Arc::new(Hooks {
            service,
            broker: Arc::downgrade(&self.core),
        });
        if self.core.lifecycle.add(bound, hooks)? {
            let broker = self.clone();
            moleculer_core::task::spawn(async move {
                if let Err(err) = broker.core.lifecycle.start_service(&full_name).await {
                    tracing::error!(service = %full_name, "service failed to start: {err}");
                }
            });
        }
        Ok(())
    }

    /// Stops and removes a service.
    pub async fn destroy_service(&self, full_name: &str) -> bool {
        self.core.lifecycle.destroy(full_name).await
    }

    /// Starts every service (each once its dependencies are available), then emits
    /// `$broker.started`.
    pub async fn start(&self) -> Result<(), BrokerError> {
        // Everything the start sets going (transporter, discoverer, timers) runs in the
        // broker's span, and so does what it later logs.
        async {
            // First, so a port in use fails the start before the node joins the cluster.
            self.serve_metrics().await?;
            let started = self.core.lifecycle.start().await;
            if started.is_err() {
                self.core.metrics_endpoint.lock().take();
            }
            started
        }
        .instrument(self.core.span.clone())
        .await
    }

    async fn serve_metrics(&self) -> Result<(), BrokerError> {
        let Some(metrics) = self.core.metrics.as_ref().filter(|m| m.settings.serve) else {
            return Ok(());
        };
        let settings = &metrics.settings;
        let endpoint = crate::metrics::endpoint::serve(metrics.clone())
            .await
            .map_err(|err| BrokerError::MetricsEndpoint {
                address: format!("{}:{}", settings.host, settings.port),
                reason: err.to_string(),
            })?;
        tracing::info!("metrics at http://{}{}", endpoint.address, settings.path);
        *self.core.metrics_endpoint.lock() = Some(endpoint);
        Ok(())
    }

    /// Where the `/metrics` endpoint listens while the broker runs (with the port the system
    /// chose when `metrics.port` is 0); `None` when metrics are off or not served.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.core
            .metrics_endpoint
            .lock()
            .as_ref()
            .map(|e| e.address)
    }

    /// Every metric as Prometheus text, as the endpoint serves it; `None` when metrics are off.
    pub fn metrics_text(&self) -> Option<String> {
        self.core.metrics.as_ref().map(|m| m.render())
    }

    /// `broker{node=...}`: the span this broker's own work runs in, so that its log lines name
    /// it. Instrument a task of your own with it to have its lines named too.
    pub fn span(&self) -> &tracing::Span {
        &self.core.span
    }

    /// Stops every service (their actions are withdrawn first), then emits `$broker.stopped`.
    pub async fn stop(&self) {
        self.core
            .lifecycle
            .stop()
            .instrument(self.core.span.clone())
            .await;
        self.core.metrics_endpoint.lock().take();
    }

    /// Calls an action.
    #[inline]
    pub fn call(&self, action: &str, params: Value) -> CallFuture {
        self.core.call(None, action, params, CallOptions::none())
    }

    /// Calls an action with options (timeout, target node, meta).
    #[inline]
    pub fn call_with(&self, action: &str, params: Value, opts: CallOptions) -> CallFuture {
        self.core.call(None, action, params, &opts)
    }

    /// The cache store, if the broker caches (its `get`, `set`, `del`, `clean`).
    pub fn cacher(&self) -> Option<Arc<dyn Cacher>> {
        self.core.cacher.clone()
    }

    /// Removes the cached entries matching `pattern` (`users.**`) here, and asks every other
    /// node to do the same with its own cache (a `$cacher.clean` broadcast), so memory caches
    /// stay consistent across the cluster.
    pub async fn clean_cache(&self, pattern: &str) -> Result<()> {
        let Some(cacher) = self.cacher() else {
            return Ok(());
        };
        cacher.clean(pattern).await?;
        self.broadcast(CLEAN_EVENT, clean_payload(pattern)).await
    }

    /// Runs `calls` concurrently (Moleculer's `broker.mcall`); the results come in the order
    /// of the calls. With [`Settle::FirstError`] the first error is the only element; with
    /// [`Settle::All`] every outcome is there.
    pub async fn mcall(&self, calls: Vec<CallSpec>, settle: Settle) -> Vec<Result<Value>> {
        multi_call::mcall(&*self.core, None, calls, settle).await
    }

    /// Runs named calls concurrently (Moleculer's `mcall` with an object); each result under
    /// its name, in the order given. With [`Settle::FirstError`] the first failing call is the
    /// only element.
    pub async fn mcall_named(
        &self,
        calls: Vec<(String, CallSpec)>,
        settle: Settle,
    ) -> Vec<(String, Result<Value>)> {
        multi_call::mcall_named(&*self.core, None, calls, settle).await
    }

    /// Calls `action` on every node that offers it, concurrently: each node's answer or error,
    /// within the timeout of `opts` (10 s when it has none). Fails only when no node offers it.
    pub async fn call_all(
        &self,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> Result<Vec<NodeOutcome>> {
        multi_call::call_all(&*self.core, None, action, params, opts).await
    }

    /// Calls `action` on every node that offers it and returns the first success with its
    /// node; the other calls are dropped. When all fail, the last error.
    pub async fn call_first(
        &self,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> Result<(NodeId, Value)> {
        multi_call::call_first(&*self.core, None, action, params, opts).await
    }

    /// Calls an action with typed params and result.
    pub async fn call_as<P: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        action: &str,
        params: &P,
    ) -> Result<R> {
        let params = serde_json::to_value(params).map_err(|e| {
            MoleculerError::validation(
                format!("params of '{action}' cannot be serialized: {e}"),
                Value::Null,
            )
        })?;
        let reply = self.call(action, params).await?;
        serde_json::from_value(reply).map_err(|e| MoleculerError::bad_reply(action, e))
    }

    /// Emits a balanced event: one handler per group receives it. Resolves once the local
    /// handlers have run (their errors are logged, not returned).
    pub fn emit(
        &self,
        event: &str,
        payload: Value,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.emit_with(event, payload, EmitOptions::default())
    }

    /// Emits a balanced event with options (groups, meta).
    pub fn emit_with(
        &self,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.core
            .send_event(None, EventType::Emit, event, payload, opts)
    }

    /// Sends an event to every handler in the cluster.
    pub fn broadcast(
        &self,
        event: &str,
        payload: Value,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.broadcast_with(event, payload, EmitOptions::default())
    }

    /// Broadcast with options (groups, meta).
    pub fn broadcast_with(
        &self,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.core
            .send_event(None, EventType::Broadcast, event, payload, opts)
    }

    /// Sends an event to every handler on this node only.
    pub fn broadcast_local(
        &self,
        event: &str,
        payload: Value,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.core.send_event(
            None,
            EventType::BroadcastLocal,
            event,
            payload,
            EmitOptions::default(),
        )
    }

    /// Waits until every named service (full names, e.g. `v2.posts`) runs somewhere in the
    /// cluster; `None` waits forever. A timeout answers `WAITFOR_SERVICES` naming the missing.
    pub async fn wait_for_services(&self, names: &[&str], timeout: Option<Duration>) -> Result<()> {
        let interval = self.core.lifecycle.dependency_interval();
        self.core
            .registry
            .wait_for_services(names, timeout, interval)
            .await
    }
}
