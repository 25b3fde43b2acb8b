//! Options from `moleculer.toml` and the environment.

use std::path::Path;

use moleculer_broker::BrokerOptions;
use serde_json::{Map, Value};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The config file is not valid TOML.
    #[error("{path} is not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A key is unknown or its value does not fit.
    #[error("invalid config key `{key}`: {reason}")]
    Key {
        /// The key path, e.g. `registry.preferLocal`.
        key: String,
        /// Why.
        reason: String,
    },
    /// The options contradict each other, or a backend cannot be built.
    #[error(transparent)]
    Broker(#[from] moleculer_broker::BrokerError),
}

/// Keys whose values stay strings even when they look like numbers (`MOL_NODE_ID=42`).
const STRING_KEYS: &[&str] = &[
    "nodeId",
    "nodeID",
    "namespace",
    "transporter",
    "serializer",
    "discoverer",
    "strategy",
    "protocolVersion",
    "password",
    "iv",
    "secret",
    "prefix",
    "type",
];

/// `HEARTBEAT_INTERVAL` → `heartbeatInterval`.
fn camel(segment: &str) -> String {
    let mut out = String::new();
    for (i, word) in segment.split('_').filter(|w| !w.is_empty()).enumerate() {
        let word = word.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&word);
        } else {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        }
    }
    out
}

/// The key path an environment variable sets, or `None` if it is not a `MOL_` variable.
pub(crate) fn env_key(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix("MOL_")?;
    if rest == "DISCOVERER" {
        return Some(vec!["registry".into(), "discoverer".into()]);
    }
    Some(rest.split("__").map(camel).collect())
}

fn env_value(key: &str, raw: &str) -> Value {
    if STRING_KEYS.contains(&key) {
        return Value::String(raw.to_owned());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// The config file to read: `explicit` (which must exist), else `moleculer.toml` in the working
/// directory (read only if it exists). The error is a sentence naming the missing file.
pub fn config_file(explicit: Option<&Path>) -> Result<std::path::PathBuf, String> {
    match explicit {
        Some(path) if !path.exists() => {
            Err(format!("the config file {} does not exist", path.display()))
        }
        Some(path) => Ok(path.to_path_buf()),
        None => Ok("moleculer.toml".into()),
    }
}

/// Reads `path` (if it exists) and applies `env` overrides (pass `std::env::vars()`).
pub fn load_options(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BrokerOptions, ConfigError> {
    let mut tree = Value::Object(Map::new());
    if let Some(path) = path.filter(|p| p.exists()) {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        tree = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: shown,
            reason: e.to_string(),
        })?;
    }
    for (name, raw) in env {
        let Some(path) = env_key(&name) else { continue };
        let mut node = &mut tree;
        for (i, segment) in path.iter().enumerate() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let map = node.as_object_mut().expect("just made an object");
            if i + 1 == path.len() {
                map.insert(segment.clone(), env_value(segment, &raw));
                break;
            }
            node = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    let options: BrokerOptions = serde_path_to_error::deserialize(&tree).map_err(|e| {
        let key = e.path().to_string();
        let reason = e.into_inner().to_string();
        ConfigError::Key {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            reason,
        }
    })?;
    options.validate()?;
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_names_follow_moleculer_runner() {
        assert_eq!(
            env_key("MOL_HEARTBEAT_INTERVAL").unwrap(),
            ["heartbeatInterval"]
        );
        assert_eq!(
            env_key("MOL_REGISTRY__STRATEGY").unwrap(),
            ["registry", "strategy"]
        );
        assert_eq!(
            env_key("MOL_TRANSIT__MAX_QUEUE_SIZE").unwrap(),
            ["transit", "maxQueueSize"]
        );
        assert_eq!(
            env_key("MOL_DISCOVERER").unwrap(),
            ["registry", "discoverer"]
        );
        assert!(env_key("PATH").is_none());
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("mol-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("moleculer.toml");
        std::fs::write(&file, "namespace = \"dev\"\nheartbeatInterval = 5\nheartbeatTimeout = 15\n[registry]\nstrategy = \"Random\"\n").unwrap();
        let o = load_options(
            Some(&file),
            env(&[
                ("MOL_HEARTBEAT_INTERVAL", "1"),
                ("MOL_NODE_ID", "42"),
                ("MOL_REGISTRY__PREFER_LOCAL", "false"),
                ("MOL_SERIALIZER", "MsgPack"),
            ]),
        )
        .unwrap();
        assert_eq!(o.namespace, "dev");
        assert_eq!(o.heartbeat_interval, 1.0);
        assert_eq!(o.node_id.as_deref(), Some("42"), "node ids stay strings");
        assert!(!o.registry.prefer_local);
        assert_eq!(o.registry.strategy, "Random");
        assert_eq!(o.serializer, "MsgPack");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = load_options(None, env(&[("MOL_HEARTBEAT_INTERVALL", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeatIntervall"), "{err}");
        let err = load_options(None, env(&[("MOL_REGISTRY__PREFER_LOCAL", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("registry.preferLocal"), "{err}");
        let err = load_options(None, env(&[("MOL_HEARTBEAT_TIMEOUT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeatTimeout"), "{err}");
        let err = load_options(None, env(&[("MOL_SERIALIZER", "XML")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("serializer") && err.contains("XML"), "{err}");
        let err = load_options(None, env(&[("MOL_METADATA", "5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata") && err.contains("table"), "{err}");
        let ok = load_options(None, env(&[("MOL_METADATA__REGION", "eu")])).unwrap();
        assert_eq!(ok.metadata["region"], "eu");
    }

    #[test]
    fn the_cacher_is_a_name_or_a_table_from_the_file_or_the_environment() {
        let o = load_options(None, env(&[("MOL_CACHER", "MemoryLRU")])).unwrap();
        assert_eq!(o.cacher.unwrap().kind, "MemoryLRU");
        let o = load_options(
            None,
            env(&[
                ("MOL_CACHER__TYPE", "redis://127.0.0.1:6379"),
                ("MOL_CACHER__OPTIONS__TTL", "30"),
                ("MOL_CACHER__OPTIONS__PREFIX", "shop"),
            ]),
        )
        .unwrap();
        let cacher = o.cacher.unwrap();
        assert_eq!(cacher.kind, "redis://127.0.0.1:6379");
        assert_eq!(cacher.options.ttl, Some(30));
        assert_eq!(cacher.options.prefix.as_deref(), Some("shop"));

        let dir = std::env::temp_dir().join(format!("mol-config-cacher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("moleculer.toml");
        std::fs::write(
            &file,
            "[cacher]\ntype = \"MemoryLRU\"\noptions = { max = 50, maxParamsLength = 60 }\n",
        )
        .unwrap();
        let cacher = load_options(Some(&file), Vec::new())
            .unwrap()
            .cacher
            .unwrap();
        assert_eq!(
            (cacher.options.max, cacher.options.max_params_length),
            (Some(50), Some(60))
        );
        std::fs::write(&file, "cacher = 5\n").unwrap();
        let err = load_options(Some(&file), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cacher") && err.contains("expected a cacher name"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err =
            crate::builder_for(&load_options(None, env(&[("MOL_CACHER", "Memcached")])).unwrap())
                .and_then(|b| b.build().map_err(Into::into))
                .err()
                .unwrap()
                .to_string();
        assert!(
            err.contains("Memcached") && err.contains("not available"),
            "{err}"
        );
    }

    #[test]
    fn metrics_and_tracing_come_from_the_environment_and_bad_keys_are_named() {
        let o = load_options(
            None,
            env(&[
                ("MOL_METRICS__ENABLED", "true"),
                ("MOL_METRICS__PORT", "3100"),
                ("MOL_METRICS__HOST", "0.0.0.0"),
                ("MOL_TRACING__ENABLED", "true"),
            ]),
        )
        .unwrap();
        assert!(o.metrics.enabled && o.tracing.enabled);
        assert_eq!((o.metrics.port, o.metrics.host.as_str()), (3100, "0.0.0.0"));
        assert_eq!(o.metrics.path, "/metrics");
        let o = load_options(None, env(&[("MOL_METRICS", "true")])).unwrap();
        assert!(
            o.metrics.enabled && o.metrics.port == 3030,
            "the short form"
        );

        let err = load_options(None, env(&[("MOL_METRICS__PROT", "3100")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics") && err.contains("unknown field `prot`"),
            "{err}"
        );
        let err = load_options(None, env(&[("MOL_METRICS__PORT", "70000")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics"), "{err}");
        let err = load_options(None, env(&[("MOL_METRICS__PATH", "metrics")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.path") && err.contains("'/'"), "{err}");
    }

    #[test]
    fn transmit_settings_come_from_the_environment_and_bad_ones_are_named() {
        let o = load_options(
            None,
            env(&[
                (
                    "MOL_TRANSMIT__ENCRYPTION__PASSWORD",
                    "12345678901234567890123456789012",
                ),
                ("MOL_TRANSMIT__ENCRYPTION__IV", "1234567890123456"),
                ("MOL_TRANSMIT__COMPRESSION__METHOD", "gzip"),
                ("MOL_TRANSMIT__COMPRESSION__THRESHOLD", "2kb"),
                ("MOL_TRANSMIT__SECRET", "a-long-enough-secret"),
                ("MOL_TRANSPORTER", "redis://127.0.0.1:1"),
            ]),
        )
        .unwrap();
        let enc = o.transmit.encryption.as_ref().unwrap();
        assert_eq!(enc.password.len(), 32, "digits stay text");
        assert_eq!(enc.algorithm, "aes-256-cbc");
        assert_eq!(o.transmit.compression.as_ref().unwrap().threshold, 2048);
        assert!(crate::builder_for(&o).unwrap().build().is_ok());

        let bad = load_options(
            None,
            env(&[
                ("MOL_TRANSMIT__ENCRYPTION__PASSWORD", "short"),
                ("MOL_TRANSMIT__ENCRYPTION__IV", "1234567890123456"),
                ("MOL_TRANSPORTER", "redis://127.0.0.1:1"),
            ]),
        )
        .unwrap();
        let err = crate::builder_for(&bad)
            .unwrap()
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("transmit") && err.contains("32 bytes"),
            "{err}"
        );
    }

    #[test]
    fn fault_tolerance_sections_come_from_the_file_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("mol-config-ft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("moleculer.toml");
        std::fs::write(
            &file,
            "[retryPolicy]\nenabled = true\nretries = 3\n[circuitBreaker]\nenabled = true\nthreshold = 0.3\n[bulkhead]\nconcurrency = 4\n",
        )
        .unwrap();
        let o = load_options(
            Some(&file),
            env(&[
                ("MOL_RETRY_POLICY__MAX_DELAY", "2000"),
                ("MOL_RETRY_POLICY__KEEP_NODE_PIN", "true"),
                ("MOL_CIRCUIT_BREAKER__HALF_OPEN_TIME", "500"),
                ("MOL_BULKHEAD__ENABLED", "true"),
                ("MOL_TRACKING__SHUTDOWN_TIMEOUT", "750"),
            ]),
        )
        .unwrap();
        let retry = o.retry_policy;
        assert!(retry.is_enabled());
        assert_eq!(
            (retry.retries(), retry.max_delay(), retry.keep_node_pin()),
            (3, 2000, true)
        );
        let breaker = o.circuit_breaker;
        assert!(breaker.is_enabled());
        assert_eq!((breaker.threshold(), breaker.half_open_time()), (0.3, 500));
        assert!(o.bulkhead.is_enabled());
        assert_eq!(o.bulkhead.concurrency(), 4);
        assert_eq!(o.tracking.shutdown_timeout, 750);
        std::fs::remove_dir_all(&dir).ok();
        let err = load_options(None, env(&[("MOL_CIRCUIT_BREAKER__THRESHOLD", "1.5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("circuitBreaker.threshold"), "{err}");
        let err = load_options(None, env(&[("MOL_BULKHEAD__CONCURRENCY", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bulkhead.concurrency"), "{err}");
    }
}
