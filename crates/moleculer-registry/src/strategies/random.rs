//! Random: a uniformly random endpoint.

use moleculer_core::strategy::{Candidates, SelectionContext, Strategy};

use super::rng::StrategyRng;

/// Picks a uniformly random endpoint.
#[derive(Debug, Default)]
pub struct Random {
    rng: StrategyRng,
}

impl Random {
    /// A strategy with repeatable choices.
    pub fn seeded(seed: u64) -> Self {
        Self {
            rng: StrategyRng::seeded(seed),
        }
    }
}

impl Strategy for Random {
    fn select(&self, candidates: &dyn Candidates, _ctx: &SelectionContext<'_>) -> Option<usize> {
        let n = candidates.len();
        (n > 0).then(|| self.rng.below(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moleculer_core::strategy::NodeIds;

    #[test]
    fn spreads_over_every_endpoint() {
        let random = Random::seeded(7);
        let nodes = NodeIds(&["a", "b", "c", "d"], 0);
        let mut hits = [0usize; 4];
        for _ in 0..4000 {
            hits[random.select(&nodes, &SelectionContext::empty()).unwrap()] += 1;
        }
        for h in hits {
            assert!((800..1200).contains(&h), "uneven spread: {hits:?}");
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let nodes = NodeIds(&["a", "b", "c"], 0);
        let run = |seed| {
            let r = Random::seeded(seed);
            (0..20)
                .map(|_| r.select(&nodes, &SelectionContext::empty()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
    }
}
