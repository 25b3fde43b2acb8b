//! Broker options, with Moleculer's names and defaults, as read from `moleculer.toml`.

use std::time::Duration;

use moleculer_core::fault_tolerance::InvalidSetting;
use moleculer_core::protocol::ProtocolVersion;
use moleculer_core::serializer::SerializerKind;
use moleculer_core::transmit::TransmitSettings;
use moleculer_core::{BulkheadOptions, CacherOptions, CircuitBreakerOptions, RetryPolicy};
use moleculer_registry::{RegistryOptions, StrategyConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::BrokerError;
use crate::metrics_settings::MetricsSettings;
use crate::tracer::TracingSettings;

/// Options of a [`ServiceBroker`](crate::ServiceBroker). Every field has Moleculer's default;
/// unknown keys are rejected when read from a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BrokerOptions {
    /// Cluster namespace: nodes only see nodes of the same namespace.
    pub namespace: String,
    /// Node id; `<hostname>-<pid>` when absent.
    #[serde(
        rename = "nodeID",
        alias = "nodeId",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_id: Option<String>,
    /// Transporter, by name or URL: `"TCP"`, `"tcp://host:port/nodeID,..."`, `"Memory"`
    /// (tests), later `"redis://..."`. None: a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transporter: Option<String>,
    /// Options of the transporter (for TCP: `udpDiscovery`, `udpMulticast`, `gossipPeriod`, ...).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub transporter_options: Value,
    /// Default call timeout in milliseconds (0 = none).
    pub request_timeout: u64,
    /// Deepest allowed nested call (0 = unlimited).
    pub max_call_level: u32,
    /// Seconds between heartbeats.
    pub heartbeat_interval: f64,
    /// Seconds of silence after which a node is declared dead.
    pub heartbeat_timeout: f64,
    /// Do not check heartbeat timeouts (heartbeats are still sent).
    pub disable_heartbeat_checks: bool,
    /// Never forget offline nodes.
    pub disable_offline_node_removing: bool,
    /// Seconds after which an offline node is forgotten.
    pub clean_offline_nodes_timeout: f64,
    /// Registry and balancing.
    pub registry: RegistrySettings,
    /// Transit limits.
    pub transit: TransitSettings,
    /// Register the `$node` internal service.
    pub internal_services: bool,
    /// Milliseconds between checks while waiting for services.
    pub dependency_interval: u64,
    /// Milliseconds to wait for dependencies (0 = forever).
    pub dependency_timeout: u64,
    /// Free-form metadata published in INFO: a table of keys and values.
    #[serde(deserialize_with = "table_only")]
    pub metadata: Value,
    /// Packet serializer: `JSON` (default), `MsgPack` or `Notepack`. All nodes must agree.
    pub serializer: String,
    /// Retrying failed calls (off by default); actions and calls may lay their own over it.
    pub retry_policy: RetryPolicy,
    /// Switching off failing endpoints (off by default).
    pub circuit_breaker: CircuitBreakerOptions,
    /// Limiting concurrent executions of each local action and event handler (off by default).
    pub bulkhead: BulkheadOptions,
    /// Waiting for work in progress when stopping.
    pub tracking: TrackingSettings,
    /// How a node run by the runner writes its log lines: `text` (default) or `json` (one
    /// object per line, with the broker's span and its node id).
    pub log_format: LogFormat,
    /// What every packet goes through on the wire: compression, encryption, signatures.
    pub transmit: TransmitSettings,
    /// The cacher: `"Memory"`, `"MemoryLRU"`, `"redis://host:port"`, or
    /// `{ type = "MemoryLRU", options = { ttl = 30, max = 500 } }`. None: no caching.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cacher: Option<CacherConfig>,
    /// Metrics: `metrics = true`, or `{ enabled, host, port, path, ... }` (off by default).
    #[serde(deserialize_with = "crate::flag_or_table::flag_or_table")]
    pub metrics: MetricsSettings,
    /// Tracing: `tracing = true`, or `{ enabled, actions, events }` (off by default).
    #[serde(deserialize_with = "crate::flag_or_table::flag_or_table")]
    pub tracing: TracingSettings,
}

/// The `logFormat` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `cacher` option: which store, and its options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacherConfig {
    /// `Memory`, `MemoryLRU` or a `redis://` URL.
    #[serde(rename = "type")]
    pub kind: String,
    /// `ttl`, `max`, `prefix`, `maxParamsLength`.
    pub options: CacherOptions,
}

impl<'de> Deserialize<'de> for CacherConfig {
    /// A name (`cacher = "Memory"`) or a table with `type` and `options`, as Moleculer takes
    /// it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            options: CacherOptions,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Table(Table),
        }
        match Form::deserialize(d) {
            Ok(Form::Name(kind)) => Ok(CacherConfig {
                kind,
                options: CacherOptions::default(),
            }),
            Ok(Form::Table(t)) => Ok(CacherConfig {
                kind: t.kind,
                options: t.options,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "expected a cacher name (\"Memory\", \"MemoryLRU\", \"redis://host:port\") or a table with `type` and `options` (ttl, max, prefix, maxParamsLength)",
            )),
        }
    }
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            node_id: None,
            transporter: None,
            transporter_options: Value::Null,
            request_timeout: 0,
            max_call_level: 0,
            heartbeat_interval: 10.0,
            heartbeat_timeout: 30.0,
            disable_heartbeat_checks: false,
            disable_offline_node_removing: false,
            clean_offline_nodes_timeout: 600.0,
            registry: RegistrySettings::default(),
            transit: TransitSettings::default(),
            internal_services: true,
            dependency_interval: 1000,
            dependency_timeout: 0,
            metadata: Value::Object(Default::default()),
            serializer: "JSON".into(),
            retry_policy: RetryPolicy::default(),
            circuit_breaker: CircuitBreakerOptions::default(),
            bulkhead: BulkheadOptions::default(),
            tracking: TrackingSettings::default(),
            cacher: None,
            transmit: TransmitSettings::default(),
            log_format: LogFormat::Text,
            metrics: MetricsSettings::default(),
            tracing: TracingSettings::default(),
        }
    }
}

/// The `tracking` section: what a stopping broker waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrackingSettings {
    /// Wait for the requests and events in progress before stopping the services. On by
    /// default (Moleculer's default is off); the cost is a counter per call.
    pub enabled: bool,
    /// The longest wait, in milliseconds.
    pub shutdown_timeout: u64,
}

impl Default for TrackingSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            shutdown_timeout: 5000,
        }
    }
}

/// The `registry` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Default strategy: RoundRobin, Random, CpuUsage, Latency or Shard.
    pub strategy: String,
    /// Its options.
    pub strategy_options: Value,
    /// Serve calls locally when possible.
    pub prefer_local: bool,
    /// Milliseconds between announcing an empty service list and stopping services.
    pub stop_delay: u64,
    /// Discoverer, by name or URL: `"Local"` (default), `"redis://host:port"`.
    pub discoverer: String,
    /// Options of the discoverer (Redis: `fullCheck`, `scanLength`, `serializer`).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub discoverer_options: Value,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            discoverer: "Local".into(),
            discoverer_options: Value::Null,
            strategy: "RoundRobin".into(),
            strategy_options: Value::Null,
            prefer_local: true,
            stop_delay: 100,
        }
    }
}

/// The `transit` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TransitSettings {
    /// Most pending outgoing requests before `QueueIsFullError`.
    pub max_queue_size: usize,
    /// Milliseconds to wait before re-announcing changed local services.
    pub service_changed_debounce_time: u64,
    /// Largest packet accepted, in bytes; bigger ones are dropped with a warning.
    pub max_packet_size: usize,
    /// Accept packets of any protocol version.
    pub disable_version_check: bool,
    /// Protocol version spoken: `"5"` (Moleculer 0.15, default) or `"4"` (0.14).
    pub protocol_version: String,
}

impl Default for TransitSettings {
    fn default() -> Self {
        Self {
            max_queue_size: 50_000,
            service_changed_debounce_time: 1000,
            max_packet_size: 16 * 1024 * 1024,
            disable_version_check: false,
            protocol_version: "5".into(),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> BrokerError {
    BrokerError::Options {
        key: key.into(),
        reason: reason.into(),
    }
}

impl BrokerOptions {
    /// Rejects contradictions, naming the option at fault.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self
            .node_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(invalid("nodeID", "must not be empty"));
        }
        if self.namespace.contains(['.', ' ', '|', '/']) {
            return Err(invalid(
                "namespace",
                "must not contain '.', ' ', '|' or '/' (it is part of topic and key names)",
            ));
        }
        if self.heartbeat_interval.is_nan() || self.heartbeat_interval <= 0.0 {
            return Err(invalid("heartbeatInterval", "must be above 0 seconds"));
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(invalid(
                "heartbeatTimeout",
                format!(
                    "must be above heartbeatInterval ({} s), or every node would be declared dead between two heartbeats (got {} s)",
                    self.heartbeat_interval, self.heartbeat_timeout
                ),
            ));
        }
        if self.clean_offline_nodes_timeout < 0.0 {
            return Err(invalid("cleanOfflineNodesTimeout", "must not be negative"));
        }
        if self.transit.max_queue_size == 0 {
            return Err(invalid("transit.maxQueueSize", "must be above 0"));
        }
        if self.dependency_interval == 0 {
            return Err(invalid("dependencyInterval", "must be above 0 ms"));
        }
        self.metrics
            .check()
            .map_err(|(key, reason)| invalid(&key, reason))?;
        self.tracing
            .check()
            .map_err(|(key, reason)| invalid(&key, reason))?;
        self.strategy_config()?;
        self.serializer_kind()?;
        self.protocol_version()?;
        if self.transit.max_packet_size < 1024 {
            return Err(invalid(
                "transit.maxPacketSize",
                "must be at least 1024 bytes",
            ));
        }
        let section =
            |name: &str, e: InvalidSetting| invalid(&format!("{name}.{}", e.key), e.reason);
        self.retry_policy
            .validate()
            .map_err(|e| section("retryPolicy", e))?;
        self.circuit_breaker
            .validate()
            .map_err(|e| section("circuitBreaker", e))?;
        self.bulkhead
            .validate()
            .map_err(|e| section("bulkhead", e))?;
        Ok(())
    }

    /// The serializer, checked.
    pub fn serializer_kind(&self) -> Result<SerializerKind, BrokerError> {
        self.serializer
            .parse()
            .map_err(|e: String| invalid("serializer", e))
    }

    /// The protocol version, checked.
    pub fn protocol_version(&self) -> Result<ProtocolVersion, BrokerError> {
        match self.transit.protocol_version.as_str() {
            "5" => Ok(ProtocolVersion::V5),
            "4" => Ok(ProtocolVersion::V4),
            other => Err(invalid(
                "transit.protocolVersion",
                format!("'{other}' is not spoken here (expected \"4\" or \"5\")"),
            )),
        }
    }

    /// The default strategy, checked.
    pub fn strategy_config(&self) -> Result<StrategyConfig, BrokerError> {
        let kind =
            self.registry
                .strategy
                .parse()
                .map_err(|e: moleculer_registry::RegistryError| {
                    invalid("registry.strategy", e.to_string())
                })?;
        let config = StrategyConfig {
            kind,
            options: self.registry.strategy_options.clone(),
        };
        config
            .build()
            .map_err(|e| invalid("registry.strategyOptions", e.to_string()))?;
        Ok(config)
    }

    /// The registry's options.
    pub fn registry_options(&self) -> Result<RegistryOptions, BrokerError> {
        let strategy = self.strategy_config()?;
        let latency_collect_count = self
            .registry
            .strategy_options
            .get("collectCount")
            .and_then(Value::as_u64)
            .unwrap_or(5) as usize;
        Ok(RegistryOptions {
            strategy,
            prefer_local: self.registry.prefer_local,
            latency_collect_count,
        })
    }

    /// The default request timeout, if any.
    pub fn request_timeout(&self) -> Option<Duration> {
        (self.request_timeout > 0).then(|| Duration::from_millis(self.request_timeout))
    }
}

/// `metadata` must be a table: peers read it as an object (Moleculer's `node.metadata`).
fn table_only<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    let value = Value::deserialize(d)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "metadata must be a table of keys and values, not {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_moleculers() {
        let o = BrokerOptions::default();
        assert_eq!((o.heartbeat_interval, o.heartbeat_timeout), (10.0, 30.0));
        assert_eq!(o.registry.strategy, "RoundRobin");
        assert!(o.registry.prefer_local);
        assert_eq!(o.transit.max_queue_size, 50_000);
        o.validate().unwrap();
    }

    #[test]
    fn contradictions_name_the_option() {
        let o = BrokerOptions {
            heartbeat_interval: 5.0,
            heartbeat_timeout: 5.0,
            ..Default::default()
        };
        let err = o.validate().unwrap_err().to_string();
        assert!(err.contains("`heartbeatTimeout`"), "{err}");
        let mut o = BrokerOptions::default();
        o.registry.strategy = "Fastest".into();
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`registry.strategy`"));
        let mut o = BrokerOptions::default();
        o.registry.strategy = "Shard".into();
        o.registry.strategy_options = json!({"ringsize": 3});
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`registry.strategyOptions`"));
    }

    #[test]
    fn fault_tolerance_contradictions_name_the_key() {
        let cases = [
            (
                json!({"retryPolicy": {"enabled": true, "delay": 500, "maxDelay": 100}}),
                "`retryPolicy.maxDelay`",
            ),
            (
                json!({"retryPolicy": {"factor": 0.5}}),
                "`retryPolicy.factor`",
            ),
            (
                json!({"circuitBreaker": {"threshold": 2}}),
                "`circuitBreaker.threshold`",
            ),
            (
                json!({"circuitBreaker": {"windowTime": 0}}),
                "`circuitBreaker.windowTime`",
            ),
            (
                json!({"bulkhead": {"enabled": true, "concurrency": 0}}),
                "`bulkhead.concurrency`",
            ),
        ];
        for (config, key) in cases {
            let o: BrokerOptions = serde_json::from_value(config.clone()).unwrap();
            let err = o.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{config}: {err}");
        }
        let err = serde_json::from_value::<BrokerOptions>(json!({"retryPolicy": {"retries": -1}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("-1"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err =
            serde_json::from_value::<BrokerOptions>(json!({"heartbeatIntervall": 3})).unwrap_err();
        assert!(err.to_string().contains("heartbeatIntervall"), "{err}");
        let err =
            serde_json::from_value::<BrokerOptions>(json!({"registry": {"preferlocal": false}}))
                .unwrap_err();
        assert!(err.to_string().contains("preferlocal"), "{err}");
    }
}
