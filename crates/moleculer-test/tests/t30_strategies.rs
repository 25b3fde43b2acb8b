//! The Latency and CpuUsage strategies end to end: the broker pings peers (one per host) and
//! reads their heartbeats, then routes to the fastest and the least loaded.

use std::time::Duration;

use moleculer_broker::ServiceBroker;
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_test::fake_peer::{FakePeer, FakePeerSpec};
use serde_json::{json, Value};

fn peer(id: &str, host: &str, cpu: f64, ping_ms: u64) -> FakePeerSpec {
    FakePeerSpec {
        node_id: id.into(),
        hostname: host.into(),
        cpu,
        ping_delay: Duration::from_millis(ping_ms),
        service: "where".into(),
        actions: vec!["am".into()],
        heartbeat_interval: Duration::from_secs(1),
    }
}

async fn caller(bus: &MemoryBus, strategy: &str, options: Value) -> ServiceBroker {
    let broker = ServiceBroker::builder()
        .node_id("caller")
        .transporter(bus.transporter())
        .heartbeat(1.0, 3.0)
        .strategy(strategy, options)
        .build()
        .unwrap();
    broker.start().await.unwrap();
    broker
}

async fn served_by(broker: &ServiceBroker, calls: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..calls {
        let who = broker.call("where.am", json!({})).await.unwrap();
        out.push(who.as_str().unwrap().to_owned());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn latency_routes_to_the_host_that_answers_pings_fastest() {
    let bus = MemoryBus::new();
    let broker = caller(
        &bus,
        "Latency",
        json!({"pingInterval": 1, "sampleCount": 5, "lowLatency": 10}),
    )
    .await;
    let _peers = [
        FakePeer::start(&bus, peer("slow", "host-a", 10.0, 40)).await,
        FakePeer::start(&bus, peer("fast", "host-b", 10.0, 5)).await,
        FakePeer::start(&bus, peer("mid", "host-c", 10.0, 20)).await,
    ];
    broker
        .wait_for_services(&["where"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let mut pongs = broker.local_events();
    // A few ping rounds (one per second) measure every host.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut pinged = std::collections::BTreeSet::new();
    while let Ok(e) = pongs.try_recv() {
        if e.name == "$node.pong" {
            pinged.insert(e.payload["nodeID"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        pinged.into_iter().collect::<Vec<_>>(),
        ["fast", "mid", "slow"]
    );
    let latency = |node: &str| broker.with_registry(|r| r.nodes().latency_ms(node));
    assert_eq!(latency("fast"), Some(5.0));
    assert_eq!(latency("slow"), Some(40.0));
    assert!(served_by(&broker, 20).await.iter().all(|n| n == "fast"));
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_pinged_while_no_list_balances_by_latency() {
    let bus = MemoryBus::new();
    let broker = caller(&bus, "RoundRobin", Value::Null).await;
    let _peer = FakePeer::start(&bus, peer("p", "host-a", 10.0, 5)).await;
    broker
        .wait_for_services(&["where"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(broker.with_registry(|r| r.nodes().latency_ms("p")), None);
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cpu_usage_routes_to_the_least_loaded_node() {
    let bus = MemoryBus::new();
    let broker = caller(
        &bus,
        "CpuUsage",
        json!({"sampleCount": 5, "lowCpuUsage": 5}),
    )
    .await;
    let _peers = [
        FakePeer::start(&bus, peer("busy", "h1", 90.0, 1)).await,
        FakePeer::start(&bus, peer("idle", "h2", 12.0, 1)).await,
        FakePeer::start(&bus, peer("half", "h3", 50.0, 1)).await,
    ];
    broker
        .wait_for_services(&["where"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    // The first heartbeats carry the CPU figures.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        broker.with_registry(|r| r.nodes().get("idle").and_then(|n| n.cpu)),
        Some(12.0)
    );
    assert!(served_by(&broker, 20).await.iter().all(|n| n == "idle"));
    broker.stop().await;
}
