//! RoundRobin: each endpoint in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use moleculer_core::strategy::{Candidates, SelectionContext, Strategy};

/// Picks the endpoints in turn, one counter per action.
#[derive(Debug, Default)]
pub struct RoundRobin {
    counter: AtomicUsize,
}

impl Strategy for RoundRobin {
    fn select(&self, candidates: &dyn Candidates, _ctx: &SelectionContext<'_>) -> Option<usize> {
        let n = candidates.len();
        (n > 0).then(|| self.counter.fetch_add(1, Ordering::Relaxed) % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moleculer_core::strategy::NodeIds;

    #[test]
    fn cycles_through_all_endpoints() {
        let rr = RoundRobin::default();
        let nodes = NodeIds(&["a", "b", "c"], 0);
        let picks: Vec<_> = (0..6)
            .map(|_| rr.select(&nodes, &SelectionContext::empty()).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn refuses_an_empty_list() {
        assert_eq!(
            RoundRobin::default().select(&NodeIds(&[], 0), &SelectionContext::empty()),
            None
        );
    }
}
