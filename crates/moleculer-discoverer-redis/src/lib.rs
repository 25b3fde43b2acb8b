//! # moleculer-discoverer-redis
//!
//! Discovery through Redis keys, with Moleculer's layout so Rust and Node.js nodes share it:
//!
//! - beat key `MOL[-ns]-DSCVR-BEAT:<nodeID>|<instanceID first 8>|<seq>`, written every
//!   heartbeat with an expiry of `heartbeatTimeout` (the old-seq key is deleted in the same
//!   transaction), holding a HEARTBEAT packet;
//! - INFO key `MOL[-ns]-DSCVR-INFO:<nodeID>`, holding the INFO packet, expiring after 30 min;
//! - every beat, peers are found with SCAN (`scanLength`), and every `fullCheck` beats their
//!   beat values are read with MGET (CPU). A new seq or instance means: fetch its INFO; a beat
//!   key gone means: the node is gone.
//!
//! Beyond Moleculer: a Redis outage does not evict live nodes (while Redis is unreachable the
//! discoverer heartbeats over the transporter instead, and no key scan means no eviction), and
//! after a Redis restart or flush every node writes its INFO and beat again within one
//! heartbeat interval (Moleculer issue #764).

mod discoverer;
mod keys;
mod options;

pub use discoverer::RedisDiscoverer;
pub use options::{NotARedisDiscoverer, RedisDiscovererOptions};
