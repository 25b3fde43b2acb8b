//! The service broker: owns the registry, runs calls and events, and drives the lifecycle.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::{self, BoxFuture, FutureExt};
use moleculer_core::context::{ContextInit, EventDelivery};
use moleculer_core::middleware::{
    ActionHandler, CallHandler, CallRequest, EmitHandler, EmitRequest, EventHandler,
};
use moleculer_core::service_info::ClientInfo;
use moleculer_core::{
    BrokerHandle, CallOptions, Context, EmitOptions, EventType, Meta, MoleculerError, NodeId,
    Result, SelectionContext,
};
use moleculer_registry::{LocalService, Miss, Node, Registry};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::error::BrokerError;
use crate::middleware_bridge::ErasedMiddleware;
use crate::options::BrokerOptions;
use crate::service::{BoundService, Runtime, Service, ServiceRuntime};

/// The registry as the broker holds it: local handlers are type-erased closures.
pub type BrokerRegistry = Registry<ActionHandler, EventHandler>;

/// An internal (`$`-prefixed) event, as seen on the local bus.
#[derive(Debug, Clone)]
pub struct LocalEvent {
    /// Event name, e.g. `$services.changed`.
    pub name: String,
    /// Payload.
    pub payload: Value,
}

const CREATED: u8 = 0;
const STARTING: u8 = 1;
const STARTED: u8 = 2;
const STOPPING: u8 = 3;
const STOPPED: u8 = 4;

struct ServiceEntry {
    full_name: String,
    runtime: Arc<dyn ServiceRuntime>,
    local: Arc<LocalService<ActionHandler, EventHandler>>,
    dependencies: Vec<String>,
    dependency_timeout: Option<u64>,
    dependency_interval: Option<u64>,
    started: bool,
}

pub(crate) struct BrokerInner {
    node_id: NodeId,
    instance_id: String,
    options: BrokerOptions,
    registry: RwLock<BrokerRegistry>,
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

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

impl ServiceBroker {
    /// A builder with Moleculer's default options.
    pub fn builder() -> crate::builder::ServiceBrokerBuilder {
        crate::builder::ServiceBrokerBuilder::default()
    }

    pub(crate) fn from_parts(
        options: BrokerOptions,
        middlewares: Vec<Arc<dyn ErasedMiddleware>>,
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
        let inner = Arc::new_cyclic(|weak: &Weak<BrokerInner>| {
            let call_chain = build_call_chain(weak.clone(), &middlewares);
            let emit_chain = build_emit_chain(weak.clone(), &middlewares);
            BrokerInner {
                node_id,
                instance_id,
                options,
                registry: RwLock::new(registry),
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
        f(&self.inner.registry.read())
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
                .registry
                .write()
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
        self.inner.registry.write().register_local_service(&local)?;
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
        {
            let mut registry = self.inner.registry.write();
            for (name, _, started) in &entries {
                if *started {
                    registry.unregister_local_service(name);
                }
            }
        }
        self.inner.changes.send_modify(|g| *g += 1);
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
    pub async fn call(&self, action: &str, params: Value) -> Result<Value> {
        self.call_with(action, params, CallOptions::default()).await
    }

    /// Calls an action with options (timeout, target node, meta).
    pub async fn call_with(&self, action: &str, params: Value, opts: CallOptions) -> Result<Value> {
        match &self.inner.call_chain {
            Some(chain) => {
                chain(CallRequest {
                    action: action.to_owned(),
                    params,
                    options: opts,
                    parent: None,
                })
                .await
            }
            None => {
                self.inner
                    .call_impl(self.handle(), None, action, params, opts)
                    .await
            }
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

    /// Emits a balanced event: one handler per group receives it.
    pub async fn emit(&self, event: &str, payload: Value) -> Result<()> {
        self.send_event(EventType::Emit, event, payload, EmitOptions::default())
            .await
    }

    /// Emits a balanced event with options (groups, meta).
    pub async fn emit_with(&self, event: &str, payload: Value, opts: EmitOptions) -> Result<()> {
        self.send_event(EventType::Emit, event, payload, opts).await
    }

    /// Sends an event to every handler in the cluster.
    pub async fn broadcast(&self, event: &str, payload: Value) -> Result<()> {
        self.send_event(EventType::Broadcast, event, payload, EmitOptions::default())
            .await
    }

    /// Broadcast with options (groups, meta).
    pub async fn broadcast_with(
        &self,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> Result<()> {
        self.send_event(EventType::Broadcast, event, payload, opts)
            .await
    }

    /// Sends an event to every handler on this node only.
    pub async fn broadcast_local(&self, event: &str, payload: Value) -> Result<()> {
        self.send_event(
            EventType::BroadcastLocal,
            event,
            payload,
            EmitOptions::default(),
        )
        .await
    }

    async fn send_event(
        &self,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> Result<()> {
        match &self.inner.emit_chain {
            Some(chain) => {
                chain(EmitRequest {
                    event: event.to_owned(),
                    payload,
                    kind,
                    options: opts,
                    parent: None,
                })
                .await
            }
            None => {
                self.inner
                    .send_event_impl(self.handle(), None, kind, event, payload, opts)
                    .await
            }
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
                let registry = self.inner.registry.read();
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

    fn handle(&self) -> Arc<dyn BrokerHandle> {
        self.inner.clone()
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
            let handle = req.parent.as_ref().map_or_else(
                || inner.clone() as Arc<dyn BrokerHandle>,
                |p| p.broker().clone(),
            );
            Box::pin(inner.call_impl(
                handle,
                req.parent.as_ref(),
                &req.action,
                req.params,
                req.options,
            ))
        },
    );
    let chain = middlewares
        .iter()
        .fold(base.clone(), |next, mw| mw.call(next));
    // No middleware hooks `call`: skip the chain (and its allocations) on every call.
    (!Arc::ptr_eq(&chain, &base)).then_some(chain)
}

fn build_emit_chain(
    weak: Weak<BrokerInner>,
    middlewares: &[Arc<dyn ErasedMiddleware>],
) -> Option<EmitHandler> {
    let base: EmitHandler = Arc::new(move |req: EmitRequest| -> BoxFuture<'static, Result<()>> {
        let Some(inner) = weak.upgrade() else {
            return Box::pin(future::ready(Err(MoleculerError::broker_disconnected())));
        };
        let handle = req.parent.as_ref().map_or_else(
            || inner.clone() as Arc<dyn BrokerHandle>,
            |p| p.broker().clone(),
        );
        Box::pin(inner.send_event_impl(
            handle,
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

/// Runs a handler so that a panic, early or late, becomes an error reply.
fn guarded<T: Send + 'static>(
    run: impl FnOnce() -> BoxFuture<'static, Result<T>>,
    what: &str,
    node: &NodeId,
) -> impl Future<Output = Result<T>> + Send + 'static {
    let started = std::panic::catch_unwind(AssertUnwindSafe(run));
    let (what, node) = (what.to_owned(), node.clone());
    async move {
        let fut = started
            .map_err(|p| MoleculerError::handler_panicked(&what, &node, &panic_message(&*p)))?;
        match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(result) => result,
            Err(p) => {
                let message = panic_message(&*p);
                tracing::error!(handler = %what, "handler panicked: {message}");
                Err(MoleculerError::handler_panicked(&what, &node, &message))
            }
        }
    }
}

struct PreparedCall {
    handler: ActionHandler,
    ctx: Context,
    timeout: Option<Duration>,
    parent: Option<Context>,
}

impl BrokerInner {
    pub(crate) fn registry(&self) -> &RwLock<BrokerRegistry> {
        &self.registry
    }

    pub(crate) fn options(&self) -> &BrokerOptions {
        &self.options
    }

    pub(crate) fn uptime(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    fn entry_for(&self, bound: BoundService, runtime: Arc<dyn ServiceRuntime>) -> ServiceEntry {
        let mut actions = HashMap::new();
        for (info, handler) in bound.actions {
            let wrapped = self
                .middlewares
                .iter()
                .fold(handler, |next, mw| mw.local_action(next, &info));
            actions.insert(info.name.clone(), wrapped);
        }
        let mut events = HashMap::new();
        for (info, handler) in bound.events {
            let wrapped = self
                .middlewares
                .iter()
                .fold(handler, |next, mw| mw.local_event(next, &info));
            events.insert(info.name.clone(), wrapped);
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

    /// Signals a registry change to waiters and emits `$services.changed`.
    async fn services_changed(&self, local_service: bool) {
        self.changes.send_modify(|g| *g += 1);
        self.emit_internal(
            "$services.changed",
            json!({ "localService": local_service }),
        )
        .await;
    }

    /// Emits an internal event to local handlers and the local bus.
    pub(crate) async fn emit_internal(&self, name: &str, payload: Value) {
        let Some(me) = self.weak.upgrade() else {
            return;
        };
        let _ = self
            .send_event_impl(
                me,
                None,
                EventType::BroadcastLocal,
                name,
                payload,
                EmitOptions::default(),
            )
            .await;
    }

    fn prepare_call(
        &self,
        handle: Arc<dyn BrokerHandle>,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: CallOptions,
    ) -> Result<PreparedCall> {
        let level = parent.map_or(1, |p| p.level() + 1);
        let max = self.options.max_call_level;
        if max > 0 && level > max {
            return Err(MoleculerError::max_call_level(&self.node_id, level - 1));
        }
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = opts.meta {
            meta.extend(extra);
        }
        let (handler, service, name, action_timeout) = {
            let registry = self.registry.read();
            let selection = SelectionContext {
                params: &params,
                meta: &meta,
            };
            let endpoint = match &opts.node_id {
                Some(node) => registry
                    .action_endpoint_on_node(action, node)
                    .map_err(|_| MoleculerError::service_not_found(action, Some(node)))?,
                None => registry.next_action_endpoint(action, &selection).map_err(
                    |miss| match miss {
                        Miss::NotFound => MoleculerError::service_not_found(action, None),
                        Miss::NotAvailable => MoleculerError::service_not_available(action, None),
                    },
                )?,
            };
            let Some(handler) = endpoint.handler.clone() else {
                // Remote endpoints need a transporter; without one this node cannot reach them.
                return Err(MoleculerError::service_not_available(
                    action,
                    Some(&endpoint.node_id),
                ));
            };
            (
                handler,
                endpoint.service.clone(),
                endpoint.name.clone(),
                endpoint.info.timeout,
            )
        };
        let mut timeout = opts
            .timeout
            .or(action_timeout.map(Duration::from_millis))
            .or(self.request_timeout);
        if let Some(parent_deadline) = parent.and_then(Context::deadline) {
            let now = Instant::now();
            if parent_deadline <= now {
                return Err(MoleculerError::request_skipped(action, &self.node_id));
            }
            let remaining = parent_deadline - now;
            timeout = Some(timeout.map_or(remaining, |t| t.min(remaining)));
        }
        let ctx = Context::new(ContextInit {
            broker: handle,
            id: None,
            request_id: parent.map(|p| p.request_id().clone()),
            parent_id: parent.map(|p| p.id().clone()),
            level,
            caller: parent.and_then(|p| p.service_arc().cloned()),
            node_id: self.node_id.clone(),
            service: Some(service),
            action: Some(name),
            event: None,
            params,
            meta,
            headers: opts.headers.unwrap_or_default(),
            timeout,
            deadline: timeout.map(|t| Instant::now() + t),
        });
        Ok(PreparedCall {
            handler,
            ctx,
            timeout,
            parent: parent.cloned(),
        })
    }

    pub(crate) fn call_impl(
        &self,
        handle: Arc<dyn BrokerHandle>,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: CallOptions,
    ) -> impl Future<Output = Result<Value>> + Send + 'static {
        let prepared = self.prepare_call(handle, parent, action, params, opts);
        let node_id = self.node_id.clone();
        async move {
            let PreparedCall {
                handler,
                ctx,
                timeout,
                parent,
            } = prepared?;
            let name = ctx.action().unwrap_or_default().to_owned();
            let child = ctx.clone();
            let run = guarded(move || handler(ctx), &name, &node_id);
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, run)
                    .await
                    .unwrap_or_else(|_| Err(MoleculerError::request_timeout(&name, &node_id))),
                None => run.await,
            };
            if let Some(parent) = parent {
                parent.merge_meta(child.meta());
            }
            result
        }
    }

    pub(crate) fn send_event_impl(
        &self,
        handle: Arc<dyn BrokerHandle>,
        parent: Option<&Context>,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = opts.meta {
            meta.extend(extra);
        }
        let groups = opts.groups.as_deref();
        let mut deliveries: Vec<(EventHandler, Arc<str>, Vec<Arc<str>>)> = Vec::new();
        {
            let registry = self.registry.read();
            let selection = SelectionContext {
                params: &payload,
                meta: &meta,
            };
            let all_groups = || {
                groups
                    .map(|g| g.iter().map(|s| Arc::from(s.as_str())).collect())
                    .unwrap_or_default()
            };
            match kind {
                EventType::Emit => {
                    for (ep, group) in registry.balanced_event_endpoints(event, groups, &selection)
                    {
                        if let Some(h) = &ep.handler {
                            deliveries.push((h.clone(), ep.service.clone(), vec![group.clone()]));
                        }
                    }
                }
                EventType::Broadcast => {
                    for ep in registry.all_event_endpoints(event, groups) {
                        if let Some(h) = &ep.handler {
                            deliveries.push((h.clone(), ep.service.clone(), all_groups()));
                        }
                    }
                }
                EventType::BroadcastLocal => {
                    for ep in registry.local_event_endpoints(event, groups, true, &selection) {
                        if let Some(h) = &ep.handler {
                            deliveries.push((h.clone(), ep.service.clone(), all_groups()));
                        }
                    }
                }
            }
        }
        if event.starts_with('$') {
            let _ = self.local_bus.send(LocalEvent {
                name: event.to_owned(),
                payload: payload.clone(),
            });
        }
        let name: Arc<str> = Arc::from(event);
        let level = parent.map_or(1, |p| p.level() + 1);
        let request_id = parent.map(|p| p.request_id().clone());
        let parent_id = parent.map(|p| p.id().clone());
        let caller = parent.and_then(|p| p.service_arc().cloned());
        let headers = opts.headers.unwrap_or_default();
        let node_id = self.node_id.clone();
        let mut runs = Vec::with_capacity(deliveries.len());
        let count = deliveries.len();
        let (mut payload, mut meta) = (Some(payload), Some(meta));
        for (i, (handler, service, groups)) in deliveries.into_iter().enumerate() {
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
            let ctx = Context::new(ContextInit {
                broker: handle.clone(),
                id: None,
                request_id: request_id.clone(),
                parent_id: parent_id.clone(),
                level,
                caller: caller.clone(),
                node_id: node_id.clone(),
                service: Some(service),
                action: None,
                event: Some(EventDelivery {
                    name: name.clone(),
                    kind,
                    groups,
                }),
                params,
                meta,
                headers: headers.clone(),
                timeout: None,
                deadline: None,
            });
            runs.push(guarded(move || handler(ctx), event, &node_id));
        }
        let event = name;
        async move {
            let results = match runs.len() {
                0 => return Ok(()),
                1 => vec![runs.pop().expect("one run").await],
                _ => future::join_all(runs).await,
            };
            for err in results.into_iter().filter_map(Result::err) {
                tracing::error!(event = %event, "event handler failed: {err}");
            }
            Ok(())
        }
    }
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
        if let Some(chain) = &self.call_chain {
            return chain(CallRequest {
                action: action.to_owned(),
                params,
                options: opts,
                parent: parent.cloned(),
            });
        }
        let handle = match parent {
            Some(p) => p.broker().clone(),
            None => match self.weak.upgrade() {
                Some(me) => me,
                None => return Box::pin(future::ready(Err(MoleculerError::broker_disconnected()))),
            },
        };
        Box::pin(self.call_impl(handle, parent, action, params, opts))
    }

    fn send_event(
        &self,
        parent: Option<&Context>,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> BoxFuture<'static, Result<()>> {
        if let Some(chain) = &self.emit_chain {
            return chain(EmitRequest {
                event: event.to_owned(),
                payload,
                kind,
                options: opts,
                parent: parent.cloned(),
            });
        }
        let handle = match parent {
            Some(p) => p.broker().clone(),
            None => match self.weak.upgrade() {
                Some(me) => me,
                None => return Box::pin(future::ready(Err(MoleculerError::broker_disconnected()))),
            },
        };
        Box::pin(self.send_event_impl(handle, parent, kind, event, payload, opts))
    }
}
