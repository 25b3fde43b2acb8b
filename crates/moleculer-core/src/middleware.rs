//! Middlewares: hooks that wrap handlers once, when they are registered, not on every call.
//!
//! Every hook defaults to pass-through, so a middleware implements only what it needs. Wrapped
//! handlers are built at registration time; a broker with no middleware pays nothing per call.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::context::{CallOptions, Context, EmitOptions, EventType};
use crate::error::Result;
use crate::node_id::NodeId;
use crate::service_info::{ActionInfo, EventInfo};

/// A type-erased action handler: takes the context, returns the reply.
pub type ActionHandler = Arc<dyn Fn(Context) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

/// A type-erased event handler.
pub type EventHandler = Arc<dyn Fn(Context) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// An outgoing call as seen by the `call` hook.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// Action name.
    pub action: String,
    /// Params.
    pub params: Value,
    /// Options.
    pub options: CallOptions,
    /// The calling context, for nested calls.
    pub parent: Option<Context>,
}

/// The `call` pipeline: what `broker.call` and `ctx.call` run.
pub type CallHandler = Arc<dyn Fn(CallRequest) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

/// An outgoing event as seen by the `emit` hook.
#[derive(Debug, Clone)]
pub struct EmitRequest {
    /// Event name.
    pub event: String,
    /// Payload.
    pub payload: Value,
    /// How it is sent.
    pub kind: EventType,
    /// Options.
    pub options: EmitOptions,
    /// The emitting context, for events sent from a handler.
    pub parent: Option<Context>,
}

/// The `emit` pipeline: what `emit`, `broadcast` and `broadcast_local` run.
pub type EmitHandler = Arc<dyn Fn(EmitRequest) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// A broker middleware. All hooks are optional.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use moleculer_core::middleware::{ActionHandler, Middleware};
/// use moleculer_core::service_info::ActionInfo;
///
/// /// Counts local action invocations.
/// #[derive(Default)]
/// struct Counter(Arc<AtomicUsize>);
///
/// impl Middleware for Counter {
///     fn local_action(&self, next: ActionHandler, _action: &ActionInfo) -> ActionHandler {
///         let count = self.0.clone();
///         Arc::new(move |ctx| {
///             count.fetch_add(1, Ordering::Relaxed);
///             next(ctx)
///         })
///     }
/// }
/// ```
pub trait Middleware: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &str {
        "middleware"
    }

    /// Wraps every outgoing call (`broker.call`, `ctx.call`).
    fn call(&self, next: CallHandler) -> CallHandler {
        next
    }

    /// Wraps the handler of a local action.
    fn local_action(&self, next: ActionHandler, _action: &ActionInfo) -> ActionHandler {
        next
    }

    /// Wraps the sender of a call to a remote action.
    fn remote_action(&self, next: ActionHandler, _action: &ActionInfo) -> ActionHandler {
        next
    }

    /// Wraps every outgoing event (`emit`, `broadcast`, `broadcast_local`).
    fn emit(&self, next: EmitHandler) -> EmitHandler {
        next
    }

    /// Wraps the handler of a local event subscription.
    fn local_event(&self, next: EventHandler, _event: &EventInfo) -> EventHandler {
        next
    }

    /// Runs when the broker has started.
    fn started(&self, _node_id: &NodeId) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Runs when the broker has stopped.
    fn stopped(&self, _node_id: &NodeId) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}
