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
    /// `start` was called twice.
    #[error("the broker is already started")]
    AlreadyStarted,
    /// The registry refused something.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
