//! # moleculer-discoverer-etcd3
//!
//! Discovery through etcd v3, with Moleculer's key layout so Rust and Node.js nodes share it:
//! `moleculer[-ns]/discovery/beats/<nodeID>/<instanceID first 8>/<seq>` under a lease whose TTL
//! is `heartbeatTimeout`, and `moleculer[-ns]/discovery/info/<nodeID>` under a lease of its own.
//! Leases are kept alive every beat; when one is lost (the process was paused past its TTL, or it
//! was revoked from outside) a new one is granted and the keys are written again.
//!
//! Beyond Moleculer, which polls: a watch on the discovery prefix sees joins and leaves as they
//! happen, with a periodic full read as a safety net; an etcd outage evicts no live node (the
//! discoverer heartbeats over the transporter meanwhile). Built only with the `etcd3` feature of
//! the facade, because `etcd-client` needs `protoc`.

mod discoverer;
mod keys;
mod options;

pub use discoverer::Etcd3Discoverer;
pub use options::{Etcd3Options, NotAnEtcd3Url};
