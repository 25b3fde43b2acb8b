//! The lowest-score sampling shared by CpuUsage and Latency.

use moleculer_core::strategy::Candidates;

use super::rng::StrategyRng;

/// Picks the candidate with the lowest score among `sample_count` samples (all of them when the
/// count is 0 or not below the list length), returning early on a score under `good_enough`.
/// Falls back to a random candidate when no candidate has a score.
pub(crate) fn lowest_score(
    candidates: &dyn Candidates,
    sample_count: usize,
    good_enough: f64,
    rng: &StrategyRng,
    score: impl Fn(&dyn Candidates, usize) -> Option<f64>,
) -> Option<usize> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let count = if sample_count == 0 || sample_count >= n {
        n
    } else {
        sample_count
    };
    let mut best: Option<(usize, f64)> = None;
    for k in 0..count {
        let i = if count == n { k } else { rng.below(n) };
        if let Some(s) = score(candidates, i) {
            if s < good_enough {
                return Some(i);
            }
            if best.is_none_or(|(_, b)| s < b) {
                best = Some((i, s));
            }
        }
    }
    Some(best.map_or_else(|| rng.below(n), |(i, _)| i))
}
