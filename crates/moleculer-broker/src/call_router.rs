//! Calls: pick the endpoint through the registry's strategy, work out the timeout, build the
//! context, and run the handler here or send the request to the node that has the action.
//! Local calls never serialize anything; remote calls take one path, through the middlewares'
//! `remote_action` hooks (if any) to transit.
//!
//! When retries, a circuit breaker or a fallback apply to a call (from the call's options, the
//! action's settings or the broker's), the call becomes a sequence of attempts: each attempt
//! picks an endpoint again, avoiding the nodes that already failed; all attempts share the
//! call's timeout; the breaker admits and counts every attempt; the fallback answers the last
//! error, or the lack of any endpoint.

use std::sync::{Arc, Weak};
use std::time::Duration;

use moleculer_core::in_flight::InFlight;
use moleculer_core::middleware::ActionHandler;
use moleculer_core::{
    BrokerHandle, CallOptions, CircuitBreakerOptions, Context, ContextTarget, Fallback, Meta,
    MoleculerError, NodeId, Origin, Result, RetryPolicy, SelectionContext,
};
use moleculer_registry::Miss;
use rand::Rng;
use serde_json::Value;
use tokio::time::Instant;

use crate::call_future::CallFuture;
use crate::circuit_breaker::CircuitBreaker;
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
    /// The broker's retry settings, under each action's and call's own.
    retry_policy: RetryPolicy,
    breaker: Arc<CircuitBreaker>,
    /// Where remote call contexts count themselves (tracking).
    in_flight: Option<Arc<InFlight>>,
    me: Weak<CallRouter>,
}

/// What governs a call beyond a single attempt.
#[derive(Clone)]
struct Policy {
    retry: RetryPolicy,
    /// Attempts after the first.
    retries: u32,
    breaker: CircuitBreakerOptions,
    fallback: Option<Fallback>,
}

/// The endpoint an attempt went to.
struct Chosen {
    node: NodeId,
    action: Arc<str>,
    service: Arc<str>,
}

/// One attempt, built and not yet run.
struct Attempt {
    future: CallFuture,
    about: AttemptInfo,
}

/// What the attempts after an attempt need to know of it.
struct AttemptInfo {
    /// The endpoint, when one was found and a policy applies.
    chosen: Option<Chosen>,
    /// The attempt's context (when a policy applies), or its params when it never got as far
    /// as a context.
    leftover: Option<std::result::Result<Context, Value>>,
    /// The timeout the attempt runs with.
    timeout: Option<Duration>,
    policy: Option<Policy>,
}

impl Attempt {
    fn failed(err: MoleculerError, params: Value, policy: Option<Policy>) -> Self {
        Attempt {
            future: CallFuture::failed(err),
            about: AttemptInfo {
                chosen: None,
                leftover: Some(Err(params)),
                timeout: None,
                policy,
            },
        }
    }
}

impl AttemptInfo {
    /// The params for the next attempt.
    fn params(&self) -> Value {
        match &self.leftover {
            Some(Ok(ctx)) => ctx.params().clone(),
            Some(Err(params)) => params.clone(),
            None => Value::Null,
        }
    }
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
    ) -> Arc<Self> {
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
        Arc::new_cyclic(|me| Self {
            node_id,
            max_call_level: options.max_call_level,
            request_timeout: options.request_timeout(),
            registry,
            middlewares,
            broker,
            remote_base,
            retry_policy: options.retry_policy,
            breaker,
            in_flight,
            me: me.clone(),
        })
    }

    /// Resolves the endpoint, builds the context and starts the handler, all before the first
    /// poll; the returned future only drives the handler (and, when a policy applies, the
    /// attempts after the first).
    #[inline]
    pub fn call(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: CallOptions,
    ) -> CallFuture {
        let first = self.attempt(parent, action, params, &opts, None, &[]);
        let Some(policy) = first.about.policy.clone() else {
            return first.future;
        };
        let Some(router) = self.me.upgrade() else {
            return first.future;
        };
        let (parent, action) = (parent.cloned(), action.to_owned());
        CallFuture::boxed(Box::pin(async move {
            router.attempts(parent, action, opts, first, policy).await
        }))
    }

    /// The policy of a call to `info`'s action: the call's settings over the action's over the
    /// broker's; `None` when nothing beyond one plain attempt applies.
    fn policy(
        &self,
        opts: &CallOptions,
        retry: Option<&RetryPolicy>,
        breaker: Option<&CircuitBreakerOptions>,
    ) -> Option<Policy> {
        let action_retry = retry.copied().unwrap_or_default().over(&self.retry_policy);
        let retry = opts.retry_policy.unwrap_or_default().over(&action_retry);
        let breaker = breaker
            .copied()
            .unwrap_or_default()
            .over(&self.breaker.base);
        if !retry.is_enabled() && !breaker.is_enabled() && opts.fallback.is_none() {
            return None;
        }
        Some(Policy {
            retry,
            retries: opts.retries.unwrap_or_else(|| retry.retries()),
            breaker,
            fallback: opts.fallback.clone(),
        })
    }

    /// Builds one attempt: endpoint (avoiding `avoid`), timeout, context, started handler.
    fn attempt(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: &CallOptions,
        request_id: Option<Arc<str>>,
        avoid: &[NodeId],
    ) -> Attempt {
        let mut origin = Origin::child_of(parent);
        if request_id.is_some() {
            origin.request_id = request_id;
        }
        if self.max_call_level > 0 && origin.level > self.max_call_level {
            let err = MoleculerError::max_call_level(&self.node_id, origin.level - 1);
            return Attempt::failed(err, params, None);
        }
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = &opts.meta {
            meta.extend(extra.clone());
        }
        let headers = opts.headers.clone().unwrap_or_default();
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
                .next_action_endpoint_avoiding(action, &selection, avoid)
                .map_err(|miss| match miss {
                    Miss::NotFound => MoleculerError::service_not_found(action, None),
                    Miss::NotAvailable => MoleculerError::service_not_available(action, None),
                }),
        };
        let endpoint = match found {
            Ok(endpoint) => endpoint,
            Err(err) => {
                drop(registry);
                let mut failed = Attempt::failed(err, params, self.policy(opts, None, None));
                // Retries share the budget the call would have had.
                failed.about.timeout = match opts.timeout {
                    Some(t) if t.is_zero() => None,
                    t => remaining_budget(t.or(self.request_timeout), parent).unwrap_or(None),
                };
                return failed;
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
                return Attempt::failed(err, params, None);
            }
        };
        let policy = self.policy(
            opts,
            endpoint.info.retry_policy.as_ref(),
            endpoint.info.circuit_breaker.as_ref(),
        );
        let chosen = policy.as_ref().map(|_| Chosen {
            node: endpoint.node_id.clone(),
            action: endpoint.name.clone(),
            service: endpoint.service.clone(),
        });
        let Some(local) = &endpoint.handler else {
            let Some(base) = &self.remote_base else {
                let err = MoleculerError::service_not_available(action, Some(&endpoint.node_id));
                drop(registry);
                return Attempt::failed(err, params, None);
            };
            let handler = self.middlewares.remote_action(&endpoint.info, base);
            let target = Arc::new(ContextTarget {
                broker: self.broker.clone(),
                local_node: endpoint.node_id.clone(),
                service: endpoint.service.clone(),
                action: Some(endpoint.name.clone()),
                tracker: self.in_flight.clone(),
            });
            drop(registry);
            let origin = origin.from_node(self.node_id.clone());
            let ctx = Context::for_call(target, None, origin, params, meta, headers, timeout);
            let handler_ctx = ctx.clone();
            let fut = start_handler(|| handler(handler_ctx), action, &self.node_id);
            let leftover = policy.as_ref().map(|_| Ok(ctx.clone()));
            // The REQUEST carries the timeout and transit enforces it: no second timer here.
            return Attempt {
                future: CallFuture::running(fut, ctx, None, parent.cloned()),
                about: AttemptInfo {
                    chosen,
                    leftover,
                    timeout,
                    policy,
                },
            };
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
        let leftover = policy.as_ref().map(|_| Ok(ctx.clone()));
        Attempt {
            future: CallFuture::running(fut, ctx, deadline, parent.cloned()),
            about: AttemptInfo {
                chosen,
                leftover,
                timeout,
                policy,
            },
        }
    }

    /// Runs a call's attempts: breaker admission and bookkeeping for each, retries with
    /// backoff while the error is retryable and time is left, then the fallback.
    async fn attempts(
        self: Arc<Self>,
        parent: Option<Context>,
        action: String,
        opts: CallOptions,
        first: Attempt,
        policy: Policy,
    ) -> Result<Value> {
        let deadline = first.about.timeout.map(|t| Instant::now() + t);
        let request_id = match &first.about.leftover {
            Some(Ok(ctx)) => Some(ctx.request_id().clone()),
            _ => None,
        };
        let mut avoid: Vec<NodeId> = Vec::new();
        let mut attempt = first;
        let mut retried = 0;
        loop {
            let (result, about) = self
                .run(attempt, &policy, &parent, &action, &opts, &mut avoid)
                .await;
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if let Some(chosen) = &about.chosen {
                if !avoid.contains(&chosen.node) {
                    avoid.push(chosen.node.clone());
                }
            }
            let wait = backoff(&policy.retry, retried + 1);
            let time_left = deadline.is_none_or(|d| Instant::now() + wait < d);
            if policy.retry.is_enabled() && retried < policy.retries && err.retryable && time_left {
                tracing::debug!(action = %action, attempt = retried + 1, "retrying after {} ms: {err}", wait.as_millis());
                tokio::time::sleep(wait).await;
                retried += 1;
                let mut next = opts.clone();
                next.timeout = remaining(opts.timeout, deadline);
                if !policy.retry.keep_node_pin() {
                    next.node_id = None;
                }
                attempt = self.attempt(
                    parent.as_ref(),
                    &action,
                    about.params(),
                    &next,
                    request_id.clone(),
                    &avoid,
                );
                continue;
            }
            return match &policy.fallback {
                Some(fallback) => fallback.answer(&err),
                None => Err(err),
            };
        }
    }

    /// Runs one attempt under the circuit breaker: an endpoint whose probe is already out is
    /// skipped (another endpoint is picked at once); the outcome is counted.
    async fn run(
        &self,
        mut attempt: Attempt,
        policy: &Policy,
        parent: &Option<Context>,
        action: &str,
        opts: &CallOptions,
        avoid: &mut Vec<NodeId>,
    ) -> (Result<Value>, AttemptInfo) {
        if policy.breaker.is_enabled() {
            // Bounded: every skip adds a node to `avoid`, and an avoided node is never re-admitted.
            while let Some(chosen) = &attempt.about.chosen {
                if self
                    .breaker
                    .admit(&policy.breaker, &chosen.node, &chosen.action)
                {
                    break;
                }
                avoid.push(chosen.node.clone());
                let mut next = opts.clone();
                // Same budget as the attempt it replaces (zero: no timeout).
                next.timeout = Some(attempt.about.timeout.unwrap_or(Duration::ZERO));
                let params = attempt.about.params();
                attempt = self.attempt(parent.as_ref(), action, params, &next, None, avoid);
                if attempt
                    .about
                    .chosen
                    .as_ref()
                    .is_some_and(|c| avoid.contains(&c.node))
                {
                    let err = MoleculerError::service_not_available(action, None);
                    attempt = Attempt::failed(err, attempt.about.params(), None);
                }
            }
        }
        let result = attempt.future.await;
        if let (true, Some(chosen)) = (policy.breaker.is_enabled(), &attempt.about.chosen) {
            self.breaker.record(
                &policy.breaker,
                &chosen.node,
                &chosen.action,
                &chosen.service,
                &result,
            );
        }
        (result, attempt.about)
    }
}

/// The timeout of a retry: what is left of the call's (zero, "no timeout", stays zero).
fn remaining(call_timeout: Option<Duration>, deadline: Option<Instant>) -> Option<Duration> {
    match (call_timeout, deadline) {
        (Some(t), _) if t.is_zero() => Some(t),
        (_, Some(d)) => Some(d.saturating_duration_since(Instant::now())),
        (_, None) => Some(Duration::ZERO),
    }
}

/// The wait before retry `n` (1 for the first): the policy's backoff, drawn between half and
/// all of it when jittered.
fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let ms = policy.backoff_ms(n);
    if policy.jitter() && ms > 1 {
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
    } else {
        Duration::from_millis(ms)
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
