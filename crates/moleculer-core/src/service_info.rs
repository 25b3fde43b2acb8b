//! Descriptions of services, actions and events as they travel in INFO packets.
//!
//! These are the shapes Moleculer puts in `INFO.services[]`; unknown fields are kept in `extra`
//! so a description survives a round trip through a Rust node untouched.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::fault_tolerance::{lenient, BulkheadOptions, CircuitBreakerOptions, RetryPolicy};

/// A service version: a number (`2` gives `v2.posts`) or a string (`"staging"` gives `staging.posts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Version {
    /// A numeric version.
    Number(i64),
    /// A named version.
    Name(String),
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Number(n) => write!(f, "v{n}"),
            Version::Name(s) => f.write_str(s),
        }
    }
}

impl From<i64> for Version {
    fn from(n: i64) -> Self {
        Version::Number(n)
    }
}

impl From<&str> for Version {
    fn from(s: &str) -> Self {
        Version::Name(s.to_owned())
    }
}

/// The versioned full name of a service: `v2.posts`, `staging.posts` or plain `posts`.
pub fn versioned_name(name: &str, version: Option<&Version>) -> String {
    match version {
        Some(v) => format!("{v}.{name}"),
        None => name.to_owned(),
    }
}

/// Who may call an action (Moleculer's `visibility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Callable from anywhere and exposed by API gateways (the default).
    #[default]
    Published,
    /// Callable from anywhere, not exposed by gateways.
    Public,
    /// Callable only from the node that hosts it.
    Protected,
    /// Never registered; only the service itself may use it.
    Private,
}

/// An action as described in INFO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ActionInfo {
    /// Full action name, e.g. `v2.math.add`.
    pub name: String,
    /// The action's own name inside its service, e.g. `add`.
    #[serde(rename = "rawName", default, skip_serializing_if = "Option::is_none")]
    pub raw_name: Option<String>,
    /// Who may call it; absent means published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Parameter schema (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// Per-action timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Balancing strategy name for this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Options of that strategy.
    #[serde(
        rename = "strategyOptions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub strategy_options: Option<Value>,
    /// The action's retry settings, laid over the caller's broker settings.
    #[serde(
        rename = "retryPolicy",
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_policy: Option<RetryPolicy>,
    /// The action's circuit breaker settings, laid over the caller's broker settings.
    #[serde(
        rename = "circuitBreaker",
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub circuit_breaker: Option<CircuitBreakerOptions>,
    /// The action's bulkhead settings (applied where it runs).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub bulkhead: Option<BulkheadOptions>,
    /// The action's cache settings (`true` or `{ keys, ttl }`), applied where it runs.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache: Option<crate::cacher::CacheOptions>,
    /// Fields this crate does not interpret, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ActionInfo {
    /// The effective visibility (absent means published).
    pub fn visibility(&self) -> Visibility {
        self.visibility.unwrap_or_default()
    }

    /// Moleculer's legacy `protected: true` flag: such actions are never published in INFO.
    pub fn is_legacy_protected(&self) -> bool {
        self.extra.get("protected") == Some(&Value::Bool(true))
    }
}

/// An event subscription as described in INFO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EventInfo {
    /// Event name or pattern (`user.*`, `**`).
    pub name: String,
    /// Balancing group; absent means the service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Balancing strategy name for this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Options of that strategy.
    #[serde(
        rename = "strategyOptions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub strategy_options: Option<Value>,
    /// The handler's bulkhead settings (applied where it runs).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub bulkhead: Option<BulkheadOptions>,
    /// Fields this crate does not interpret, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A service as described in INFO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ServiceInfo {
    /// Service name, e.g. `posts`.
    pub name: String,
    /// Optional version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// Versioned name, e.g. `v2.posts`; recomputed when a peer leaves it out.
    #[serde(rename = "fullName", default)]
    pub full_name: String,
    /// Public settings.
    #[serde(default)]
    pub settings: Value,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Value,
    /// Services this one waits for before it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Value>,
    /// Actions keyed by full name.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionInfo>,
    /// Event subscriptions keyed by name.
    #[serde(default)]
    pub events: BTreeMap<String, EventInfo>,
}

impl ServiceInfo {
    /// The full name, computing it from name and version when it is missing.
    pub fn full_name(&self) -> String {
        if self.full_name.is_empty() {
            versioned_name(&self.name, self.version.as_ref())
        } else {
            self.full_name.clone()
        }
    }
}

/// The `client` block of INFO: which implementation a node runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Implementation, e.g. `nodejs` or `rust`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Library version.
    #[serde(default)]
    pub version: String,
    /// Language or runtime version.
    #[serde(rename = "langVersion", default)]
    pub lang_version: String,
}

impl Default for ClientInfo {
    fn default() -> Self {
        Self::rust()
    }
}

impl ClientInfo {
    /// The client block this crate advertises.
    pub fn rust() -> Self {
        Self {
            kind: "rust".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            lang_version: "rust".into(),
        }
    }
}

/// Everything a node says about itself in INFO (without `ver` and `sender`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeInfo {
    /// Services the node hosts.
    #[serde(default)]
    pub services: Vec<ServiceInfo>,
    /// IPv4 addresses.
    #[serde(rename = "ipList", default)]
    pub ip_list: Vec<String>,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
    /// Implementation details.
    #[serde(default)]
    pub client: ClientInfo,
    /// Node config (Moleculer sends `{}`).
    #[serde(default)]
    pub config: Value,
    /// Random id of this process instance; changes when the node restarts.
    #[serde(rename = "instanceID", default)]
    pub instance_id: String,
    /// Broker metadata.
    #[serde(default)]
    pub metadata: Value,
    /// Sequence number; grows whenever the service list changes.
    #[serde(default = "one")]
    pub seq: u64,
    /// TCP port (TCP transporter only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

fn one() -> u64 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versioned_names() {
        assert_eq!(
            versioned_name("posts", Some(&Version::Number(2))),
            "v2.posts"
        );
        assert_eq!(
            versioned_name("posts", Some(&Version::from("staging"))),
            "staging.posts"
        );
        assert_eq!(versioned_name("posts", None), "posts");
    }

    #[test]
    fn parses_a_node_js_service_description() {
        let js = json!({"name":"math","version":2,"fullName":"v2.math","settings":{"x":1},"metadata":{"m":1},
            "actions":{"v2.math.add":{"params":{"a":"number"},"rawName":"add","name":"v2.math.add","cache":false,"custom":{"k":1}}},
            "events":{"order.*":{"group":"orders","name":"order.*"}}});
        let svc: ServiceInfo = serde_json::from_value(js).unwrap();
        assert_eq!(svc.version, Some(Version::Number(2)));
        let add = &svc.actions["v2.math.add"];
        assert_eq!(add.raw_name.as_deref(), Some("add"));
        assert_eq!(add.cache.as_ref().map(|c| c.enabled), Some(false));
        assert_eq!(svc.events["order.*"].group.as_deref(), Some("orders"));
        // Unknown fields survive the round trip.
        let back = serde_json::to_value(&svc).unwrap();
        assert_eq!(back["actions"]["v2.math.add"]["cache"], json!(false));
        assert_eq!(back["actions"]["v2.math.add"]["custom"], json!({"k": 1}));
    }

    #[test]
    fn full_name_is_recomputed_when_missing() {
        let svc: ServiceInfo =
            serde_json::from_value(json!({"name":"posts","version":"beta"})).unwrap();
        assert_eq!(svc.full_name(), "beta.posts");
    }

    #[test]
    fn node_info_defaults_missing_seq_to_one() {
        let info: NodeInfo = serde_json::from_value(json!({"services":[]})).unwrap();
        assert_eq!(info.seq, 1);
    }
}
