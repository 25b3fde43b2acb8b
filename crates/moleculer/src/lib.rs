//! # moleculer
//!
//! A service broker in the style of [Moleculer](https://moleculer.services): services are plain
//! Rust structs registered on a [`ServiceBroker`]; the broker keeps a registry of which node
//! offers which action and event and routes every call and event through a load-balancing
//! strategy (RoundRobin, Random, CpuUsage, Latency, Shard).
//!
//! ```
//! use std::sync::Arc;
//! use moleculer::prelude::*;
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct AddParams { a: i64, b: i64 }
//!
//! struct Math;
//!
//! impl Math {
//!     async fn add(self: Arc<Self>, _ctx: Context, p: AddParams) -> Result<i64> {
//!         Ok(p.a + p.b)
//!     }
//! }
//!
//! impl Service for Math {
//!     fn schema(&self) -> ServiceSchema<Self> {
//!         ServiceSchema::new("math").action("add", Math::add)
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let broker = ServiceBroker::builder().node_id("node-1").build()?;
//! broker.create_service(Math)?;
//! broker.start().await?;
//! assert_eq!(broker.call("math.add", json!({"a": 2, "b": 3})).await?, json!(5));
//! broker.stop().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! | crate | what it holds |
//! |---|---|
//! | [`core`] (`moleculer-core`) | ids, the wire error, service descriptions, `Context`, the `Strategy` and `Middleware` traits |
//! | [`registry`] (`moleculer-registry`) | the I/O-free registry, endpoint lists and strategies |
//! | [`broker`] (`moleculer-broker`) | the `ServiceBroker`, services, lifecycle and the `$node` service |

pub use moleculer_broker as broker;
pub use moleculer_core as core;
pub use moleculer_registry as registry;
pub use moleculer_runner as runner;
pub use moleculer_transporter_tcp as tcp;

pub use moleculer_broker::{
    ActionDef, BrokerError, BrokerOptions, EventDef, Service, ServiceBroker, ServiceSchema,
};
pub use moleculer_core::{
    CacheOptions, CallOptions, CallSpec, Context, EmitOptions, Middleware, MoleculerError, NodeId,
    Result, Settle, Visibility,
};

/// The names most services need.
pub mod prelude {
    pub use moleculer_broker::{ActionDef, EventDef, Service, ServiceBroker, ServiceSchema};
    pub use moleculer_core::{
        CacheOptions, CallOptions, CallSpec, Context, EmitOptions, MoleculerError, Result, Settle,
        Visibility,
    };
}

/// The guide (`docs/guide.md`), compiled and run as doc tests so its code stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/guide.md")]
pub struct Guide;
