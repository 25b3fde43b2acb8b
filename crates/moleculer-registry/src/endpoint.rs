//! Endpoints: one action or event handler on one node.

use std::sync::Arc;

use moleculer_core::service_info::{ActionInfo, EventInfo};
use moleculer_core::NodeId;

/// What endpoint lists need to know of an endpoint.
pub trait Endpoint {
    /// The node that hosts it.
    fn node_id(&self) -> &NodeId;
    /// Whether that node is this one.
    fn is_local(&self) -> bool;
    /// Whether it may be chosen (a circuit breaker can switch it off).
    fn is_available(&self) -> bool;
    /// Full name of the service it belongs to.
    fn service(&self) -> &str;
    /// Switches it on or off for balancing (a circuit breaker does).
    fn set_available(&mut self, available: bool);
}

/// An action on one node. `handler` is set for local actions only.
#[derive(Debug, Clone)]
pub struct ActionEndpoint<A> {
    /// Full action name.
    pub name: Arc<str>,
    /// Hosting node.
    pub node_id: NodeId,
    /// Whether it is local.
    pub local: bool,
    /// Full name of its service.
    pub service: Arc<str>,
    /// The action description.
    pub info: Arc<ActionInfo>,
    /// The handler, for local actions.
    pub handler: Option<A>,
    /// Whether it may be chosen.
    pub available: bool,
}

/// An event subscription on one node. `handler` is set for local subscriptions only.
#[derive(Debug, Clone)]
pub struct EventEndpoint<E> {
    /// Event name or pattern subscribed to.
    pub name: Arc<str>,
    /// Hosting node.
    pub node_id: NodeId,
    /// Whether it is local.
    pub local: bool,
    /// Full name of its service.
    pub service: Arc<str>,
    /// The subscription description.
    pub info: Arc<EventInfo>,
    /// The handler, for local subscriptions.
    pub handler: Option<E>,
    /// Whether it may be chosen.
    pub available: bool,
}

macro_rules! impl_endpoint {
    ($ty:ident) => {
        impl<H> Endpoint for $ty<H> {
            fn node_id(&self) -> &NodeId {
                &self.node_id
            }
            fn is_local(&self) -> bool {
                self.local
            }
            fn is_available(&self) -> bool {
                self.available
            }
            fn service(&self) -> &str {
                &self.service
            }
            fn set_available(&mut self, available: bool) {
                self.available = available;
            }
        }
    };
}

impl_endpoint!(ActionEndpoint);
impl_endpoint!(EventEndpoint);
