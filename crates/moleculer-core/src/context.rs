//! The request context every handler receives, and the broker handle it calls through.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use crate::bulkhead::Bulkhead;
use crate::call_meter::CallMeter;
use crate::endpoint_breaker::EndpointBreaker;
use crate::error::{MoleculerError, Result};
use crate::fault_tolerance::RetryPlan;
use crate::in_flight::InFlight;
use crate::node_id::{generate_shared_id, NodeId};

pub use crate::call_options::{CallOptions, EmitOptions, Fallback, FallbackFn, Meta};
pub use crate::event_delivery::{EventDelivery, EventGroups, EventType};

/// The operations a [`Context`] needs from its broker. The broker implements it; backends and
/// middlewares only ever see this trait.
pub trait BrokerHandle: Send + Sync + 'static {
    /// This broker's node id.
    fn node_id(&self) -> &NodeId;

    /// Calls an action as a child of `parent` (or as a root call).
    fn call(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> BoxFuture<'static, Result<Value>>;

    /// The nodes with an available endpoint of `action` (this one included), for calls that
    /// reach each of them.
    fn action_nodes(&self, action: &str) -> Vec<NodeId>;

    /// Whether the broker's retry policy retries `err` (Moleculer's `retryPolicy.check`; by
    /// default, whether the error is marked retryable).
    fn is_retryable(&self, err: &MoleculerError) -> bool {
        err.retryable
    }

    /// Sends an event as a child of `parent` (or as a root emission).
    fn send_event(
        &self,
        parent: Option<&Context>,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> BoxFuture<'static, Result<()>>;
}

/// What every context of one endpoint shares: the broker, the local node, the service and the
/// action. Built once per endpoint, so creating a context copies one pointer, not four.
pub struct ContextTarget {
    /// The broker that runs the endpoint (weak: contexts must not keep a stopped broker alive).
    pub broker: Weak<dyn BrokerHandle>,
    /// The node that runs the endpoint.
    pub local_node: NodeId,
    /// Full name of the service.
    pub service: Arc<str>,
    /// Full action name, for actions.
    pub action: Option<Arc<str>>,
    /// Where the broker counts work in progress (for its graceful stop), if it does.
    pub tracker: Option<Arc<InFlight>>,
    /// The endpoint's bulkhead, when it has one (the node that runs it admits each request).
    pub bulkhead: Option<Arc<Bulkhead>>,
    /// The calling node's circuit breaker for this endpoint, when it keeps one.
    pub breaker: Option<Arc<EndpointBreaker>>,
    /// How the calling node retries a failed call to this endpoint (the action's policy over
    /// the caller's), when retries are on for it and the call sets nothing of its own.
    pub retry: Option<RetryPlan>,
    /// What counts and times the endpoint's calls (the broker's metrics), when on.
    pub meter: Option<Arc<dyn CallMeter>>,
}

impl std::fmt::Debug for ContextTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextTarget")
            .field("local_node", &self.local_node)
            .field("service", &self.service)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// Where a context comes from: the request it belongs to and who asked for it. A broker
/// builds it once per shape: [`Origin::child_of`] for calls and events made on this node, and
/// from the packet's fields for requests and events from other nodes.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Root request id; the new context's own id when `None`.
    pub request_id: Option<Arc<str>>,
    /// The asking context's id.
    pub parent_id: Option<Arc<str>>,
    /// Call depth of the new context: 1 for a root call.
    pub level: u32,
    /// Full name of the asking service.
    pub caller: Option<Arc<str>>,
    /// The node that asked; `None` for this node.
    pub caller_node: Option<NodeId>,
    /// Whether the request is traced (Moleculer's `tracing` packet field): `None` until a
    /// tracer decides, then inherited by every nested call and event.
    pub tracing: Option<bool>,
}

impl Origin {
    /// A root call or event made on this node (`None`), or one made from `parent`'s handler:
    /// same request id, one level deeper, `parent`'s service as the caller.
    #[inline]
    pub fn child_of(parent: Option<&Context>) -> Self {
        match parent {
            None => Origin {
                level: 1,
                ..Origin::default()
            },
            Some(p) => Origin {
                request_id: Some(p.request_id().clone()),
                parent_id: Some(p.id().clone()),
                level: p.level() + 1,
                caller: Some(p.service_arc().clone()),
                caller_node: None,
                tracing: p.tracing(),
            },
        }
    }

    /// The same origin, as seen by a node that `node` asked.
    #[must_use]
    #[inline]
    pub fn from_node(mut self, node: NodeId) -> Self {
        self.caller_node = Some(node);
        self
    }
}

const UNDECIDED: u8 = 0;
const NOT_TRACED: u8 = 1;
const TRACED: u8 = 2;

struct ContextInner {
    target: Arc<ContextTarget>,
    id: OnceLock<Arc<str>>,
    request_id: Option<Arc<str>>,
    parent_id: Option<Arc<str>>,
    level: u32,
    caller: Option<Arc<str>>,
    caller_node: Option<NodeId>,
    /// Moleculer's `tracing` flag: [`UNDECIDED`], [`NOT_TRACED`] or [`TRACED`].
    tracing: AtomicU8,
    event: Option<EventDelivery>,
    params: Value,
    meta: Mutex<Meta>,
    headers: Meta,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// Whether the answer came from the cache (Moleculer's `ctx.cachedResult`).
    cached_result: AtomicBool,
    /// When a meter started timing the call, if it times this one.
    timed_at: OnceLock<Instant>,
}

/// The context of one action call or event delivery: params, meta, ids, call depth and the
/// means to make nested calls (`ctx.call`, `ctx.emit`, `ctx.broadcast`).
///
/// Cheap to clone (a shared handle). Meta changes made by a nested call merge back into this
/// context when the nested call returns.
#[derive(Clone)]
pub struct Context(Arc<ContextInner>);

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id())
            .field("level", &self.0.level)
            .field("node_id", self.node_id())
            .field("action", &self.0.target.action)
            .field("event", &self.0.event)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The context of an action call. Its deadline is `timeout` from now; `id` is the
    /// request's id for a call from another node, and generated on first use otherwise.
    #[inline]
    pub fn for_call(
        target: Arc<ContextTarget>,
        id: Option<Arc<str>>,
        origin: Origin,
        params: Value,
        meta: Meta,
        headers: Meta,
        timeout: Option<Duration>,
    ) -> Self {
        let deadline = timeout.map(|t| Instant::now() + t);
        Self::build(
            target, id, origin, None, params, meta, headers, timeout, deadline,
        )
    }

    /// The context of one event delivery (events have no timeout).
    #[inline]
    pub fn for_event(
        target: Arc<ContextTarget>,
        origin: Origin,
        event: EventDelivery,
        payload: Value,
        meta: Meta,
        headers: Meta,
    ) -> Self {
        Self::build(
            target,
            None,
            origin,
            Some(event),
            payload,
            meta,
            headers,
            None,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn build(
        target: Arc<ContextTarget>,
        given_id: Option<Arc<str>>,
        origin: Origin,
        event: Option<EventDelivery>,
        params: Value,
        meta: Meta,
        headers: Meta,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Self {
        let id = OnceLock::new();
        if let Some(given) = given_id {
            let _ = id.set(given);
        }
        Context(Arc::new(ContextInner {
            target,
            id,
            request_id: origin.request_id,
            parent_id: origin.parent_id,
            level: origin.level,
            caller: origin.caller,
            caller_node: origin.caller_node,
            tracing: AtomicU8::new(match origin.tracing {
                None => UNDECIDED,
                Some(false) => NOT_TRACED,
                Some(true) => TRACED,
            }),
            event,
            params,
            meta: Mutex::new(meta),
            headers,
            timeout,
            deadline,
            cached_result: AtomicBool::new(false),
            timed_at: OnceLock::new(),
        }))
    }

    /// Whether this request is traced (`None`: no tracer has decided).
    pub fn tracing(&self) -> Option<bool> {
        match self.0.tracing.load(Ordering::Relaxed) {
            TRACED => Some(true),
            NOT_TRACED => Some(false),
            _ => None,
        }
    }

    /// Decides whether this request is traced, unless a caller already did; returns the
    /// decision in force. Nested calls and events made afterwards inherit it.
    pub fn decide_tracing(&self, traced: bool) -> bool {
        let want = if traced { TRACED } else { NOT_TRACED };
        match self
            .0
            .tracing
            .compare_exchange(UNDECIDED, want, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => traced,
            Err(decided) => decided == TRACED,
        }
    }

    /// Starts timing the call (for the calls its endpoint's [`CallMeter`] times).
    pub fn start_timing(&self) {
        let _ = self.0.timed_at.set(Instant::now());
    }

    /// When timing started, if the call is timed.
    pub fn timed_at(&self) -> Option<Instant> {
        self.0.timed_at.get().copied()
    }

    /// The context id (generated on first use).
    pub fn id(&self) -> &Arc<str> {
        self.0.id.get_or_init(generate_shared_id)
    }

    /// The id of the root request this context belongs to.
    pub fn request_id(&self) -> &Arc<str> {
        self.0.request_id.as_ref().unwrap_or_else(|| self.id())
    }

    /// The parent context's id, for nested calls.
    pub fn parent_id(&self) -> Option<&str> {
        self.0.parent_id.as_deref()
    }

    /// Call depth: 1 for a root call.
    pub fn level(&self) -> u32 {
        self.0.level
    }

    /// Full name of the calling service, if the call came from a service.
    pub fn caller(&self) -> Option<&str> {
        self.0.caller.as_deref()
    }

    /// The node the request came from.
    pub fn node_id(&self) -> &NodeId {
        self.0
            .caller_node
            .as_ref()
            .unwrap_or(&self.0.target.local_node)
    }

    /// The node that runs this context.
    pub fn local_node_id(&self) -> &NodeId {
        &self.0.target.local_node
    }

    /// Full name of the service handling this context.
    pub fn service(&self) -> &str {
        &self.0.target.service
    }

    /// Full name of the handling service, shared (no copy).
    pub fn service_arc(&self) -> &Arc<str> {
        &self.0.target.service
    }

    /// Where work on this context's endpoint is counted, if it is.
    pub fn tracker(&self) -> Option<&Arc<InFlight>> {
        self.0.target.tracker.as_ref()
    }

    /// The shared description of this context's endpoint.
    pub fn target(&self) -> &Arc<ContextTarget> {
        &self.0.target
    }

    /// The broker running this context, unless it is gone.
    pub fn broker(&self) -> Option<Arc<dyn BrokerHandle>> {
        self.0.target.broker.upgrade()
    }

    /// The action being called, for action contexts.
    pub fn action(&self) -> Option<&str> {
        self.0.target.action.as_deref()
    }

    /// The event being delivered, for event contexts.
    pub fn event(&self) -> Option<&EventDelivery> {
        self.0.event.as_ref()
    }

    /// The concrete event name, for event contexts.
    pub fn event_name(&self) -> Option<&str> {
        self.0.event.as_ref().map(|e| &*e.name)
    }

    /// Params of the call, or the payload of the event.
    pub fn params(&self) -> &Value {
        &self.0.params
    }

    /// Params deserialized into `T`; a mismatch is a `ValidationError` (422) naming the field.
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T> {
        deserialize_params(&self.0.params)
    }

    /// A copy of the meta.
    pub fn meta(&self) -> Meta {
        self.0.meta.lock().clone()
    }

    /// Takes the meta out, leaving it empty (what a finished nested call hands to its parent).
    pub fn take_meta(&self) -> Meta {
        std::mem::take(&mut *self.0.meta.lock())
    }

    /// One meta value.
    pub fn meta_get(&self, key: &str) -> Option<Value> {
        self.0.meta.lock().get(key).cloned()
    }

    /// Sets one meta value; it travels back to the caller.
    pub fn set_meta(&self, key: impl Into<String>, value: Value) {
        self.0.meta.lock().insert(key.into(), value);
    }

    /// Runs `f` with the meta locked (do not await inside).
    pub fn with_meta<R>(&self, f: impl FnOnce(&mut Meta) -> R) -> R {
        f(&mut self.0.meta.lock())
    }

    /// Merges `other` into this context's meta (what a finished nested call does).
    pub fn merge_meta(&self, other: Meta) {
        if !other.is_empty() {
            self.0.meta.lock().extend(other);
        }
    }

    /// Protocol-5 headers.
    pub fn headers(&self) -> &Meta {
        &self.0.headers
    }

    /// The timeout that applies to this request, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.0.timeout
    }

    /// When this request's time runs out, if it has a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    pub(crate) fn handle(&self) -> Result<Arc<dyn BrokerHandle>> {
        self.broker()
            .ok_or_else(MoleculerError::broker_disconnected)
    }

    /// Whether the answer to this call came from the cache (Moleculer's `ctx.cachedResult`).
    pub fn cached_result(&self) -> bool {
        self.0.cached_result.load(Ordering::Relaxed)
    }

    /// Marks the answer to this call as served from the cache.
    pub fn set_cached_result(&self) {
        self.0.cached_result.store(true, Ordering::Relaxed);
    }

    /// Calls an action as a child of this context.
    pub async fn call(&self, action: &str, params: Value) -> Result<Value> {
        self.handle()?
            .call(Some(self), action, params, CallOptions::none())
            .await
    }

    /// Calls an action with options as a child of this context.
    pub async fn call_with(&self, action: &str, params: Value, opts: CallOptions) -> Result<Value> {
        self.handle()?.call(Some(self), action, params, &opts).await
    }

    /// Emits a balanced event (one handler per group) as a child of this context.
    pub async fn emit(&self, event: &str, payload: Value) -> Result<()> {
        self.handle()?
            .send_event(
                Some(self),
                EventType::Emit,
                event,
                payload,
                EmitOptions::default(),
            )
            .await
    }

    /// Emits a balanced event with options.
    pub async fn emit_with(&self, event: &str, payload: Value, opts: EmitOptions) -> Result<()> {
        self.handle()?
            .send_event(Some(self), EventType::Emit, event, payload, opts)
            .await
    }

    /// Broadcasts an event to every handler in the cluster.
    pub async fn broadcast(&self, event: &str, payload: Value) -> Result<()> {
        self.handle()?
            .send_event(
                Some(self),
                EventType::Broadcast,
                event,
                payload,
                EmitOptions::default(),
            )
            .await
    }

    /// Broadcasts an event to every handler on this node.
    pub async fn broadcast_local(&self, event: &str, payload: Value) -> Result<()> {
        self.handle()?
            .send_event(
                Some(self),
                EventType::BroadcastLocal,
                event,
                payload,
                EmitOptions::default(),
            )
            .await
    }
}

/// Deserializes params into `T`, turning a mismatch into a `ValidationError` that names the
/// offending field path and the reason.
pub fn deserialize_params<T: DeserializeOwned>(params: &Value) -> Result<T> {
    // The fast path first; the path-tracking pass runs only to explain a failure.
    if let Ok(value) = T::deserialize(params) {
        return Ok(value);
    }
    serde_path_to_error::deserialize(params).map_err(|err| {
        let path = err.path().to_string();
        let reason = err.into_inner().to_string();
        let field = if path == "." { None } else { Some(path) };
        let message = match &field {
            Some(f) => format!("Parameters validation error: field '{f}': {reason}"),
            None => format!("Parameters validation error: {reason}"),
        };
        MoleculerError::validation(
            message,
            serde_json::json!([{ "field": field, "message": reason }]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Add {
        a: i64,
        b: i64,
    }

    #[test]
    fn bad_params_name_the_field_and_the_reason() {
        let err = deserialize_params::<Add>(&json!({"a": 1, "b": "two"})).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(err.name, "ValidationError");
        assert!(err.message.contains("field 'b'"), "{}", err.message);
        assert!(err.message.contains("invalid type"), "{}", err.message);
        assert_eq!(err.data[0]["field"], json!("b"));
    }

    #[test]
    fn missing_field_is_named() {
        let err = deserialize_params::<Add>(&json!({"a": 1})).unwrap_err();
        assert!(err.message.contains("missing field `b`"), "{}", err.message);
    }
}
