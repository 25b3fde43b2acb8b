//! What a call does after it failed, when a retry policy or a fallback applies: wait with
//! backoff and call again (through the broker, as Moleculer's retry does, avoiding the nodes
//! that failed), all within the call's overall timeout, and answer the fallback if nothing
//! succeeds. Nothing here runs for a call that succeeds the first time.

use std::sync::Arc;
use std::time::Duration;

use moleculer_core::{
    BrokerHandle, CallOptions, Context, Fallback, Meta, MoleculerError, NodeId, Result, RetryPlan,
    RetryPolicy,
};
use serde_json::Value;
use tokio::time::Instant;

/// The plan of an endpoint's retries: the action's policy over the caller's; `None` when
/// retries are off for it.
pub(crate) fn retry_plan(action: Option<&RetryPolicy>, base: &RetryPolicy) -> Option<RetryPlan> {
    let plan = match action {
        Some(policy) => RetryPlan::of(&policy.over(base), None),
        None => RetryPlan::of(base, None),
    };
    (plan.retries > 0).then_some(plan)
}

/// How a failed call recovers: its retry plan and its fallback.
#[derive(Clone)]
pub(crate) struct Recovery {
    pub retry: RetryPlan,
    pub fallback: Option<Box<Fallback>>,
    /// Retries stay on this node (a pinned call with `keepNodePin`).
    pub pin: Option<NodeId>,
}

impl Recovery {
    /// Recovery by retries alone, as `plan` says.
    pub fn retrying(plan: RetryPlan) -> Self {
        Recovery {
            retry: plan,
            fallback: None,
            pin: None,
        }
    }

    /// Whether anything can happen after a failure.
    pub fn applies(&self) -> bool {
        self.retry.retries > 0 || self.fallback.is_some()
    }

    fn answer(&self, err: MoleculerError) -> Result<Value> {
        match &self.fallback {
            Some(fallback) => fallback.answer(&err),
            None => Err(err),
        }
    }
}

/// What a call does if it fails.
pub(crate) enum OnFailure {
    /// Answers the error (a request served for another node, whose caller recovers).
    Answer,
    /// Follows its endpoint's retry plan (the call set nothing of its own).
    EndpointPlan,
    /// Recovers as the call itself set up.
    Own(Box<Recovery>),
}

/// Everything a retry needs about the call that failed.
pub(crate) struct Failed {
    pub err: MoleculerError,
    pub action: String,
    pub params: Value,
    pub meta: Meta,
    pub headers: Meta,
    pub parent: Option<Context>,
    /// The request the call belongs to (every attempt keeps it).
    pub request_id: Option<Arc<str>>,
    /// The node the failed attempt went to.
    pub node: Option<NodeId>,
    /// When the call's time is up, if it has a timeout.
    pub deadline: Option<Instant>,
}

/// The node an error came from or was about.
fn node_of(err: &MoleculerError) -> Option<NodeId> {
    err.node_id
        .as_deref()
        .or_else(|| err.data.get("nodeID").and_then(Value::as_str))
        .map(NodeId::new)
}

/// Retries a failed call while the policy, the error and the time allow, then falls back.
pub(crate) async fn recover(
    broker: Option<Arc<dyn BrokerHandle>>,
    recovery: Recovery,
    failed: Failed,
) -> Result<Value> {
    let Failed {
        mut err,
        action,
        params,
        meta,
        headers,
        parent,
        request_id,
        node,
        deadline,
    } = failed;
    let mut avoid: Vec<NodeId> = node.into_iter().collect();
    let mut retried = 0;
    let Some(broker) = broker.filter(|_| recovery.retry.retries > 0) else {
        return recovery.answer(err);
    };
    loop {
        let wait = recovery.retry.backoff(retried + 1);
        let time_left = deadline.is_none_or(|d| Instant::now() + wait < d);
        if retried >= recovery.retry.retries || !broker.is_retryable(&err) || !time_left {
            return recovery.answer(err);
        }
        tracing::debug!(action = %action, attempt = retried + 1, "retrying after {} ms: {err}", wait.as_millis());
        tokio::time::sleep(wait).await;
        retried += 1;
        let opts = CallOptions {
            // What is left of the call's time; zero (no timeout) when it has none.
            timeout: Some(deadline.map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            })),
            node_id: recovery.pin.clone(),
            meta: Some(meta.clone()),
            headers: Some(headers.clone()),
            // This loop drives the retries: the attempt itself must not.
            retry_policy: Some(RetryPolicy {
                enabled: Some(false),
                ..RetryPolicy::default()
            }),
            request_id: request_id.clone(),
            exclude_nodes: avoid.clone(),
            ..CallOptions::default()
        };
        match broker
            .call(parent.as_ref(), &action, params.clone(), &opts)
            .await
        {
            Ok(value) => return Ok(value),
            Err(next) => {
                if let Some(n) = node_of(&next) {
                    if !avoid.contains(&n) {
                        avoid.push(n);
                    }
                }
                err = next;
            }
        }
    }
}
