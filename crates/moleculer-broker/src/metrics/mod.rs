//! Metrics, with Moleculer's names and labels: calls, events, packets, circuit breakers, the
//! cacher, the registry, and the process and machine the node runs on. They are kept in a
//! [`prometheus`] registry per broker (several brokers in one process do not mix), with the
//! default labels `namespace` and `nodeID`, and read in two ways: Prometheus text on
//! `http://<host>:<port>/metrics` ([`endpoint`]) and the `$node.metrics` action ([`listing`]).
//!
//! Moleculer's dotted names become Prometheus names with `.` and `-` turned into `_`
//! (`moleculer.request.total` → `moleculer_request_total`); a missing label reads `null`.
//! Counts that other parts keep anyway (packets, breakers, cache hits, the registry) are
//! copied into the registry when it is read, so they cost nothing per call here.

mod catalog;
pub(crate) mod endpoint;
pub(crate) mod listing;
pub(crate) mod meter;
mod request_meter;
mod system_meter;

use std::sync::Arc;

use dashmap::DashMap;
use moleculer_core::call_meter::CallMeter;
use parking_lot::Mutex;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::metrics_settings::MetricsSettings;
pub(crate) use catalog::Families;
pub(crate) use request_meter::MetricsMiddleware;

use crate::cacher_middleware::CacherStats;
use crate::circuit_breaker::CircuitBreaker;
use crate::shared_registry::SharedRegistry;
use crate::transit::outbound::Transit;
use meter::{Kind, Meter};
use system_meter::SystemMeter;

/// An action's fixed labels: its service (the name up to the last dot), name and type.
fn action_labels(action: &str, kind: &str) -> [String; 3] {
    let service = action
        .rsplit_once('.')
        .map_or("null", |(service, _)| service);
    [service.to_owned(), action.to_owned(), kind.to_owned()]
}

/// What the metrics read when they are collected: the parts that count for themselves.
pub(crate) struct Sources {
    pub transit: Option<Arc<Transit>>,
    pub registry: Arc<SharedRegistry>,
    pub breaker: Arc<CircuitBreaker>,
    pub cacher: Option<Arc<CacherStats>>,
}

/// The metrics of one broker.
pub(crate) struct BrokerMetrics {
    registry: Registry,
    pub families: Arc<Families>,
    sources: Sources,
    system: Option<SystemMeter>,
    pub settings: MetricsSettings,
    /// Every meter made, for the counts worked out when read.
    meters: Mutex<Vec<Arc<Meter>>>,
    /// The meters of remote actions, by action name.
    remote: DashMap<String, Arc<Meter>>,
}

impl BrokerMetrics {
    /// Registers every metric, labelled with the broker's namespace and node id.
    pub fn new(
        settings: MetricsSettings,
        namespace: &str,
        node_id: &str,
        sources: Sources,
    ) -> prometheus::Result<Self> {
        let labels = [
            ("namespace".to_owned(), namespace.to_owned()),
            ("nodeID".to_owned(), node_id.to_owned()),
        ]
        .into_iter()
        .collect();
        let registry = Registry::new_custom(None, Some(labels))?;
        let families = Arc::new(Families::register(&registry, &settings.default_buckets)?);
        let system = settings
            .collect_process_metrics
            .then(|| SystemMeter::register(&registry))
            .transpose()?;
        Ok(Self {
            registry,
            families,
            sources,
            system,
            settings,
            meters: Mutex::new(Vec::new()),
            remote: DashMap::new(),
        })
    }

    /// A new meter, kept for reading.
    pub fn meter(&self, kind: Kind, labels: [String; 3], timing_every: u32) -> Arc<Meter> {
        let meter = Arc::new(Meter::new(
            self.families.clone(),
            kind,
            labels,
            timing_every,
        ));
        self.meters.lock().push(meter.clone());
        meter
    }

    /// The meter of a local action, made when its service is added.
    pub fn local_action_meter(&self, action: &str) -> Arc<dyn CallMeter> {
        let every = self.settings.local_timing_every;
        self.meter(Kind::Action, action_labels(action, "local"), every)
    }

    /// The meter of a remote action, made on its first call. Remote calls are timed every
    /// time: a clock read is small beside a round trip.
    pub fn remote_action_meter(&self, action: &str) -> Arc<dyn CallMeter> {
        if let Some(meter) = self.remote.get(action) {
            return meter.clone();
        }
        self.remote
            .entry(action.to_owned())
            .or_insert_with(|| self.meter(Kind::Action, action_labels(action, "remote"), 1))
            .clone()
    }

    /// Every metric, with the counts other parts keep brought up to date.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.families.refresh(&self.sources);
        let mut started = 0;
        for meter in self.meters.lock().iter() {
            let n = meter.settle();
            if meter.is_action() {
                started += n;
            }
        }
        self.families.settle_levels(started);
        if let Some(system) = &self.system {
            system.refresh();
        }
        self.registry.gather()
    }

    /// Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into memory fails only on a metric the registry itself rejected.
        if let Err(err) = TextEncoder::new().encode(&self.gather(), &mut out) {
            tracing::warn!("cannot encode the metrics: {err}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
