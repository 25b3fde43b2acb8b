//! # moleculer-test
//!
//! - [`Cluster`]: N brokers in one process on the in-memory bus, with partitions, silenced
//!   nodes, dropped or delayed packets, and packet counts. Most distributed behaviour is tested
//!   with it, on paused tokio time.
//! - [`conformance`]: the suites every transporter and every discoverer must pass.
//! - [`services`]: small services the tests and suites share.
//! - [`fake_peer`]: a scripted peer with a chosen host, CPU load and ping delay.
//! - [`bench`]: call measurement for the benchmark binaries, and [`eventually`] for tests.
//! - [`servers`]: real servers (Redis) started on loopback ports for live tests.

pub mod bench;
mod cluster;
pub mod conformance;
pub mod fake_peer;
pub mod servers;
pub mod services;

pub use bench::eventually;
pub use cluster::Cluster;
