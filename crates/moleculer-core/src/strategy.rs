//! The load-balancing strategy trait.
//!
//! A strategy picks one of the available endpoints of an action or event group. It is synchronous
//! and pure apart from its own bookkeeping (a round-robin counter, a shard ring cache), so the
//! registry can call it on every request without awaiting.

use std::fmt;

use serde_json::{Map, Value};

/// What a strategy may look at to choose: the request's params and meta (for shard keys).
#[derive(Debug, Clone, Copy)]
pub struct SelectionContext<'a> {
    /// The call's params (or the event payload).
    pub params: &'a Value,
    /// The call's meta.
    pub meta: &'a Map<String, Value>,
}

impl SelectionContext<'static> {
    /// A context with no params and no meta.
    pub fn empty() -> Self {
        static NULL: Value = Value::Null;
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        SelectionContext {
            params: &NULL,
            meta: EMPTY.get_or_init(Map::new),
        }
    }
}

/// The endpoints a strategy chooses from, by index. Only available endpoints are offered.
pub trait Candidates {
    /// How many endpoints there are (never zero when a strategy is asked).
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The node id of endpoint `i`.
    fn node_id(&self, i: usize) -> &str;
    /// Last reported CPU usage (0–100) of endpoint `i`'s node, if known.
    fn cpu(&self, i: usize) -> Option<f64>;
    /// Average ping latency in milliseconds to endpoint `i`'s host, if measured.
    fn latency_ms(&self, i: usize) -> Option<f64>;
    /// A number that changes whenever the set of candidates may have changed, so strategies can
    /// cache derived structures (a shard ring) and rebuild only when it moves.
    fn generation(&self) -> u64;
}

/// A load-balancing strategy: RoundRobin, Random, CpuUsage, Latency, Shard, or your own.
///
/// Each action (and each event group) gets its own instance, so per-instance state such as a
/// counter is per action.
pub trait Strategy: Send + Sync + fmt::Debug {
    /// Returns the index of the chosen candidate, or `None` to refuse.
    fn select(&self, candidates: &dyn Candidates, ctx: &SelectionContext<'_>) -> Option<usize>;
}

/// A plain slice of node ids as candidates (no CPU or latency data); handy in tests.
#[derive(Debug, Clone, Copy)]
pub struct NodeIds<'a>(pub &'a [&'a str], pub u64);

impl Candidates for NodeIds<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn node_id(&self, i: usize) -> &str {
        self.0[i]
    }
    fn cpu(&self, _: usize) -> Option<f64> {
        None
    }
    fn latency_ms(&self, _: usize) -> Option<f64> {
        None
    }
    fn generation(&self) -> u64 {
        self.1
    }
}
