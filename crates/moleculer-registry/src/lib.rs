//! # moleculer-registry
//!
//! The service registry, free of I/O: which node offers which action and event, and which
//! endpoint a call or an event goes to. The broker owns one [`Registry`], feeds it INFO,
//! heartbeats and disconnections, and asks it for endpoints on every call.
//!
//! - catalogs: [`NodeCatalog`], [`ServiceCatalog`], [`ActionCatalog`], [`EventCatalog`];
//! - [`EndpointList`] applies Moleculer's balancing rules (internal names and `preferLocal`
//!   stay local, one endpoint needs no strategy) before asking the list's strategy;
//! - [`strategies`]: RoundRobin, Random, CpuUsage, Latency and a truly consistent Shard;
//! - [`wildcard`]: event-name patterns (`*`, `**`, `?`).
//!
//! ```
//! use std::collections::HashMap;
//! use moleculer_core::{ActionInfo, ServiceInfo, SelectionContext};
//! use moleculer_registry::{LocalService, Node, Registry, RegistryOptions};
//!
//! let mut registry: Registry<&str, ()> = Registry::new(Node::new("node-1".into(), true), RegistryOptions::default());
//! let mut info = ServiceInfo { name: "math".into(), full_name: "math".into(), ..Default::default() };
//! info.actions.insert("math.add".into(), ActionInfo { name: "math.add".into(), ..Default::default() });
//! let actions = HashMap::from([("math.add".to_string(), "add-handler")]);
//! registry.register_local_service(&LocalService { info, actions, events: HashMap::new() }).unwrap();
//!
//! let endpoint = registry.next_action_endpoint("math.add", &SelectionContext::empty()).unwrap();
//! assert_eq!(endpoint.handler, Some("add-handler"));
//! ```

pub mod action_catalog;
pub mod endpoint;
pub mod endpoint_list;
pub mod error;
pub mod event_catalog;
pub mod listings;
pub mod node;
pub mod node_catalog;
pub mod registry;
pub mod service_catalog;
pub mod strategies;
pub mod wildcard;

pub use action_catalog::ActionCatalog;
pub use endpoint::{ActionEndpoint, Endpoint, EventEndpoint};
pub use endpoint_list::EndpointList;
pub use error::RegistryError;
pub use event_catalog::EventCatalog;
pub use listings::ListOptions;
pub use node::Node;
pub use node_catalog::NodeCatalog;
pub use registry::{LocalService, Miss, NodeChange, Registry, RegistryOptions};
pub use service_catalog::{ServiceCatalog, ServiceItem};
pub use strategies::{StrategyConfig, StrategyKind};
