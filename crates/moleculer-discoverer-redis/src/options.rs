//! Options of the Redis discoverer.

use std::str::FromStr;

use moleculer_core::serializer::SerializerKind;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_config() {
        let mut o: RedisDiscovererOptions = "redis://127.0.0.1:7000".parse().unwrap();
        o.apply(&serde_json::json!({"fullCheck": 3, "scanLength": 50, "serializer": "MsgPack"}))
            .unwrap();
        assert_eq!(
            (o.full_check, o.scan_length, o.serializer),
            (3, 50, SerializerKind::MsgPack)
        );
        let err = o.apply(&serde_json::json!({"fullchek": 3})).unwrap_err();
        assert!(err.contains("fullchek"), "{err}");
        assert!("etcd3://x".parse::<RedisDiscovererOptions>().is_err());
    }
}

/// Options, with Moleculer's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisDiscovererOptions {
    /// `redis://host:port[/db]` or `rediss://...`.
    pub url: String,
    /// Serializer of the values stored in Redis (every node must use the same). Default JSON.
    pub serializer: SerializerKind,
    /// Read the beat values (CPU) every this many beats; 0 never. Default 10.
    pub full_check: u32,
    /// SCAN `COUNT`. Default 100.
    pub scan_length: u32,
}

impl Default for RedisDiscovererOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            serializer: SerializerKind::Json,
            full_check: 10,
            scan_length: 100,
        }
    }
}

impl RedisDiscovererOptions {
    /// Applies `registry.discovererOptions` (`fullCheck`, `scanLength`, `serializer`); an
    /// unknown key or a bad value is refused, naming it.
    pub fn apply(&mut self, extra: &serde_json::Value) -> Result<(), String> {
        let serde_json::Value::Object(map) = extra else {
            return if extra.is_null() {
                Ok(())
            } else {
                Err("registry.discovererOptions must be a table".into())
            };
        };
        for (key, value) in map {
            let number = || {
                value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        format!("registry.discovererOptions.{key} must be a whole number")
                    })
            };
            match key.as_str() {
                "fullCheck" => self.full_check = number()?,
                "scanLength" => self.scan_length = number()?.max(1),
                "serializer" => {
                    self.serializer = value.as_str().unwrap_or_default().parse().map_err(|e: String| format!("registry.discovererOptions.serializer: {e}"))?;
                }
                other => return Err(format!("unknown key registry.discovererOptions.{other} (expected fullCheck, scanLength, serializer)")),
            }
        }
        Ok(())
    }
}

/// A discoverer string that is not a Redis URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a Redis discoverer (expected \"Redis\" or redis://host:port)")]
pub struct NotARedisDiscoverer(pub String);

impl FromStr for RedisDiscovererOptions {
    type Err = NotARedisDiscoverer;

    fn from_str(s: &str) -> Result<Self, NotARedisDiscoverer> {
        let lower = s.to_ascii_lowercase();
        if lower == "redis" {
            return Ok(Self::default());
        }
        if lower.starts_with("redis://") || lower.starts_with("rediss://") {
            return Ok(Self {
                url: s.to_owned(),
                ..Self::default()
            });
        }
        Err(NotARedisDiscoverer(s.to_owned()))
    }
}
