//! Caching on the node that serves an action (Moleculer's Cacher middleware), for actions with
//! `cache` settings: a hit answers without running the handler and marks the context
//! (`ctx.cached_result()`); a miss runs the handler and stores its answer. Beyond Moleculer:
//! concurrent misses of one key run the handler once and share its answer, and a store that
//! fails (Redis down) is bypassed with one warning instead of failing the call.
//! `meta.$cache = false` skips the cache for one call.
//!
//! Memory caches of other nodes are cleaned through the `$cacher.clean` event
//! ([`CacheCleaner`]), which [`ServiceBroker::clean_cache`](crate::ServiceBroker::clean_cache)
//! broadcasts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use moleculer_core::cache_key::cache_key;
use moleculer_core::{
    ActionHandler, ActionInfo, CacheOptions, Cacher, Context, LogThrottle, Middleware,
    MoleculerError, Result,
};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::error::BrokerError;
use crate::panic_guard::panic_message;
use crate::service_schema::{BoundService, EventDef, ServiceSchema};

/// The event that makes every node clean its cache with the `pattern` it carries.
pub const CLEAN_EVENT: &str = "$cacher.clean";

type Flight = Shared<BoxFuture<'static, Result<Value>>>;

/// What the cacher middleware counts, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct CacherStats {
    /// Reads of the store.
    pub get: AtomicU64,
    /// Reads that found a value.
    pub found: AtomicU64,
    /// Writes to the store.
    pub set: AtomicU64,
}

/// The cacher middleware of one broker.
pub(crate) struct CacherMiddleware {
    cacher: Arc<dyn Cacher>,
    max_params_length: Option<usize>,
    /// Misses being computed, by key: later callers of the same key wait for the first.
    flights: Arc<Mutex<HashMap<String, Flight>>>,
    warnings: Arc<LogThrottle>,
    stats: Arc<CacherStats>,
}

impl CacherMiddleware {
    /// Caches through `cacher`.
    pub fn new(cacher: Arc<dyn Cacher>, max_params_length: Option<usize>) -> Self {
        Self {
            cacher,
            max_params_length,
            flights: Arc::default(),
            warnings: Arc::new(LogThrottle::new(Duration::from_secs(10))),
            stats: Arc::default(),
        }
    }

    /// Its counts of reads, hits and writes.
    pub fn stats(&self) -> Arc<CacherStats> {
        self.stats.clone()
    }
}

impl Middleware for CacherMiddleware {
    fn name(&self) -> &str {
        "Cacher"
    }

    fn local_action(&self, next: ActionHandler, action: &ActionInfo) -> ActionHandler {
        let Some(opts) = action.cache.clone().filter(|c| c.enabled) else {
            return next;
        };
        let cached = Arc::new(Cached {
            cacher: self.cacher.clone(),
            opts,
            name: action.name.clone(),
            max_params_length: self.max_params_length,
            flights: self.flights.clone(),
            warnings: self.warnings.clone(),
            stats: self.stats.clone(),
        });
        Arc::new(move |ctx: Context| {
            if ctx.meta_get("$cache") == Some(Value::Bool(false)) {
                return next(ctx);
            }
            cached.clone().serve(ctx, next.clone()).boxed()
        })
    }
}

/// One cached action.
struct Cached {
    cacher: Arc<dyn Cacher>,
    opts: CacheOptions,
    name: String,
    max_params_length: Option<usize>,
    flights: Arc<Mutex<HashMap<String, Flight>>>,
    warnings: Arc<LogThrottle>,
    stats: Arc<CacherStats>,
}

impl Cached {
    async fn serve(self: Arc<Self>, ctx: Context, next: ActionHandler) -> Result<Value> {
        // Read meta in place: no copy of it per call.
        let key = ctx.with_meta(|meta| {
            cache_key(
                &self.name,
                &self.opts,
                ctx.params(),
                meta,
                ctx.headers(),
                self.max_params_length,
            )
        });
        self.stats.get.fetch_add(1, Ordering::Relaxed);
        match self.cacher.get(&key).await {
            Ok(Some(value)) => {
                self.stats.found.fetch_add(1, Ordering::Relaxed);
                ctx.set_cached_result();
                return Ok(value);
            }
            Ok(None) => {}
            Err(err) => {
                // The store is down: serve without it.
                self.warn("read", &err);
                return next(ctx).await;
            }
        }
        let (flight, leader) = {
            let mut flights = self.flights.lock();
            match flights.get(&key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    // On a task of its own: a first caller that gives up (a timeout) does not
                    // leave the others waiting on a handler nobody drives.
                    let node = ctx.local_node_id().to_string();
                    let action = self.name.clone();
                    let fill = moleculer_core::task::spawn(self.clone().fill(
                        key.clone(),
                        ctx.clone(),
                        next,
                    ));
                    let flight = async move {
                        fill.await.unwrap_or_else(|err| {
                            let why = if err.is_panic() {
                                panic_message(&*err.into_panic())
                            } else {
                                "the broker stopped".to_owned()
                            };
                            Err(MoleculerError::handler_panicked(&action, &node, &why))
                        })
                    }
                    .boxed()
                    .shared();
                    flights.insert(key.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        if !leader {
            ctx.set_cached_result();
        }
        flight.await
    }

    /// Runs the handler for a miss, stores its answer, and lets the next miss of `key` run
    /// its own.
    async fn fill(
        self: Arc<Self>,
        key: String,
        ctx: Context,
        next: ActionHandler,
    ) -> Result<Value> {
        let result = next(ctx).await;
        if let Ok(value) = &result {
            let ttl = self.opts.ttl.map(Duration::from_secs);
            self.stats.set.fetch_add(1, Ordering::Relaxed);
            if let Err(err) = self.cacher.set(&key, value.clone(), ttl).await {
                self.warn("write", &err);
            }
        }
        self.flights.lock().remove(&key);
        result
    }

    fn warn(&self, what: &str, err: &MoleculerError) {
        if let Some(held) = self.warnings.admit(what) {
            tracing::warn!(
                cacher = self.cacher.name(),
                action = %self.name,
                "cannot {what} the cache ({}): calls go to the handler meanwhile{}",
                err.message,
                self.warnings.held_note(held)
            );
        }
    }
}

/// The `$cacher` service: cleans this node's cache when another node broadcasts
/// `$cacher.clean` (memory caches are per node; a shared Redis cache is cleaned once, by the
/// node that asked).
struct CacheCleaner {
    cacher: Arc<dyn Cacher>,
}

/// The `$cacher` service of a broker that caches through `cacher`, ready to add.
pub(crate) fn cache_cleaner(cacher: Arc<dyn Cacher>) -> Result<BoundService, BrokerError> {
    let schema = ServiceSchema::new("$cacher").event_def(EventDef::new(
        CLEAN_EVENT,
        |s: Arc<CacheCleaner>, ctx: Context| async move {
            if ctx.node_id() == ctx.local_node_id() {
                return Ok(());
            }
            let pattern = ctx.params()["pattern"].as_str().unwrap_or("**").to_owned();
            s.cacher.clean(&pattern).await
        },
    ));
    schema.bind(&Arc::new(CacheCleaner { cacher }))
}

/// The payload of a clean broadcast.
pub(crate) fn clean_payload(pattern: &str) -> Value {
    json!({ "pattern": pattern })
}
