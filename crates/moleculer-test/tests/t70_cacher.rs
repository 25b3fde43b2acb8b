//! The cacher middleware with the memory cachers, over the in-memory transporter on paused
//! time: hits skip the handler and mark the context, `meta.$cache = false` bypasses, the ttl
//! expires entries, concurrent misses run the handler once, a failing store is bypassed, and
//! `clean_cache` on one node cleans the others' memory caches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, BoxFuture};
use moleculer_broker::{ServiceBroker, ServiceSchema};
use moleculer_core::memory_cacher::MemoryCacher;
use moleculer_core::{
    ActionHandler, ActionInfo, CacheOptions, Cacher, CacherOptions, CallOptions, Context,
    Middleware, MoleculerError, Result,
};
use moleculer_test::Cluster;
use parking_lot::Mutex;
use serde_json::{json, Value};

/// `square.of {n}` → n·n after 100 ms, cached by `n` for 30 s; counts its runs.
#[derive(Clone, Default)]
struct Square {
    runs: Arc<AtomicU64>,
}

impl moleculer_broker::Service for Square {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("square").action_def(
            moleculer_broker::ActionDef::raw("of", |s: Arc<Self>, ctx: Context| async move {
                s.runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = ctx.params()["n"].as_i64().unwrap_or(0);
                Ok::<Value, MoleculerError>(json!(n * n))
            })
            .cache(CacheOptions::keys(["n"]).ttl(Duration::from_secs(30))),
        )
    }
}

/// Records, after each local call, whether its answer came from the cache.
#[derive(Clone, Default)]
struct SeesCached {
    seen: Arc<Mutex<Vec<bool>>>,
}

impl Middleware for SeesCached {
    fn local_action(&self, next: ActionHandler, _action: &ActionInfo) -> ActionHandler {
        let seen = self.seen.clone();
        Arc::new(move |ctx: Context| {
            let (next, seen) = (next.clone(), seen.clone());
            Box::pin(async move {
                let result = next(ctx.clone()).await;
                seen.lock().push(ctx.cached_result());
                result
            })
        })
    }
}

/// A store that is always down.
struct Down;

impl Cacher for Down {
    fn name(&self) -> &str {
        "Down"
    }
    fn get(&self, _: &str) -> BoxFuture<'static, Result<Option<Value>>> {
        Box::pin(future::ready(Err(MoleculerError::broker_disconnected())))
    }
    fn set(&self, _: &str, _: Value, _: Option<Duration>) -> BoxFuture<'static, Result<()>> {
        Box::pin(future::ready(Err(MoleculerError::broker_disconnected())))
    }
    fn del(&self, _: &[String]) -> BoxFuture<'static, Result<()>> {
        Box::pin(future::ready(Ok(())))
    }
    fn clean(&self, _: &str) -> BoxFuture<'static, Result<()>> {
        Box::pin(future::ready(Ok(())))
    }
}

fn memory() -> MemoryCacher {
    MemoryCacher::unbounded(&CacherOptions::default())
}

#[tokio::test(start_paused = true)]
async fn hits_skip_the_handler_until_the_ttl_and_bypass_on_request() {
    let square = Square::default();
    let sees = SeesCached::default();
    let broker = ServiceBroker::builder()
        .cacher(memory())
        .middleware(sees.clone())
        .build()
        .unwrap();
    broker.create_service(square.clone()).unwrap();
    broker.start().await.unwrap();

    assert_eq!(broker.call("square.of", json!({"n": 7})).await.unwrap(), 49);
    assert_eq!(
        broker
            .call("square.of", json!({"n": 7, "x": 1}))
            .await
            .unwrap(),
        49
    );
    assert_eq!(square.runs.load(Ordering::SeqCst), 1, "keyed by n alone");
    assert_eq!(
        *sees.seen.lock(),
        [false, true],
        "the context says it was cached"
    );

    let mut meta = serde_json::Map::new();
    meta.insert("$cache".into(), json!(false));
    let opts = CallOptions::default().meta(meta);
    broker
        .call_with("square.of", json!({"n": 7}), opts)
        .await
        .unwrap();
    assert_eq!(
        square.runs.load(Ordering::SeqCst),
        2,
        "meta.$cache = false bypasses"
    );

    tokio::time::advance(Duration::from_secs(31)).await;
    broker.call("square.of", json!({"n": 7})).await.unwrap();
    assert_eq!(
        square.runs.load(Ordering::SeqCst),
        3,
        "expired after its 30 s"
    );

    let cacher = broker.cacher().unwrap();
    assert_eq!(cacher.get("square.of:7").await.unwrap(), Some(json!(49)));
    cacher.del(&["square.of:7".to_owned()]).await.unwrap();
    broker.call("square.of", json!({"n": 7})).await.unwrap();
    assert_eq!(square.runs.load(Ordering::SeqCst), 4);
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_of_one_key_run_the_handler_once() {
    let square = Square::default();
    let broker = ServiceBroker::builder().cacher(memory()).build().unwrap();
    broker.create_service(square.clone()).unwrap();
    broker.start().await.unwrap();
    let calls = (0..20).map(|i| broker.call("square.of", json!({"n": 3 + i % 2})));
    let answers = future::join_all(calls).await;
    assert!(answers
        .iter()
        .all(|a| matches!(a.as_ref().unwrap().as_i64(), Some(9 | 16))));
    assert_eq!(square.runs.load(Ordering::SeqCst), 2, "once per key");

    // The first caller of a key gives up early; the one behind it still gets the answer.
    let impatient = broker.call_with(
        "square.of",
        json!({"n": 12}),
        CallOptions::default().timeout(Duration::from_millis(30)),
    );
    let patient = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        broker.call("square.of", json!({"n": 12})).await
    };
    let (gave_up, answer) = futures::join!(impatient, patient);
    assert_eq!(gave_up.unwrap_err().name, "RequestTimeoutError");
    assert_eq!(answer.unwrap(), 144);
    assert_eq!(square.runs.load(Ordering::SeqCst), 3, "one run for both");
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_that_is_down_is_bypassed() {
    let square = Square::default();
    let broker = ServiceBroker::builder().cacher(Down).build().unwrap();
    broker.create_service(square.clone()).unwrap();
    broker.start().await.unwrap();
    for _ in 0..3 {
        assert_eq!(broker.call("square.of", json!({"n": 2})).await.unwrap(), 4);
    }
    assert_eq!(square.runs.load(Ordering::SeqCst), 3);
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn clean_cache_reaches_every_node_memory_cache() {
    let squares = [Square::default(), Square::default()];
    let services = squares.clone();
    let c = Cluster::start(
        2,
        |_, b| b.cacher(memory()),
        move |i, broker: &ServiceBroker| broker.create_service(services[i].clone()).unwrap(),
    )
    .await;
    assert!(c.converged(Duration::from_secs(2)).await);
    // Each node serves itself (local first) and fills its own cache.
    for broker in &c.brokers {
        broker.call("square.of", json!({"n": 5})).await.unwrap();
        broker.call("square.of", json!({"n": 5})).await.unwrap();
    }
    let runs = || {
        squares
            .iter()
            .map(|s| s.runs.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    };
    assert_eq!(runs(), [1, 1]);

    c.node(0).clean_cache("square.**").await.unwrap();
    // The broadcast reaches node-1; give the bus a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for broker in &c.brokers {
        broker.call("square.of", json!({"n": 5})).await.unwrap();
    }
    assert_eq!(runs(), [2, 2], "both caches were cleaned");
    c.stop_all().await;
}
