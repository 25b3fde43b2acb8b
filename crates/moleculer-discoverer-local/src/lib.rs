//! # moleculer-discoverer-local
//!
//! The default discoverer: nodes find each other with packets over the transporter itself, as
//! Moleculer's `Local` discoverer does. No server beyond the transporter is needed.
//!
//! - start: broadcast DISCOVER (every node answers with its INFO), then a HEARTBEAT every
//!   `heartbeatInterval` with a jitter drawn once;
//! - DISCOVER from a node: answer it with our INFO;
//! - INFO, HEARTBEAT, DISCONNECT: reported to the broker, which owns the registry;
//! - stop: broadcast DISCONNECT.

mod discoverer;

pub use discoverer::LocalDiscoverer;
