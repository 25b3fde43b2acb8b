//! Failure detection and bad input, on paused tokio time.

use std::time::Duration;

use moleculer_broker::{BrokerError, BrokerOptions, ServiceBroker};
use moleculer_core::protocol::{InfoPacket, Packet, PacketType};
use moleculer_core::serializer::{Json, Serializer};
use moleculer_core::service_info::NodeInfo;
use moleculer_core::transporter::{Incoming, Outgoing, Transporter, TransporterSetup};
use moleculer_core::NodeId;
use moleculer_test::services::Echo;
use moleculer_test::Cluster;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

const INTERVAL: f64 = 1.0;
const TIMEOUT: f64 = 3.0;

fn fast(b: moleculer_broker::ServiceBrokerBuilder) -> moleculer_broker::ServiceBrokerBuilder {
    b.heartbeat(INTERVAL, TIMEOUT).prefer_local(false)
}

async fn echo_cluster(n: usize) -> Cluster {
    let c = Cluster::start(
        n,
        |_, b| fast(b),
        |i, b| {
            if i > 0 {
                b.create_service(Echo).unwrap();
            }
        },
    )
    .await;
    assert!(c.converged(Duration::from_secs(2)).await);
    c.node(0)
        .wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    c
}

#[tokio::test(start_paused = true)]
async fn live_nodes_stay_connected_for_a_long_time() {
    let c = echo_cluster(3).await;
    let beats = c.sent(PacketType::Heartbeat);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        (0..3).all(|i| (0..3).all(|j| c.sees(i, j))),
        "no live node was dropped in 60 s"
    );
    let sent = c.sent(PacketType::Heartbeat) - beats;
    // 3 nodes, one beat per 0.75–1.25 s each, over 60 s.
    assert!((140..=245).contains(&sent), "{sent} heartbeats in 60 s");
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_is_dropped_in_time_and_its_pending_calls_are_rejected_at_once() {
    let c = echo_cluster(3).await;
    let caller = c.node(0).clone();
    // A call that node-1 will never answer: it goes silent while serving it.
    let stuck = tokio::spawn(caller.call_with(
        "echo.sleep",
        json!({"ms": 60_000}),
        moleculer_core::CallOptions::default().node_id("node-1"),
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let silenced_at = Instant::now();
    c.silence(1);
    assert!(
        c.wait_until(Duration::from_secs(10), |c| !c.sees(0, 1))
            .await
    );
    let detected = silenced_at.elapsed().as_secs_f64();
    // Last beat at most one period (≤ 1.25 s) before silence; detection when silence passes
    // the timeout, at the next check (every interval).
    assert!(
        detected <= TIMEOUT + INTERVAL + 1.25,
        "dropped after {detected:.2} s"
    );
    assert!(
        detected >= TIMEOUT - 1.25,
        "dropped too early, after {detected:.2} s"
    );
    let err = tokio::time::timeout(Duration::from_millis(50), stuck)
        .await
        .expect("rejected at detection, not at a timeout")
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (err.name.as_str(), err.code, err.retryable),
        ("RequestRejectedError", 503, true)
    );
    for _ in 0..10 {
        let reply = caller.call("echo.where", json!({})).await.unwrap();
        assert_eq!(reply["node"], "node-2", "no call goes to the dead node");
    }
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_is_seen_at_once_and_in_flight_work_finishes() {
    let c = echo_cluster(3).await;
    let caller = c.node(0).clone();
    let mut bus = caller.local_events();
    let in_flight = tokio::spawn(caller.call_with(
        "echo.sleep",
        json!({"ms": 300}),
        moleculer_core::CallOptions::default().node_id("node-1"),
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stopping_at = Instant::now();
    let stopper = {
        let node = c.node(1).clone();
        tokio::spawn(async move { node.stop().await })
    };
    // The empty INFO arrives first: node-1's actions are withdrawn before anything stops.
    assert!(
        c.wait_until(Duration::from_millis(50), |c| c.node(0).with_registry(
            |r| r
                .action_list("echo.where")
                .is_some_and(|l| l.endpoints().len() == 1)
        ))
        .await
    );
    for _ in 0..5 {
        assert_eq!(
            caller.call("echo.where", json!({})).await.unwrap()["node"],
            "node-2"
        );
    }
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        "node-1",
        "the in-flight call completes during the stop"
    );
    stopper.await.unwrap();
    assert!(
        c.wait_until(Duration::from_millis(100), |c| !c.sees(0, 1))
            .await
    );
    assert!(
        stopping_at.elapsed() < Duration::from_secs(1),
        "noticed without waiting for a heartbeat timeout"
    );
    let mut order = Vec::new();
    while let Ok(e) = bus.try_recv() {
        if e.payload["node"]["id"] == "node-1" {
            order.push((e.name, e.payload["unexpected"].clone()));
        }
    }
    assert_eq!(
        order.first().map(|e| e.0.as_str()),
        Some("$node.updated"),
        "{order:?}"
    );
    assert_eq!(
        order.last(),
        Some(&("$node.disconnected".to_owned(), json!(false))),
        "{order:?}"
    );
    c.node(0).stop().await;
    c.node(2).stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_drops_both_sides_and_healing_reconverges() {
    let c = echo_cluster(3).await;
    c.partition(&[&[0], &[1, 2]]);
    assert!(
        c.wait_until(Duration::from_secs(8), |c| !c.sees(0, 1)
            && !c.sees(0, 2)
            && !c.sees(1, 0)
            && !c.sees(2, 0))
            .await
    );
    assert!(
        c.sees(1, 2) && c.sees(2, 1),
        "each side keeps its own members"
    );
    assert_eq!(
        c.node(0)
            .call("echo.where", json!({}))
            .await
            .unwrap_err()
            .name,
        "ServiceNotAvailableError"
    );
    c.heal();
    assert!(
        c.converged(Duration::from_secs(5)).await,
        "healing reconverges within a few heartbeats"
    );
    c.node(0)
        .wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(c.node(0).call("echo.where", json!({})).await.is_ok());
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_live_duplicate_node_id_is_refused_and_the_owner_keeps_serving() {
    let c = echo_cluster(2).await;
    let owner_instance = c.node(1).instance_id().to_owned();
    let duplicate = Cluster::build(&c.bus, 1, &|_, b| fast(b));
    let err = duplicate.start().await.unwrap_err();
    assert!(matches!(err, BrokerError::NodeIdConflict { .. }), "{err}");
    assert!(err.to_string().contains("node-1"), "{err}");
    // The owner re-announces itself; node-0 ends up with the owner's instance and can call it.
    assert!(
        c.wait_until(Duration::from_secs(3), |c| c.node(0).with_registry(|r| r
            .nodes()
            .get("node-1")
            .is_some_and(|n| n.available && n.instance_id == owner_instance)))
            .await
    );
    c.node(0)
        .wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(
        c.node(0).call("echo.where", json!({})).await.unwrap()["node"],
        "node-1"
    );
    assert!(c.node(1).is_started(), "the owner is not disturbed");
    c.stop_all().await;
}

async fn raw_node(
    bus: &moleculer_core::memory_transporter::MemoryBus,
    id: &str,
) -> (impl Transporter, mpsc::UnboundedReceiver<Incoming>) {
    let t = bus.transporter();
    let (tx, rx) = mpsc::unbounded_channel();
    t.connect(TransporterSetup::new(NodeId::new(id), "", tx))
        .await
        .unwrap();
    (t, rx)
}

#[tokio::test(start_paused = true)]
async fn a_replayed_old_info_raises_no_conflict() {
    let c = echo_cluster(2).await;
    let (replayer, _rx) = raw_node(&c.bus, "replayer").await;
    let old = Packet::Info(InfoPacket {
        info: NodeInfo {
            instance_id: "old-instance-of-node-1".into(),
            seq: 5,
            ..Default::default()
        },
        ver: "5".into(),
        sender: NodeId::new("node-1"),
    });
    replayer
        .send(Outgoing {
            kind: PacketType::Info,
            target: None,
            payload: Json.encode(&old).unwrap(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.node(1).is_started());
    let instance = c.node(1).instance_id().to_owned();
    assert!(
        c.node(0).with_registry(|r| r
            .nodes()
            .get("node-1")
            .is_some_and(|n| n.instance_id == instance)),
        "peers are corrected by a re-announce"
    );
    assert!(c.node(0).call("echo.where", json!({})).await.is_ok());
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_the_same_node_id_replaces_the_old_instance() {
    let c = echo_cluster(2).await;
    c.node(1).stop().await;
    let again = Cluster::build(&c.bus, 1, &|_, b| fast(b));
    again.create_service(Echo).unwrap();
    again.start().await.expect("no false conflict on restart");
    let instance = again.instance_id().to_owned();
    assert!(
        c.wait_until(Duration::from_secs(2), |c| c.node(0).with_registry(|r| r
            .nodes()
            .get("node-1")
            .is_some_and(|n| n.available && n.instance_id == instance)))
            .await
    );
    c.node(0)
        .wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(
        c.node(0).call("echo.where", json!({})).await.unwrap()["node"],
        "node-1"
    );
    again.stop().await;
    c.node(0).stop().await;
}

#[tokio::test(start_paused = true)]
async fn bad_packets_are_dropped_counted_and_the_node_keeps_serving() {
    let c = Cluster::start(
        2,
        |i, b| {
            let mut o = BrokerOptions {
                node_id: Some(Cluster::node_id(i)),
                ..Default::default()
            };
            o.transit.max_packet_size = 4096;
            fast(b.options(o))
        },
        |i, b| {
            if i == 0 {
                b.create_service(Echo).unwrap();
            }
        },
    )
    .await;
    c.node(1)
        .wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let (evil, _rx) = raw_node(&c.bus, "evil").await;
    let to0 = |kind, payload: &[u8]| Outgoing {
        kind,
        target: Some(NodeId::new("node-0")),
        payload: payload.to_vec(),
    };
    let valid = br#"{"id":"1","action":"echo.where","params":{},"meta":{},"level":1,"ver":"5","sender":"evil"}"#;
    evil.send(to0(PacketType::Request, b"\x00\x01garbage"))
        .await
        .unwrap();
    evil.send(to0(PacketType::Request, &valid[..30]))
        .await
        .unwrap();
    evil.send(to0(
        PacketType::Request,
        br#"{"id":1,"action":["not","a","string"],"ver":"5","sender":"evil"}"#,
    ))
    .await
    .unwrap();
    evil.send(to0(PacketType::GossipHello, br#"{"ver":"5","host":"x"}"#))
        .await
        .unwrap();
    evil.send(to0(
        PacketType::Request,
        &String::from_utf8_lossy(valid)
            .replace("\"ver\":\"5\"", "\"ver\":\"3\"")
            .into_bytes(),
    ))
    .await
    .unwrap();
    evil.send(to0(PacketType::Event, &vec![b' '; 8192]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = c.node(0).transit_stats().unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        stats.malformed.load(Relaxed),
        4,
        "garbage, truncated, wrong field type, HELLO without sender"
    );
    assert_eq!(stats.wrong_version.load(Relaxed), 1);
    assert_eq!(stats.oversized.load(Relaxed), 1);
    assert_eq!(stats.dropped(), 6);
    assert_eq!(
        c.node(1).call("echo.where", json!({})).await.unwrap()["node"],
        "node-0",
        "the node keeps serving"
    );
    assert!(c.sees(1, 0) && c.sees(0, 1));
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_service_added_later_is_announced_debounced() {
    let c = Cluster::start(2, |_, b| fast(b), |_, _| {}).await;
    assert!(c.converged(Duration::from_secs(2)).await);
    let mut bus = c.node(0).local_events();
    let infos = c.sent(PacketType::Info);
    c.node(1).create_service(Echo).unwrap();
    c.node(0)
        .wait_for_services(&["echo"], Some(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(
        c.sent(PacketType::Info) - infos,
        1,
        "one debounced INFO broadcast"
    );
    assert!(std::iter::from_fn(|| bus.try_recv().ok()).any(|e| e.name == "$node.updated"));
    assert!(c.node(0).call("echo.where", json!({})).await.is_ok());
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn offline_nodes_are_forgotten_after_the_clean_timeout() {
    let c = Cluster::start(
        2,
        |i, b| {
            let o = BrokerOptions {
                node_id: Some(Cluster::node_id(i)),
                clean_offline_nodes_timeout: 10.0,
                ..Default::default()
            };
            fast(b.options(o))
        },
        |_, _| {},
    )
    .await;
    assert!(c.converged(Duration::from_secs(2)).await);
    c.node(1).stop().await;
    assert!(
        c.wait_until(Duration::from_millis(500), |c| !c.sees(0, 1))
            .await
    );
    assert!(
        c.node(0)
            .with_registry(|r| r.nodes().get("node-1").is_some()),
        "kept while offline"
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        c.node(0)
            .with_registry(|r| r.nodes().get("node-1").is_none()),
        "forgotten after cleanOfflineNodesTimeout"
    );
    c.node(0).stop().await;
}

#[test]
fn a_heartbeat_timeout_not_above_the_interval_is_refused() {
    let err = ServiceBroker::builder()
        .heartbeat(5.0, 2.0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("heartbeatTimeout"));
}

#[tokio::test(start_paused = true)]
async fn disabled_heartbeat_checks_keep_a_silent_node() {
    let c = Cluster::start(
        2,
        |i, b| {
            let o = BrokerOptions {
                node_id: Some(Cluster::node_id(i)),
                disable_heartbeat_checks: true,
                ..Default::default()
            };
            fast(b.options(o))
        },
        |_, _| {},
    )
    .await;
    assert!(c.converged(Duration::from_secs(2)).await);
    c.silence(1);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        c.sees(0, 1),
        "with disableHeartbeatChecks a silent node is kept"
    );
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn disabled_offline_node_removing_keeps_offline_nodes() {
    let c = Cluster::start(
        2,
        |i, b| {
            let o = BrokerOptions {
                node_id: Some(Cluster::node_id(i)),
                clean_offline_nodes_timeout: 5.0,
                disable_offline_node_removing: true,
                ..Default::default()
            };
            fast(b.options(o))
        },
        |_, _| {},
    )
    .await;
    assert!(c.converged(Duration::from_secs(2)).await);
    c.node(1).stop().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        c.node(0)
            .with_registry(|r| r.nodes().get("node-1").is_some_and(|n| !n.available)),
        "kept, offline"
    );
    c.node(0).stop().await;
}
