//! The `tracing` option: `tracing = true`, or a table of the settings below.

use serde::{Deserialize, Serialize};

/// The `tracing` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TracingSettings {
    /// Open spans and mark new requests as traced. Off by default, as in Moleculer. A request
    /// that arrives already traced (or already not) keeps its caller's decision.
    pub enabled: bool,
    /// A span per action call.
    pub actions: bool,
    /// A span per event handler run (off by default, as in Moleculer).
    pub events: bool,
    /// Which requests are traced.
    pub sampling: SamplingSettings,
    /// Where a node run by the runner ships its spans; none by default (a program of its own
    /// installs [`SpanExport`](super::SpanExport) as it likes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterSettings>,
}

/// The `tracing.exporter` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExporterSettings {
    /// `OTLP`: OpenTelemetry's protocol, JSON over HTTP.
    #[serde(rename = "type")]
    pub kind: String,
    /// The collector's traces URL, `http://host:4318/v1/traces` for an OpenTelemetry
    /// collector. Plain HTTP: a collector or agent on the same host or network.
    pub url: String,
    /// Seconds between two batches (5 by default, as Moleculer's exporters).
    #[serde(default = "default_interval")]
    pub interval: f64,
}

fn default_interval() -> f64 {
    5.0
}

/// The `tracing.sampling` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SamplingSettings {
    /// The share of new requests traced, from 0 to 1 (1: all, as Moleculer's default). The
    /// decision is made once, by the first traced node a request reaches, and travels with it,
    /// so a trace is kept or dropped whole.
    pub rate: f64,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        Self { rate: 1.0 }
    }
}

impl TracingSettings {
    /// Rejects settings the tracer cannot work with, naming the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(0.0..=1.0).contains(&self.sampling.rate) {
            return Err((
                "tracing.sampling.rate".into(),
                format!("must be between 0 and 1 (got {})", self.sampling.rate),
            ));
        }
        if let Some(exporter) = &self.exporter {
            if !exporter.kind.eq_ignore_ascii_case("OTLP") {
                return Err((
                    "tracing.exporter.type".into(),
                    format!(
                        "'{}' is not an exporter here (expected \"OTLP\")",
                        exporter.kind
                    ),
                ));
            }
            if !exporter.url.starts_with("http://") {
                return Err((
                    "tracing.exporter.url".into(),
                    format!("must be an http:// URL (got '{}')", exporter.url),
                ));
            }
            if !(exporter.interval.is_finite() && exporter.interval > 0.0) {
                return Err((
                    "tracing.exporter.interval".into(),
                    "must be a positive number of seconds".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            actions: true,
            events: false,
            sampling: SamplingSettings::default(),
            exporter: None,
        }
    }
}

impl crate::flag_or_table::Switchable for TracingSettings {
    fn switched(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }
}
