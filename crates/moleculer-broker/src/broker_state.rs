//! The broker's lifecycle state: changed only by the lifecycle, read by every part that must
//! behave differently while the broker starts or stops.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the broker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum BrokerState {
    /// Built, not started.
    Created = 0,
    /// `start` runs: joining the cluster, starting services.
    Starting = 1,
    /// Serving.
    Started = 2,
    /// `stop` runs: services are withdrawn from the cluster but requests are still served
    /// (`stopDelay`, then the drain).
    Stopping = 3,
    /// `stop` runs, after the drain: requests are refused, services stop, the node leaves.
    Closing = 4,
    /// Stopped (or failed to start).
    Stopped = 5,
}

impl BrokerState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => BrokerState::Created,
            1 => BrokerState::Starting,
            2 => BrokerState::Started,
            3 => BrokerState::Stopping,
            4 => BrokerState::Closing,
            _ => BrokerState::Stopped,
        }
    }
}

/// The shared, lock-free cell holding the state.
#[derive(Debug)]
pub(crate) struct StateCell(AtomicU8);

impl StateCell {
    pub fn new() -> Self {
        StateCell(AtomicU8::new(BrokerState::Created as u8))
    }

    pub fn get(&self) -> BrokerState {
        BrokerState::from_u8(self.0.load(Ordering::Acquire))
    }

    pub fn set(&self, state: BrokerState) {
        self.0.store(state as u8, Ordering::Release);
    }

    /// Moves from `from` to `to`; `false` (and no change) when the state was not `from`.
    pub fn transition(&self, from: BrokerState, to: BrokerState) -> bool {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Enters `Stopping` and returns the state it left, unless the broker is already stopping
    /// or stopped (then nothing changes and `None` is returned).
    pub fn begin_stop(&self) -> Option<BrokerState> {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let state = BrokerState::from_u8(current);
            if matches!(
                state,
                BrokerState::Stopping | BrokerState::Closing | BrokerState::Stopped
            ) {
                return None;
            }
            match self.0.compare_exchange(
                current,
                BrokerState::Stopping as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(state),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_only_from_the_expected_state() {
        let cell = StateCell::new();
        assert!(!cell.transition(BrokerState::Started, BrokerState::Stopping));
        assert!(cell.transition(BrokerState::Created, BrokerState::Starting));
        assert_eq!(cell.get(), BrokerState::Starting);
        assert!(!cell.transition(BrokerState::Created, BrokerState::Starting));
    }

    #[test]
    fn stop_begins_once() {
        let cell = StateCell::new();
        cell.set(BrokerState::Started);
        assert_eq!(cell.begin_stop(), Some(BrokerState::Started));
        assert_eq!(cell.get(), BrokerState::Stopping);
        assert_eq!(cell.begin_stop(), None);
        cell.set(BrokerState::Stopped);
        assert_eq!(cell.begin_stop(), None);
        assert_eq!(cell.get(), BrokerState::Stopped);
    }
}
