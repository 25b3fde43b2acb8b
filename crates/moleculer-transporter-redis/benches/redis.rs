//! Remote calls over the Redis transporter (two brokers in one process, a real redis-server on
//! loopback) at 1 and 100 requests in flight, with p50 and p99.
//!
//! Run with: `cargo bench -p moleculer-transporter-redis --bench redis` (starts its own
//! redis-server) or `scripts/bench-redis.sh` (Moleculer JS on the same server beside it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moleculer_broker::{Service, ServiceBroker, ServiceSchema};
use moleculer_core::Context;
use moleculer_test::servers::RedisServer;
use moleculer_transporter_redis::{RedisOptions, RedisTransporter};
use serde_json::{json, Value};

struct Bench;

impl Service for Bench {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("bench").raw_action("echo", |_s: Arc<Self>, ctx: Context| async move {
            Ok::<Value, _>(ctx.params().clone())
        })
    }
}

const MEASURE: Duration = Duration::from_secs(3);

async fn measure(caller: &ServiceBroker, in_flight: usize) -> (f64, f64, f64) {
    let params = json!({"msg": "0123456789"});
    for _ in 0..1000 {
        caller
            .call("bench.echo", params.clone())
            .await
            .expect("warm-up call");
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (caller, params) = (caller.clone(), params.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while start.elapsed() < MEASURE {
                let t = Instant::now();
                caller
                    .call("bench.echo", params.clone())
                    .await
                    .expect("call");
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (all.len() as f64 / secs, pct(0.50), pct(0.99))
}

fn main() {
    let own = std::env::var("BENCH_REDIS_URL")
        .is_err()
        .then(RedisServer::start);
    let url = std::env::var("BENCH_REDIS_URL")
        .unwrap_or_else(|_| own.as_ref().expect("own server").url());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let make = |id: &str| {
            let redis = RedisTransporter::new(url.parse::<RedisOptions>().unwrap());
            ServiceBroker::builder().node_id(id).namespace("bench-rs").transporter(redis).build().unwrap()
        };
        let (caller, callee) = (make("caller"), make("callee"));
        callee.create_service(Bench).unwrap();
        callee.start().await.unwrap();
        caller.start().await.unwrap();
        caller.wait_for_services(&["bench"], Some(Duration::from_secs(20))).await.expect("callee joins");
        println!("moleculer-rs over the Redis transporter, JSON, 10-byte echo");
        for in_flight in [1, 100] {
            let (ops, p50, p99) = measure(&caller, in_flight).await;
            println!("rust {in_flight:>3} in flight {ops:>9.0} calls/s   p50 {p50:>7.3} ms   p99 {p99:>7.3} ms");
        }
        caller.stop().await;
        callee.stop().await;
    });
}
