//! The Redis discoverer against a real redis-server: key layout, restarts and outages.

use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_discoverer_redis::{RedisDiscoverer, RedisDiscovererOptions};
use moleculer_test::servers::RedisServer;
use moleculer_test::services::Echo;
use serde_json::json;

fn discoverer(url: &str) -> RedisDiscoverer {
    RedisDiscoverer::new(url.parse::<RedisDiscovererOptions>().unwrap())
}

/// Brokers on an in-memory bus (the transporter) with the Redis discoverer.
fn broker(bus: &MemoryBus, id: &str, url: &str) -> ServiceBroker {
    ServiceBroker::builder()
        .node_id(id)
        .namespace("live")
        .heartbeat(1.0, 3.0)
        .transporter(bus.transporter())
        .discoverer(discoverer(url))
        .build()
        .unwrap()
}

fn sees(a: &ServiceBroker, node: &str) -> bool {
    a.with_registry(|r| r.nodes().get(node).is_some_and(|n| n.available))
}

fn keys(url: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn keys_follow_moleculers_layout_and_go_on_stop() {
    let redis = RedisServer::start();
    let bus = MemoryBus::new();
    let a = broker(&bus, "node-a", &redis.url());
    a.start().await.unwrap();
    assert!(
        moleculer_test::eventually(Duration::from_secs(3), || keys(
            &redis.url(),
            "MOL-live-DSCVR-*"
        )
        .len()
            == 2)
        .await
    );
    let found = keys(&redis.url(), "MOL-live-DSCVR-*");
    let hash = &a.instance_id()[..8];
    assert!(
        found[0].starts_with(&format!("MOL-live-DSCVR-BEAT:node-a|{hash}|")),
        "{found:?}"
    );
    assert_eq!(found[1], "MOL-live-DSCVR-INFO:node-a");
    a.stop().await;
    assert!(
        keys(&redis.url(), "MOL-live-DSCVR-*").is_empty(),
        "a graceful stop removes the keys"
    );
}

#[tokio::test]
async fn a_redis_restart_evicts_nobody_and_every_node_republishes() {
    let mut redis = RedisServer::start();
    let bus = MemoryBus::new();
    let (a, b) = (
        broker(&bus, "node-a", &redis.url()),
        broker(&bus, "node-b", &redis.url()),
    );
    b.create_service(Echo).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(
        moleculer_test::eventually(Duration::from_secs(5), || sees(&a, "node-b")
            && sees(&b, "node-a"))
        .await
    );
    redis.restart();
    // Within one heartbeat interval (plus the reconnect) both INFO keys are back.
    assert!(
        moleculer_test::eventually(Duration::from_secs(4), || keys(
            &redis.url(),
            "MOL-live-DSCVR-INFO:*"
        )
        .len()
            == 2)
        .await,
        "INFO keys republished"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        sees(&a, "node-b") && sees(&b, "node-a"),
        "nobody was evicted"
    );
    assert_eq!(
        a.call("echo.where", json!({})).await.unwrap()["node"],
        "node-b"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_redis_outage_longer_than_the_timeout_evicts_nobody_while_the_transporter_works() {
    let mut redis = RedisServer::start();
    let bus = MemoryBus::new();
    let (a, b) = (
        broker(&bus, "node-a", &redis.url()),
        broker(&bus, "node-b", &redis.url()),
    );
    b.create_service(Echo).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(
        moleculer_test::eventually(Duration::from_secs(5), || sees(&a, "node-b")
            && sees(&b, "node-a"))
        .await
    );
    redis.stop();
    // Three times the heartbeat timeout without Redis.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        sees(&a, "node-b") && sees(&b, "node-a"),
        "a Redis outage evicts no live node"
    );
    assert_eq!(
        a.call("echo.where", json!({})).await.unwrap()["node"],
        "node-b"
    );
    redis.restart();
    assert!(
        moleculer_test::eventually(Duration::from_secs(5), || keys(
            &redis.url(),
            "MOL-live-DSCVR-INFO:*"
        )
        .len()
            == 2)
        .await,
        "keys come back with Redis"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_crashed_node_goes_when_its_beat_key_expires() {
    let redis = RedisServer::start();
    let bus = MemoryBus::new();
    let a = broker(&bus, "node-a", &redis.url());
    let b = broker(&bus, "node-b", &redis.url());
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(moleculer_test::eventually(Duration::from_secs(5), || sees(&a, "node-b")).await);
    drop(b);
    let started = Instant::now();
    assert!(
        moleculer_test::eventually(Duration::from_secs(8), || !sees(&a, "node-b")).await,
        "dropped once its beat key expired"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the key could expire"
    );
    a.stop().await;
}

#[tokio::test]
async fn malformed_values_in_redis_are_skipped() {
    let redis = RedisServer::start();
    let bus = MemoryBus::new();
    let (a, b) = (
        broker(&bus, "node-a", &redis.url()),
        broker(&bus, "node-b", &redis.url()),
    );
    {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        // A beat key for a node whose INFO is garbage, a garbage beat value, a key that is
        // not <nodeID>|<instance>|<seq>.
        let _: () = redis::cmd("SET")
            .arg("MOL-live-DSCVR-BEAT:ghost|abcdefgh|1")
            .arg("not a packet")
            .query(&mut conn)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("MOL-live-DSCVR-INFO:ghost")
            .arg("{broken json")
            .query(&mut conn)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("MOL-live-DSCVR-BEAT:oddly-named")
            .arg("x")
            .query(&mut conn)
            .unwrap();
    }
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(
        moleculer_test::eventually(Duration::from_secs(5), || sees(&a, "node-b")
            && sees(&b, "node-a"))
        .await,
        "real nodes are found"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        a.with_registry(|r| r.nodes().get("ghost").is_none()),
        "a node with a malformed INFO is not registered"
    );
    assert!(sees(&a, "node-b"), "and nothing else is disturbed");
    b.stop().await;
    a.stop().await;
}

/// A transporter whose subscriptions can be made to lag, as after an outage of a Redis shared
/// by the transporter and the discoverer.
struct LaggingTransporter {
    inner: moleculer_core::memory_transporter::MemoryTransporter,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl moleculer_core::transporter::Transporter for LaggingTransporter {
    fn name(&self) -> &'static str {
        "lagging"
    }
    async fn connect(
        &self,
        setup: moleculer_core::transporter::TransporterSetup,
    ) -> Result<(), moleculer_core::transporter::TransporterError> {
        self.inner.connect(setup).await
    }
    async fn send(
        &self,
        packet: moleculer_core::transporter::Outgoing,
    ) -> Result<(), moleculer_core::transporter::TransporterError> {
        self.inner.send(packet).await
    }
    async fn disconnect(&self) {
        self.inner.disconnect().await;
    }
    fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[tokio::test]
async fn a_node_is_advertised_only_once_its_transporter_can_take_calls() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let redis = RedisServer::start();
    let bus = MemoryBus::new();
    let ready = Arc::new(AtomicBool::new(false));
    let lagging = LaggingTransporter {
        inner: bus.transporter(),
        ready: ready.clone(),
    };
    let b = ServiceBroker::builder()
        .node_id("node-b")
        .namespace("lag")
        .heartbeat(1.0, 3.0)
        .transporter(lagging)
        .discoverer(discoverer(&redis.url()))
        .build()
        .unwrap();
    b.create_service(Echo).unwrap();
    b.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        keys(&redis.url(), "MOL-lag-DSCVR-BEAT:*").is_empty(),
        "no beat key while packets cannot reach the node"
    );
    ready.store(true, Ordering::Release);
    let started = Instant::now();
    assert!(
        moleculer_test::eventually(Duration::from_secs(3), || keys(
            &redis.url(),
            "MOL-lag-DSCVR-BEAT:*"
        )
        .len()
            == 1)
        .await,
        "advertised once the transporter is ready"
    );
    // Not a heartbeat interval later: the discoverer retries every 100 ms while pending.
    println!(
        "advertised {:?} after the transporter became ready",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(900));
    b.stop().await;
}
