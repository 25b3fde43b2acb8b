//! The `metrics` option: `metrics = true`, or a table of the settings below. Kept apart from
//! `metrics/` so the options need nothing of what the metrics read.

use serde::{Deserialize, Serialize};

/// Moleculer's default histogram buckets for times, in milliseconds.
pub const DEFAULT_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// The `metrics` section: whether the broker measures its calls, events, packets and process,
/// and where it serves them as Prometheus text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Measure at all. Off by default, as in Moleculer.
    pub enabled: bool,
    /// Address the `/metrics` endpoint listens on. Loopback by default; `0.0.0.0` lets a
    /// Prometheus on another host (or outside a container) scrape it.
    pub host: String,
    /// Port of the endpoint: 3030 as in Moleculer, 0 for any free port (see
    /// `ServiceBroker::metrics_address`). Workers run by the supervisor each take the next port
    /// up: worker `i` listens on `port + i`, so every worker is scraped on its own.
    pub port: u16,
    /// Path of the endpoint.
    pub path: String,
    /// Serve the endpoint. Off: the metrics are still kept, for `$node.metrics`.
    pub serve: bool,
    /// Read process and OS metrics (CPU, memory, uptime) when scraped.
    pub collect_process_metrics: bool,
    /// Histogram buckets for request and event times, in milliseconds.
    pub default_buckets: Vec<f64>,
    /// Time one local call in this many (1: every call). Reading the clock twice costs more
    /// than a trivial local call itself, so by default one in 16 is timed: the
    /// `moleculer_request_time` histogram of local calls is a sample (its `_count` is about a
    /// sixteenth of `moleculer_request_total`), while its mean and quantiles stay those of all
    /// calls. Every call is still counted, and remote calls and events are always timed.
    pub local_timing_every: u32,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 3030,
            path: "/metrics".into(),
            serve: true,
            collect_process_metrics: true,
            default_buckets: DEFAULT_BUCKETS.to_vec(),
            local_timing_every: 16,
        }
    }
}

impl MetricsSettings {
    /// Rejects settings the endpoint or the histograms cannot work with, naming the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, why: &str| Err((format!("metrics.{key}"), why.to_owned()));
        if !self.path.starts_with('/') {
            return bad("path", "must start with '/'");
        }
        if self.host.trim().is_empty() {
            return bad("host", "must not be empty");
        }
        if self.default_buckets.is_empty()
            || self.default_buckets.iter().any(|b| !b.is_finite())
            || self.default_buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return bad(
                "defaultBuckets",
                "must be a non-empty list of finite numbers in increasing order",
            );
        }
        if self.local_timing_every == 0 {
            return bad(
                "localTimingEvery",
                "must be at least 1 (1 times every call)",
            );
        }
        Ok(())
    }
}

impl crate::flag_or_table::Switchable for MetricsSettings {
    fn switched(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }
}
