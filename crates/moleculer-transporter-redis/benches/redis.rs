//! Remote calls over the Redis transporter (two brokers in one process, a real redis-server on
//! loopback) at 1 and 100 requests in flight, with p50 and p99.
//!
//! Run with: `cargo bench -p moleculer-transporter-redis --bench redis` (starts its own
//! redis-server) or `scripts/bench-redis.sh` (Moleculer JS on the same server beside it).

use std::sync::Arc;
use std::time::Duration;

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
            let stats = moleculer_test::bench::measure_calls(&caller, "bench.echo", &json!({"msg": "0123456789"}), in_flight, 2000, MEASURE).await;
            let (ops, p50, p99) = (stats.per_second, stats.p50_ms, stats.p99_ms);
            println!("rust {in_flight:>3} in flight {ops:>9.0} calls/s   p50 {p50:>7.3} ms   p99 {p99:>7.3} ms");
        }
        caller.stop().await;
        callee.stop().await;
    });
}
