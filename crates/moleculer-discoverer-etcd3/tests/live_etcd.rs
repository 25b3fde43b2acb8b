//! The etcd3 discoverer against a real etcd: the watch, lease loss, restarts.

use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_discoverer_etcd3::{Etcd3Discoverer, Etcd3Options};
use moleculer_test::eventually;
use moleculer_test::servers::EtcdServer;
use moleculer_test::services::Echo;
use serde_json::json;

fn broker(bus: &MemoryBus, id: &str, etcd: &EtcdServer) -> ServiceBroker {
    let discoverer = Etcd3Discoverer::new(etcd.url().parse::<Etcd3Options>().unwrap());
    ServiceBroker::builder()
        .node_id(id)
        .namespace("live")
        .heartbeat(1.0, 3.0)
        .transporter(bus.transporter())
        .discoverer(discoverer)
        .build()
        .unwrap()
}

fn sees(a: &ServiceBroker, node: &str) -> bool {
    a.with_registry(|r| r.nodes().get(node).is_some_and(|n| n.available))
}

async fn keys(etcd: &EtcdServer, prefix: &str) -> Vec<String> {
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let resp = client
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    let mut keys: Vec<String> = resp
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn keys_follow_moleculers_layout_and_a_stop_is_seen_at_once() {
    let etcd = EtcdServer::start();
    let bus = MemoryBus::new();
    let (a, b) = (broker(&bus, "node-a", &etcd), broker(&bus, "node-b", &etcd));
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || sees(&a, "node-b")).await);
    let found = keys(&etcd, "moleculer-live/discovery/").await;
    let hash = &b.instance_id()[..8];
    assert!(
        found
            .iter()
            .any(|k| k.starts_with(&format!("moleculer-live/discovery/beats/node-b/{hash}/"))),
        "{found:?}"
    );
    assert!(
        found.contains(&"moleculer-live/discovery/info/node-b".to_owned()),
        "{found:?}"
    );
    b.stop().await;
    let started = Instant::now();
    assert!(eventually(Duration::from_secs(2), || !sees(&a, "node-b")).await);
    println!(
        "node-b dropped {} ms after its stop",
        started.elapsed().as_millis()
    );
    assert!(
        !keys(&etcd, "moleculer-live/discovery/")
            .await
            .iter()
            .any(|k| k.contains("node-b")),
        "its leases were revoked"
    );
    a.stop().await;
}

#[tokio::test]
async fn a_lost_lease_is_granted_again_and_the_node_reappears() {
    let etcd = EtcdServer::start();
    let bus = MemoryBus::new();
    let (a, b) = (broker(&bus, "node-a", &etcd), broker(&bus, "node-b", &etcd));
    b.create_service(Echo).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || sees(&a, "node-b")).await);
    // Revoke every lease from outside, as an operator (or a long pause) would.
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    for lease in client.leases().await.unwrap().leases() {
        client.lease_revoke(lease.id()).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(6), || sees(&a, "node-b")
            && sees(&b, "node-a"))
        .await,
        "both nodes are back after new leases"
    );
    assert!(
        eventually(Duration::from_secs(4), || keys_blocking(&etcd)
            .iter()
            .any(|k| k.contains("/info/node-b")))
        .await,
        "INFO written again"
    );
    assert_eq!(
        a.call("echo.where", json!({})).await.unwrap()["node"],
        "node-b"
    );
    b.stop().await;
    a.stop().await;
}

fn keys_blocking(etcd: &EtcdServer) -> Vec<String> {
    let endpoint = etcd.endpoint();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut client = etcd_client::Client::connect([endpoint], None)
                    .await
                    .unwrap();
                let resp = client
                    .get(
                        "moleculer-live/",
                        Some(
                            etcd_client::GetOptions::new()
                                .with_prefix()
                                .with_keys_only(),
                        ),
                    )
                    .await
                    .unwrap();
                resp.kvs()
                    .iter()
                    .map(|kv| kv.key_str().unwrap().to_owned())
                    .collect()
            })
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn an_etcd_restart_evicts_nobody() {
    let mut etcd = EtcdServer::start();
    let bus = MemoryBus::new();
    let (a, b) = (broker(&bus, "node-a", &etcd), broker(&bus, "node-b", &etcd));
    b.create_service(Echo).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || sees(&a, "node-b")
            && sees(&b, "node-a"))
        .await
    );
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        sees(&a, "node-b") && sees(&b, "node-a"),
        "an etcd outage longer than the timeout evicts no live node"
    );
    etcd.restart();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        sees(&a, "node-b") && sees(&b, "node-a"),
        "still together after etcd is back"
    );
    assert!(
        eventually(Duration::from_secs(5), || keys_blocking(&etcd)
            .iter()
            .any(|k| k.contains("/beats/node-b/")))
        .await,
        "beats written again"
    );
    assert_eq!(
        a.call("echo.where", json!({})).await.unwrap()["node"],
        "node-b"
    );
    b.stop().await;
    a.stop().await;
}

/// Moleculer writes its INFO key and its first beat in either order; the watch takes a node
/// from its INFO at once, and skips a value that is not INFO.
#[tokio::test]
async fn a_node_is_seen_from_its_info_key_before_its_first_beat() {
    let etcd = EtcdServer::start();
    let bus = MemoryBus::new();
    let a = broker(&bus, "node-a", &etcd);
    a.start().await.unwrap();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client
        .put("moleculer-live/discovery/info/broken", "{not json", None)
        .await
        .unwrap();
    let info = json!({
        "ver": "5", "sender": "js-like", "services": [], "ipList": ["127.0.0.1"],
        "hostname": "h", "client": {"type": "nodejs", "version": "0.15.2", "langVersion": "v20"},
        "config": {}, "instanceID": "0123456789abcdef", "metadata": {}, "seq": 1
    });
    let written = Instant::now();
    client
        .put(
            "moleculer-live/discovery/info/js-like",
            info.to_string(),
            None,
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_millis(500), || sees(&a, "js-like")).await,
        "seen from its INFO key alone"
    );
    println!(
        "js-like seen {} ms after its INFO was written",
        written.elapsed().as_millis()
    );
    assert!(!sees(&a, "broken"), "a malformed INFO value is skipped");
    a.stop().await;
}
