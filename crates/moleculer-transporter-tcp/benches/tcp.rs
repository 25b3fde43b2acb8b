//! Remote calls over TCP between two processes, at 1 and 100 requests in flight, with p50 and
//! p99: a 10-byte echo, JSON serializer, loopback.
//!
//! Run with: `cargo bench -p moleculer-transporter-tcp --bench tcp` (or `scripts/bench-tcp.sh`
//! to run Moleculer JS beside it). The benchmark starts its own callee process (itself, with
//! `BENCH_ROLE=callee`).

use std::sync::Arc;
use std::time::{Duration, Instant};

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

async fn measure(caller: &ServiceBroker, in_flight: usize) -> (f64, f64, f64) {
    let params = json!({"msg": "0123456789"});
    for _ in 0..2000 {
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
            let mut latencies = Vec::with_capacity(200_000);
            while start.elapsed() < MEASURE {
                let t = Instant::now();
                caller
                    .call("bench.echo", params.clone())
                    .await
                    .expect("call");
                latencies.push(t.elapsed().as_secs_f64() * 1e6);
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
            let (ops, p50, p99) = measure(&caller, in_flight).await;
            println!("rust {in_flight:>3} in flight {ops:>9.0} calls/s   p50 {:>7.3} ms   p99 {:>7.3} ms", p50 / 1000.0, p99 / 1000.0);
        }
        caller.stop().await;
    });
    drop(child.stdin.take());
    let _ = child.wait();
}
