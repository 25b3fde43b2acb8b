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
        }
    }
}

/// `tracing = true` / `false` as a short form of `{ enabled = ... }`.
pub(crate) fn bool_or_table<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<TracingSettings, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Flag(bool),
        Table(TracingSettings),
    }
    let value = serde_json::Value::deserialize(d)?;
    match Form::deserialize(&value) {
        Ok(Form::Flag(enabled)) => Ok(TracingSettings {
            enabled,
            ..TracingSettings::default()
        }),
        Ok(Form::Table(settings)) => Ok(settings),
        // The table's own error names the bad key; an untagged enum would hide it.
        Err(_) => TracingSettings::deserialize(value).map_err(serde::de::Error::custom),
    }
}
