//! Conformance suites: every transporter and every discoverer runs the same checks. A backend
//! is done when it passes. The suites use tokio's clock, so the in-memory backends run them on
//! paused time and networked backends on real time.

use std::time::Duration;

use moleculer_broker::{ServiceBroker, ServiceBrokerBuilder};
use moleculer_core::protocol::PacketType;
use moleculer_core::transporter::{Incoming, Outgoing, Transporter, TransporterSetup};
use moleculer_core::NodeId;
use serde_json::json;
use tokio::sync::mpsc;

use crate::services::Echo;

async fn connect<T: Transporter>(
    t: &T,
    node: &str,
    namespace: &str,
) -> mpsc::UnboundedReceiver<Incoming> {
    let (tx, rx) = mpsc::unbounded_channel();
    let setup = TransporterSetup::new(NodeId::new(node), namespace, tx);
    t.connect(setup)
        .await
        .unwrap_or_else(|e| panic!("transporter connects: {e}"));
    rx
}

/// The next packet, skipping the GOSSIP_HELLO a connection-based transporter sends first.
async fn recv(rx: &mut mpsc::UnboundedReceiver<Incoming>, within: Duration) -> Option<Incoming> {
    loop {
        let packet = tokio::time::timeout(within, rx.recv())
            .await
            .ok()
            .flatten()?;
        if packet.kind != PacketType::GossipHello {
            return Some(packet);
        }
    }
}

/// What a transporter carries, so the suite checks what it promises.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Untargeted packets reach every node (pub/sub transporters). TCP drops them.
    pub broadcast: bool,
    /// DISCOVER, INFO, HEARTBEAT and DISCONNECT travel (TCP does discovery by gossip instead).
    pub discovery_packets: bool,
    /// GOSSIP_REQ and GOSSIP_RES travel (TCP, and the in-memory bus).
    pub gossip_packets: bool,
}

impl Capabilities {
    /// A pub/sub transporter (Redis): Moleculer's channels, no gossip.
    pub const PUB_SUB: Capabilities = Capabilities {
        broadcast: true,
        discovery_packets: true,
        gossip_packets: false,
    };
    /// The in-memory bus carries everything.
    pub const MEMORY: Capabilities = Capabilities {
        broadcast: true,
        discovery_packets: true,
        gossip_packets: true,
    };
    /// Moleculer's TCP transporter: targeted EVENT, REQ, RES, PING, PONG and gossip only.
    pub const TCP: Capabilities = Capabilities {
        broadcast: false,
        discovery_packets: false,
        gossip_packets: true,
    };
}

async fn nothing(rx: &mut mpsc::UnboundedReceiver<Incoming>, within: Duration) -> bool {
    recv(rx, within).await.is_none()
}

/// The transporter suite. `make` returns a fresh, unconnected transporter for one node; all the
/// transporters it makes must reach each other. `settle` is how long to wait for delivery.
///
/// `make(node)` returns a fresh transporter for node `a`, `b`, `c` (namespace `conformance`) or
/// `d` (namespace `another-namespace`).
pub async fn transporter_suite<T: Transporter>(
    make: impl Fn(&str) -> T,
    settle: Duration,
    caps: Capabilities,
) {
    let ns = "conformance";
    let (a, b, c) = (make("a"), make("b"), make("c"));
    let _ra = connect(&a, "a", ns).await;
    let mut rb = connect(&b, "b", ns).await;
    let mut rc = connect(&c, "c", ns).await;
    tokio::time::sleep(settle).await;

    // 1. A targeted packet reaches its target only, intact.
    let payload = br#"{"ver":"5","sender":"a"}"#.to_vec();
    a.send(Outgoing {
        kind: PacketType::Request,
        target: Some(NodeId::new("b")),
        payload: payload.clone(),
    })
    .await
    .expect("send");
    let got = recv(&mut rb, settle * 10)
        .await
        .expect("targeted packet delivered");
    assert_eq!(
        (got.kind, &got.payload),
        (PacketType::Request, &payload),
        "targeted packet arrives with its type and bytes"
    );
    assert!(
        nothing(&mut rc, settle).await,
        "a targeted packet reaches no other node"
    );

    // 2. A broadcast (a HEARTBEAT: Moleculer broadcasts only discovery packets and PING)
    // reaches every other node, or nobody where the transporter has no broadcast.
    let broadcast_kind = if caps.discovery_packets {
        PacketType::Heartbeat
    } else {
        PacketType::Event
    };
    a.send(Outgoing {
        kind: broadcast_kind,
        target: None,
        payload: payload.clone(),
    })
    .await
    .expect("send");
    for (name, rx) in [("b", &mut rb), ("c", &mut rc)] {
        let got = recv(rx, settle * 10).await;
        if caps.broadcast {
            assert_eq!(
                got.map(|p| p.kind),
                Some(broadcast_kind),
                "broadcast reaches {name}"
            );
        } else {
            assert!(
                got.is_none(),
                "this transporter has no broadcast, yet {name} got one"
            );
        }
    }

    // 3. Every packet type keeps its type.
    let mut kinds = vec![
        PacketType::Event,
        PacketType::Response,
        PacketType::Ping,
        PacketType::Pong,
    ];
    if caps.gossip_packets {
        kinds.extend([PacketType::GossipRequest, PacketType::GossipResponse]);
    }
    if caps.discovery_packets {
        kinds.extend([PacketType::Discover, PacketType::Info]);
    }
    for kind in kinds {
        a.send(Outgoing {
            kind,
            target: Some(NodeId::new("b")),
            payload: payload.clone(),
        })
        .await
        .expect("send");
        assert_eq!(recv(&mut rb, settle * 10).await.map(|p| p.kind), Some(kind));
    }

    // 4. A large packet (512 KiB) arrives whole.
    let big = vec![b'x'; 512 * 1024];
    a.send(Outgoing {
        kind: PacketType::Event,
        target: Some(NodeId::new("c")),
        payload: big.clone(),
    })
    .await
    .expect("send");
    let got = recv(&mut rc, settle * 20)
        .await
        .expect("large packet delivered");
    assert_eq!(got.payload.len(), big.len());

    // 5. Another namespace hears nothing.
    let other = make("d");
    let mut ro = connect(&other, "d", "another-namespace").await;
    tokio::time::sleep(settle).await;
    a.send(Outgoing {
        kind: broadcast_kind,
        target: None,
        payload: payload.clone(),
    })
    .await
    .expect("send");
    assert!(
        nothing(&mut ro, settle * 2).await,
        "namespaces are isolated"
    );
    let _ = recv(&mut rb, settle * 10).await;
    let _ = recv(&mut rc, settle * 10).await;

    // 6. After disconnect, a node receives nothing; the others still do.
    c.disconnect().await;
    tokio::time::sleep(settle).await;
    let _ = a
        .send(Outgoing {
            kind: PacketType::Event,
            target: Some(NodeId::new("c")),
            payload: payload.clone(),
        })
        .await;
    a.send(Outgoing {
        kind: PacketType::Event,
        target: Some(NodeId::new("b")),
        payload,
    })
    .await
    .expect("send");
    assert!(recv(&mut rb, settle * 10).await.is_some());
    assert!(
        nothing(&mut rc, settle * 2).await,
        "nothing arrives after disconnect"
    );

    for t in [a, b] {
        t.disconnect().await;
    }
    other.disconnect().await;
}

/// Polls `check` every 10 ms (tokio clock) until it holds or `limit` passes.
async fn within(limit: Duration, check: &dyn Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Timing of the discoverer suite.
#[derive(Debug, Clone, Copy)]
pub struct SuiteTiming {
    /// Heartbeat interval given to the brokers, seconds.
    pub heartbeat_interval: f64,
    /// Heartbeat timeout given to the brokers, seconds.
    pub heartbeat_timeout: f64,
}

/// The discoverer suite. `make(i)` returns a builder for node `i` with its transporter and the
/// discoverer under test (node id and heartbeat options are set by the suite). Checks: nodes
/// find each other and call each other; a graceful stop is seen without waiting for a timeout;
/// a crashed node is dropped within `heartbeatTimeout` plus one check interval; a node
/// restarted with the same id is found again.
pub async fn discoverer_suite(make: impl Fn(usize) -> ServiceBrokerBuilder, timing: SuiteTiming) {
    let build = |i: usize| {
        make(i)
            .node_id(format!("node-{i}"))
            .heartbeat(timing.heartbeat_interval, timing.heartbeat_timeout)
            .build()
            .expect("broker builds")
    };
    let sees = |from: &ServiceBroker, node: &str| {
        from.with_registry(|r| r.nodes().get(node).is_some_and(|n| n.available))
    };
    let interval = Duration::from_secs_f64(timing.heartbeat_interval);

    let brokers: Vec<ServiceBroker> = (0..3).map(build).collect();
    brokers[0].create_service(Echo).expect("service");
    for b in &brokers {
        b.start().await.expect("broker starts");
    }

    // 1. Everyone finds everyone.
    let all_see = || {
        brokers
            .iter()
            .all(|a| (0..3).all(|j| sees(a, &format!("node-{j}"))))
    };
    assert!(
        within(interval * 5, &all_see).await,
        "three nodes find each other within five heartbeat intervals"
    );

    // 2. Calls cross.
    brokers[2]
        .wait_for_services(&["echo"], Some(interval * 5))
        .await
        .expect("echo visible on node-2");
    let reply = brokers[2]
        .call("echo.where", json!({}))
        .await
        .expect("remote call");
    assert_eq!(reply["node"], "node-0");

    // 3. A graceful stop is seen well before any heartbeat timeout.
    let mut bus = brokers[1].local_events();
    brokers[2].stop().await;
    assert!(
        within(interval, &|| !sees(&brokers[1], "node-2")).await,
        "a graceful stop is seen within one heartbeat interval"
    );
    let mut unexpected = None;
    while let Ok(e) = bus.try_recv() {
        if e.name == "$node.disconnected" && e.payload["node"]["id"] == "node-2" {
            unexpected = e.payload["unexpected"].as_bool();
        }
    }
    assert_eq!(
        unexpected,
        Some(false),
        "$node.disconnected says the stop was expected"
    );

    // 4. A restart with the same id is found again.
    let again = build(2);
    again
        .start()
        .await
        .expect("restarted broker starts: no false nodeID conflict");
    assert!(
        within(interval * 5, &|| sees(&brokers[0], "node-2")
            && sees(&again, "node-0"))
        .await,
        "restarted node is found again"
    );
    let instance = again.instance_id().to_owned();
    assert!(
        within(interval * 5, &|| brokers[0].with_registry(|r| r
            .nodes()
            .get("node-2")
            .is_some_and(|n| n.instance_id == instance)))
        .await
    );

    // 5. A crash (the broker vanishes without a goodbye) is detected by heartbeat timeout.
    drop(again);
    let timeout = Duration::from_secs_f64(timing.heartbeat_timeout);
    assert!(
        within(timeout + interval * 3, &|| !sees(&brokers[0], "node-2")).await,
        "a crashed node is dropped within heartbeatTimeout plus a check interval"
    );

    for b in &brokers[..2] {
        b.stop().await;
    }
}
