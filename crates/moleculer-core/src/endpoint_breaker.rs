//! One endpoint's circuit breaker as calls see it: its state and its counts in the current
//! window. A call asks [`EndpointBreaker::admit`] before it goes and reports its outcome after;
//! both are a few atomic operations. What to do about the counts (open, half-open, close, tell
//! the cluster) is decided by the broker, through the observer it gives each endpoint; it is
//! called only on failures and while the breaker is not closed.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::error::MoleculerError;
use crate::fault_tolerance::ErrorCheck;

/// Where an endpoint's breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed = 0,
    /// The endpoint is switched off.
    Open = 1,
    /// The next request is let through as the probe.
    HalfOpen = 2,
    /// The probe is out; everyone else skips the endpoint.
    HalfOpenWait = 3,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::HalfOpenWait,
        }
    }
}

/// What the observer hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerSignal {
    /// A request became the half-open probe.
    Probe,
    /// A request ended; `failed` when it counts as a failure.
    Outcome {
        /// Whether it counts against the endpoint.
        failed: bool,
    },
}

/// Decides what the counts mean.
pub type BreakerObserver = Box<dyn Fn(&EndpointBreaker, BreakerSignal) + Send + Sync>;

/// The breaker of one endpoint (`nodeID:action`) on the calling node.
pub struct EndpointBreaker {
    state: AtomicU8,
    count: AtomicU32,
    failures: AtomicU32,
    observer: BreakerObserver,
    /// What counts as a failure besides the node's origin; a code of 500 or more when unset.
    check: Option<ErrorCheck>,
}

impl std::fmt::Debug for EndpointBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointBreaker")
            .field("state", &self.state())
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl EndpointBreaker {
    /// A closed breaker with no counts; `check` decides which errors count as failures
    /// (Moleculer's default when `None`: a code of 500 or more).
    pub fn new(observer: BreakerObserver, check: Option<ErrorCheck>) -> Self {
        Self {
            state: AtomicU8::new(BreakerState::Closed as u8),
            count: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            observer,
            check,
        }
    }

    /// Whether `err`, the outcome of a call to this endpoint on `node`, counts against it: the
    /// node itself raised it (not one it relayed from further down; the caller's own timeout
    /// and the rejection of a request whose node left count too) and the check says so.
    pub fn counts_against(&self, err: &MoleculerError, node: &str) -> bool {
        err.node_id.as_deref().is_none_or(|n| n == node)
            && self
                .check
                .as_ref()
                .map_or(err.code >= 500, |check| check(err))
    }

    /// The current state.
    #[inline]
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Sets the state (the broker's decisions).
    pub fn set_state(&self, state: BreakerState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Whether a request may go now. A half-open endpoint admits exactly one: the probe.
    #[inline]
    pub fn admit(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open | BreakerState::HalfOpenWait => false,
            BreakerState::HalfOpen => {
                let won = self
                    .state
                    .compare_exchange(
                        BreakerState::HalfOpen as u8,
                        BreakerState::HalfOpenWait as u8,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
                if won {
                    (self.observer)(self, BreakerSignal::Probe);
                }
                won
            }
        }
    }

    /// Counts a request's outcome.
    #[inline]
    pub fn record(&self, failed: bool) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if failed || self.state() != BreakerState::Closed {
            (self.observer)(self, BreakerSignal::Outcome { failed });
        }
    }

    /// (requests, failures) in the current window.
    pub fn counts(&self) -> (u32, u32) {
        (
            self.count.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Starts a new counting window.
    pub fn reset_counts(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn watched() -> (EndpointBreaker, Arc<Mutex<Vec<BreakerSignal>>>) {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        let b = EndpointBreaker::new(Box::new(move |_, s| h.lock().unwrap().push(s)), None);
        (b, heard)
    }

    #[test]
    fn successes_of_a_closed_breaker_are_counted_without_waking_the_observer() {
        let (b, heard) = watched();
        b.record(false);
        b.record(false);
        assert_eq!(b.counts(), (2, 0));
        assert!(heard.lock().unwrap().is_empty());
        b.record(true);
        assert_eq!(b.counts(), (3, 1));
        assert_eq!(
            *heard.lock().unwrap(),
            [BreakerSignal::Outcome { failed: true }]
        );
    }

    #[test]
    fn a_half_open_breaker_admits_one_probe() {
        let (b, heard) = watched();
        b.set_state(BreakerState::Open);
        assert!(!b.admit());
        b.set_state(BreakerState::HalfOpen);
        assert!(b.admit());
        assert!(!b.admit(), "only one probe");
        assert_eq!(b.state(), BreakerState::HalfOpenWait);
        assert_eq!(*heard.lock().unwrap(), [BreakerSignal::Probe]);
        b.record(false);
        assert_eq!(
            heard.lock().unwrap().len(),
            2,
            "the probe's outcome is heard"
        );
    }
}
