//! The broker builder: infallible setters, one fallible `build`.

use std::sync::Arc;
use std::time::Duration;

use moleculer_core::transmit::TransmitSettings;
use moleculer_core::transporter::Transporter;
use moleculer_core::{
    BulkheadOptions, Cacher, CircuitBreakerOptions, Discoverer, Middleware, MoleculerError,
    RetryPolicy,
};
use serde_json::Value;

use crate::broker::ServiceBroker;
use crate::broker_core::{Backends, BrokerCore};
use crate::error::BrokerError;
use crate::metrics_settings::MetricsSettings;
use crate::middleware_bridge::ErasedMiddleware;
use crate::options::BrokerOptions;
use crate::tracer::TracingSettings;

/// Builds a [`ServiceBroker`]. Options are checked once, in [`build`](Self::build).
#[derive(Default)]
pub struct ServiceBrokerBuilder {
    options: BrokerOptions,
    middlewares: Vec<Arc<dyn ErasedMiddleware>>,
    backends: Backends,
}

impl ServiceBrokerBuilder {
    /// Replaces every option (e.g. with options read from `moleculer.toml`).
    #[must_use]
    pub fn options(mut self, options: BrokerOptions) -> Self {
        self.options = options;
        self
    }

    /// The node id (default `<hostname>-<pid>`).
    #[must_use]
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.options.node_id = Some(node_id.into());
        self
    }

    /// The cluster namespace.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.options.namespace = namespace.into();
        self
    }

    /// The default call timeout.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The broker's retry policy (Moleculer's `retryPolicy`).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.options.retry_policy = policy;
        self
    }

    /// The broker's circuit breaker settings (Moleculer's `circuitBreaker`).
    #[must_use]
    pub fn circuit_breaker(mut self, options: CircuitBreakerOptions) -> Self {
        self.options.circuit_breaker = options;
        self
    }

    /// The bulkhead of every local action and event handler (Moleculer's `bulkhead`).
    #[must_use]
    pub fn bulkhead(mut self, options: BulkheadOptions) -> Self {
        self.options.bulkhead = options;
        self
    }

    /// Which errors the retry policy retries (Moleculer's `retryPolicy.check`); by default
    /// the ones marked retryable.
    #[must_use]
    pub fn retry_check(
        mut self,
        check: impl Fn(&MoleculerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.backends.retry_check = Some(Arc::new(check));
        self
    }

    /// Which errors count as failures of an endpoint (Moleculer's `circuitBreaker.check`); by
    /// default those with a code of 500 or more. Only errors the endpoint's node raised itself
    /// are ever counted.
    #[must_use]
    pub fn circuit_breaker_check(
        mut self,
        check: impl Fn(&MoleculerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.backends.breaker_check = Some(Arc::new(check));
        self
    }

    /// The deepest allowed nested call (0 = unlimited).
    #[must_use]
    pub fn max_call_level(mut self, level: u32) -> Self {
        self.options.max_call_level = level;
        self
    }

    /// The default balancing strategy and its options.
    #[must_use]
    pub fn strategy(mut self, name: &str, options: Value) -> Self {
        self.options.registry.strategy = name.to_owned();
        self.options.registry.strategy_options = options;
        self
    }

    /// Whether calls stay local when this node hosts the action (default on).
    #[must_use]
    pub fn prefer_local(mut self, prefer: bool) -> Self {
        self.options.registry.prefer_local = prefer;
        self
    }

    /// Whether to register the `$node` service (default on).
    #[must_use]
    pub fn internal_services(mut self, enabled: bool) -> Self {
        self.options.internal_services = enabled;
        self
    }

    /// Heartbeat interval and timeout, in seconds.
    #[must_use]
    pub fn heartbeat(mut self, interval: f64, timeout: f64) -> Self {
        self.options.heartbeat_interval = interval;
        self.options.heartbeat_timeout = timeout;
        self
    }

    /// Metadata published in INFO.
    #[must_use]
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.options.metadata = metadata;
        self
    }

    /// Adds a middleware. Hooks apply in the order added, the last added outermost.
    #[must_use]
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middlewares.push(Arc::new(middleware));
        self
    }

    /// The transporter that connects this broker to a cluster (none: a single node).
    #[must_use]
    pub fn transporter(mut self, transporter: impl Transporter) -> Self {
        self.backends.transporter = Some(Arc::new(transporter));
        self
    }

    /// The cache store (over the `cacher` option); actions with `cache` settings use it.
    #[must_use]
    pub fn cacher(mut self, cacher: impl Cacher) -> Self {
        self.backends.cacher = Some(Arc::new(cacher));
        self
    }

    /// The discoverer (default with a transporter: Local, over the transporter itself).
    #[must_use]
    pub fn discoverer(mut self, discoverer: impl Discoverer) -> Self {
        self.backends.discoverer = Some(Arc::new(discoverer));
        self
    }

    /// What every packet goes through on the wire: compression, encryption, signatures
    /// (Moleculer's `transmit` middlewares, and signing beyond them).
    #[must_use]
    pub fn transmit(mut self, settings: TransmitSettings) -> Self {
        self.options.transmit = settings;
        self
    }

    /// Metrics: what is measured and where `/metrics` listens (see [`MetricsSettings`]).
    #[must_use]
    pub fn metrics(mut self, settings: MetricsSettings) -> Self {
        self.options.metrics = settings;
        self
    }

    /// Tracing: a span per action call (and event handler run) with Moleculer's ids.
    #[must_use]
    pub fn tracing(mut self, settings: TracingSettings) -> Self {
        self.options.tracing = settings;
        self
    }

    /// The packet serializer: `JSON` (default), `MsgPack`, `Notepack`.
    #[must_use]
    pub fn serializer(mut self, name: &str) -> Self {
        self.options.serializer = name.to_owned();
        self
    }

    /// The protocol version spoken: `"5"` (default) or `"4"`.
    #[must_use]
    pub fn protocol_version(mut self, version: &str) -> Self {
        self.options.transit.protocol_version = version.to_owned();
        self
    }

    /// Checks the options and creates the broker.
    pub fn build(self) -> Result<ServiceBroker, BrokerError> {
        BrokerCore::build(self.options, self.middlewares, self.backends)
            .map(ServiceBroker::from_core)
    }
}
