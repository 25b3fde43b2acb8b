//! Moleculer's context tracking: how many requests and events this node is serving, so a
//! graceful stop can wait for them to finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Counts work in progress.
#[derive(Debug, Default)]
pub(crate) struct ContextTracker {
    active: AtomicUsize,
    idle: Notify,
}

/// One tracked piece of work; dropping it ends it.
pub(crate) struct Tracked<'a>(&'a ContextTracker);

impl ContextTracker {
    /// Starts tracking one piece of work.
    pub fn track(&self) -> Tracked<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        Tracked(self)
    }

    /// Work in progress right now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until nothing is in progress, at most `limit`; `false` when time ran out first.
    pub async fn drained(&self, limit: Duration) -> bool {
        let drain = async {
            loop {
                let idle = self.idle.notified();
                if self.active() == 0 {
                    break;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, drain).await.is_ok()
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_the_last_piece_of_work() {
        let tracker = Arc::new(ContextTracker::default());
        assert!(
            tracker.drained(Duration::from_millis(1)).await,
            "idle at once"
        );
        let t = tracker.clone();
        let work = tokio::spawn(async move {
            let _a = t.track();
            let _b = t.track();
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        tokio::task::yield_now().await;
        assert_eq!(tracker.active(), 2);
        assert!(tracker.drained(Duration::from_secs(1)).await);
        assert_eq!(tracker.active(), 0);
        work.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drained_gives_up_at_its_limit() {
        let tracker = ContextTracker::default();
        let _stuck = tracker.track();
        let started = tokio::time::Instant::now();
        assert!(!tracker.drained(Duration::from_millis(300)).await);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }
}
