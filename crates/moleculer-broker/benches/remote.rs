//! Remote calls through the in-memory transporter — the full path: serialize → transit →
//! transporter → peer transit → handler → response back — at 1 and at 100 requests in flight,
//! with JSON and MsgPack.
//!
//! Run with: `cargo bench -p moleculer-broker --bench remote`

use std::sync::Arc;
use std::time::{Duration, Instant};

use moleculer_broker::{Service, ServiceBroker, ServiceBrokerBuilder, ServiceSchema};
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_core::transmit::{CompressionSettings, EncryptionSettings, TransmitSettings};
use moleculer_core::{BulkheadOptions, CircuitBreakerOptions, Context, RetryPolicy};
use serde_json::{json, Value};

struct Bench;

impl Service for Bench {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("bench").raw_action("echo", |_s: Arc<Self>, ctx: Context| async move {
            Ok::<Value, _>(ctx.params().clone())
        })
    }
}

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

/// With `BENCH_TRANSMIT=signed`, `encrypted` (aes-256-cbc) or `compressed` (deflate, every
/// packet): that transmit layer on both nodes.
fn transmit(builder: ServiceBrokerBuilder) -> ServiceBrokerBuilder {
    let settings = match std::env::var("BENCH_TRANSMIT").as_deref() {
        Ok("signed") => TransmitSettings {
            secret: Some("a-benchmark-secret-0".into()),
            ..TransmitSettings::default()
        },
        Ok("encrypted") => TransmitSettings {
            encryption: Some(EncryptionSettings {
                password: "0123456789abcdef0123456789abcdef".into(),
                iv: Some("0123456789abcdef".into()),
                algorithm: "aes-256-cbc".into(),
            }),
            ..TransmitSettings::default()
        },
        Ok("compressed") => TransmitSettings {
            compression: Some(CompressionSettings {
                method: "deflate".into(),
                threshold: 0,
            }),
            ..TransmitSettings::default()
        },
        _ => return builder,
    };
    builder.transmit(settings)
}

async fn pair(serializer: &str) -> (ServiceBroker, ServiceBroker) {
    let bus = MemoryBus::new();
    let a = transmit(fault_tolerance(ServiceBroker::builder()))
        .node_id("caller")
        .serializer(serializer)
        .transporter(bus.transporter())
        .build()
        .unwrap();
    let b = transmit(fault_tolerance(ServiceBroker::builder()))
        .node_id("callee")
        .serializer(serializer)
        .transporter(bus.transporter())
        .build()
        .unwrap();
    b.create_service(Bench).unwrap();
    b.start().await.unwrap();
    a.start().await.unwrap();
    a.wait_for_services(&["bench"], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    (a, b)
}

/// Runs `in_flight` concurrent sequential callers; returns (ops/s, p50 µs, p99 µs).
async fn measure(caller: &ServiceBroker, in_flight: usize) -> (f64, f64, f64) {
    let params = json!({"msg": "0123456789"});
    for _ in 0..2000 {
        caller.call("bench.echo", params.clone()).await.unwrap();
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (caller, params) = (caller.clone(), params.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while start.elapsed() < MEASURE {
                let t = Instant::now();
                caller.call("bench.echo", params.clone()).await.unwrap();
                latencies.push(t.elapsed().as_secs_f64() * 1e6);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (all.len() as f64 / secs, pct(0.50), pct(0.99))
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    println!(
        "moleculer-rs remote calls over the in-memory transporter (10-byte echo){}{}",
        if std::env::var("BENCH_FAULT_TOLERANCE").is_ok() {
            ", retries, breaker and bulkheads on"
        } else {
            ""
        },
        std::env::var("BENCH_TRANSMIT")
            .map(|t| format!(", transmit: {t}"))
            .unwrap_or_default()
    );
    for serializer in ["JSON", "MsgPack"] {
        if filter
            .as_deref()
            .is_some_and(|f| !serializer.eq_ignore_ascii_case(f))
        {
            continue;
        }
        let runtime = if std::env::var("BENCH_CURRENT_THREAD").is_ok() {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        runtime.block_on(async {
            let (a, b) = pair(serializer).await;
            for in_flight in [1, 100] {
                let (ops, p50, p99) = measure(&a, in_flight).await;
                println!("{serializer:<8} {in_flight:>3} in flight {:>9.0} calls/s   p50 {p50:>7.1} µs   p99 {p99:>7.1} µs", ops);
            }
            a.stop().await;
            b.stop().await;
        });
    }
}
