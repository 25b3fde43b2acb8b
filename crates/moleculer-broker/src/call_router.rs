//! Calls: pick the endpoint through the registry's strategy, work out the timeout, build the
//! context, and run the handler here or send the request to the node that has the action.
//! Local calls never serialize anything; remote calls take one path, through the middlewares'
//! `remote_action` hooks (if any) to transit.

use std::sync::{Arc, Weak};
use std::time::Duration;

use moleculer_core::middleware::ActionHandler;
use moleculer_core::{
    BrokerHandle, CallOptions, Context, ContextTarget, Meta, MoleculerError, NodeId, Origin,
    SelectionContext,
};
use moleculer_registry::Miss;
use serde_json::Value;
use tokio::time::Instant;

use crate::call_future::CallFuture;
use crate::middleware_chain::MiddlewareChain;
use crate::panic_guard::start_handler;
use crate::shared_registry::SharedRegistry;
use crate::transit::outbound::Transit;

/// Routes action calls.
pub(crate) struct CallRouter {
    node_id: NodeId,
    max_call_level: u32,
    request_timeout: Option<Duration>,
    registry: Arc<SharedRegistry>,
    middlewares: Arc<MiddlewareChain>,
    /// What the contexts of remote calls call back into (for nested calls of middlewares).
    broker: Weak<dyn BrokerHandle>,
    /// The innermost remote handler: one REQUEST through transit; `None` without a
    /// transporter.
    remote_base: Option<ActionHandler>,
}

impl CallRouter {
    pub fn new(
        node_id: NodeId,
        options: &crate::options::BrokerOptions,
        registry: Arc<SharedRegistry>,
        middlewares: Arc<MiddlewareChain>,
        transit: Option<Arc<Transit>>,
        broker: Weak<dyn BrokerHandle>,
    ) -> Self {
        let remote_base = transit.map(|transit| -> ActionHandler {
            Arc::new(move |ctx: Context| {
                let transit = transit.clone();
                Box::pin(async move {
                    let (data, meta) = transit.request(&ctx).await?;
                    ctx.merge_meta(meta);
                    Ok(data)
                })
            })
        });
        Self {
            node_id,
            max_call_level: options.max_call_level,
            request_timeout: options.request_timeout(),
            registry,
            middlewares,
            broker,
            remote_base,
        }
    }

    /// Resolves the endpoint, builds the context and starts the handler, all before the first
    /// poll; the returned future only drives the handler.
    pub fn call(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: CallOptions,
    ) -> CallFuture {
        let origin = Origin::child_of(parent);
        if self.max_call_level > 0 && origin.level > self.max_call_level {
            return CallFuture::failed(MoleculerError::max_call_level(
                &self.node_id,
                origin.level - 1,
            ));
        }
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = opts.meta {
            meta.extend(extra);
        }
        let headers = opts.headers.unwrap_or_default();
        let registry = self.registry.read();
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
        let own = opts
            .timeout
            .or(endpoint.info.timeout.map(Duration::from_millis))
            .or(self.request_timeout);
        let timeout = match remaining_budget(own, parent) {
            Ok(timeout) => timeout,
            Err(()) => {
                return CallFuture::failed(MoleculerError::request_skipped(action, &self.node_id))
            }
        };
        let Some(local) = &endpoint.handler else {
            let Some(base) = &self.remote_base else {
                return CallFuture::failed(MoleculerError::service_not_available(
                    action,
                    Some(&endpoint.node_id),
                ));
            };
            let handler = self.middlewares.remote_action(&endpoint.info, base);
            let target = Arc::new(ContextTarget {
                broker: self.broker.clone(),
                local_node: endpoint.node_id.clone(),
                service: endpoint.service.clone(),
                action: Some(endpoint.name.clone()),
            });
            drop(registry);
            let origin = origin.from_node(self.node_id.clone());
            let ctx = Context::for_call(target, None, origin, params, meta, headers, timeout);
            let handler_ctx = ctx.clone();
            let fut = start_handler(|| handler(handler_ctx), action, &self.node_id);
            // The REQUEST carries the timeout and transit enforces it: no second timer here.
            return CallFuture::running(fut, ctx, None, parent.cloned());
        };
        let ctx = Context::for_call(
            local.target.clone(),
            None,
            origin,
            params,
            meta,
            headers,
            timeout,
        );
        // The handler is started under the read lock (no clone of it needed); it only builds
        // its future here, the work happens when the future is polled.
        let handler_ctx = ctx.clone();
        let fut = start_handler(|| (local.handler)(handler_ctx), action, &self.node_id);
        drop(registry);
        let deadline = ctx.deadline();
        CallFuture::running(fut, ctx, deadline, parent.cloned())
    }
}

/// The timeout of a nested call: its own, cut to what is left of the parent's; `Err` when
/// the parent's time is already up (the call is skipped).
fn remaining_budget(
    own: Option<Duration>,
    parent: Option<&Context>,
) -> Result<Option<Duration>, ()> {
    let Some(deadline) = parent.and_then(Context::deadline) else {
        return Ok(own);
    };
    let now = Instant::now();
    if deadline <= now {
        return Err(());
    }
    let remaining = deadline - now;
    Ok(Some(own.map_or(remaining, |t| t.min(remaining))))
}
