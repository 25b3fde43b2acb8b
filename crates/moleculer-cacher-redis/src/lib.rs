//! # moleculer-cacher-redis
//!
//! Moleculer's Redis cacher ([`RedisCacher`]), shared with Moleculer 0.15 nodes: keys are
//! `<prefix><action>:<params>` with the prefix `MOL-`, `MOL-<namespace>-` or `<prefix>-`,
//! values are JSON text, ttls are `SET ... EX`, and `clean(pattern)` is SCAN and DEL with
//! `**` read as `*`. While Redis is unreachable every operation fails at once (retrying the
//! connection at most once a second), and the broker's cacher middleware serves calls from
//! their handlers meanwhile.

mod redis_cacher;

pub use redis_cacher::RedisCacher;
