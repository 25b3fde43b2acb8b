//! # moleculer-broker
//!
//! The [`ServiceBroker`]: services are plain Rust structs implementing [`Service`]; the broker
//! registers their actions and events, routes calls and events through the registry's
//! strategies, applies timeouts, call-depth limits and middlewares, and runs the lifecycle
//! (`start`, `stop`, dependencies, `$broker.*` and `$services.changed` events). Every broker
//! hosts the internal `$node` service unless told not to.
//!
//! A call to a local action never serializes anything: the context is handed to the handler
//! directly. Typed params are deserialized from the call's JSON once; a mismatch answers a
//! `ValidationError` (422) naming the field.

mod bridges;
mod broker;
mod builder;
mod call_future;
mod cluster;
pub mod error;
pub mod health;
mod middleware_bridge;
mod node_service;
pub mod options;
mod service;
mod transit;

pub use broker::{BrokerRegistry, LocalAction, LocalEvent, LocalSubscription, ServiceBroker};
pub use builder::ServiceBrokerBuilder;
pub use call_future::CallFuture;
pub use cluster::PingResult;
pub use error::BrokerError;
pub use options::{BrokerOptions, RegistrySettings, TransitSettings};
pub use service::{ActionDef, EventDef, Service, ServiceSchema};
pub use transit::TransitStats;
