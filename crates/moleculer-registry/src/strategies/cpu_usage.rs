//! CpuUsage: the endpoint whose node reported the lowest CPU usage.

use moleculer_core::strategy::{Candidates, SelectionContext, Strategy};
use serde::{Deserialize, Serialize};

use super::rng::StrategyRng;
use super::sampling::lowest_score;

/// Options of [`CpuUsage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CpuUsageOptions {
    /// How many random endpoints to compare (0 = all). Default 3.
    pub sample_count: usize,
    /// A node under this CPU percentage is taken at once. Default 10.
    pub low_cpu_usage: f64,
}

impl Default for CpuUsageOptions {
    fn default() -> Self {
        Self {
            sample_count: 3,
            low_cpu_usage: 10.0,
        }
    }
}

/// Prefers the node with the lowest CPU usage (as reported in heartbeats).
#[derive(Debug, Default)]
pub struct CpuUsage {
    opts: CpuUsageOptions,
    rng: StrategyRng,
}

impl CpuUsage {
    /// A strategy with these options.
    pub fn new(opts: CpuUsageOptions) -> Self {
        Self {
            opts,
            rng: StrategyRng::Thread,
        }
    }

    /// A strategy with repeatable sampling.
    pub fn seeded(opts: CpuUsageOptions, seed: u64) -> Self {
        Self {
            opts,
            rng: StrategyRng::seeded(seed),
        }
    }
}

impl Strategy for CpuUsage {
    fn select(&self, candidates: &dyn Candidates, _ctx: &SelectionContext<'_>) -> Option<usize> {
        lowest_score(
            candidates,
            self.opts.sample_count,
            self.opts.low_cpu_usage,
            &self.rng,
            |c, i| c.cpu(i),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Candidates with CPU and latency figures, for strategy tests.
    pub(crate) struct Loaded(pub Vec<(&'static str, Option<f64>)>);

    impl Candidates for Loaded {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn node_id(&self, i: usize) -> &str {
            self.0[i].0
        }
        fn cpu(&self, i: usize) -> Option<f64> {
            self.0[i].1
        }
        fn latency_ms(&self, i: usize) -> Option<f64> {
            self.0[i].1
        }
        fn generation(&self) -> u64 {
            0
        }
    }

    fn pick(strategy: &CpuUsage, c: &Loaded) -> &'static str {
        c.0[strategy.select(c, &SelectionContext::empty()).unwrap()].0
    }

    #[test]
    fn takes_the_least_loaded_when_comparing_all() {
        let s = CpuUsage::seeded(
            CpuUsageOptions {
                sample_count: 0,
                low_cpu_usage: 10.0,
            },
            1,
        );
        let c = Loaded(vec![
            ("a", Some(80.0)),
            ("b", Some(30.0)),
            ("c", Some(55.0)),
        ]);
        assert_eq!(pick(&s, &c), "b");
    }

    #[test]
    fn a_node_under_the_low_mark_wins_at_once() {
        let s = CpuUsage::seeded(
            CpuUsageOptions {
                sample_count: 0,
                low_cpu_usage: 10.0,
            },
            1,
        );
        let c = Loaded(vec![("a", Some(5.0)), ("b", Some(1.0))]);
        assert_eq!(
            pick(&s, &c),
            "a",
            "the first node under the mark is taken without looking further"
        );
    }

    #[test]
    fn no_cpu_data_falls_back_to_random() {
        let s = CpuUsage::seeded(CpuUsageOptions::default(), 9);
        let c = Loaded(vec![("a", None), ("b", None), ("c", None), ("d", None)]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            seen.insert(pick(&s, &c));
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn sampling_mostly_avoids_the_busiest() {
        let s = CpuUsage::seeded(
            CpuUsageOptions {
                sample_count: 3,
                low_cpu_usage: 10.0,
            },
            5,
        );
        let c = Loaded(vec![
            ("a", Some(90.0)),
            ("b", Some(50.0)),
            ("c", Some(60.0)),
            ("d", Some(70.0)),
            ("e", Some(95.0)),
        ]);
        let busiest = (0..1000).filter(|_| pick(&s, &c) == "e").count();
        // "e" wins only when all three samples land on it: (1/5)^3 = 0.8 %.
        assert!(busiest < 30, "busiest picked {busiest} times");
    }
}
