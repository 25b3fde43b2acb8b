//! Transit: Moleculer's packet layer between the broker and the transporter.
//!
//! - [`outbound`]: building, encoding and sending packets; pending requests and pings;
//! - [`inbound`]: the receive side, serving requests and events from other nodes;
//! - [`pending`]: the bounded table of requests waiting for an answer.

pub(crate) mod inbound;
pub(crate) mod outbound;
pub(crate) mod pending;

pub use outbound::{PingResult, TransitStats};
