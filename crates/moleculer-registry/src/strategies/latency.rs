//! Latency: the endpoint whose host answered pings fastest.

use moleculer_core::strategy::{Candidates, SelectionContext, Strategy};
use serde::{Deserialize, Serialize};

use super::rng::StrategyRng;
use super::sampling::lowest_score;

/// Options of [`Latency`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LatencyOptions {
    /// How many random endpoints to compare (0 = all). Default 5.
    pub sample_count: usize,
    /// A host under this average latency (ms) is taken at once. Default 10.
    pub low_latency: f64,
    /// How many ping results are averaged per host. Default 5.
    pub collect_count: usize,
    /// Seconds between pings. Default 10.
    pub ping_interval: u64,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        Self {
            sample_count: 5,
            low_latency: 10.0,
            collect_count: 5,
            ping_interval: 10,
        }
    }
}

/// Prefers the host with the lowest average ping latency. The registry keeps the averages
/// (fed by ping results, `collectCount` samples per host); this strategy only compares them.
#[derive(Debug, Default)]
pub struct Latency {
    opts: LatencyOptions,
    rng: StrategyRng,
}

impl Latency {
    /// A strategy with these options.
    pub fn new(opts: LatencyOptions) -> Self {
        Self {
            opts,
            rng: StrategyRng::Thread,
        }
    }

    /// A strategy with repeatable sampling.
    pub fn seeded(opts: LatencyOptions, seed: u64) -> Self {
        Self {
            opts,
            rng: StrategyRng::seeded(seed),
        }
    }
}

impl Strategy for Latency {
    fn select(&self, candidates: &dyn Candidates, _ctx: &SelectionContext<'_>) -> Option<usize> {
        lowest_score(
            candidates,
            self.opts.sample_count,
            self.opts.low_latency,
            &self.rng,
            |c, i| c.latency_ms(i),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::cpu_usage::tests::Loaded;

    #[test]
    fn picks_the_fastest_host() {
        let s = Latency::seeded(
            LatencyOptions {
                sample_count: 0,
                ..Default::default()
            },
            1,
        );
        let c = Loaded(vec![
            ("a", Some(40.0)),
            ("b", Some(12.0)),
            ("c", Some(30.0)),
        ]);
        assert_eq!(s.select(&c, &SelectionContext::empty()), Some(1));
    }

    #[test]
    fn unmeasured_hosts_fall_back_to_random() {
        let s = Latency::seeded(LatencyOptions::default(), 2);
        let c = Loaded(vec![("a", None), ("b", None)]);
        assert!(s.select(&c, &SelectionContext::empty()).is_some());
    }

    #[test]
    fn options_reject_unknown_keys() {
        let err = serde_json::from_value::<LatencyOptions>(serde_json::json!({"sampleCnt": 3}))
            .unwrap_err();
        assert!(err.to_string().contains("sampleCnt"));
    }
}
