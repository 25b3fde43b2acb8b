//! Local call and emit throughput: `cargo bench -p moleculer-broker --bench local`.
//!
//! A bench binary (not a timed test). Each case runs a warm-up, then counts operations for a
//! fixed time, on one thread (comparable to Node.js, which is single-threaded) and on every
//! core with one sequential caller per core.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moleculer_broker::{ActionDef, Service, ServiceBroker, ServiceBrokerBuilder, ServiceSchema};
use moleculer_core::memory_cacher::MemoryCacher;
use moleculer_core::{
    BulkheadOptions, CacheOptions, CacherOptions, CircuitBreakerOptions, Context, Result,
    RetryPolicy,
};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct AddParams {
    a: i64,
    b: i64,
}

struct Bench {
    events: AtomicU64,
}

impl Service for Bench {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("bench")
            .raw_action("echo", |_s: Arc<Self>, _ctx: Context| async move {
                Ok(Value::Null)
            })
            .action(
                "add",
                |_s: Arc<Self>, _ctx: Context, p: AddParams| async move { Ok(p.a + p.b) },
            )
            .action_def(
                ActionDef::new(
                    "cachedAdd",
                    |_s: Arc<Self>, _ctx: Context, p: AddParams| async move { Ok(p.a + p.b) },
                )
                .cache(CacheOptions::keys(["a", "b"])),
            )
            .event("bench.tick", |s: Arc<Self>, _ctx: Context| async move {
                s.events.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
    }
}

const WARMUP: Duration = Duration::from_millis(300);
/// With `BENCH_FAULT_TOLERANCE=1`: retries, the circuit breaker and bulkheads on (their
/// limits out of reach, so only their bookkeeping is measured).
fn fault_tolerance(builder: ServiceBrokerBuilder) -> ServiceBrokerBuilder {
    if std::env::var("BENCH_FAULT_TOLERANCE").is_err() {
        return builder;
    }
    builder
        .retry_policy(RetryPolicy {
            enabled: Some(true),
            ..RetryPolicy::default()
        })
        .circuit_breaker(CircuitBreakerOptions {
            enabled: Some(true),
            ..CircuitBreakerOptions::default()
        })
        .bulkhead(BulkheadOptions {
            enabled: Some(true),
            concurrency: Some(1000),
            max_queue_size: Some(0),
        })
}

const MEASURE: Duration = Duration::from_secs(2);

/// Runs `op` in a loop on `threads` tasks; returns operations per second.
fn run<F, Fut>(threads: usize, op: F) -> f64
where
    F: Fn(&ServiceBroker) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    };
    runtime.block_on(async move {
        // The memory cacher wraps only `bench.cachedAdd`; the other actions run as without it.
        let cacher = MemoryCacher::unbounded(&CacherOptions::default());
        let broker = fault_tolerance(ServiceBroker::builder().node_id("bench").cacher(cacher))
            .build()
            .unwrap();
        broker
            .create_service(Bench {
                events: AtomicU64::new(0),
            })
            .unwrap();
        broker.start().await.unwrap();
        let total = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..threads {
            let (broker, op, total) = (broker.clone(), op.clone(), total.clone());
            tasks.push(tokio::spawn(async move {
                let warm_end = Instant::now() + WARMUP;
                while Instant::now() < warm_end {
                    for _ in 0..256 {
                        op(&broker).await.unwrap();
                    }
                }
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < MEASURE {
                    for _ in 0..256 {
                        op(&broker).await.unwrap();
                    }
                    n += 256;
                }
                total.fetch_add(n, Ordering::Relaxed);
                start.elapsed()
            }));
        }
        let mut longest = Duration::ZERO;
        for t in tasks {
            longest = longest.max(t.await.unwrap());
        }
        broker.stop().await;
        total.load(Ordering::Relaxed) as f64 / longest.as_secs_f64()
    })
}

fn report(name: &str, threads: usize, ops: f64) {
    println!(
        "{name:<34} {threads} thread(s) {:>7.2} M ops/s {:>7.1} ns/op per thread",
        ops / 1e6,
        1e9 / ops * threads as f64
    );
}

fn bench<F, Fut>(name: &str, filter: Option<&str>, op: F)
where
    F: Fn(&ServiceBroker) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    if filter.is_some_and(|f| !name.contains(f)) {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for threads in [1, cores]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
    {
        report(name, threads, run(threads, op.clone()));
    }
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let filter = filter.as_deref();
    println!(
        "moleculer-rs local benchmark ({} cores){}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        if std::env::var("BENCH_FAULT_TOLERANCE").is_ok() {
            ", retries, breaker and bulkheads on"
        } else {
            ""
        }
    );
    bench("local call (untyped, no params)", filter, |b| {
        let call = b.call("bench.echo", Value::Null);
        async move { call.await.map(|v| drop(black_box(v))) }
    });
    bench("local call (typed params {a,b})", filter, |b| {
        let call = b.call("bench.add", json!({"a": 1, "b": 2}));
        async move { call.await.map(|v| drop(black_box(v))) }
    });
    bench("local call, cache hit (keys a, b)", filter, |b| {
        let call = b.call("bench.cachedAdd", json!({"a": 1, "b": 2}));
        async move { call.await.map(|v| drop(black_box(v))) }
    });
    bench("local emit (one handler)", filter, |b| {
        b.emit("bench.tick", Value::Null)
    });
}
