//! What a caller can ask of one call or one emission: timeout, retries, fallback, target node,
//! meta (`CallOptions`, `EmitOptions`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{MoleculerError, Result};
use crate::fault_tolerance::RetryPolicy;
use crate::node_id::NodeId;

/// Request metadata: a JSON object that travels with a call and merges back into the caller.
pub type Meta = Map<String, Value>;

/// A function from a call's final error to its answer.
pub type FallbackFn = Arc<dyn Fn(&MoleculerError) -> Result<Value> + Send + Sync>;

/// What a failed call answers instead of its error (Moleculer's `fallbackResponse`).
#[derive(Clone)]
pub enum Fallback {
    /// This value.
    Value(Value),
    /// What this function makes of the error (it may still fail).
    Fn(FallbackFn),
}

impl Fallback {
    /// A fallback computed from the error.
    pub fn from_fn(f: impl Fn(&MoleculerError) -> Result<Value> + Send + Sync + 'static) -> Self {
        Fallback::Fn(Arc::new(f))
    }

    /// The answer for `err`.
    pub fn answer(&self, err: &MoleculerError) -> Result<Value> {
        match self {
            Fallback::Value(value) => Ok(value.clone()),
            Fallback::Fn(f) => f(err),
        }
    }
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::Value(v) => f.debug_tuple("Value").field(v).finish(),
            Fallback::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

/// Options of one action call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Give up after this long with `RequestTimeoutError` (overrides the action's and the
    /// broker's); zero switches every timeout off for this call. With retries, this bounds all
    /// attempts together.
    pub timeout: Option<Duration>,
    /// Call the action on this node only.
    pub node_id: Option<NodeId>,
    /// Meta merged over the parent's meta.
    pub meta: Option<Meta>,
    /// Protocol-5 headers.
    pub headers: Option<Meta>,
    /// Attempts after the first, over the retry policy's count (as Moleculer's `retries`: it
    /// does not switch retries on by itself).
    pub retries: Option<u32>,
    /// A retry policy for this call, laid over the action's and the broker's.
    pub retry_policy: Option<RetryPolicy>,
    /// What to answer if the call fails after its retries, or finds no endpoint.
    pub fallback: Option<Fallback>,
    /// The id of the request this call belongs to (Moleculer's `requestID`); a new one when
    /// unset and there is no parent.
    pub request_id: Option<Arc<str>>,
    /// Nodes not to call unless no other can serve (a retry avoids the nodes that failed).
    pub exclude_nodes: Vec<NodeId>,
}

impl CallOptions {
    /// No options at all, shared: what a plain call uses, at no cost per call.
    pub fn none() -> &'static CallOptions {
        static NONE: CallOptions = CallOptions::NONE;
        &NONE
    }

    const NONE: CallOptions = CallOptions {
        timeout: None,
        node_id: None,
        meta: None,
        headers: None,
        retries: None,
        retry_policy: None,
        fallback: None,
        request_id: None,
        exclude_nodes: Vec::new(),
    };

    /// Sets the timeout (zero: no timeout at all).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the number of retries.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Sets a retry policy for this call.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// Answers `fallback` instead of a final error.
    #[must_use]
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Targets one node.
    #[must_use]
    pub fn node_id(mut self, node_id: impl Into<NodeId>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Sets the meta.
    #[must_use]
    pub fn meta(mut self, meta: Meta) -> Self {
        self.meta = Some(meta);
        self
    }
}

/// Options of one event emission.
#[derive(Debug, Clone, Default)]
pub struct EmitOptions {
    /// Only these groups receive the event.
    pub groups: Option<Vec<String>>,
    /// Meta merged over the parent's meta.
    pub meta: Option<Meta>,
    /// Protocol-5 headers.
    pub headers: Option<Meta>,
}

impl EmitOptions {
    /// Restricts delivery to these groups.
    #[must_use]
    pub fn groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups = Some(groups.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the meta.
    #[must_use]
    pub fn meta(mut self, meta: Meta) -> Self {
        self.meta = Some(meta);
        self
    }
}
