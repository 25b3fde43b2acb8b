//! # moleculer-transporter-redis
//!
//! Moleculer's Redis transporter: every node SUBSCRIBEs to its channels
//! (`MOL[-ns].<TYPE>` and `MOL[-ns].<TYPE>.<nodeID>`) and PUBLISHes packets, exactly as
//! Moleculer does, so Rust and Node.js nodes share a Redis server. Discovery runs over it with
//! the Local discoverer (DISCOVER, INFO, HEARTBEAT, DISCONNECT packets).
//!
//! Redis unreachable at start is logged with the URL and retried with backoff; the broker
//! starts anyway and keeps serving local calls. A lost subscription is re-established the same
//! way.

mod options;
mod transporter;

pub use options::{NotARedisUrl, RedisOptions};
pub use transporter::RedisTransporter;
