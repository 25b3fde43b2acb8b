//! The in-process cachers: `Memory` (no size limit) and `MemoryLRU` (at most `max` entries,
//! the least recently used dropped first). Entries expire after their ttl; an expired entry
//! is a miss and is dropped when met. Values are cloned out, so a caller cannot change what
//! is cached.

use std::num::NonZeroUsize;
use std::time::Duration;

use futures::future::{self, BoxFuture};
use lru::LruCache;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use crate::cacher::{matches, Cacher, CacherOptions};
use crate::error::Result;

/// MemoryLRU's size when `max` is not given (Moleculer's default).
pub const DEFAULT_LRU_MAX: usize = 1000;

struct Entry {
    value: Value,
    expires: Option<Instant>,
}

/// `Memory` or `MemoryLRU`.
pub struct MemoryCacher {
    name: &'static str,
    entries: Mutex<LruCache<String, Entry>>,
    default_ttl: Option<Duration>,
}

impl MemoryCacher {
    /// `Memory`: every entry kept until it expires or is cleaned.
    pub fn unbounded(options: &CacherOptions) -> Self {
        Self {
            name: "Memory",
            entries: Mutex::new(LruCache::unbounded()),
            default_ttl: ttl_of(options.ttl),
        }
    }

    /// `MemoryLRU`: at most `max` entries (default 1000).
    pub fn lru(options: &CacherOptions) -> Self {
        let max =
            NonZeroUsize::new(options.max.unwrap_or(DEFAULT_LRU_MAX)).unwrap_or(NonZeroUsize::MIN);
        Self {
            name: "MemoryLRU",
            entries: Mutex::new(LruCache::new(max)),
            default_ttl: ttl_of(options.ttl),
        }
    }

    /// Entries held now (expired ones included until they are met).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, key: &str) -> Option<Value> {
        let mut entries = self.entries.lock();
        let entry = entries.get(key)?;
        if entry.expires.is_some_and(|at| at <= Instant::now()) {
            entries.pop(key);
            return None;
        }
        Some(entry.value.clone())
    }
}

/// Seconds as a ttl; zero means forever.
fn ttl_of(seconds: Option<u64>) -> Option<Duration> {
    seconds.filter(|s| *s > 0).map(Duration::from_secs)
}

impl Cacher for MemoryCacher {
    fn name(&self) -> &str {
        self.name
    }

    fn get(&self, key: &str) -> BoxFuture<'static, Result<Option<Value>>> {
        Box::pin(future::ready(Ok(self.lookup(key))))
    }

    fn set(
        &self,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
    ) -> BoxFuture<'static, Result<()>> {
        let ttl = match ttl {
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t),
            None => self.default_ttl,
        };
        let entry = Entry {
            value,
            expires: ttl.map(|t| Instant::now() + t),
        };
        self.entries.lock().put(key.to_owned(), entry);
        Box::pin(future::ready(Ok(())))
    }

    fn del(&self, keys: &[String]) -> BoxFuture<'static, Result<()>> {
        let mut entries = self.entries.lock();
        for key in keys {
            entries.pop(key);
        }
        Box::pin(future::ready(Ok(())))
    }

    fn clean(&self, pattern: &str) -> BoxFuture<'static, Result<()>> {
        let mut entries = self.entries.lock();
        let doomed: Vec<String> = entries
            .iter()
            .filter(|(k, _)| matches(k, pattern))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            entries.pop(&key);
        }
        Box::pin(future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(ttl: Option<u64>, max: Option<usize>) -> CacherOptions {
        CacherOptions {
            ttl,
            max,
            ..CacherOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl() {
        let cache = MemoryCacher::unbounded(&opts(Some(10), None));
        cache.set("a:1", json!(1), None).await.unwrap();
        cache
            .set("a:2", json!(2), Some(Duration::from_secs(2)))
            .await
            .unwrap();
        cache
            .set("a:3", json!(3), Some(Duration::ZERO))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(cache.get("a:1").await.unwrap(), Some(json!(1)));
        assert_eq!(cache.get("a:2").await.unwrap(), None, "its own 2 s ttl");
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(
            cache.get("a:1").await.unwrap(),
            None,
            "the default 10 s ttl"
        );
        assert_eq!(
            cache.get("a:3").await.unwrap(),
            Some(json!(3)),
            "zero: forever"
        );
    }

    #[tokio::test]
    async fn lru_drops_the_least_recently_used() {
        let cache = MemoryCacher::lru(&opts(None, Some(2)));
        cache.set("k1", json!(1), None).await.unwrap();
        cache.set("k2", json!(2), None).await.unwrap();
        assert!(cache.get("k1").await.unwrap().is_some(), "k1 is used again");
        cache.set("k3", json!(3), None).await.unwrap();
        assert_eq!(
            cache.get("k2").await.unwrap(),
            None,
            "k2 was the least recent"
        );
        assert!(cache.get("k1").await.unwrap().is_some());
        assert!(cache.get("k3").await.unwrap().is_some());
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn del_and_clean_remove_keys_and_patterns() {
        let cache = MemoryCacher::unbounded(&opts(None, None));
        for key in ["users.get:1", "users.get:2", "users.list:", "posts.get:1"] {
            cache.set(key, json!(key), None).await.unwrap();
        }
        cache.del(&["users.get:1".to_owned()]).await.unwrap();
        assert_eq!(cache.get("users.get:1").await.unwrap(), None);
        cache.clean("users.**").await.unwrap();
        assert_eq!(cache.len(), 1);
        assert!(cache.get("posts.get:1").await.unwrap().is_some());
        cache.clean("**").await.unwrap();
        assert!(cache.is_empty());
    }
}
