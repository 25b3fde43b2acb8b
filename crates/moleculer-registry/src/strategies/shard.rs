//! Shard: the same key always goes to the same node, through a consistent-hash ring.
//!
//! Moleculer spaces its ring evenly and interleaves nodes by sorted id, so adding a fourth node
//! to three moves about half of the keys. Here each node owns `vnodes` points placed by hashing
//! `<nodeID>-<i>`, so a joining node only takes keys from the others (about 1/(N+1) of them)
//! and no key moves between nodes that stayed.

use std::collections::HashMap;

use moleculer_core::strategy::{Candidates, SelectionContext, Strategy};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rng::StrategyRng;

/// Options of [`Shard`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ShardOptions {
    /// Where the key is read: a params path (`user.id`) or a meta path (`#tenant`). Calls
    /// without a key go to a random endpoint.
    pub shard_key: Option<String>,
    /// Points per node on the ring. Default 1000: with points placed by hash, a node's share
    /// varies by about 1/sqrt(vnodes) of itself, so Moleculer's 10 would leave shares uneven by
    /// ±30 %; 1000 keeps them within ±3 %. The ring is rebuilt only when nodes change.
    pub vnodes: usize,
    /// Ring size; default 2^32.
    pub ring_size: Option<u64>,
    /// How many key → node results are cached (the cache is emptied when full). Default 1000.
    pub cache_size: usize,
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self {
            shard_key: None,
            vnodes: 1000,
            ring_size: None,
            cache_size: 1000,
        }
    }
}

/// Consistent-hash sharding on a key taken from params or meta.
#[derive(Debug, Default)]
pub struct Shard {
    opts: ShardOptions,
    rng: StrategyRng,
    state: Mutex<RingState>,
}

#[derive(Debug, Default)]
struct RingState {
    generation: Option<u64>,
    /// Sorted `(position, candidate index)`.
    points: Vec<(u64, usize)>,
    cache: HashMap<String, usize>,
}

impl Shard {
    /// A strategy with these options.
    pub fn new(opts: ShardOptions) -> Self {
        Self {
            opts,
            ..Default::default()
        }
    }

    fn ring_size(&self) -> u64 {
        self.opts.ring_size.filter(|&s| s > 0).unwrap_or(1 << 32)
    }

    fn key_of(&self, ctx: &SelectionContext<'_>) -> Option<String> {
        let path = self.opts.shard_key.as_deref()?;
        let value = match path.strip_prefix('#') {
            Some(meta_path) => lookup(
                ctx.meta.get(first_segment(meta_path))?,
                rest_segments(meta_path),
            ),
            None => lookup(ctx.params, Some(path)),
        }?;
        match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    fn rebuild(&self, state: &mut RingState, candidates: &dyn Candidates) {
        let ring = self.ring_size();
        let vnodes = self.opts.vnodes.max(1);
        state.points.clear();
        state.cache.clear();
        for i in 0..candidates.len() {
            let node = candidates.node_id(i);
            for v in 0..vnodes {
                state
                    .points
                    .push((hash(format!("{node}-{v}").as_bytes()) % ring, i));
            }
        }
        // Ties broken by node id, so every node builds the same ring whatever the list order.
        state.points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| candidates.node_id(a.1).cmp(candidates.node_id(b.1)))
        });
        state.generation = Some(candidates.generation());
    }
}

impl Strategy for Shard {
    fn select(&self, candidates: &dyn Candidates, ctx: &SelectionContext<'_>) -> Option<usize> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let Some(key) = self.key_of(ctx) else {
            return Some(self.rng.below(n));
        };
        let mut state = self.state.lock();
        if state.generation != Some(candidates.generation()) {
            self.rebuild(&mut state, candidates);
        }
        if let Some(&i) = state.cache.get(&key) {
            return Some(i);
        }
        let pos = hash(key.as_bytes()) % self.ring_size();
        let at = state.points.partition_point(|&(p, _)| p < pos);
        let i = state
            .points
            .get(at)
            .or_else(|| state.points.first())
            .map(|&(_, i)| i)?;
        if state.cache.len() >= self.opts.cache_size {
            state.cache.clear();
        }
        if self.opts.cache_size > 0 {
            state.cache.insert(key, i);
        }
        Some(i)
    }
}

fn first_segment(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

fn rest_segments(path: &str) -> Option<&str> {
    path.split_once('.').map(|(_, rest)| rest)
}

/// Follows a dotted path into a JSON value.
fn lookup<'a>(value: &'a Value, path: Option<&str>) -> Option<&'a Value> {
    let Some(path) = path else { return Some(value) };
    path.split('.').try_fold(value, |v, seg| match v {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A stable 64-bit hash (FNV-1a with a murmur finaliser): the same on every node and every build,
/// which `std`'s hasher does not promise.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moleculer_core::strategy::NodeIds;
    use serde_json::{json, Map};

    const KEYS: usize = 50_000;

    fn shard() -> Shard {
        Shard::new(ShardOptions {
            shard_key: Some("id".into()),
            cache_size: 0,
            ..Default::default()
        })
    }

    fn assign(names: &[&str], generation: u64) -> Vec<String> {
        let s = shard();
        let nodes = NodeIds(names, generation);
        let meta = Map::new();
        (0..KEYS)
            .map(|k| {
                let params = json!({ "id": format!("key-{k}") });
                let ctx = SelectionContext {
                    params: &params,
                    meta: &meta,
                };
                names[s.select(&nodes, &ctx).unwrap()].to_owned()
            })
            .collect()
    }

    /// Tolerance on the moved share above the ideal 1/(N+1), stated in docs/architecture.md.
    const TOLERANCE: f64 = 0.04;

    #[test]
    fn a_joining_node_takes_only_its_share_and_nothing_else_moves() {
        let names: Vec<String> = (1..=10).map(|i| format!("node-{i}")).collect();
        for n in [2usize, 3, 4, 6, 9] {
            let before_names: Vec<&str> = names[..n].iter().map(String::as_str).collect();
            let after_names: Vec<&str> = names[..=n].iter().map(String::as_str).collect();
            let before = assign(&before_names, 1);
            let after = assign(&after_names, 2);
            let newcomer = after_names[n];
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    moved += 1;
                    assert_eq!(
                        a, newcomer,
                        "a key moved between two nodes that both stayed"
                    );
                }
            }
            let share = moved as f64 / KEYS as f64;
            let ideal = 1.0 / (n as f64 + 1.0);
            assert!(
                share <= ideal + TOLERANCE,
                "{n} -> {} nodes moved {share:.3}, ideal {ideal:.3}",
                n + 1
            );
            assert!(
                share >= ideal - TOLERANCE,
                "{n} -> {} nodes: newcomer took too little ({share:.3})",
                n + 1
            );
        }
    }

    #[test]
    fn a_leaving_node_hands_over_only_its_own_keys() {
        let before = assign(&["a", "b", "c", "d"], 1);
        let after = assign(&["a", "b", "d"], 2);
        for (b, a) in before.iter().zip(&after) {
            if b != "c" {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn list_order_does_not_matter() {
        assert_eq!(assign(&["a", "b", "c"], 1), assign(&["c", "a", "b"], 1));
    }

    #[test]
    fn reads_the_key_from_meta() {
        let s = Shard::new(ShardOptions {
            shard_key: Some("#tenant.id".into()),
            ..Default::default()
        });
        let nodes = NodeIds(&["a", "b", "c"], 1);
        let mut meta = Map::new();
        meta.insert("tenant".into(), json!({"id": 42}));
        let params = Value::Null;
        let ctx = SelectionContext {
            params: &params,
            meta: &meta,
        };
        let first = s.select(&nodes, &ctx);
        for _ in 0..10 {
            assert_eq!(s.select(&nodes, &ctx), first);
        }
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(hash(b"node-1-0"), hash(b"node-1-0"));
        assert_ne!(hash(b"node-1-0"), hash(b"node-1-1"));
    }
}
