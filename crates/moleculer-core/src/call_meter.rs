//! The hook through which a broker's metrics see every action call: a meter hangs on the
//! endpoint's context target, and the call future tells it when a call starts and how it
//! ends. Measuring in the call future, not in a middleware, spares each call a second boxed
//! future around its handler.

use std::time::Duration;

use crate::error::MoleculerError;

/// How a measured call ended.
#[derive(Debug, Clone, Copy)]
pub enum CallOutcome<'a> {
    /// The handler answered.
    Answered,
    /// It failed: the handler's error, a refusal, or the deadline passing.
    Failed(&'a MoleculerError),
    /// The caller stopped waiting before it ended.
    Abandoned,
}

/// Measures the calls of one endpoint.
pub trait CallMeter: Send + Sync + 'static {
    /// A call from the service `caller` (none: from outside any handler) at call depth
    /// `level` starts; returns whether to time it.
    fn started(&self, caller: Option<&str>, level: u32) -> bool;
    /// That call ended; `elapsed` is its time when it was timed.
    fn finished(&self, caller: Option<&str>, elapsed: Option<Duration>, outcome: CallOutcome<'_>);
}
