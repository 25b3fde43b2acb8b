//! Options of the Redis discoverer.

use std::str::FromStr;

use moleculer_core::serializer::SerializerKind;

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
