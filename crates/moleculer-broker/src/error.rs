//! Local failures of the broker (building, starting, registering services).

use moleculer_core::MoleculerError;
use moleculer_registry::RegistryError;

/// What can go wrong before a request ever runs.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A broker option is invalid or contradicts another.
    #[error("invalid broker option `{key}`: {reason}")]
    Options {
        /// The option, as written in the config file (`heartbeatTimeout`, `registry.strategy`).
        key: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A service definition is invalid.
    #[error("invalid service `{service}`: {reason}")]
    Service {
        /// The service name.
        service: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A service's `started` hook (or its dependencies) failed.
    #[error("service `{service}` failed to start: {source}")]
    ServiceStart {
        /// The service's full name.
        service: String,
        /// The failure.
        source: MoleculerError,
    },
    /// The transporter could not connect (or the discoverer could not start).
    #[error("transporter: {0}")]
    Transporter(String),
    /// Another live process uses this node id.
    #[error("node id '{node_id}' is already used by a live node (instance {other_instance}); give each node a unique nodeID")]
    NodeIdConflict {
        /// The contested node id.
        node_id: String,
        /// The instance id of the other process.
        other_instance: String,
    },
    /// The metrics endpoint could not listen.
    #[error("the metrics endpoint cannot listen on {address}: {reason}")]
    MetricsEndpoint {
        /// `host:port` from the `metrics` options.
        address: String,
        /// Why (the address is in use, not an address of this host, ...).
        reason: String,
    },
    /// `start` was called twice.
    #[error("the broker is already started")]
    AlreadyStarted,
    /// The registry refused something.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
