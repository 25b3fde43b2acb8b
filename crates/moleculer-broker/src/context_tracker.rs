//! Moleculer's context tracking: the requests and events this node is handling (local calls,
//! requests and events from other nodes), so a graceful stop can wait for them to finish.
//! Contexts count themselves through their endpoint's target; the receive side also counts
//! each request until its response is sent.

use std::sync::Arc;
use std::time::Duration;

use moleculer_core::in_flight::{Entered, InFlight};

/// Counts work in progress, when tracking is on.
#[derive(Debug)]
pub(crate) struct ContextTracker {
    in_flight: Option<Arc<InFlight>>,
}

/// One tracked piece of work; dropping it ends it.
pub(crate) struct Tracked<'a>(Option<(&'a InFlight, Entered)>);

impl ContextTracker {
    /// A tracker; with `enabled` false it counts nothing and a stop waits for nothing.
    pub fn new(enabled: bool) -> Self {
        Self {
            in_flight: enabled.then(|| Arc::new(InFlight::default())),
        }
    }

    /// The counter contexts share through their targets (`None` when tracking is off).
    pub fn in_flight(&self) -> Option<Arc<InFlight>> {
        self.in_flight.clone()
    }

    /// Starts tracking one piece of work.
    pub fn track(&self) -> Tracked<'_> {
        Tracked(self.in_flight.as_deref().map(|w| (w, w.enter())))
    }

    /// Work in progress right now.
    pub fn active(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |w| w.count())
    }

    /// Waits until nothing is in progress, at most `limit`; `false` when time ran out first.
    /// Polls (every 10 ms): only a stopping broker waits, and the count costs nothing per call.
    pub async fn drained(&self, limit: Duration) -> bool {
        let drain = async {
            while self.active() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(limit, drain).await.is_ok()
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if let Some((work, entered)) = self.0 {
            work.leave(entered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_the_last_piece_of_work() {
        let tracker = Arc::new(ContextTracker::new(true));
        assert!(
            tracker.drained(Duration::from_millis(1)).await,
            "idle at once"
        );
        let t = tracker.clone();
        let work = moleculer_core::task::spawn(async move {
            let _a = t.track();
            let _b = t.track();
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        tokio::task::yield_now().await;
        assert_eq!(tracker.active(), 2);
        let started = tokio::time::Instant::now();
        assert!(tracker.drained(Duration::from_secs(1)).await);
        assert_eq!(tracker.active(), 0);
        assert!(started.elapsed() <= Duration::from_millis(60));
        work.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drained_gives_up_at_its_limit() {
        let tracker = ContextTracker::new(true);
        let _stuck = tracker.track();
        let started = tokio::time::Instant::now();
        assert!(!tracker.drained(Duration::from_millis(300)).await);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test]
    async fn when_off_nothing_is_counted() {
        let tracker = ContextTracker::new(false);
        let _t = tracker.track();
        assert_eq!(tracker.active(), 0);
        assert!(tracker.in_flight().is_none());
    }
}
