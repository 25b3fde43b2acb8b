//! Transmit layers over the in-memory transporter: compressed and encrypted clusters work and
//! hide the packets; a node with another key gets nothing through; signed packets that are
//! replayed or tampered with are dropped and counted while the node keeps serving; and a secret
//! can be rotated without a gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{Service, ServiceBroker, ServiceSchema};
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_core::protocol::PacketType;
use moleculer_core::transmit::{CompressionSettings, EncryptionSettings, TransmitSettings};
use moleculer_core::transporter::{
    Delivery, IncomingSink, Outgoing, Transporter, TransporterSetup,
};
use moleculer_core::{Context, MoleculerError, NodeId};
use serde_json::{json, Value};

/// `count.hit` counts its runs and echoes its params.
#[derive(Clone, Default)]
struct Count {
    runs: Arc<AtomicU64>,
}

impl Service for Count {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("count").raw_action("hit", |s: Arc<Self>, ctx: Context| async move {
            s.runs.fetch_add(1, Ordering::SeqCst);
            Ok::<Value, MoleculerError>(ctx.params().clone())
        })
    }
}

fn encrypted(password: &str) -> TransmitSettings {
    TransmitSettings {
        encryption: Some(EncryptionSettings {
            password: password.into(),
            iv: Some("0123456789abcdef".into()),
            algorithm: "aes-256-cbc".into(),
        }),
        compression: Some(CompressionSettings {
            method: "gzip".into(),
            threshold: 100,
        }),
        ..TransmitSettings::default()
    }
}

fn signed(secret: &str, accepted: &[&str]) -> TransmitSettings {
    TransmitSettings {
        secret: Some(secret.into()),
        accepted_secrets: accepted.iter().map(|s| (*s).to_owned()).collect(),
        ..TransmitSettings::default()
    }
}

async fn node(
    bus: &MemoryBus,
    id: &str,
    transmit: TransmitSettings,
    count: &Count,
) -> ServiceBroker {
    let broker = ServiceBroker::builder()
        .node_id(id)
        .transporter(bus.transporter())
        .transmit(transmit)
        .prefer_local(false)
        .build()
        .unwrap();
    broker.create_service(count.clone()).unwrap();
    broker.start().await.unwrap();
    broker
}

fn sees(a: &ServiceBroker, node: &str) -> bool {
    a.with_registry(|r| r.nodes().get(node).is_some_and(|n| n.available))
}

async fn until(limit: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

const KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn an_encrypted_and_compressed_cluster_works_and_hides_its_packets() {
    let bus = MemoryBus::new();
    bus.capture_payloads();
    let (c0, c1) = (Count::default(), Count::default());
    let a = node(&bus, "a", encrypted(KEY), &c0).await;
    let b = node(&bus, "b", encrypted(KEY), &c1).await;
    assert!(until(Duration::from_secs(2), || sees(&a, "b") && sees(&b, "a")).await);
    let big = "x".repeat(5000);
    let answer = a
        .call_with(
            "count.hit",
            json!({"text": big}),
            moleculer_core::CallOptions::default().node_id("b"),
        )
        .await
        .unwrap();
    assert_eq!(answer["text"].as_str().unwrap().len(), 5000);
    for request in bus.payloads(PacketType::Request) {
        assert!(request.len() < 1000, "compressed: {} bytes", request.len());
        assert!(!request.windows(9).any(|w| w == b"count.hit"), "encrypted");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_node_with_another_key_gets_nothing_through() {
    let bus = MemoryBus::new();
    let (c0, c1, c2) = (Count::default(), Count::default(), Count::default());
    let a = node(&bus, "a", encrypted(KEY), &c0).await;
    let b = node(&bus, "b", encrypted(KEY), &c1).await;
    let intruder = node(
        &bus,
        "intruder",
        encrypted("ffffffffffffffffffffffffffffffff"),
        &c2,
    )
    .await;
    let plain = node(
        &bus,
        "plain",
        TransmitSettings::default(),
        &Count::default(),
    )
    .await;
    assert!(until(Duration::from_secs(2), || sees(&a, "b")).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for other in ["intruder", "plain"] {
        assert!(!sees(&a, other), "a must not see {other}");
    }
    assert!(!sees(&intruder, "a") && !sees(&plain, "a"), "nor they a");
    let refused = a.transit_stats().unwrap().malformed.load(Ordering::Relaxed);
    assert!(refused > 0, "their packets are counted as refused");
    for n in [&a, &b, &intruder, &plain] {
        n.stop().await;
    }
}

#[tokio::test]
async fn replayed_and_tampered_signed_packets_are_dropped_and_counted() {
    let bus = MemoryBus::new();
    let secret = "the-cluster-secret-0";
    let (c0, c1) = (Count::default(), Count::default());
    let a = node(&bus, "a", signed(secret, &[]), &c0).await;
    let b = node(&bus, "b", signed(secret, &[]), &c1).await;
    assert!(until(Duration::from_secs(2), || sees(&a, "b") && sees(&b, "a")).await);
    bus.capture_payloads();
    let to_b = moleculer_core::CallOptions::default().node_id("b");
    a.call_with("count.hit", json!({"n": 1}), to_b.clone())
        .await
        .unwrap();
    assert_eq!(c1.runs.load(Ordering::SeqCst), 1);
    let request = bus.payloads(PacketType::Request).pop().unwrap();

    // A rogue sender on the same bus replays the request, and a tampered copy of it.
    let rogue = bus.transporter();
    rogue
        .connect(TransporterSetup::new(
            NodeId::new("rogue"),
            "",
            IncomingSink::new(|_| Delivery::Accepted),
        ))
        .await
        .unwrap();
    let refused_before = b.transit_stats().unwrap().malformed.load(Ordering::Relaxed);
    let mut tampered = request.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x20;
    for payload in [request, tampered] {
        rogue
            .send(Outgoing {
                kind: PacketType::Request,
                target: Some(NodeId::new("b")),
                payload,
            })
            .await
            .unwrap();
    }
    assert!(
        until(Duration::from_secs(1), || {
            b.transit_stats().unwrap().malformed.load(Ordering::Relaxed) >= refused_before + 2
        })
        .await
    );
    assert_eq!(
        c1.runs.load(Ordering::SeqCst),
        1,
        "neither ran the handler again"
    );
    // The node goes on serving.
    a.call_with("count.hit", json!({"n": 2}), to_b)
        .await
        .unwrap();
    assert_eq!(c1.runs.load(Ordering::SeqCst), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_secret_is_rotated_without_a_gap() {
    let bus = MemoryBus::new();
    let (old, new) = ("the-old-secret-0000", "the-new-secret-1111");
    // Mid-rotation: one node signs with the new secret, one still with the old; each accepts
    // the other's.
    let (c0, c1) = (Count::default(), Count::default());
    let a = node(&bus, "a", signed(new, &[old]), &c0).await;
    let b = node(&bus, "b", signed(old, &[new]), &c1).await;
    assert!(until(Duration::from_secs(2), || sees(&a, "b") && sees(&b, "a")).await);
    let to_b = moleculer_core::CallOptions::default().node_id("b");
    a.call_with("count.hit", json!({}), to_b).await.unwrap();
    let to_a = moleculer_core::CallOptions::default().node_id("a");
    b.call_with("count.hit", json!({}), to_a).await.unwrap();
    // A node that knows only a third secret is kept out.
    let stranger = node(
        &bus,
        "stranger",
        signed("a-third-secret-2222", &[]),
        &Count::default(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sees(&a, "stranger") && !sees(&stranger, "a"));
    for n in [&a, &b, &stranger] {
        n.stop().await;
    }
}
