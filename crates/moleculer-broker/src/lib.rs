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
//!
//! Where each concern lives (calls flow from the top of this list down):
//!
//! | file | Moleculer concept |
//! |---|---|
//! | `broker.rs`, `builder.rs` | the public `ServiceBroker` and `Service`, and building one |
//! | `broker_core.rs` | the broker's parts and their wiring |
//! | `lifecycle.rs` | start and stop, hosted services, dependencies |
//! | `cluster.rs` | joining and leaving: transporter, discoverer, monitor |
//! | `transit/inbound.rs` | the receive side: serving requests and events from other nodes |
//! | `membership.rs`, `node_id_conflict.rs`, `discovery_link.rs` | applying discovery, heartbeat checks, nodeID conflicts |
//! | `call_router.rs`, `call_future.rs` | action calls: endpoint, timeout, context, local or remote |
//! | `event_bus.rs` | emit, broadcast, broadcastLocal, local handler runs |
//! | `middleware_chain.rs` | the middleware pipeline |
//! | `transit/outbound.rs`, `transit/pending.rs` | packets out, pending requests, pings |
//! | `shared_registry.rs` | the registry as every part shares it |
//! | `service_schema.rs`, `node_service.rs` | what a service declares; the `$node` service |
//! | `tracer/` | tracing: a span per action call and event handler, with Moleculer's ids |
//! | `metrics/` | metrics: the Metrics middleware, process and OS readings, `/metrics`, `$node.metrics` |

mod bridges;
mod broker;
mod broker_core;
mod broker_state;
mod builder;
mod cacher_middleware;
mod call_future;
mod call_router;
mod circuit_breaker;
mod cluster;
mod context_tracker;
mod discovery_link;
pub mod error;
mod event_bus;
mod flag_or_table;
pub mod health;
mod lifecycle;
mod membership;
mod metrics;
mod metrics_settings;
mod middleware_bridge;
mod middleware_chain;
mod node_id_conflict;
mod node_service;
pub mod options;
mod panic_guard;
mod retry;
mod service_schema;
mod shared_registry;
mod tracer;
mod transit;

pub use broker::{Service, ServiceBroker};
pub use builder::ServiceBrokerBuilder;
pub use call_future::CallFuture;
pub use error::BrokerError;
pub use event_bus::LocalEvent;
pub use metrics_settings::{MetricsSettings, DEFAULT_BUCKETS};
pub use options::{
    BrokerOptions, CacherConfig, LogFormat, RegistrySettings, TrackingSettings, TransitSettings,
};
pub use service_schema::{ActionDef, EventDef, ServiceSchema};
pub use shared_registry::{BrokerRegistry, LocalAction, LocalSubscription};
pub use tracer::{
    otlp_export, ExporterSettings, FinishedSpan, OtlpShipper, SamplingSettings, SpanExport,
    TracingSettings, TARGET as TRACING_TARGET,
};
pub use transit::{PingResult, TransitStats};
