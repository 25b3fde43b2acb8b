//! Many calls at once (Moleculer's `mcall`) and calls that reach every node offering an action
//! (cluster-wide RPC, as Stellar's cluster asks). Both run on any [`BrokerHandle`], so the broker
//! and a [`Context`] (whose calls become children of it) share one implementation.
//!
//! - [`mcall`]: a list of calls run concurrently; the first error fails the whole (as
//!   `Promise.all`), or with [`Settle::All`] every outcome comes back. [`mcall_named`] is the
//!   same with a name per call (Moleculer's object form).
//! - [`call_all`]: one call per node that offers the action, each answer or error kept with its
//!   node, all within the call's timeout.
//! - [`call_first`]: the same calls, the first success wins and the rest are dropped.
//! - One named node is a plain call with `CallOptions::node_id`.

use std::time::Duration;

use futures::future::{join_all, select_ok, try_join_all, FutureExt};
use serde_json::Value;

use crate::call_options::CallOptions;
use crate::context::{BrokerHandle, Context};
use crate::error::{MoleculerError, Result};
use crate::node_id::NodeId;

/// How long a cluster-wide call waits for a node when the options give no timeout.
pub const CLUSTER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One call of an [`mcall`]: the action, its params and its options.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// The action, e.g. `math.add`.
    pub action: String,
    /// Its params.
    pub params: Value,
    /// Its options (timeout, node, meta, ...).
    pub opts: CallOptions,
}

impl CallSpec {
    /// A call of `action` with `params` and default options.
    pub fn new(action: impl Into<String>, params: Value) -> Self {
        Self {
            action: action.into(),
            params,
            opts: CallOptions::default(),
        }
    }

    /// The same call with these options.
    pub fn options(mut self, opts: CallOptions) -> Self {
        self.opts = opts;
        self
    }
}

/// Whether an [`mcall`] stops at the first error or waits for every outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Settle {
    /// The first error fails the whole (the other calls are dropped).
    #[default]
    FirstError,
    /// Every call runs to its end; each outcome is returned.
    All,
}

/// What one node answered to a cluster-wide call.
#[derive(Debug)]
pub struct NodeOutcome {
    /// The node that was called.
    pub node_id: NodeId,
    /// Its answer or error (a timeout is a `RequestTimeoutError`).
    pub result: Result<Value>,
}

/// Runs `calls` concurrently (as children of `parent` when there is one); the results come
/// back in the order of the calls.
pub async fn mcall(
    broker: &dyn BrokerHandle,
    parent: Option<&Context>,
    calls: Vec<CallSpec>,
    settle: Settle,
) -> Vec<Result<Value>> {
    let futures = calls
        .into_iter()
        .map(|c| broker.call(parent, &c.action, c.params, &c.opts));
    match settle {
        Settle::All => join_all(futures).await,
        Settle::FirstError => match try_join_all(futures).await {
            Ok(values) => values.into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err)],
        },
    }
}

/// Runs named calls concurrently (Moleculer's `mcall` with an object): each result under its
/// name, in the order given. With [`Settle::FirstError`] the first failing call is the only
/// element.
pub async fn mcall_named(
    broker: &dyn BrokerHandle,
    parent: Option<&Context>,
    calls: Vec<(String, CallSpec)>,
    settle: Settle,
) -> Vec<(String, Result<Value>)> {
    let futures = calls.into_iter().map(|(name, c)| {
        broker
            .call(parent, &c.action, c.params, &c.opts)
            .map(move |result| (name, result))
    });
    match settle {
        Settle::All => join_all(futures).await,
        Settle::FirstError => {
            let tagged = futures.map(|call| {
                call.map(|(name, result)| match result {
                    Ok(value) => Ok((name, value)),
                    Err(err) => Err((name, err)),
                })
            });
            match try_join_all(tagged).await {
                Ok(values) => values.into_iter().map(|(n, v)| (n, Ok(v))).collect(),
                Err((name, err)) => vec![(name, Err(err))],
            }
        }
    }
}

/// Options for one node of a cluster-wide call: pinned to `node`, with a timeout.
fn pinned(opts: &CallOptions, node: &NodeId) -> CallOptions {
    let mut opts = opts.clone().node_id(node.as_str());
    if opts.timeout.is_none() {
        opts = opts.timeout(CLUSTER_CALL_TIMEOUT);
    }
    opts
}

/// Calls `action` on every node that offers it, concurrently, and returns each node's
/// outcome. Fails only when no node offers the action.
pub async fn call_all(
    broker: &dyn BrokerHandle,
    parent: Option<&Context>,
    action: &str,
    params: Value,
    opts: &CallOptions,
) -> Result<Vec<NodeOutcome>> {
    let nodes = broker.action_nodes(action);
    if nodes.is_empty() {
        return Err(MoleculerError::service_not_found(action, None));
    }
    let calls = nodes.into_iter().map(|node| {
        let call = broker.call(parent, action, params.clone(), &pinned(opts, &node));
        call.map(move |result| NodeOutcome {
            node_id: node,
            result,
        })
    });
    Ok(join_all(calls).await)
}

/// Calls `action` on every node that offers it and returns the first success (with the node
/// that gave it); the other calls are dropped. When every node fails, the last error.
pub async fn call_first(
    broker: &dyn BrokerHandle,
    parent: Option<&Context>,
    action: &str,
    params: Value,
    opts: &CallOptions,
) -> Result<(NodeId, Value)> {
    let nodes = broker.action_nodes(action);
    if nodes.is_empty() {
        return Err(MoleculerError::service_not_found(action, None));
    }
    let calls = nodes.into_iter().map(|node| {
        broker
            .call(parent, action, params.clone(), &pinned(opts, &node))
            .map(move |result| result.map(|value| (node, value)))
    });
    select_ok(calls).await.map(|(first, _rest)| first)
}

impl Context {
    /// Runs `calls` concurrently as children of this context (Moleculer's `ctx.mcall`); the
    /// results come in the order of the calls. With [`Settle::FirstError`] the first error is
    /// the only element; with [`Settle::All`] every outcome is there.
    pub async fn mcall(&self, calls: Vec<CallSpec>, settle: Settle) -> Result<Vec<Result<Value>>> {
        Ok(mcall(&*self.handle()?, Some(self), calls, settle).await)
    }

    /// Runs named calls concurrently as children of this context (Moleculer's `ctx.mcall`
    /// with an object); each result under its name.
    pub async fn mcall_named(
        &self,
        calls: Vec<(String, CallSpec)>,
        settle: Settle,
    ) -> Result<Vec<(String, Result<Value>)>> {
        Ok(mcall_named(&*self.handle()?, Some(self), calls, settle).await)
    }

    /// Calls `action` on every node that offers it (children of this context); each node's
    /// answer or error, within the timeout of `opts` (10 s when it has none).
    pub async fn call_all(
        &self,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> Result<Vec<NodeOutcome>> {
        call_all(&*self.handle()?, Some(self), action, params, opts).await
    }

    /// Calls `action` on every node that offers it; the first success, with its node.
    pub async fn call_first(
        &self,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> Result<(NodeId, Value)> {
        call_first(&*self.handle()?, Some(self), action, params, opts).await
    }
}
