//! The service broker: owns the registry, runs calls and events, and drives the lifecycle.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_utils::sync::ShardedLock;
use futures::future::{self, BoxFuture, Either, FutureExt};
use moleculer_core::context::{ContextInit, ContextTarget, EventDelivery, EventGroups};
use moleculer_core::middleware::{
    ActionHandler, CallHandler, CallRequest, EmitHandler, EmitRequest, EventHandler,
};
use moleculer_core::protocol::{EventPacket, RequestPacket};
use moleculer_core::service_info::ClientInfo;
use moleculer_core::{
    BrokerHandle, CallOptions, Context, EmitOptions, EventType, Meta, MoleculerError, NodeId,
    Result, SelectionContext,
};
use moleculer_registry::{LocalService, Miss, Node, Registry};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::bridges::{DynDiscoverer, DynTransporter};
use crate::call_future::{panic_message, CallFuture};
use crate::cluster::{Cluster, PingResult};
use crate::error::BrokerError;
use crate::middleware_bridge::ErasedMiddleware;
use crate::options::BrokerOptions;
use crate::service::{BoundService, Runtime, Service, ServiceRuntime};
use crate::transit::{Transit, TransitStats};

/// A local action as the registry holds it: the (middleware-wrapped) handler and the target its
/// contexts share.
#[derive(Clone)]
pub struct LocalAction {
    /// The handler.
    pub handler: ActionHandler,
    /// Shared by every context of this action.
    pub target: Arc<ContextTarget>,
}

/// A local event subscription as the registry holds it.
#[derive(Clone)]
pub struct LocalSubscription {
    /// The handler.
    pub handler: EventHandler,
    /// Shared by every context of this subscription.
    pub target: Arc<ContextTarget>,
}

impl std::fmt::Debug for LocalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAction")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LocalSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSubscription")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The registry as the broker holds it.
pub type BrokerRegistry = Registry<LocalAction, LocalSubscription>;

/// An internal (`$`-prefixed) event, as seen on the local bus.
#[derive(Debug, Clone)]
pub struct LocalEvent {
    /// Event name, e.g. `$services.changed`.
    pub name: String,
    /// Payload.
    pub payload: Value,
}

const CREATED: u8 = 0;
pub(crate) const STARTING: u8 = 1;
pub(crate) const STARTED: u8 = 2;
pub(crate) const STOPPING: u8 = 3;
pub(crate) const STOPPED: u8 = 4;

struct ServiceEntry {
    full_name: String,
    runtime: Arc<dyn ServiceRuntime>,
    local: Arc<LocalService<LocalAction, LocalSubscription>>,
    dependencies: Vec<String>,
    dependency_timeout: Option<u64>,
    dependency_interval: Option<u64>,
    started: bool,
}

pub(crate) struct BrokerInner {
    node_id: NodeId,
    instance_id: String,
    options: BrokerOptions,
    /// Sharded so that concurrent callers on different cores never touch the same lock word.
    registry: ShardedLock<BrokerRegistry>,
    middlewares: Vec<Arc<dyn ErasedMiddleware>>,
    call_chain: Option<CallHandler>,
    emit_chain: Option<EmitHandler>,
    services: Mutex<Vec<ServiceEntry>>,
    state: AtomicU8,
    changes: watch::Sender<u64>,
    local_bus: broadcast::Sender<LocalEvent>,
    clock: Instant,
    request_timeout: Option<Duration>,
    weak: Weak<BrokerInner>,
    /// Transit and discovery, when the broker has a transporter.
    cluster: Option<Cluster>,
    /// Whether a middleware wraps remote actions; when none does, remote calls skip the
    /// context and handler chain entirely.
    remote_hooked: bool,
    /// Remote-action handler chains, built on first use per action.
    remote_chains: dashmap::DashMap<Arc<str>, ActionHandler>,
}

/// The pluggable parts a broker is built with.
#[derive(Default)]
pub(crate) struct Backends {
    pub transporter: Option<Arc<dyn DynTransporter>>,
    pub discoverer: Option<Arc<dyn DynDiscoverer>>,
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
    inner: Arc<BrokerInner>,
}

impl std::fmt::Debug for ServiceBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBroker")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

fn local_node(node_id: &NodeId, instance_id: &str, options: &BrokerOptions) -> Node {
    let mut node = Node::new(node_id.clone(), true);
    node.instance_id = instance_id.to_owned();
    node.hostname = gethostname::gethostname().to_string_lossy().into_owned();
    node.ip_list = crate::health::ipv4_addresses();
    node.client = ClientInfo::rust();
    node.metadata = options.metadata.clone();
    node
}

impl ServiceBroker {
    /// A builder with Moleculer's default options.
    pub fn builder() -> crate::builder::ServiceBrokerBuilder {
        crate::builder::ServiceBrokerBuilder::default()
    }

    pub(crate) fn from_parts(
        options: BrokerOptions,
        middlewares: Vec<Arc<dyn ErasedMiddleware>>,
        backends: Backends,
    ) -> Result<Self, BrokerError> {
        options.validate()?;
        let registry_options = options.registry_options()?;
        let node_id = options
            .node_id
            .as_deref()
            .map_or_else(NodeId::for_this_process, NodeId::new);
        let instance_id = moleculer_core::node_id::generate_id();
        let registry = Registry::new(
            local_node(&node_id, &instance_id, &options),
            registry_options,
        );
        let request_timeout = options.request_timeout();
        let cluster = match backends.transporter {
            Some(transporter) => {
                let serializer = options.serializer_kind()?.build();
                let version = options.protocol_version()?;
                let transit = Transit::new(version, serializer, transporter, &options.transit);
                let discoverer = backends.discoverer.unwrap_or_else(|| {
                    Arc::new(moleculer_discoverer_local::LocalDiscoverer::new())
                });
                Some(Cluster::new(transit, discoverer))
            }
            None => None,
        };
        let inner = Arc::new_cyclic(|weak: &Weak<BrokerInner>| {
            let remote_hooked = hooks_remote_actions(&middlewares);
            let call_chain = build_call_chain(weak.clone(), &middlewares);
            let emit_chain = build_emit_chain(weak.clone(), &middlewares);
            BrokerInner {
                node_id,
                instance_id,
                options,
                registry: ShardedLock::new(registry),
                middlewares,
                call_chain,
                emit_chain,
                services: Mutex::new(Vec::new()),
                state: AtomicU8::new(CREATED),
                changes: watch::channel(0).0,
                local_bus: broadcast::channel(1024).0,
                clock: Instant::now(),
                request_timeout,
                weak: weak.clone(),
                cluster,
                remote_hooked,
                remote_chains: dashmap::DashMap::new(),
            }
        });
        let broker = ServiceBroker { inner };
        if broker.inner.options.internal_services {
            broker.create_service(crate::node_service::NodeService::new(Arc::downgrade(
                &broker.inner,
            )))?;
        }
        Ok(broker)
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.node_id
    }

    /// This process instance's id (changes at every start of the process).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// The options the broker runs with.
    pub fn options(&self) -> &BrokerOptions {
        &self.inner.options
    }

    /// Whether `start` has completed and `stop` has not begun.
    pub fn is_started(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == STARTED
    }

    /// Seconds since the broker was created, on tokio's clock (the registry's time base).
    pub fn uptime(&self) -> f64 {
        self.inner.clock.elapsed().as_secs_f64()
    }

    /// Runs `f` on the registry (read-only; keep it short, never await inside).
    pub fn with_registry<R>(&self, f: impl FnOnce(&BrokerRegistry) -> R) -> R {
        f(&self.inner.read_registry())
    }

    /// Measures the round trip to another node (PING/PONG); the result also feeds the Latency
    /// strategy.
    pub async fn ping(&self, node_id: &str, timeout: Duration) -> Result<PingResult> {
        self.inner.ping(node_id, timeout).await
    }

    /// What transit dropped (malformed, oversized, wrong version) and ignored (orphan
    /// responses), when the broker has a transporter.
    pub fn transit_stats(&self) -> Option<&TransitStats> {
        self.inner.cluster().map(|c| &c.transit.stats)
    }

    /// Requests sent to other nodes and not answered yet.
    pub fn pending_requests(&self) -> usize {
        self.inner
            .cluster()
            .map_or(0, |c| c.transit.pending_count())
    }

    /// Subscribes to internal events (`$services.changed`, `$broker.started`, ...).
    pub fn local_events(&self) -> broadcast::Receiver<LocalEvent> {
        self.inner.local_bus.subscribe()
    }

    /// Adds a service. Before `start` it starts with the broker; after, it starts at once in
    /// the background (a failure is logged).
    pub fn create_service<S: Service>(&self, service: S) -> Result<(), BrokerError> {
        let service = Arc::new(service);
        let bound = service.schema().bind(&service)?;
        let full_name = bound.info.full_name.clone();
        {
            let services = self.inner.services.lock();
            if services.iter().any(|e| e.full_name == full_name) {
                return Err(BrokerError::Service {
                    service: full_name,
                    reason: "a service with this name is already created on this broker".into(),
                });
            }
        }
        service.created(self);
        let entry = self.inner.entry_for(bound, Arc::new(Runtime(service)));
        self.inner.services.lock().push(entry);
        if self.inner.state.load(Ordering::Acquire) == STARTED {
            let broker = self.clone();
            tokio::spawn(async move {
                if let Err(err) = broker.start_service(&full_name).await {
                    tracing::error!(service = %full_name, "service failed to start: {err}");
                }
            });
        }
        Ok(())
    }

    /// Stops and removes a service.
    pub async fn destroy_service(&self, full_name: &str) -> bool {
        let entry = {
            let mut services = self.inner.services.lock();
            let Some(at) = services.iter().position(|e| e.full_name == full_name) else {
                return false;
            };
            services.remove(at)
        };
        if entry.started {
            self.inner
                .write_registry()
                .unregister_local_service(full_name);
            self.inner.services_changed(true).await;
            if let Err(err) = entry.runtime.stopped(self.clone()).await {
                tracing::warn!(service = %full_name, "stopped hook failed: {err}");
            }
        }
        true
    }

    /// Starts every service (each once its dependencies are available), then emits
    /// `$broker.started`.
    pub async fn start(&self) -> Result<(), BrokerError> {
        if self
            .inner
            .state
            .compare_exchange(CREATED, STARTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(BrokerError::AlreadyStarted);
        }
        // Join first, so services can wait for remote dependencies.
        if let Err(err) = self.inner.join_cluster().await {
            self.inner.state.store(STOPPED, Ordering::Release);
            self.inner.leave_cluster(true).await;
            return Err(err);
        }
        let names: Vec<String> = self
            .inner
            .services
            .lock()
            .iter()
            .map(|e| e.full_name.clone())
            .collect();
        // Concurrently, so services that depend on each other can come up in any order.
        let results = future::join_all(names.iter().map(|n| self.start_service(n))).await;
        if let Some(err) = results.into_iter().find_map(Result::err) {
            self.inner.state.store(STOPPED, Ordering::Release);
            self.inner.leave_cluster(false).await;
            return Err(err);
        }
        if let Err(err) = self.inner.announce().await {
            self.inner.state.store(STOPPED, Ordering::Release);
            self.inner.leave_cluster(true).await;
            return Err(err);
        }
        for mw in &self.inner.middlewares {
            if let Err(err) = mw.started(&self.inner.node_id).await {
                tracing::warn!(middleware = mw.name(), "started hook failed: {err}");
            }
        }
        self.inner.state.store(STARTED, Ordering::Release);
        tracing::info!(node = %self.inner.node_id, "broker started");
        self.inner.emit_internal("$broker.started", json!({})).await;
        Ok(())
    }

    async fn start_service(&self, full_name: &str) -> Result<(), BrokerError> {
        let (runtime, local, deps, timeout, interval) = {
            let services = self.inner.services.lock();
            let Some(e) = services.iter().find(|e| e.full_name == full_name) else {
                return Ok(());
            };
            (
                e.runtime.clone(),
                e.local.clone(),
                e.dependencies.clone(),
                e.dependency_timeout,
                e.dependency_interval,
            )
        };
        let fail = |source: MoleculerError| BrokerError::ServiceStart {
            service: full_name.to_owned(),
            source,
        };
        if !deps.is_empty() {
            let timeout = timeout.unwrap_or(self.inner.options.dependency_timeout);
            let interval = interval.unwrap_or(self.inner.options.dependency_interval);
            let names: Vec<&str> = deps.iter().map(String::as_str).collect();
            tracing::info!(service = %full_name, "waiting for dependencies {names:?}");
            self.wait_for_services_every(
                &names,
                (timeout > 0).then(|| Duration::from_millis(timeout)),
                Duration::from_millis(interval),
            )
            .await
            .map_err(fail)?;
        }
        runtime.started(self.clone()).await.map_err(fail)?;
        self.inner.write_registry().register_local_service(&local)?;
        if let Some(e) = self
            .inner
            .services
            .lock()
            .iter_mut()
            .find(|e| e.full_name == full_name)
        {
            e.started = true;
        }
        self.inner.services_changed(true).await;
        Ok(())
    }

    /// Stops every service (their actions are withdrawn first), then emits `$broker.stopped`.
    pub async fn stop(&self) {
        let previous = self.inner.state.swap(STOPPING, Ordering::AcqRel);
        if previous == STOPPING || previous == STOPPED {
            self.inner.state.store(previous, Ordering::Release);
            return;
        }
        let entries: Vec<(String, Arc<dyn ServiceRuntime>, bool)> = self
            .inner
            .services
            .lock()
            .iter()
            .map(|e| (e.full_name.clone(), e.runtime.clone(), e.started))
            .collect();
        // Withdraw the actions first: peers stop routing here before anything stops.
        {
            let mut registry = self.inner.write_registry();
            for (name, _, started) in &entries {
                if *started {
                    registry.unregister_local_service(name);
                }
            }
        }
        self.inner.changes.send_modify(|g| *g += 1);
        // Empty INFO, `stopDelay`, then in-flight requests finish.
        self.inner.withdraw_services().await;
        let stops = entries.iter().filter(|(_, _, started)| *started).map(
            |(name, runtime, _)| async move {
                if let Err(err) = runtime.stopped(self.clone()).await {
                    tracing::warn!(service = %name, "stopped hook failed: {err}");
                }
            },
        );
        future::join_all(stops).await;
        for e in self.inner.services.lock().iter_mut() {
            e.started = false;
        }
        // DISCONNECT, then the transporter goes.
        self.inner.leave_cluster(false).await;
        for mw in &self.inner.middlewares {
            if let Err(err) = mw.stopped(&self.inner.node_id).await {
                tracing::warn!(middleware = mw.name(), "stopped hook failed: {err}");
            }
        }
        self.inner.state.store(STOPPED, Ordering::Release);
        tracing::info!(node = %self.inner.node_id, "broker stopped");
        self.inner.emit_internal("$broker.stopped", json!({})).await;
    }

    /// Calls an action.
    pub fn call(&self, action: &str, params: Value) -> CallFuture {
        self.call_with(action, params, CallOptions::default())
    }

    /// Calls an action with options (timeout, target node, meta).
    pub fn call_with(&self, action: &str, params: Value, opts: CallOptions) -> CallFuture {
        match &self.inner.call_chain {
            Some(chain) => CallFuture::boxed(chain(CallRequest {
                action: action.to_owned(),
                params,
                options: opts,
                parent: None,
            })),
            None => self.inner.call_impl(None, action, params, opts),
        }
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
        serde_json::from_value(reply).map_err(|e| {
            MoleculerError::server(
                format!("reply of '{action}' does not fit the expected type: {e}"),
                500,
                "BAD_REPLY",
                Value::Null,
            )
        })
    }

    /// Emits a balanced event: one handler per group receives it. Resolves once the local
    /// handlers have run (their errors are logged, not returned).
    pub fn emit(
        &self,
        event: &str,
        payload: Value,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.send_event(EventType::Emit, event, payload, EmitOptions::default())
    }

    /// Emits a balanced event with options (groups, meta).
    pub fn emit_with(
        &self,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.send_event(EventType::Emit, event, payload, opts)
    }

    /// Sends an event to every handler in the cluster.
    pub fn broadcast(
        &self,
        event: &str,
        payload: Value,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.send_event(EventType::Broadcast, event, payload, EmitOptions::default())
    }

    /// Broadcast with options (groups, meta).
    pub fn broadcast_with(
        &self,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.send_event(EventType::Broadcast, event, payload, opts)
    }

    /// Sends an event to every handler on this node only.
    pub fn broadcast_local(
        &self,
        event: &str,
        payload: Value,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.send_event(
            EventType::BroadcastLocal,
            event,
            payload,
            EmitOptions::default(),
        )
    }

    fn send_event(
        &self,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        match &self.inner.emit_chain {
            Some(chain) => Either::Left(chain(EmitRequest {
                event: event.to_owned(),
                payload,
                kind,
                options: opts,
                parent: None,
            })),
            None => Either::Right(self.inner.send_event_impl(None, kind, event, payload, opts)),
        }
    }

    /// Waits until every named service (full names, e.g. `v2.posts`) runs somewhere in the
    /// cluster; `None` waits forever. A timeout answers `WAITFOR_SERVICES` naming the missing.
    pub async fn wait_for_services(&self, names: &[&str], timeout: Option<Duration>) -> Result<()> {
        let interval = Duration::from_millis(self.inner.options.dependency_interval);
        self.wait_for_services_every(names, timeout, interval).await
    }

    async fn wait_for_services_every(
        &self,
        names: &[&str],
        timeout: Option<Duration>,
        interval: Duration,
    ) -> Result<()> {
        let mut changes = self.inner.changes.subscribe();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let missing: Vec<&str> = {
                let registry = self.inner.read_registry();
                names
                    .iter()
                    .copied()
                    .filter(|n| !registry.has_service(n))
                    .collect()
            };
            if missing.is_empty() {
                return Ok(());
            }
            // Woken by registry changes; the interval is a safety net.
            let mut wake = tokio::time::sleep(interval);
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    let statuses: Vec<Value> = names
                        .iter()
                        .map(|n| json!({"name": n, "available": !missing.contains(n)}))
                        .collect();
                    return Err(MoleculerError::server(
                        format!(
                            "Services waiting is timed out. Missing: {}",
                            missing.join(", ")
                        ),
                        500,
                        "WAITFOR_SERVICES",
                        json!({ "services": names, "statuses": statuses }),
                    ));
                }
                wake = tokio::time::sleep(interval.min(deadline - Instant::now()));
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = wake => {}
            }
        }
    }
}

fn build_call_chain(
    weak: Weak<BrokerInner>,
    middlewares: &[Arc<dyn ErasedMiddleware>],
) -> Option<CallHandler> {
    let base: CallHandler = Arc::new(
        move |req: CallRequest| -> BoxFuture<'static, Result<Value>> {
            let Some(inner) = weak.upgrade() else {
                return Box::pin(future::ready(Err(MoleculerError::broker_disconnected())));
            };
            Box::pin(inner.call_impl(req.parent.as_ref(), &req.action, req.params, req.options))
        },
    );
    let chain = middlewares
        .iter()
        .fold(base.clone(), |next, mw| mw.call(next));
    // No middleware hooks `call`: skip the chain (and its allocations) on every call.
    (!Arc::ptr_eq(&chain, &base)).then_some(chain)
}

/// Whether any middleware replaces the handler it is given for remote actions.
fn hooks_remote_actions(middlewares: &[Arc<dyn ErasedMiddleware>]) -> bool {
    let probe: ActionHandler = Arc::new(|_ctx| Box::pin(future::ready(Ok(Value::Null))));
    let info = moleculer_core::ActionInfo::default();
    middlewares
        .iter()
        .any(|mw| !Arc::ptr_eq(&mw.remote_action(probe.clone(), &info), &probe))
}

/// The innermost remote-action handler: one REQ to the context's node, meta merged back.
fn remote_base(weak: Weak<BrokerInner>) -> ActionHandler {
    Arc::new(move |ctx: Context| -> BoxFuture<'static, Result<Value>> {
        let Some(inner) = weak.upgrade() else {
            return Box::pin(future::ready(Err(MoleculerError::broker_disconnected())));
        };
        let Some(cluster) = inner.cluster() else {
            return Box::pin(future::ready(Err(MoleculerError::broker_disconnected())));
        };
        let version = cluster.transit.version;
        let request = RequestPacket {
            id: ctx.id().to_string(),
            action: ctx.action().unwrap_or_default().to_owned(),
            params: ctx.params().clone(),
            meta: ctx.meta(),
            headers: version.has_headers().then(|| ctx.headers().clone()),
            timeout: ctx.timeout().map(|t| t.as_secs_f64() * 1000.0),
            level: ctx.level(),
            tracing: None,
            parent_id: ctx.parent_id().map(str::to_owned),
            request_id: Some(ctx.request_id().to_string()),
            caller: ctx.caller().map(str::to_owned),
            stream: Some(false),
            seq: None,
            ver: version.as_str().to_owned(),
            sender: inner.node_id().clone(),
        };
        let (transit, target, timeout) = (
            cluster.transit.clone(),
            ctx.local_node_id().clone(),
            ctx.timeout(),
        );
        Box::pin(async move {
            let (data, meta) = transit.request(target, request, timeout).await?;
            ctx.merge_meta(meta);
            Ok(data)
        })
    })
}

fn build_emit_chain(
    weak: Weak<BrokerInner>,
    middlewares: &[Arc<dyn ErasedMiddleware>],
) -> Option<EmitHandler> {
    let base: EmitHandler = Arc::new(move |req: EmitRequest| -> BoxFuture<'static, Result<()>> {
        let Some(inner) = weak.upgrade() else {
            return Box::pin(future::ready(Err(MoleculerError::broker_disconnected())));
        };
        Box::pin(inner.send_event_impl(
            req.parent.as_ref(),
            req.kind,
            &req.event,
            req.payload,
            req.options,
        ))
    });
    let chain = middlewares
        .iter()
        .fold(base.clone(), |next, mw| mw.emit(next));
    (!Arc::ptr_eq(&chain, &base)).then_some(chain)
}

/// Starts a handler, turning a panic in its synchronous part into an error future.
pub(crate) fn start_handler<T: Send + 'static>(
    run: impl FnOnce() -> BoxFuture<'static, Result<T>>,
    what: &str,
    node: &NodeId,
) -> BoxFuture<'static, Result<T>> {
    match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(fut) => fut,
        Err(payload) => {
            let message = panic_message(&*payload);
            tracing::error!(handler = %what, "handler panicked: {message}");
            Box::pin(future::ready(Err(MoleculerError::handler_panicked(
                what, node, &message,
            ))))
        }
    }
}

impl BrokerInner {
    pub(crate) fn read_registry(
        &self,
    ) -> crossbeam_utils::sync::ShardedLockReadGuard<'_, BrokerRegistry> {
        self.registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write_registry(
        &self,
    ) -> crossbeam_utils::sync::ShardedLockWriteGuard<'_, BrokerRegistry> {
        self.registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn options(&self) -> &BrokerOptions {
        &self.options
    }

    pub(crate) fn uptime(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    fn target(&self, service: &Arc<str>, action: Option<&str>) -> Arc<ContextTarget> {
        let broker: Weak<dyn BrokerHandle> = self.weak.clone();
        Arc::new(ContextTarget {
            broker,
            local_node: self.node_id.clone(),
            service: service.clone(),
            action: action.map(Arc::from),
        })
    }

    fn entry_for(&self, bound: BoundService, runtime: Arc<dyn ServiceRuntime>) -> ServiceEntry {
        let service: Arc<str> = Arc::from(bound.info.full_name.as_str());
        let mut actions = HashMap::new();
        for (info, handler) in bound.actions {
            let handler = self
                .middlewares
                .iter()
                .fold(handler, |next, mw| mw.local_action(next, &info));
            let target = self.target(&service, Some(&info.name));
            actions.insert(info.name.clone(), LocalAction { handler, target });
        }
        let mut events = HashMap::new();
        for (info, handler) in bound.events {
            let handler = self
                .middlewares
                .iter()
                .fold(handler, |next, mw| mw.local_event(next, &info));
            events.insert(
                info.name.clone(),
                LocalSubscription {
                    handler,
                    target: self.target(&service, None),
                },
            );
        }
        ServiceEntry {
            full_name: bound.info.full_name.clone(),
            runtime,
            local: Arc::new(LocalService {
                info: bound.info,
                actions,
                events,
            }),
            dependencies: bound.dependencies,
            dependency_timeout: bound.dependency_timeout,
            dependency_interval: bound.dependency_interval,
            started: false,
        }
    }

    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    pub(crate) fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    pub(crate) fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Wakes whoever waits for services.
    pub(crate) fn registry_changed(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Signals a registry change to waiters and emits `$services.changed`; a change of local
    /// services is announced to the cluster (debounced).
    async fn services_changed(&self, local_service: bool) {
        self.changes.send_modify(|g| *g += 1);
        if local_service {
            if let Some(me) = self.weak.upgrade() {
                me.schedule_info();
            }
        }
        self.emit_internal(
            "$services.changed",
            json!({ "localService": local_service }),
        )
        .await;
    }

    /// Emits an internal event to local handlers and the local bus.
    pub(crate) async fn emit_internal(&self, name: &str, payload: Value) {
        let _ = self
            .send_event_impl(
                None,
                EventType::BroadcastLocal,
                name,
                payload,
                EmitOptions::default(),
            )
            .await;
    }

    /// Resolves the endpoint, builds the context and starts the handler, all before the first
    /// poll; the returned future only drives the handler.
    pub(crate) fn call_impl(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: CallOptions,
    ) -> CallFuture {
        let level = parent.map_or(1, |p| p.level() + 1);
        let max = self.options.max_call_level;
        if max > 0 && level > max {
            return CallFuture::failed(MoleculerError::max_call_level(&self.node_id, level - 1));
        }
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = opts.meta {
            meta.extend(extra);
        }
        let registry = self.read_registry();
        let selection = SelectionContext {
            params: &params,
            meta: &meta,
        };
        let found = match &opts.node_id {
            Some(node) => registry
                .action_endpoint_on_node(action, node)
                .map_err(|_| MoleculerError::service_not_found(action, Some(node))),
            None => registry
                .next_action_endpoint(action, &selection)
                .map_err(|miss| match miss {
                    Miss::NotFound => MoleculerError::service_not_found(action, None),
                    Miss::NotAvailable => MoleculerError::service_not_available(action, None),
                }),
        };
        let endpoint = match found {
            Ok(endpoint) => endpoint,
            Err(err) => return CallFuture::failed(err),
        };
        let mut timeout = opts
            .timeout
            .or(endpoint.info.timeout.map(Duration::from_millis))
            .or(self.request_timeout);
        if let Some(parent_deadline) = parent.and_then(Context::deadline) {
            let now = Instant::now();
            if parent_deadline <= now {
                return CallFuture::failed(MoleculerError::request_skipped(action, &self.node_id));
            }
            let remaining = parent_deadline - now;
            timeout = Some(timeout.map_or(remaining, |t| t.min(remaining)));
        }
        let Some(local) = &endpoint.handler else {
            let target = endpoint.node_id.clone();
            let (info, service) = (endpoint.info.clone(), endpoint.service.clone());
            drop(registry);
            return self.call_remote(
                target,
                parent,
                action,
                params,
                meta,
                opts.headers,
                timeout,
                level,
                (&info, &service),
            );
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let ctx = Context::new(ContextInit {
            target: local.target.clone(),
            id: None,
            request_id: parent.map(|p| p.request_id().clone()),
            parent_id: parent.map(|p| p.id().clone()),
            level,
            caller: parent.map(|p| p.service_arc().clone()),
            caller_node: None,
            event: None,
            params,
            meta,
            headers: opts.headers.unwrap_or_default(),
            timeout,
            deadline,
        });
        // The handler is started under the read lock (no clone of it needed); it only builds
        // its future here, the work happens when the future is polled.
        let handler_ctx = ctx.clone();
        let fut = start_handler(|| (local.handler)(handler_ctx), action, &self.node_id);
        drop(registry);
        CallFuture::running(fut, ctx, deadline, parent.cloned())
    }

    /// A call to an action on another node: one REQ packet, answered by a RES.
    #[allow(clippy::too_many_arguments)]
    fn call_remote(
        &self,
        target: NodeId,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        meta: Meta,
        headers: Option<Meta>,
        timeout: Option<Duration>,
        level: u32,
        (info, service): (&Arc<moleculer_core::ActionInfo>, &Arc<str>),
    ) -> CallFuture {
        if self.remote_hooked {
            return self.call_remote_hooked(
                target, parent, params, meta, headers, timeout, level, info, service,
            );
        }
        let Some(cluster) = &self.cluster else {
            return CallFuture::failed(MoleculerError::service_not_available(
                action,
                Some(&target),
            ));
        };
        let version = cluster.transit.version;
        let id = moleculer_core::node_id::generate_id();
        let request = RequestPacket {
            request_id: Some(parent.map_or_else(|| id.clone(), |p| p.request_id().to_string())),
            id,
            action: action.to_owned(),
            params,
            meta,
            headers: version.has_headers().then(|| headers.unwrap_or_default()),
            timeout: timeout.map(|t| t.as_secs_f64() * 1000.0),
            level,
            tracing: None,
            parent_id: parent.map(|p| p.id().to_string()),
            caller: parent.map(|p| p.service().to_owned()),
            stream: Some(false),
            seq: None,
            ver: version.as_str().to_owned(),
            sender: self.node_id.clone(),
        };
        self.remote_call(target, request, timeout, parent.cloned())
    }

    /// A remote call through the middlewares' `remote_action` hooks.
    #[allow(clippy::too_many_arguments)]
    fn call_remote_hooked(
        &self,
        target: NodeId,
        parent: Option<&Context>,
        params: Value,
        meta: Meta,
        headers: Option<Meta>,
        timeout: Option<Duration>,
        level: u32,
        info: &Arc<moleculer_core::ActionInfo>,
        service: &Arc<str>,
    ) -> CallFuture {
        let name: Arc<str> = Arc::from(info.name.as_str());
        let chain = self
            .remote_chains
            .entry(name.clone())
            .or_insert_with(|| {
                self.middlewares
                    .iter()
                    .fold(remote_base(self.weak.clone()), |next, mw| {
                        mw.remote_action(next, info)
                    })
            })
            .clone();
        let broker: Weak<dyn BrokerHandle> = self.weak.clone();
        let target = Arc::new(ContextTarget {
            broker,
            local_node: target,
            service: service.clone(),
            action: Some(name),
        });
        let ctx = Context::new(ContextInit {
            target,
            id: None,
            request_id: parent.map(|p| p.request_id().clone()),
            parent_id: parent.map(|p| p.id().clone()),
            level,
            caller: parent.map(|p| p.service_arc().clone()),
            caller_node: Some(self.node_id.clone()),
            event: None,
            params,
            meta,
            headers: headers.unwrap_or_default(),
            timeout,
            deadline: timeout.map(|t| Instant::now() + t),
        });
        let handler_ctx = ctx.clone();
        let fut = start_handler(|| chain(handler_ctx), &info.name, &self.node_id);
        // The REQ carries the timeout; transit enforces it, so no second timer here.
        CallFuture::running(fut, ctx, None, parent.cloned())
    }

    pub(crate) fn send_event_impl(
        &self,
        parent: Option<&Context>,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        if event.starts_with('$') {
            let _ = self.local_bus.send(LocalEvent {
                name: event.to_owned(),
                payload: payload.clone(),
            });
        }
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = opts.meta {
            meta.extend(extra);
        }
        let groups = opts.groups.as_deref();
        let origin = EventOrigin {
            request_id: parent.map(|p| p.request_id().clone()),
            parent_id: parent.map(|p| p.id().clone()),
            level: parent.map_or(1, |p| p.level() + 1),
            caller: parent.map(|p| p.service_arc().clone()),
            caller_node: None,
            headers: opts.headers.unwrap_or_default(),
        };
        let filter = match groups {
            None | Some([]) => EventGroups::All,
            Some([one]) => EventGroups::One(Arc::from(one.as_str())),
            Some(many) => EventGroups::Many(many.iter().map(|s| Arc::from(s.as_str())).collect()),
        };
        let registry = self.read_registry();
        let selection = SelectionContext {
            params: &payload,
            meta: &meta,
        };
        let mut picks: Vec<(&LocalSubscription, &Arc<str>, EventGroups)> = Vec::new();
        // Remote nodes get one EVENT each, carrying the groups chosen for them.
        let mut remote: Vec<(NodeId, Vec<String>)> = Vec::new();
        match kind {
            EventType::Emit => {
                for (ep, group) in registry.balanced_event_endpoints(event, groups, &selection) {
                    match &ep.handler {
                        Some(sub) => picks.push((sub, &ep.name, EventGroups::One(group.clone()))),
                        None => match remote.iter_mut().find(|(n, _)| *n == ep.node_id) {
                            Some((_, gs)) => gs.push(group.to_string()),
                            None => remote.push((ep.node_id.clone(), vec![group.to_string()])),
                        },
                    }
                }
            }
            EventType::Broadcast => {
                for ep in registry.all_event_endpoints(event, groups) {
                    match &ep.handler {
                        Some(sub) => picks.push((sub, &ep.name, filter.clone())),
                        None if !remote.iter().any(|(n, _)| *n == ep.node_id) => {
                            remote.push((ep.node_id.clone(), Vec::new()));
                        }
                        None => {}
                    }
                }
            }
            EventType::BroadcastLocal => {
                for ep in registry.local_event_endpoints(event, groups, true, &selection) {
                    if let Some(sub) = &ep.handler {
                        picks.push((sub, &ep.name, filter.clone()));
                    }
                }
            }
        }
        let remote_sends = self.cluster.as_ref().and_then(|cluster| {
            let version = cluster.transit.version;
            let sends: Vec<(NodeId, EventPacket)> = remote
                .into_iter()
                .map(|(node, node_groups)| {
                    let packet = EventPacket {
                        id: Some(moleculer_core::node_id::generate_id()),
                        event: event.to_owned(),
                        data: payload.clone(),
                        groups: match kind {
                            EventType::Emit => Some(node_groups),
                            _ => opts.groups.clone(),
                        },
                        broadcast: kind == EventType::Broadcast,
                        meta: meta.clone(),
                        headers: version.has_headers().then(|| origin.headers.clone()),
                        level: Some(origin.level),
                        tracing: None,
                        parent_id: origin.parent_id.as_deref().map(str::to_owned),
                        request_id: origin.request_id.as_deref().map(str::to_owned),
                        caller: origin.caller.as_deref().map(str::to_owned),
                        need_ack: None,
                        ver: version.as_str().to_owned(),
                        sender: self.node_id.clone(),
                    };
                    (node, packet)
                })
                .collect();
            self.remote_events(sends)
        });
        let local = self.start_local_deliveries(picks, event, kind, payload, meta, &origin);
        drop(registry);
        let run = Self::join_sends(Some(local), remote_sends);
        async move {
            run.await;
            Ok(())
        }
    }

    /// Starts the local handlers of an event; the future runs them concurrently and logs their
    /// errors (events answer nothing).
    pub(crate) fn start_local_deliveries(
        &self,
        picks: Vec<(&LocalSubscription, &Arc<str>, EventGroups)>,
        event: &str,
        kind: EventType,
        payload: Value,
        meta: Meta,
        origin: &EventOrigin,
    ) -> BoxFuture<'static, ()> {
        let count = picks.len();
        // An exact subscription shares its name; only wildcard matches need a copy of it.
        let mut concrete: Option<Arc<str>> = None;
        let mut name_for = |pattern: &Arc<str>| -> Arc<str> {
            if **pattern == *event {
                pattern.clone()
            } else {
                concrete.get_or_insert_with(|| Arc::from(event)).clone()
            }
        };
        let (mut payload, mut meta) = (Some(payload), Some(meta));
        let mut first: Option<(Arc<str>, BoxFuture<'static, Result<()>>)> = None;
        let mut rest: Vec<BoxFuture<'static, Result<()>>> = Vec::new();
        for (i, (sub, pattern, groups)) in picks.into_iter().enumerate() {
            // The last delivery takes the payload and meta; the others get copies.
            let (params, meta) = if i + 1 == count {
                (
                    payload.take().unwrap_or_default(),
                    meta.take().unwrap_or_default(),
                )
            } else {
                (
                    payload.clone().unwrap_or_default(),
                    meta.clone().unwrap_or_default(),
                )
            };
            let name = name_for(pattern);
            let ctx = Context::new(ContextInit {
                target: sub.target.clone(),
                id: None,
                request_id: origin.request_id.clone(),
                parent_id: origin.parent_id.clone(),
                level: origin.level,
                caller: origin.caller.clone(),
                caller_node: origin.caller_node.clone(),
                event: Some(EventDelivery {
                    name: name.clone(),
                    kind,
                    groups,
                }),
                params,
                meta,
                headers: origin.headers.clone(),
                timeout: None,
                deadline: None,
            });
            let run = start_handler(|| (sub.handler)(ctx), event, &self.node_id);
            if first.is_none() {
                first = Some((name, run));
            } else {
                rest.push(run);
            }
        }
        Box::pin(async move {
            let Some((event, first)) = first else { return };
            let report = |result: std::thread::Result<Result<()>>| match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(event = %event, "event handler failed: {err}"),
                Err(payload) => {
                    tracing::error!(event = %event, "event handler panicked: {}", panic_message(&*payload));
                }
            };
            if rest.is_empty() {
                report(AssertUnwindSafe(first).catch_unwind().await);
            } else {
                rest.push(first);
                for result in
                    future::join_all(rest.into_iter().map(|r| AssertUnwindSafe(r).catch_unwind()))
                        .await
                {
                    report(result);
                }
            }
        })
    }
}

/// Where an event delivery comes from (its parent context, or the sending node).
pub(crate) struct EventOrigin {
    pub request_id: Option<Arc<str>>,
    pub parent_id: Option<Arc<str>>,
    pub level: u32,
    pub caller: Option<Arc<str>>,
    pub caller_node: Option<NodeId>,
    pub headers: Meta,
}

impl BrokerHandle for BrokerInner {
    fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    fn call(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: CallOptions,
    ) -> BoxFuture<'static, Result<Value>> {
        match &self.call_chain {
            Some(chain) => chain(CallRequest {
                action: action.to_owned(),
                params,
                options: opts,
                parent: parent.cloned(),
            }),
            None => Box::pin(self.call_impl(parent, action, params, opts)),
        }
    }

    fn send_event(
        &self,
        parent: Option<&Context>,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> BoxFuture<'static, Result<()>> {
        match &self.emit_chain {
            Some(chain) => chain(EmitRequest {
                event: event.to_owned(),
                payload,
                kind,
                options: opts,
                parent: parent.cloned(),
            }),
            None => Box::pin(self.send_event_impl(parent, kind, event, payload, opts)),
        }
    }
}
