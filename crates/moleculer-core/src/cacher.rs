//! Caching of action results (Moleculer's cachers): what a cacher store does ([`Cacher`]), the
//! broker-wide options (`cacher` in `moleculer.toml`) and an action's own `cache` settings.
//! The stores are [`crate::memory_cacher`] (Memory, MemoryLRU) and the Redis cacher crate; the
//! keys are made by [`crate::cache_key`], as Moleculer 0.15 makes them.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::Result;

/// A cache store. Keys are given without the store's prefix; a store adds its own.
pub trait Cacher: Send + Sync + 'static {
    /// The store's name for logs ("Memory", "MemoryLRU", "Redis").
    fn name(&self) -> &str;

    /// The value under `key`, or `None` on a miss (an expired or undecodable value is a miss).
    fn get(&self, key: &str) -> BoxFuture<'static, Result<Option<Value>>>;

    /// Stores `value` under `key` for `ttl` (`None`: the store's default; zero: forever).
    fn set(&self, key: &str, value: Value, ttl: Option<Duration>)
        -> BoxFuture<'static, Result<()>>;

    /// Removes these keys.
    fn del(&self, keys: &[String]) -> BoxFuture<'static, Result<()>>;

    /// Removes every key matching `pattern` (`*` within a dot-separated part, `**` anything).
    fn clean(&self, pattern: &str) -> BoxFuture<'static, Result<()>>;
}

/// The broker's cacher options (Moleculer's `cacher.options`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacherOptions {
    /// Default time to live in seconds (absent: forever).
    pub ttl: Option<u64>,
    /// MemoryLRU: the most entries kept (default 1000).
    pub max: Option<usize>,
    /// Redis: the key prefix (default `MOL-` or `MOL-<namespace>-`); `-` is appended.
    pub prefix: Option<String>,
    /// Parameter parts longer than this are shortened to a prefix plus their SHA-256 (at
    /// least 44; absent: never).
    pub max_params_length: Option<usize>,
}

/// An action's `cache` settings: `true`, or `{ enabled, keys, ttl }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheOptions {
    /// Whether results are cached.
    pub enabled: bool,
    /// The params (`id`, `user.name`), meta (`#tenant`) or headers (`@x`) the key is made of;
    /// absent: all params.
    pub keys: Option<Vec<String>>,
    /// Time to live in seconds, over the cacher's.
    pub ttl: Option<u64>,
}

impl Serialize for CacheOptions {
    /// As Moleculer writes it: a bare `true`/`false` when there is nothing more to say.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.keys.is_none() && self.ttl.is_none() {
            return s.serialize_bool(self.enabled);
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("enabled", &self.enabled)?;
        if let Some(keys) = &self.keys {
            map.serialize_entry("keys", keys)?;
        }
        if let Some(ttl) = &self.ttl {
            map.serialize_entry("ttl", ttl)?;
        }
        map.end()
    }
}

impl CacheOptions {
    /// Caching on, keyed by all params.
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            ..Self::default()
        }
    }

    /// Caching on, keyed by these params (`#name` for meta, `@name` for headers).
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        Self {
            enabled: true,
            keys: Some(keys.into_iter().map(Into::into).collect()),
            ttl: None,
        }
    }

    /// The same, with its own time to live.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl.as_secs().max(1));
        self
    }
}

impl<'de> Deserialize<'de> for CacheOptions {
    /// Moleculer writes `cache: true` or `cache: { keys, ttl, enabled }` (anything else it
    /// carries, such as `lock`, is not used here).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bool(enabled) => Self {
                enabled,
                ..Self::default()
            },
            Value::Object(map) => Self {
                enabled: map.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                keys: map.get("keys").and_then(Value::as_array).map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                }),
                ttl: map.get("ttl").and_then(Value::as_u64),
            },
            _ => Self::default(),
        })
    }
}

/// Whether `key` matches `pattern`: `**` matches anything, `*` anything but a `.`, `?` one
/// character (Moleculer's event and cache patterns).
pub fn matches(key: &str, pattern: &str) -> bool {
    fn go(k: &[u8], p: &[u8]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                let rest = &rest[1..];
                (0..=k.len()).any(|i| go(&k[i..], rest))
            }
            Some((b'*', rest)) => {
                let part = k.iter().position(|c| *c == b'.').unwrap_or(k.len());
                (0..=part).any(|i| go(&k[i..], rest))
            }
            Some((b'?', rest)) => !k.is_empty() && go(&k[1..], rest),
            Some((c, rest)) => k.first() == Some(c) && go(&k[1..], rest),
        }
    }
    go(key.as_bytes(), pattern.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cache_settings_read_as_moleculer_writes_them() {
        let on: CacheOptions = serde_json::from_value(json!(true)).unwrap();
        assert!(on.enabled && on.keys.is_none());
        let keyed: CacheOptions =
            serde_json::from_value(json!({"keys": ["id", "#tenant"], "ttl": 30, "lock": true}))
                .unwrap();
        assert_eq!(
            keyed,
            CacheOptions::keys(["id", "#tenant"]).ttl(Duration::from_secs(30))
        );
        let off: CacheOptions = serde_json::from_value(json!({"enabled": false})).unwrap();
        assert!(!off.enabled);
        assert_eq!(serde_json::to_value(&on).unwrap(), json!(true));
        assert_eq!(
            serde_json::to_value(&keyed).unwrap(),
            json!({"enabled": true, "keys": ["id", "#tenant"], "ttl": 30})
        );
    }

    #[test]
    fn patterns_match_as_moleculer_matches_them() {
        assert!(matches("cached.square:5", "cached.**"));
        assert!(matches("cached.square:5", "cached.*"));
        assert!(!matches("cached.square:5", "other.**"));
        assert!(matches("a.b:1", "**"));
        assert!(!matches("a.b.c", "a.*"));
        assert!(matches("a.b.c", "a.**"));
        assert!(matches("users.get:5", "users.get:?"));
    }
}
