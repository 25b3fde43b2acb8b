//! Calls: pick the endpoint through the registry's strategy, work out the timeout, build the
//! context, and run the handler here or send the request to the node that has the action.
//! Local calls never serialize anything; remote calls take one path, through the middlewares'
//! `remote_action` hooks (if any) to transit.
//!
//! The policies of a call (its options over the action's settings over the broker's) are
//! settled here too: the circuit breaker admits the endpoint (or another one is picked) and
//! counts the outcome, and a retry policy or fallback travels with the call, to act only if
//! it fails.

use std::sync::{Arc, Weak};
use std::time::Duration;

use moleculer_core::endpoint_breaker::EndpointBreaker;
use moleculer_core::in_flight::InFlight;
use moleculer_core::middleware::ActionHandler;
use moleculer_core::{
    BrokerHandle, CallOptions, CircuitBreakerOptions, Context, ContextTarget, Meta, MoleculerError,
    NodeId, Origin, RetryPlan, RetryPolicy, SelectionContext,
};
use moleculer_registry::Miss;
use serde_json::Value;
use tokio::time::Instant;

use crate::call_future::CallFuture;
use crate::circuit_breaker::CircuitBreaker;
use crate::metrics::BrokerMetrics;
use crate::middleware_chain::MiddlewareChain;
use crate::panic_guard::start_handler;
use crate::retry::{recover, retry_plan, Failed, OnFailure, Recovery};
use crate::shared_registry::SharedRegistry;
use crate::transit::outbound::Transit;

/// Routes action calls.
pub(crate) struct CallRouter {
    node_id: NodeId,
    max_call_level: u32,
    request_timeout: Option<Duration>,
    registry: Arc<SharedRegistry>,
    middlewares: Arc<MiddlewareChain>,
    /// What contexts call back into (nested calls of middlewares, and retries).
    broker: Weak<dyn BrokerHandle>,
    /// The innermost remote handler: one REQUEST through transit; `None` without a
    /// transporter.
    remote_base: Option<ActionHandler>,
    /// The broker's retry settings, under each action's and call's own.
    retry_policy: RetryPolicy,
    /// The broker's retry settings alone, resolved once (`None`: retries off).
    retry_plan: Option<RetryPlan>,
    breaker: Arc<CircuitBreaker>,
    /// Whether the broker's own settings turn the breaker on (if not, only an action's can, and
    /// most calls skip the breaker's work).
    breaker_on: bool,
    /// Where remote call contexts count themselves (tracking).
    in_flight: Option<Arc<InFlight>>,
    /// The metrics, which give each remote action its meter.
    metrics: Option<Arc<BrokerMetrics>>,
}

impl CallRouter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: NodeId,
        options: &crate::options::BrokerOptions,
        registry: Arc<SharedRegistry>,
        middlewares: Arc<MiddlewareChain>,
        transit: Option<Arc<Transit>>,
        breaker: Arc<CircuitBreaker>,
        in_flight: Option<Arc<InFlight>>,
        broker: Weak<dyn BrokerHandle>,
        metrics: Option<Arc<BrokerMetrics>>,
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
            retry_policy: options.retry_policy,
            retry_plan: retry_plan(None, &options.retry_policy),
            breaker_on: breaker.base.is_enabled(),
            breaker,
            in_flight,
            metrics,
        }
    }

    /// What a call does if it fails: the recovery it sets up itself (its own retry settings or
    /// fallback, or a pin that retries keep) laid over the action's retry policy and the
    /// broker's, or else its endpoint's plan.
    #[inline]
    fn on_failure(
        &self,
        opts: &CallOptions,
        action: Option<&RetryPolicy>,
        endpoint_plan: Option<RetryPlan>,
    ) -> OnFailure {
        if opts.retries.is_none()
            && opts.retry_policy.is_none()
            && opts.fallback.is_none()
            && opts.node_id.is_none()
        {
            return match endpoint_plan {
                Some(_) => OnFailure::EndpointPlan,
                None => OnFailure::Answer,
            };
        }
        self.own_recovery(opts, action)
    }

    /// The recovery a call sets up itself, if it does.
    #[inline(never)]
    fn own_recovery(&self, opts: &CallOptions, action: Option<&RetryPolicy>) -> OnFailure {
        let merged = opts
            .retry_policy
            .unwrap_or_default()
            .over(&action.copied().unwrap_or_default().over(&self.retry_policy));
        let recovery = Recovery {
            retry: RetryPlan::of(&merged, opts.retries),
            fallback: opts.fallback.clone().map(Box::new),
            pin: opts.node_id.clone().filter(|_| merged.keep_node_pin()),
        };
        if recovery.applies() {
            OnFailure::Own(Box::new(recovery))
        } else {
            OnFailure::Answer
        }
    }

    /// A call that found no endpoint: straight to its recovery, if it has one (its own, or
    /// the broker's retry plan).
    #[cold]
    fn unroutable(
        &self,
        err: MoleculerError,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> CallFuture {
        let recovery = match self.on_failure(opts, None, self.retry_plan) {
            OnFailure::Answer => None,
            OnFailure::EndpointPlan => self.retry_plan.map(Recovery::retrying),
            OnFailure::Own(own) => Some(*own),
        };
        let timeout = match opts.timeout {
            Some(t) if t.is_zero() => None,
            t => remaining_budget(t.or(self.request_timeout), parent).unwrap_or(None),
        };
        let Some(recovery) = recovery else {
            return CallFuture::failed(err);
        };
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = &opts.meta {
            meta.extend(extra.clone());
        }
        let failed = Failed {
            err,
            action: action.to_owned(),
            params,
            meta,
            headers: opts.headers.clone().unwrap_or_default(),
            parent: parent.cloned(),
            request_id: opts.request_id.clone(),
            node: None,
            deadline: timeout.map(|t| Instant::now() + t),
        };
        CallFuture::boxed(Box::pin(recover(self.broker.upgrade(), recovery, failed)))
    }

    /// Resolves the endpoint, builds the context and starts the handler, all before the first
    /// poll; the returned future only drives the handler (and, after a failure, the recovery).
    #[inline]
    pub fn call(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> CallFuture {
        let mut origin = Origin::child_of(parent);
        if let Some(request_id) = &opts.request_id {
            origin.request_id = Some(request_id.clone());
        }
        if self.max_call_level > 0 && origin.level > self.max_call_level {
            let err = MoleculerError::max_call_level(&self.node_id, origin.level - 1);
            return CallFuture::failed(err);
        }
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = &opts.meta {
            meta.extend(extra.clone());
        }
        let registry = self.registry.read();
        let selection = SelectionContext {
            params: &params,
            meta: &meta,
        };
        let mut avoid: Vec<NodeId> = Vec::new();
        let pick = |avoid: &[NodeId]| {
            let found = match &opts.node_id {
                Some(node) => {
                    return registry
                        .action_endpoint_on_node(action, node)
                        .map_err(|_| MoleculerError::service_not_found(action, Some(node)))
                }
                None if avoid.is_empty() && opts.exclude_nodes.is_empty() => {
                    registry.next_action_endpoint(action, &selection)
                }
                None if opts.exclude_nodes.is_empty() => {
                    registry.next_action_endpoint_avoiding(action, &selection, avoid)
                }
                None => {
                    let excluded: Vec<NodeId> =
                        opts.exclude_nodes.iter().chain(avoid).cloned().collect();
                    registry.next_action_endpoint_avoiding(action, &selection, &excluded)
                }
            };
            found.map_err(|miss| match miss {
                Miss::NotFound => MoleculerError::service_not_found(action, None),
                Miss::NotAvailable => MoleculerError::service_not_available(action, None),
            })
        };
        let mut found = if opts.node_id.is_none() && opts.exclude_nodes.is_empty() {
            registry
                .next_action_endpoint(action, &selection)
                .map_err(|miss| match miss {
                    Miss::NotFound => MoleculerError::service_not_found(action, None),
                    Miss::NotAvailable => MoleculerError::service_not_available(action, None),
                })
        } else {
            pick(&avoid)
        };
        let breaker_possible = self.breaker_on;
        // The breaker settings of the action picked, and the caller's breaker for a remote
        // endpoint. An endpoint whose half-open probe is already out is skipped: another one
        // is picked, or none.
        let mut breaker_on: Option<CircuitBreakerOptions> = None;
        let mut remote_breaker: Option<Arc<EndpointBreaker>> = None;
        loop {
            let skip = match &found {
                Err(_) => None,
                Ok(endpoint) if !breaker_possible && endpoint.info.circuit_breaker.is_none() => {
                    None
                }
                Ok(endpoint) => {
                    let options = endpoint
                        .info
                        .circuit_breaker
                        .unwrap_or_default()
                        .over(&self.breaker.base);
                    if !options.is_enabled() {
                        None
                    } else {
                        breaker_on = Some(options);
                        let admitted = match &endpoint.handler {
                            Some(local) => local.target.breaker.as_ref().is_none_or(|b| b.admit()),
                            None => {
                                let cell = self.breaker.endpoint(
                                    &endpoint.node_id,
                                    &endpoint.name,
                                    &endpoint.service,
                                    &options,
                                );
                                let admitted = cell.admit();
                                remote_breaker = Some(cell);
                                admitted
                            }
                        };
                        (!admitted).then(|| endpoint.node_id.clone())
                    }
                }
            };
            let Some(skipped) = skip else { break };
            avoid.push(skipped);
            remote_breaker = None;
            found = match pick(&avoid) {
                Ok(e) if avoid.contains(&e.node_id) => {
                    Err(MoleculerError::service_not_available(action, None))
                }
                other => other,
            };
        }
        let endpoint = match found {
            Ok(endpoint) => endpoint,
            Err(err) => {
                drop(registry);
                return self.unroutable(err, parent, action, params, opts);
            }
        };
        let own = match opts.timeout {
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t),
            None => endpoint
                .info
                .timeout
                .map(Duration::from_millis)
                .or(self.request_timeout),
        };
        let timeout = match remaining_budget(own, parent) {
            Ok(timeout) => timeout,
            Err(()) => {
                drop(registry);
                let err = MoleculerError::request_skipped(action, &self.node_id);
                return CallFuture::failed(err);
            }
        };
        // The endpoint's retry plan: built with a local endpoint's target, here for a remote one.
        let retry = match (&endpoint.handler, &endpoint.info.retry_policy) {
            (Some(local), _) => local.target.retry,
            (None, None) => self.retry_plan,
            (None, action) => retry_plan(action.as_ref(), &self.retry_policy),
        };
        let recovery = self.on_failure(opts, endpoint.info.retry_policy.as_ref(), retry);
        let record = breaker_on.is_some();
        let headers = opts.headers.clone().unwrap_or_default();
        let Some(local) = &endpoint.handler else {
            let Some(base) = &self.remote_base else {
                let err = MoleculerError::service_not_available(action, Some(&endpoint.node_id));
                drop(registry);
                return CallFuture::failed(err);
            };
            let handler = self.middlewares.remote_action(&endpoint.info, base);
            let breaker = remote_breaker;
            let target = Arc::new(ContextTarget {
                broker: self.broker.clone(),
                local_node: endpoint.node_id.clone(),
                service: endpoint.service.clone(),
                action: Some(endpoint.name.clone()),
                tracker: self.in_flight.clone(),
                bulkhead: None,
                breaker,
                retry,
                meter: self
                    .metrics
                    .as_ref()
                    .map(|m| m.remote_action_meter(&endpoint.name)),
            });
            drop(registry);
            let origin = origin.from_node(self.node_id.clone());
            let ctx = Context::for_call(target, None, origin, params, meta, headers, timeout);
            let handler_ctx = ctx.clone();
            let fut = start_handler(|| handler(handler_ctx), action, &self.node_id);
            // The REQUEST carries the timeout and transit enforces it: no second timer here.
            return CallFuture::guarded(fut, ctx, None, parent.cloned(), record, recovery);
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
        CallFuture::guarded(fut, ctx, deadline, parent.cloned(), record, recovery)
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
