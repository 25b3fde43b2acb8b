//! # moleculer-core
//!
//! The shared vocabulary of the broker: node ids, the wire error [`MoleculerError`], service
//! descriptions as they travel in INFO packets, the request [`Context`], and the traits that
//! the rest of the system plugs into ([`Strategy`], [`Middleware`]).
//!
//! Depend on this crate, and only this crate, to write a backend (a strategy, a middleware, and
//! later a transporter or a discoverer): it does not depend on the broker.

pub mod bulkhead;
pub mod cache_key;
pub mod cacher;
pub mod call_meter;
pub mod call_options;
pub mod context;
pub mod discoverer;
pub mod endpoint_breaker;
pub mod error;
pub mod event_delivery;
pub mod fault_tolerance;
pub mod in_flight;
pub mod log_throttle;
pub mod memory_cacher;
pub mod memory_transporter;
pub mod middleware;
pub mod multi_call;
pub mod node_id;
pub mod outage_hold;
pub mod protocol;
pub mod serializer;
pub mod service_info;
pub mod strategy;
pub mod task;
pub mod transmit;
pub mod transporter;

pub use cacher::{CacheOptions, Cacher, CacherOptions};
pub use context::{
    BrokerHandle, CallOptions, Context, ContextTarget, EmitOptions, EventDelivery, EventGroups,
    EventType, Fallback, Meta, Origin,
};
pub use discoverer::{Discoverer, DiscoveryEvent, DiscoveryLink, DiscoveryTiming, NodeDigest};
pub use error::{ErrorDetails, MoleculerError, Result};
pub use fault_tolerance::{
    BulkheadOptions, CircuitBreakerOptions, ErrorCheck, RetryPlan, RetryPolicy,
};
pub use log_throttle::LogThrottle;
pub use middleware::{ActionHandler, EventHandler, Middleware};
pub use multi_call::{CallSpec, NodeOutcome, Settle};
pub use node_id::NodeId;
pub use outage_hold::OutageHold;
pub use service_info::{ActionInfo, EventInfo, NodeInfo, ServiceInfo, Version, Visibility};
pub use strategy::{Candidates, SelectionContext, Strategy};
