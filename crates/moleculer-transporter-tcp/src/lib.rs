//! # moleculer-transporter-tcp
//!
//! Moleculer's TCP transporter, wire-compatible with Node.js Moleculer 0.14 and 0.15: frames
//! with a 6-byte header, one outbound connection per peer that opens with GOSSIP_HELLO, and
//! discovery by gossip (GOSSIP_REQ / GOSSIP_RES), static `urls` and UDP announcements. No
//! server is needed.
//!
//! ```no_run
//! use moleculer_transporter_tcp::{TcpOptions, TcpTransporter};
//! use moleculer_broker::ServiceBroker;
//!
//! let opts: TcpOptions = "tcp://127.0.0.1:6001/node-a,127.0.0.1:6002/node-b".parse().unwrap();
//! let tcp = TcpTransporter::new(opts);
//! let broker = ServiceBroker::builder().node_id("node-a").transporter(tcp.clone()).discoverer(tcp.discoverer()).build();
//! ```

mod discoverer;
mod duplicate_id;
pub mod frame;
mod inbound;
mod options;
mod peer_state;
mod transporter;
mod udp;

pub use discoverer::GossipDiscoverer;
pub use options::{StaticPeer, TcpOptions, UrlError};
pub use transporter::TcpTransporter;
