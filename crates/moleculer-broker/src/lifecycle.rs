//! The broker's lifecycle: the services it hosts and their dependencies, and the start and stop
//! sequences (join, start services, announce; withdraw, drain, stop services, leave).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::{self, BoxFuture};
use moleculer_core::bulkhead::Bulkhead;
use moleculer_core::endpoint_breaker::EndpointBreaker;
use moleculer_core::{
    BrokerHandle, BulkheadOptions, ContextTarget, NodeId, Result, RetryPlan, RetryPolicy,
};
use moleculer_registry::LocalService;
use parking_lot::Mutex;
use serde_json::json;

use crate::broker_state::{BrokerState, StateCell};
use crate::circuit_breaker::CircuitBreaker;
use crate::cluster::Cluster;
use crate::context_tracker::ContextTracker;
use crate::error::BrokerError;
use crate::event_bus::EventBus;
use crate::metrics::BrokerMetrics;
use crate::middleware_chain::MiddlewareChain;
use crate::options::BrokerOptions;
use crate::retry::retry_plan;
use crate::service_schema::BoundService;
use crate::shared_registry::{LocalAction, LocalSubscription, SharedRegistry};

/// A hosted service's `started` and `stopped` hooks, with whatever they need bound in.
pub(crate) trait ServiceHooks: Send + Sync {
    fn started(&self) -> BoxFuture<'static, Result<()>>;
    fn stopped(&self) -> BoxFuture<'static, Result<()>>;
}

/// Hooks that do nothing (the internal `$node` service).
pub(crate) struct NoHooks;

impl ServiceHooks for NoHooks {
    fn started(&self) -> BoxFuture<'static, Result<()>> {
        Box::pin(future::ready(Ok(())))
    }
    fn stopped(&self) -> BoxFuture<'static, Result<()>> {
        Box::pin(future::ready(Ok(())))
    }
}

/// A hosted service.
struct ServiceEntry {
    full_name: String,
    hooks: Arc<dyn ServiceHooks>,
    local: Arc<LocalService<LocalAction, LocalSubscription>>,
    dependencies: Vec<String>,
    dependency_timeout: Option<u64>,
    dependency_interval: Option<u64>,
    started: bool,
}

/// Starts and stops the broker and its services.
pub(crate) struct Lifecycle {
    /// The metrics, which give each local action its meter.
    metrics: Option<Arc<BrokerMetrics>>,
    node_id: NodeId,
    pub state: Arc<StateCell>,
    services: Mutex<Vec<ServiceEntry>>,
    registry: Arc<SharedRegistry>,
    middlewares: Arc<MiddlewareChain>,
    events: Arc<EventBus>,
    cluster: Option<Arc<Cluster>>,
    tracker: Arc<ContextTracker>,
    /// What the contexts of local handlers call back into.
    broker: Weak<dyn BrokerHandle>,
    dependency_timeout: u64,
    dependency_interval: u64,
    stop_delay: Duration,
    drain_limit: Duration,
    /// The broker's bulkhead settings, under each action's and event handler's own.
    bulkhead: BulkheadOptions,
    /// The broker's retry settings, under each action's own.
    retry_policy: RetryPolicy,
    /// The caller's breakers, for local endpoints too.
    breaker: Arc<CircuitBreaker>,
}

impl Lifecycle {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: NodeId,
        options: &BrokerOptions,
        state: Arc<StateCell>,
        registry: Arc<SharedRegistry>,
        middlewares: Arc<MiddlewareChain>,
        events: Arc<EventBus>,
        cluster: Option<Arc<Cluster>>,
        tracker: Arc<ContextTracker>,
        breaker: Arc<CircuitBreaker>,
        broker: Weak<dyn BrokerHandle>,
        metrics: Option<Arc<BrokerMetrics>>,
    ) -> Self {
        Self {
            metrics,
            node_id,
            state,
            services: Mutex::new(Vec::new()),
            registry,
            middlewares,
            events,
            cluster,
            tracker,
            broker,
            dependency_timeout: options.dependency_timeout,
            dependency_interval: options.dependency_interval,
            stop_delay: Duration::from_millis(options.registry.stop_delay),
            drain_limit: Duration::from_millis(options.tracking.shutdown_timeout),
            bulkhead: options.bulkhead,
            retry_policy: options.retry_policy,
            breaker,
        }
    }

    /// The cluster this broker joins, if it has a transporter.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The default interval of `wait_for_services`.
    pub fn dependency_interval(&self) -> Duration {
        Duration::from_millis(self.dependency_interval)
    }

    fn target(
        &self,
        service: &Arc<str>,
        action: Option<Arc<str>>,
        bulkhead: Option<Arc<Bulkhead>>,
        breaker: Option<Arc<EndpointBreaker>>,
        retry: Option<RetryPlan>,
    ) -> Arc<ContextTarget> {
        let meter = action
            .as_deref()
            .zip(self.metrics.as_ref())
            .map(|(name, metrics)| metrics.local_action_meter(name));
        Arc::new(ContextTarget {
            meter,
            broker: self.broker.clone(),
            local_node: self.node_id.clone(),
            service: service.clone(),
            action,
            tracker: self.tracker.in_flight(),
            bulkhead,
            breaker,
            retry,
        })
    }

    /// Takes a service in: its handlers wrapped by the middlewares, its contexts' targets
    /// built once. Returns whether the broker is already started (the caller then starts it).
    pub fn add(
        &self,
        bound: BoundService,
        hooks: Arc<dyn ServiceHooks>,
    ) -> Result<bool, BrokerError> {
        let full_name = bound.info.full_name.clone();
        self.check_new(&full_name)?;
        let service: Arc<str> = Arc::from(full_name.as_str());
        let mut actions = HashMap::new();
        for (info, handler) in bound.actions {
            let handler = self.middlewares.local_action(handler, &info);
            let name: Arc<str> = Arc::from(info.name.as_str());
            let bulkhead = info.bulkhead.unwrap_or_default().over(&self.bulkhead);
            let bulkhead = bulkhead
                .is_enabled()
                .then(|| Arc::new(Bulkhead::new(&name, self.node_id.clone(), &bulkhead)));
            let breaker = info
                .circuit_breaker
                .unwrap_or_default()
                .over(&self.breaker.base);
            let breaker = breaker.is_enabled().then(|| {
                self.breaker
                    .endpoint(&self.node_id, &name, &service, &breaker)
            });
            let retry = retry_plan(info.retry_policy.as_ref(), &self.retry_policy);
            let target = self.target(&service, Some(name), bulkhead, breaker, retry);
            actions.insert(info.name.clone(), LocalAction { handler, target });
        }
        let mut events = HashMap::new();
        for (info, handler) in bound.events {
            let mut handler = self.middlewares.local_event(handler, &info);
            let bulkhead = info.bulkhead.unwrap_or_default().over(&self.bulkhead);
            if bulkhead.is_enabled() {
                let bulkhead = Arc::new(Bulkhead::new(&info.name, self.node_id.clone(), &bulkhead));
                handler = behind_bulkhead(bulkhead, handler);
            }
            let target = self.target(&service, None, None, None, None);
            events.insert(info.name.clone(), LocalSubscription { handler, target });
        }
        self.services.lock().push(ServiceEntry {
            full_name,
            hooks,
            local: Arc::new(LocalService {
                info: bound.info,
                actions,
                events,
            }),
            dependencies: bound.dependencies,
            dependency_timeout: bound.dependency_timeout,
            dependency_interval: bound.dependency_interval,
            started: false,
        });
        Ok(self.state.get() == BrokerState::Started)
    }

    /// Refuses a second service of the same full name.
    pub fn check_new(&self, full_name: &str) -> Result<(), BrokerError> {
        if self
            .services
            .lock()
            .iter()
            .any(|e| e.full_name == full_name)
        {
            return Err(BrokerError::Service {
                service: full_name.to_owned(),
                reason: "a service with this name is already created on this broker".into(),
            });
        }
        Ok(())
    }

    /// Joins the cluster, starts every service (each once its dependencies are available),
    /// announces them, then emits `$broker.started`.
    pub async fn start(&self) -> Result<(), BrokerError> {
        if !self
            .state
            .transition(BrokerState::Created, BrokerState::Starting)
        {
            return Err(BrokerError::AlreadyStarted);
        }
        // Join first, so services can wait for remote dependencies.
        if let Some(cluster) = &self.cluster {
            if let Err(err) = cluster.join().await {
                return self.fail_start(err, true).await;
            }
        }
        let names: Vec<String> = self
            .services
            .lock()
            .iter()
            .map(|e| e.full_name.clone())
            .collect();
        // Concurrently, so services that depend on each other can come up in any order.
        let results = future::join_all(names.iter().map(|n| self.start_service(n))).await;
        if let Some(err) = results.into_iter().find_map(Result::err) {
            return self.fail_start(err, false).await;
        }
        if let Some(cluster) = &self.cluster {
            if let Err(err) = cluster.announce().await {
                return self.fail_start(err, true).await;
            }
        }
        self.middlewares.started(&self.node_id).await;
        self.breaker.start();
        self.state.set(BrokerState::Started);
        tracing::info!(node = %self.node_id, "broker started");
        if let Some(cluster) = self.cluster.as_ref().filter(|c| !c.transporter_ready()) {
            tracing::warn!(
                node = %self.node_id,
                "the transporter ({}) is not connected yet: local calls work, and the node joins the cluster once it connects",
                cluster.transporter_name()
            );
        }
        self.events
            .emit_internal("$broker.started", json!({}))
            .await;
        Ok(())
    }

    async fn fail_start(&self, err: BrokerError, quietly: bool) -> Result<(), BrokerError> {
        self.state.set(BrokerState::Stopped);
        if let Some(cluster) = &self.cluster {
            cluster.leave(quietly).await;
        }
        Err(err)
    }

    /// Starts one service: waits for its dependencies, runs its `started` hook, then makes its
    /// actions callable.
    pub async fn start_service(&self, full_name: &str) -> Result<(), BrokerError> {
        let (hooks, local, deps, timeout, interval) = {
            let services = self.services.lock();
            let Some(e) = services.iter().find(|e| e.full_name == full_name) else {
                return Ok(());
            };
            (
                e.hooks.clone(),
                e.local.clone(),
                e.dependencies.clone(),
                e.dependency_timeout.unwrap_or(self.dependency_timeout),
                e.dependency_interval.unwrap_or(self.dependency_interval),
            )
        };
        let fail = |source| BrokerError::ServiceStart {
            service: full_name.to_owned(),
            source,
        };
        if !deps.is_empty() {
            let names: Vec<&str> = deps.iter().map(String::as_str).collect();
            tracing::info!(service = %full_name, "waiting for dependencies {names:?}");
            self.registry
                .wait_for_services(
                    &names,
                    (timeout > 0).then(|| Duration::from_millis(timeout)),
                    Duration::from_millis(interval),
                )
                .await
                .map_err(fail)?;
        }
        hooks.started().await.map_err(fail)?;
        self.registry.write().register_local_service(&local)?;
        if let Some(e) = self
            .services
            .lock()
            .iter_mut()
            .find(|e| e.full_name == full_name)
        {
            e.started = true;
        }
        self.services_changed().await;
        Ok(())
    }

    /// Local services changed: wake waiters, re-announce (debounced), emit `$services.changed`.
    async fn services_changed(&self) {
        self.registry.changed();
        if let Some(cluster) = &self.cluster {
            cluster.membership.schedule_info();
        }
        self.events
            .emit_internal("$services.changed", json!({ "localService": true }))
            .await;
    }

    /// Stops gracefully, losing nothing: announces that this node offers no services any more
    /// while it keeps serving, waits `stopDelay` for peers to stop sending, waits (at most
    /// `tracking.shutdownTimeout`) for the requests and events in progress, then refuses new
    /// requests with a retryable error, runs the services' `stopped` hooks, leaves the cluster
    /// and emits `$broker.stopped`.
    pub async fn stop(&self) {
        if self.state.begin_stop().is_none() {
            return;
        }
        self.registry.write().withdraw_local_services();
        if let Some(cluster) = &self.cluster {
            cluster.withdraw().await;
            tokio::time::sleep(self.stop_delay).await;
        }
        if !self.tracker.drained(self.drain_limit).await {
            tracing::warn!(
                node = %self.node_id,
                in_progress = self.tracker.active(),
                "still busy after tracking.shutdownTimeout ({} ms); stopping anyway",
                self.drain_limit.as_millis()
            );
        }
        self.state.set(BrokerState::Closing);
        let entries: Vec<(String, Arc<dyn ServiceHooks>, bool)> = self
            .services
            .lock()
            .iter()
            .map(|e| (e.full_name.clone(), e.hooks.clone(), e.started))
            .collect();
        {
            let mut registry = self.registry.write();
            for (name, _, started) in &entries {
                if *started {
                    registry.unregister_local_service(name);
                }
            }
        }
        self.registry.changed();
        let stops =
            entries
                .iter()
                .filter(|(_, _, started)| *started)
                .map(|(name, hooks, _)| async move {
                    if let Err(err) = hooks.stopped().await {
                        tracing::warn!(service = %name, "stopped hook failed: {err}");
                    }
                });
        future::join_all(stops).await;
        for e in self.services.lock().iter_mut() {
            e.started = false;
        }
        // DISCONNECT, then the transporter goes.
        if let Some(cluster) = &self.cluster {
            cluster.leave(false).await;
        }
        self.middlewares.stopped(&self.node_id).await;
        self.state.set(BrokerState::Stopped);
        tracing::info!(node = %self.node_id, "broker stopped");
        self.events
            .emit_internal("$broker.stopped", json!({}))
            .await;
    }

    /// Stops and removes a service; `false` when there is none of that name.
    pub async fn destroy(&self, full_name: &str) -> bool {
        let entry = {
            let mut services = self.services.lock();
            let Some(at) = services.iter().position(|e| e.full_name == full_name) else {
                return false;
            };
            services.remove(at)
        };
        if entry.started {
            self.registry.write().unregister_local_service(full_name);
            self.services_changed().await;
            if let Err(err) = entry.hooks.stopped().await {
                tracing::warn!(service = %full_name, "stopped hook failed: {err}");
            }
        }
        true
    }
}

/// `handler` behind `bulkhead`; a delivery refused by a full queue is not handled (the caller
/// logs the error).
fn behind_bulkhead(
    bulkhead: Arc<Bulkhead>,
    handler: moleculer_core::EventHandler,
) -> moleculer_core::EventHandler {
    Arc::new(move |ctx: moleculer_core::Context| {
        let handler = handler.clone();
        bulkhead.clone().run(move || handler(ctx))
    })
}
