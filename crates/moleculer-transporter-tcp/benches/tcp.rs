//! Remote calls over TCP between two processes, at 1 and 100 requests in flight, with p50 and
//! p99: a 10-byte echo, JSON serializer, loopback.
//!
//! Run with: `cargo bench -p moleculer-transporter-tcp --bench tcp` (or `scripts/bench-tcp.sh`
//! to run Moleculer JS beside it). The benchmark starts its own callee process (itself, with
//! `BENCH_ROLE=callee`).

use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{Service, ServiceBroker, ServiceSchema};
use moleculer_core::Context;
use moleculer_transporter_tcp::{TcpOptions, TcpTransporter};
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

fn broker(node: &str, urls: &str, serializer: &str) -> ServiceBroker {
    let tcp = TcpTransporter::new(urls.parse::<TcpOptions>().expect("urls"));
    ServiceBroker::builder()
        .node_id(node)
        .serializer(serializer)
        .transporter(tcp.clone())
        .discoverer(tcp.discoverer())
        .build()
        .expect("broker")
}

fn runtime() -> tokio::runtime::Runtime {
    match std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
    {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()
            .unwrap(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    }
}

fn main() {
    let serializer = std::env::var("BENCH_SERIALIZER").unwrap_or_else(|_| "JSON".into());
    if std::env::var("BENCH_ROLE").as_deref() == Ok("callee") {
        let urls = std::env::var("BENCH_URLS").expect("BENCH_URLS");
        runtime().block_on(async {
            let callee = broker("callee", &urls, &serializer);
            callee.create_service(Bench).unwrap();
            callee.start().await.unwrap();
            // Until the parent closes our stdin.
            let mut line = String::new();
            let _ =
                tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
            callee.stop().await;
        });
        return;
    }
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let urls = format!(
        "tcp://127.0.0.1:{}/caller,127.0.0.1:{}/callee",
        ports[0], ports[1]
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BENCH_ROLE", "callee")
        .env("BENCH_URLS", &urls)
        .env("BENCH_SERIALIZER", &serializer)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("callee process");
    runtime().block_on(async {
        let caller = broker("caller", &urls, &serializer);
        caller.start().await.unwrap();
        caller.wait_for_services(&["bench"], Some(Duration::from_secs(20))).await.expect("callee joins");
        println!("moleculer-rs over TCP, two processes, {serializer}, 10-byte echo");
        for in_flight in [1, 100] {
            let stats = moleculer_test::bench::measure_calls(&caller, "bench.echo", &json!({"msg": "0123456789"}), in_flight, 2000, MEASURE).await;
            let (ops, p50, p99) = (stats.per_second, stats.p50_ms, stats.p99_ms);
            println!("rust {in_flight:>3} in flight {ops:>9.0} calls/s   p50 {:>7.3} ms   p99 {:>7.3} ms", p50, p99);
        }
        caller.stop().await;
    });
    drop(child.stdin.take());
    let _ = child.wait();
}
