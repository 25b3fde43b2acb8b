//! The middleware pipeline: every hook of every middleware, folded over the handler it wraps
//! once, when the handler is registered (or, for remote actions, on first use), never per call.

use std::sync::Arc;

use dashmap::DashMap;
use futures::future;
use moleculer_core::middleware::{ActionHandler, CallHandler, EmitHandler, EventHandler};
use moleculer_core::service_info::{ActionInfo, EventInfo};
use moleculer_core::NodeId;
use serde_json::Value;

use crate::middleware_bridge::ErasedMiddleware;

/// The broker's middlewares, applied in the order added, the last added outermost.
pub(crate) struct MiddlewareChain {
    list: Vec<Arc<dyn ErasedMiddleware>>,
    /// The `call` pipeline, when a middleware hooks it.
    call: Option<CallHandler>,
    /// The `emit` pipeline, when a middleware hooks it.
    emit: Option<EmitHandler>,
    /// Whether a middleware wraps remote actions; when none does, remote calls go straight to
    /// transit.
    hooks_remote: bool,
    /// Remote-action chains, built on first use per action.
    remote: DashMap<Arc<str>, ActionHandler>,
}

impl MiddlewareChain {
    /// Folds the middlewares over the innermost `call` and `emit` handlers.
    pub fn new(
        list: Vec<Arc<dyn ErasedMiddleware>>,
        call_base: CallHandler,
        emit_base: EmitHandler,
    ) -> Self {
        let call = list
            .iter()
            .fold(call_base.clone(), |next, mw| mw.call(next));
        let emit = list
            .iter()
            .fold(emit_base.clone(), |next, mw| mw.emit(next));
        let probe: ActionHandler = Arc::new(|_ctx| Box::pin(future::ready(Ok(Value::Null))));
        let info = ActionInfo::default();
        let hooks_remote = list
            .iter()
            .any(|mw| !Arc::ptr_eq(&mw.remote_action(probe.clone(), &info), &probe));
        Self {
            // A pipeline nobody hooks is skipped entirely, with its allocations.
            call: (!Arc::ptr_eq(&call, &call_base)).then_some(call),
            emit: (!Arc::ptr_eq(&emit, &emit_base)).then_some(emit),
            list,
            hooks_remote,
            remote: DashMap::new(),
        }
    }

    /// The `call` pipeline, if any middleware hooks it.
    pub fn call_chain(&self) -> Option<&CallHandler> {
        self.call.as_ref()
    }

    /// The `emit` pipeline, if any middleware hooks it.
    pub fn emit_chain(&self) -> Option<&EmitHandler> {
        self.emit.as_ref()
    }

    /// A local action's handler, wrapped.
    pub fn local_action(&self, handler: ActionHandler, info: &ActionInfo) -> ActionHandler {
        self.list
            .iter()
            .fold(handler, |next, mw| mw.local_action(next, info))
    }

    /// A local event handler, wrapped.
    pub fn local_event(&self, handler: EventHandler, info: &EventInfo) -> EventHandler {
        self.list
            .iter()
            .fold(handler, |next, mw| mw.local_event(next, info))
    }

    /// The handler of a remote action: `base` (the request to the other node) wrapped by the
    /// middlewares' `remote_action` hooks, built once per action. `base` itself when no
    /// middleware hooks remote actions.
    pub fn remote_action(&self, info: &ActionInfo, base: &ActionHandler) -> ActionHandler {
        if !self.hooks_remote {
            return base.clone();
        }
        if let Some(chain) = self.remote.get(info.name.as_str()) {
            return chain.clone();
        }
        self.remote
            .entry(Arc::from(info.name.as_str()))
            .or_insert_with(|| {
                self.list
                    .iter()
                    .fold(base.clone(), |next, mw| mw.remote_action(next, info))
            })
            .clone()
    }

    /// Runs every middleware's `started` hook (a failure is logged).
    pub async fn started(&self, node_id: &NodeId) {
        for mw in &self.list {
            if let Err(err) = mw.started(node_id).await {
                tracing::warn!(middleware = mw.name(), "started hook failed: {err}");
            }
        }
    }

    /// Runs every middleware's `stopped` hook (a failure is logged).
    pub async fn stopped(&self, node_id: &NodeId) {
        for mw in &self.list {
            if let Err(err) = mw.stopped(node_id).await {
                tracing::warn!(middleware = mw.name(), "stopped hook failed: {err}");
            }
        }
    }
}
