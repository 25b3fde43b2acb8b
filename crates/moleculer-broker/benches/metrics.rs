//! What metrics cost: `cargo bench -p moleculer-broker --bench metrics`.
//!
//! Local calls and remote calls over the in-memory transporter (JSON, 1 and 100 in flight),
//! all on one thread, each measured with metrics off and on in alternating rounds of the same
//! run, so the machine's drift hits both alike. Prints the median of each and the overhead.
//! `scripts/bench-metrics.sh` runs it beside the same measure of Moleculer (Node.js).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moleculer_broker::{MetricsSettings, Service, ServiceBroker, ServiceSchema};
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_core::Context;
use serde_json::{json, Value};

struct Bench;

impl Service for Bench {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("bench").raw_action("echo", |_s: Arc<Self>, ctx: Context| async move {
            Ok(ctx.params().clone())
        })
    }
}

const ROUNDS: usize = 5;
const LOCAL_TIME: Duration = Duration::from_millis(1500);
const REMOTE_TIME: Duration = Duration::from_millis(1500);

fn metrics(on: bool) -> MetricsSettings {
    MetricsSettings {
        enabled: on,
        // Kept, not served: the endpoint is not on the call path.
        serve: false,
        ..MetricsSettings::default()
    }
}

/// Sequential local calls on one thread, calls per second.
fn local(on: bool) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let broker = ServiceBroker::builder()
            .node_id("bench")
            .metrics(metrics(on))
            .build()
            .unwrap();
        broker.create_service(Bench).unwrap();
        broker.start().await.unwrap();
        for _ in 0..100_000 {
            broker.call("bench.echo", Value::Null).await.unwrap();
        }
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < LOCAL_TIME {
            for _ in 0..256 {
                std::hint::black_box(broker.call("bench.echo", Value::Null).await.unwrap());
            }
            n += 256;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        broker.stop().await;
        rate
    })
}

/// A caller and a callee with `bench` on one in-memory bus, started.
async fn pair(on: bool) -> (ServiceBroker, ServiceBroker) {
    let bus = MemoryBus::new();
    let make = |id: &str| {
        ServiceBroker::builder()
            .node_id(id)
            .transporter(bus.transporter())
            .metrics(metrics(on))
            .build()
            .unwrap()
    };
    let (caller, callee) = (make("caller"), make("callee"));
    callee.create_service(Bench).unwrap();
    callee.start().await.unwrap();
    caller.start().await.unwrap();
    caller
        .wait_for_services(&["bench"], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    (caller, callee)
}

/// `in_flight` sequential callers of a node on the same bus, calls per second. On one thread,
/// as Node.js runs: the cost per call shows without the noise of two threads trading work.
fn remote(on: bool, in_flight: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (caller, callee) = pair(on).await;
        let params = json!({"msg": "0123456789"});
        for _ in 0..2000 {
            caller.call("bench.echo", params.clone()).await.unwrap();
        }
        let start = Instant::now();
        let tasks: Vec<_> = (0..in_flight)
            .map(|_| {
                let (caller, params) = (caller.clone(), params.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while start.elapsed() < REMOTE_TIME {
                        caller.call("bench.echo", params.clone()).await.unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        caller.stop().await;
        callee.stop().await;
        rate
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn compare(name: &str, run: impl Fn(bool) -> f64) {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer machine.
        if round % 2 == 0 {
            off.push(run(false));
            on.push(run(true));
        } else {
            on.push(run(true));
            off.push(run(false));
        }
    }
    let (off, on) = (median(off), median(on));
    println!(
        "{name:<34} off {off:>11.0}/s   on {on:>11.0}/s   overhead {:>5.1} %",
        (off - on) / off * 100.0
    );
}

/// A fixed number of calls in one mode, for counting instructions:
/// `BENCH_CALLS=<n> BENCH_METRICS=on|off valgrind --tool=callgrind <bench binary> local|remote`.
/// Two counts (n and 2n calls) give the instructions per call, set-up excluded.
fn fixed(calls: u64, on: bool, remote: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (caller, callee) = pair(on).await;
        let (who, params) = if remote {
            (&caller, json!({"msg": "0123456789"}))
        } else {
            (&callee, Value::Null)
        };
        let start = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(who.call("bench.echo", params.clone()).await.unwrap());
        }
        eprintln!("{calls} calls in {:?}", start.elapsed());
        caller.stop().await;
        callee.stop().await;
    });
}

fn main() {
    if let Some(calls) = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        let on = std::env::var("BENCH_METRICS").is_ok_and(|m| m == "on");
        let remote = std::env::args().any(|a| a == "remote");
        fixed(calls, on, remote);
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    println!("moleculer-rs: calls with metrics off and on, median of {ROUNDS} alternating rounds");
    if wanted("local") {
        compare("local call, 1 thread", local);
    }
    for in_flight in [1, 100] {
        let name = format!("remote call JSON, {in_flight} in flight");
        if wanted(&name) {
            compare(&name, |on| remote(on, in_flight));
        }
    }
}
