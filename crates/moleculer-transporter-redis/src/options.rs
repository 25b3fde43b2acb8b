//! Options of the Redis transporter.

use std::str::FromStr;
use std::time::Duration;

/// Where the Redis server is, and how to retry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://host:port[/db]` or `rediss://...`.
    pub url: String,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay (1 s, so a node subscribes again within about a second of Redis
    /// coming back).
    pub max_backoff: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// A transporter string that is not a Redis URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a Redis URL (expected redis://host:port or rediss://host:port)")]
pub struct NotARedisUrl(pub String);

impl FromStr for RedisOptions {
    type Err = NotARedisUrl;

    fn from_str(s: &str) -> Result<Self, NotARedisUrl> {
        let lower = s.to_ascii_lowercase();
        if lower == "redis" {
            return Ok(Self::default());
        }
        if !(lower.starts_with("redis://") || lower.starts_with("rediss://")) {
            return Err(NotARedisUrl(s.to_owned()));
        }
        Ok(Self {
            url: s.to_owned(),
            ..Self::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_redis_urls_only() {
        assert_eq!(
            "redis://127.0.0.1:7000"
                .parse::<RedisOptions>()
                .unwrap()
                .url,
            "redis://127.0.0.1:7000"
        );
        assert!("rediss://h:1".parse::<RedisOptions>().is_ok());
        assert_eq!(
            "Redis".parse::<RedisOptions>().unwrap(),
            RedisOptions::default()
        );
        assert!("tcp://x"
            .parse::<RedisOptions>()
            .unwrap_err()
            .to_string()
            .contains("tcp://x"));
    }
}
