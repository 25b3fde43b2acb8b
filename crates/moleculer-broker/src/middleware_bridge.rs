//! The object-safe bridge that lets the broker hold middlewares written with `async fn`.

use futures::future::BoxFuture;
use moleculer_core::middleware::{
    ActionHandler, CallHandler, EmitHandler, EventHandler, Middleware,
};
use moleculer_core::service_info::{ActionInfo, EventInfo};
use moleculer_core::{NodeId, Result};

pub(crate) trait ErasedMiddleware: Send + Sync {
    fn name(&self) -> &str;
    fn call(&self, next: CallHandler) -> CallHandler;
    fn local_action(&self, next: ActionHandler, action: &ActionInfo) -> ActionHandler;
    fn remote_action(&self, next: ActionHandler, action: &ActionInfo) -> ActionHandler;
    fn emit(&self, next: EmitHandler) -> EmitHandler;
    fn local_event(&self, next: EventHandler, event: &EventInfo) -> EventHandler;
    fn started<'a>(&'a self, node_id: &'a NodeId) -> BoxFuture<'a, Result<()>>;
    fn stopped<'a>(&'a self, node_id: &'a NodeId) -> BoxFuture<'a, Result<()>>;
}

impl<M: Middleware> ErasedMiddleware for M {
    fn name(&self) -> &str {
        Middleware::name(self)
    }
    fn call(&self, next: CallHandler) -> CallHandler {
        Middleware::call(self, next)
    }
    fn local_action(&self, next: ActionHandler, action: &ActionInfo) -> ActionHandler {
        Middleware::local_action(self, next, action)
    }
    fn remote_action(&self, next: ActionHandler, action: &ActionInfo) -> ActionHandler {
        Middleware::remote_action(self, next, action)
    }
    fn emit(&self, next: EmitHandler) -> EmitHandler {
        Middleware::emit(self, next)
    }
    fn local_event(&self, next: EventHandler, event: &EventInfo) -> EventHandler {
        Middleware::local_event(self, next, event)
    }
    fn started<'a>(&'a self, node_id: &'a NodeId) -> BoxFuture<'a, Result<()>> {
        Box::pin(Middleware::started(self, node_id))
    }
    fn stopped<'a>(&'a self, node_id: &'a NodeId) -> BoxFuture<'a, Result<()>> {
        Box::pin(Middleware::stopped(self, node_id))
    }
}
