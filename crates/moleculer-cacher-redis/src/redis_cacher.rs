//! The Redis store behind [`RedisCacher`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use moleculer_core::{Cacher, CacherOptions, LogThrottle, MoleculerError, Result};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use serde_json::Value;
use tokio::time::Instant;

/// How long after a failed connection the next attempt waits (calls fail at once meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Keys asked per SCAN round of a clean.
const SCAN_COUNT: usize = 100;

/// Moleculer's Redis cacher.
#[derive(Clone)]
pub struct RedisCacher {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: redis::Client,
    prefix: String,
    default_ttl: Option<u64>,
    conn: Mutex<Connection>,
    warnings: LogThrottle,
}

/// The shared connection, or when the last attempt failed.
enum Connection {
    None,
    Up(ConnectionManager),
    Down(Instant),
}

impl RedisCacher {
    /// A cacher on the Redis at `url` (`redis://host:port[/db]`); `namespace` is the
    /// broker's, for the default prefix.
    pub fn new(url: &str, options: &CacherOptions, namespace: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            MoleculerError::validation(format!("'{url}' is not a Redis URL: {e}"), Value::Null)
        })?;
        let prefix = match (&options.prefix, namespace) {
            (Some(prefix), _) => format!("{prefix}-"),
            (None, "") => "MOL-".to_owned(),
            (None, ns) => format!("MOL-{ns}-"),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                client,
                prefix,
                default_ttl: options.ttl.filter(|t| *t > 0),
                conn: Mutex::new(Connection::None),
                warnings: LogThrottle::new(Duration::from_secs(10)),
            }),
        })
    }

    /// The prefix put before every key (`MOL-<namespace>-` by default).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl Inner {
    /// The connection, opening one when there is none and the last failure is a second old.
    async fn conn(&self) -> Result<ConnectionManager> {
        {
            let conn = self.conn.lock();
            match &*conn {
                Connection::Up(c) => return Ok(c.clone()),
                Connection::Down(at) if at.elapsed() < RETRY_AFTER => {
                    return Err(self.unreachable("it did not answer a moment ago"))
                }
                _ => {}
            }
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let opened = tokio::time::timeout(
            Duration::from_secs(1),
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        match opened {
            Ok(Ok(c)) => {
                *self.conn.lock() = Connection::Up(c.clone());
                Ok(c)
            }
            Ok(Err(err)) => Err(self.failed(&err)),
            Err(_) => {
                *self.conn.lock() = Connection::Down(Instant::now());
                Err(self.unreachable("no answer within 1 s"))
            }
        }
    }

    /// Notes a failed command or connection: the next call opens a fresh connection (after
    /// [`RETRY_AFTER`]).
    fn failed(&self, err: &redis::RedisError) -> MoleculerError {
        *self.conn.lock() = Connection::Down(Instant::now());
        self.unreachable(&err.to_string())
    }

    fn unreachable(&self, why: &str) -> MoleculerError {
        let mut err = MoleculerError::broker_disconnected();
        err.message = format!("the Redis cacher cannot reach {}: {why}", self.url);
        err
    }

    async fn get(&self, key: String) -> Result<Option<Value>> {
        let mut conn = self.conn().await?;
        let full = format!("{}{key}", self.prefix);
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&full)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(&e))?;
        let Some(bytes) = bytes else { return Ok(None) };
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Some(value)),
            Err(err) => {
                // Not ours to read (another serializer, a hand-written key): a miss.
                if let Some(held) = self.warnings.admit("decode") {
                    tracing::warn!(
                        "the cached value of {full} is not JSON ({err}): treated as a miss{}",
                        self.warnings.held_note(held)
                    );
                }
                Ok(None)
            }
        }
    }

    async fn set(&self, key: String, value: Value, ttl: Option<Duration>) -> Result<()> {
        let mut conn = self.conn().await?;
        let ttl = match ttl {
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t.as_secs().max(1)),
            None => self.default_ttl,
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}{key}", self.prefix))
            .arg(value.to_string());
        if let Some(ttl) = ttl {
            cmd.arg("EX").arg(ttl);
        }
        cmd.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.failed(&e))
    }

    async fn del(&self, keys: Vec<String>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let full: Vec<String> = keys.iter().map(|k| format!("{}{k}", self.prefix)).collect();
        redis::cmd("DEL")
            .arg(full)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.failed(&e))
    }

    async fn clean(&self, pattern: String) -> Result<()> {
        let mut conn = self.conn().await?;
        let matcher = format!("{}{}", self.prefix, pattern.replace("**", "*"));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&matcher)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.failed(&e))?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(keys)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| self.failed(&e))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Cacher for RedisCacher {
    fn name(&self) -> &str {
        "Redis"
    }

    fn get(&self, key: &str) -> BoxFuture<'static, Result<Option<Value>>> {
        let (inner, key) = (self.inner.clone(), key.to_owned());
        Box::pin(async move { inner.get(key).await })
    }

    fn set(
        &self,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
    ) -> BoxFuture<'static, Result<()>> {
        let (inner, key) = (self.inner.clone(), key.to_owned());
        Box::pin(async move { inner.set(key, value, ttl).await })
    }

    fn del(&self, keys: &[String]) -> BoxFuture<'static, Result<()>> {
        let (inner, keys) = (self.inner.clone(), keys.to_vec());
        Box::pin(async move { inner.del(keys).await })
    }

    fn clean(&self, pattern: &str) -> BoxFuture<'static, Result<()>> {
        let (inner, pattern) = (self.inner.clone(), pattern.to_owned());
        Box::pin(async move { inner.clean(pattern).await })
    }
}
