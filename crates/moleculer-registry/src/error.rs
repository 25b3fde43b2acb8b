//! Local failures of the registry.

/// What the registry refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// A strategy name that is not built in.
    #[error("unknown strategy '{0}' (expected RoundRobin, Random, CpuUsage, Latency or Shard)")]
    UnknownStrategy(String),
    /// Strategy options that do not fit the strategy.
    #[error("bad options for strategy {strategy}: {reason}")]
    BadStrategyOptions {
        /// The strategy.
        strategy: String,
        /// Why.
        reason: String,
    },
    /// A local service registered twice.
    #[error("service '{0}' is already registered on this node")]
    DuplicateService(String),
    /// An INFO that claims to come from this very node.
    #[error("received node info for our own node id '{0}'")]
    OwnNodeId(String),
}
