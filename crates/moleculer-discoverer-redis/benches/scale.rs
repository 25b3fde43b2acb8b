//! A scale run: N brokers (default 200) in one process, over the Redis transporter, with the
//! Redis discoverer and then with Local discovery. Reports the time until every broker sees
//! every other one, and the Redis commands per second in steady state (`INFO stats`).
//!
//! Run with: `cargo bench -p moleculer-discoverer-redis --bench scale` (starts its own
//! redis-server; `BENCH_NODES=50` for a smaller run).

use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use moleculer_discoverer_redis::{RedisDiscoverer, RedisDiscovererOptions};
use moleculer_test::servers::RedisServer;
use moleculer_transporter_redis::{RedisOptions, RedisTransporter};

fn commands_processed(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn run(label: &str, url: &str, nodes: usize, redis_discovery: bool) {
    let namespace = if redis_discovery {
        "scale-redis"
    } else {
        "scale-local"
    };
    let brokers: Vec<ServiceBroker> = (0..nodes)
        .map(|i| {
            let mut b = ServiceBroker::builder()
                .node_id(format!("n{i}"))
                .namespace(namespace)
                .heartbeat(2.0, 6.0)
                .transporter(RedisTransporter::new(url.parse::<RedisOptions>().unwrap()));
            if redis_discovery {
                b = b.discoverer(RedisDiscoverer::new(
                    url.parse::<RedisDiscovererOptions>().unwrap(),
                ));
            }
            b.build().unwrap()
        })
        .collect();
    let start = Instant::now();
    futures::future::join_all(brokers.iter().map(ServiceBroker::start)).await;
    let started = start.elapsed();
    let converged = loop {
        if brokers
            .iter()
            .all(|b| b.with_registry(|r| r.nodes().online_count()) == nodes)
        {
            break Some(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let before = commands_processed(url);
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let per_sec = (commands_processed(url) - before) as f64 / window.as_secs_f64();
    match converged {
        Some(t) => println!(
            "{label:<28} {nodes} nodes: all started in {:.2} s, all see all after {:.2} s; Redis {per_sec:.0} commands/s (heartbeat 2 s)",
            started.as_secs_f64(),
            t.as_secs_f64()
        ),
        None => println!("{label:<28} {nodes} nodes: did not converge within 120 s; Redis {per_sec:.0} commands/s"),
    }
    futures::future::join_all(brokers.iter().map(ServiceBroker::stop)).await;
}

fn main() {
    let nodes: usize = std::env::var("BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let redis = RedisServer::start();
    let url = redis.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        run("Redis discoverer", &url, nodes, true).await;
        run("Local discovery (pub/sub)", &url, nodes, false).await;
    });
}
