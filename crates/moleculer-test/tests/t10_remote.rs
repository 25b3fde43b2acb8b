//! Remote calls and events between brokers over the in-memory transporter, JSON and MsgPack.

use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{Service, ServiceBroker, ServiceSchema};
use moleculer_core::protocol::PacketType;
use moleculer_core::{CallOptions, Context, EmitOptions};
use moleculer_test::services::{Echo, Listener, Recorder};
use moleculer_test::Cluster;
use serde_json::json;

async fn cluster(serializer: &'static str, log: &Recorder) -> Cluster {
    let log = log.clone();
    let c = Cluster::start(
        3,
        move |_, b| b.serializer(serializer).prefer_local(false),
        move |i, broker: &ServiceBroker| {
            if i > 0 {
                broker.create_service(Echo).unwrap();
                broker
                    .create_service(Listener {
                        name: "mail",
                        group: None,
                        pattern: "user.*",
                        log: log.clone(),
                    })
                    .unwrap();
            }
            broker
                .create_service(Listener {
                    name: "audit",
                    group: Some("audit"),
                    pattern: "user.created",
                    log: log.clone(),
                })
                .unwrap();
        },
    )
    .await;
    assert!(
        c.converged(Duration::from_secs(2)).await,
        "cluster converges"
    );
    c.node(0)
        .wait_for_services(&["echo", "mail"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    c
}

async fn calls_and_events(serializer: &'static str) {
    let log = Recorder::default();
    let c = cluster(serializer, &log).await;
    let caller = c.node(0);

    // Calls are balanced over the two remote nodes, params and meta travel both ways.
    let mut served = Vec::new();
    for i in 0..4 {
        let mut meta = serde_json::Map::new();
        meta.insert("user".into(), json!({"id": i}));
        let reply = caller
            .call_with(
                "echo.where",
                json!({"i": i}),
                CallOptions::default().meta(meta),
            )
            .await
            .unwrap();
        assert_eq!(reply["params"], json!({"i": i}));
        assert_eq!(reply["caller"], "node-0");
        assert_eq!(reply["meta"]["user"]["id"], i);
        served.push(reply["node"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        served,
        ["node-1", "node-2", "node-1", "node-2"],
        "round robin over remote nodes"
    );

    // Errors keep name, code, type and data, and say which node raised them.
    let err = caller.call("echo.fail", json!({})).await.unwrap_err();
    assert_eq!(
        (err.name.as_str(), err.code, err.kind()),
        ("MoleculerClientError", 422, "ECHO_FAILED")
    );
    assert_eq!(err.data["reason"], "asked to");
    assert!(err
        .node_id
        .as_deref()
        .is_some_and(|n| n == "node-1" || n == "node-2"));

    // nodeID targeting.
    let reply = caller
        .call_with(
            "echo.where",
            json!({}),
            CallOptions::default().node_id("node-2"),
        )
        .await
        .unwrap();
    assert_eq!(reply["node"], "node-2");

    // A balanced event reaches one "mail" (remote) and one "audit" (any node); a broadcast all.
    log.take();
    caller.emit("user.created", json!({"id": 7})).await.unwrap();
    let delivered = wait_for(&log, 2).await;
    let services: Vec<&str> = delivered
        .iter()
        .map(|d| d["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services.iter().filter(|s| **s == "mail").count(),
        1,
        "{delivered:?}"
    );
    assert_eq!(
        services.iter().filter(|s| **s == "audit").count(),
        1,
        "{delivered:?}"
    );
    assert!(delivered
        .iter()
        .all(|d| d["data"]["id"] == 7 && d["event"] == "user.created"));
    caller
        .broadcast("user.created", json!({"id": 8}))
        .await
        .unwrap();
    let delivered = wait_for(&log, 5).await;
    assert_eq!(
        delivered.len(),
        5,
        "2 mail + 3 audit handlers: {delivered:?}"
    );
    caller
        .emit_with(
            "user.created",
            json!({}),
            EmitOptions::default().groups(["mail"]),
        )
        .await
        .unwrap();
    let delivered = wait_for(&log, 1).await;
    assert_eq!(delivered[0]["service"], "mail");
    assert_eq!(delivered[0]["from"], "node-0", "ctx.nodeID is the sender");
    c.stop_all().await;
}

async fn wait_for(log: &Recorder, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        if log.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    log.take()
}

#[tokio::test(start_paused = true)]
async fn json_calls_and_events() {
    calls_and_events("JSON").await;
}

#[tokio::test(start_paused = true)]
async fn msgpack_calls_and_events() {
    calls_and_events("MsgPack").await;
}

#[tokio::test(start_paused = true)]
async fn protocol_4_nodes_talk_to_each_other() {
    let c = Cluster::start(
        2,
        |_, b| b.protocol_version("4"),
        |i, b| {
            if i == 1 {
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
    c.bus.capture_payloads();
    assert_eq!(
        c.node(0).call("echo.where", json!({})).await.unwrap()["node"],
        "node-1"
    );
    c.node(0).broadcast("any.event", json!({})).await.unwrap();
    // Every packet on the wire says protocol 4, and a REQUEST carries no v5 headers.
    let mut seen = 0;
    for kind in [PacketType::Request, PacketType::Response, PacketType::Event] {
        for bytes in c.bus.payloads(kind) {
            let packet: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(packet["ver"], "4", "{kind}: {packet}");
            if kind == PacketType::Request {
                assert!(packet.get("headers").is_none(), "{packet}");
            }
            seen += 1;
        }
    }
    assert!(
        c.bus.payloads(PacketType::Request).len() == 1
            && c.bus.payloads(PacketType::Response).len() == 1,
        "one REQUEST and one RESPONSE on the wire"
    );
    assert!(seen >= 2);
    c.stop_all().await;
}

/// `budget.left` answers the timeout its context got; `budget.spend {ms}` works that long, then
/// records that it finished.
struct Budget {
    finished: Recorder,
}

impl Service for Budget {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("budget")
            .raw_action("left", |_s: Arc<Self>, ctx: Context| async move {
                Ok(ctx.timeout().map(|t| t.as_millis() as u64))
            })
            .raw_action("spend", |s: Arc<Self>, ctx: Context| async move {
                let ms = ctx.params()["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                s.finished.push(json!(ms));
                Ok(json!(ms))
            })
    }
}

#[tokio::test(start_paused = true)]
async fn remote_timeout_and_deadline_travel() {
    let finished = Recorder::default();
    let log = finished.clone();
    let c = Cluster::start(
        2,
        |_, b| b,
        move |i, b| {
            if i == 1 {
                b.create_service(Budget {
                    finished: log.clone(),
                })
                .unwrap();
            }
        },
    )
    .await;
    c.node(0)
        .wait_for_services(&["budget"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let opts = CallOptions::default().timeout(Duration::from_millis(100));
    // The REQUEST carries the caller's budget into the callee's context.
    assert_eq!(
        c.node(0)
            .call_with("budget.left", json!({}), opts.clone())
            .await
            .unwrap(),
        json!(100)
    );
    // The caller gives up at its deadline...
    let err = c
        .node(0)
        .call_with("budget.spend", json!({"ms": 500}), opts.clone())
        .await
        .unwrap_err();
    assert_eq!(err.name, "RequestTimeoutError");
    assert_eq!(
        c.node(0).pending_requests(),
        0,
        "a timed-out request leaves nothing pending"
    );
    // ...and the callee, honouring the same budget, cuts its handler there too: it never
    // reaches the end of its 500 ms of work.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        finished.is_empty(),
        "the callee ran past the REQUEST's timeout"
    );
    // With time left, the call completes.
    assert_eq!(
        c.node(0)
            .call_with("budget.spend", json!({"ms": 10}), opts)
            .await
            .unwrap(),
        json!(10)
    );
    assert_eq!(finished.take(), vec![json!(10)]);
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn queue_limit_answers_queue_is_full() {
    let c = Cluster::start(
        2,
        |i, b| {
            let mut o = moleculer_broker::BrokerOptions {
                node_id: Some(Cluster::node_id(i)),
                ..Default::default()
            };
            o.transit.max_queue_size = 2;
            b.options(o)
        },
        |i, b| {
            if i == 1 {
                b.create_service(Echo).unwrap();
            }
        },
    )
    .await;
    let c0 = c.node(0).clone();
    c0.wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(c0.call("echo.sleep", json!({"ms": 200}))))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let err = c0.call("echo.sleep", json!({"ms": 1})).await.unwrap_err();
    assert_eq!(
        (err.name.as_str(), err.code, err.retryable),
        ("QueueIsFullError", 429, true)
    );
    for s in slow {
        assert!(s.await.unwrap().is_ok());
    }
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn ping_measures_a_round_trip() {
    let c = Cluster::start(2, |_, b| b, |_, _| {}).await;
    assert!(c.converged(Duration::from_secs(2)).await);
    c.bus.delay(Duration::from_millis(20));
    let pong = c
        .node(0)
        .ping("node-1", Duration::from_secs(1))
        .await
        .unwrap();
    assert!((39.0..60.0).contains(&pong.elapsed_ms), "{pong:?}");
    let err = c
        .node(0)
        .ping("nobody", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.name, "RequestTimeoutError");
    c.stop_all().await;
}

/// Regression: a node's services are callable as soon as peers see them, even while the node
/// is still finishing its start (it spends a moment checking for a duplicate node id).
#[tokio::test(start_paused = true)]
async fn a_node_serves_as_soon_as_it_is_announced() {
    let bus = moleculer_core::memory_transporter::MemoryBus::new();
    let caller = Cluster::build(&bus, 0, &|_, b| b);
    caller.start().await.unwrap();
    let late = Cluster::build(&bus, 1, &|_, b| b);
    late.create_service(Echo).unwrap();
    let starting = tokio::spawn(async move {
        late.start().await.unwrap();
        late
    });
    caller
        .wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(!starting.is_finished(), "the callee is still starting");
    assert_eq!(
        caller.call("echo.where", json!({})).await.unwrap()["node"],
        "node-1"
    );
    let late = starting.await.unwrap();
    late.stop().await;
    caller.stop().await;
}

/// Counts remote calls and tags their meta, through the `remote_action` hook.
struct RemoteTap(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl moleculer_core::Middleware for RemoteTap {
    fn remote_action(
        &self,
        next: moleculer_core::ActionHandler,
        action: &moleculer_core::ActionInfo,
    ) -> moleculer_core::ActionHandler {
        let (count, name) = (self.0.clone(), action.name.clone());
        std::sync::Arc::new(move |ctx: moleculer_core::Context| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.set_meta("tappedAction", json!(name));
            next(ctx)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn remote_action_middleware_wraps_remote_calls_only() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tap = calls.clone();
    let c = Cluster::start(
        2,
        move |i, b| {
            if i == 0 {
                b.middleware(RemoteTap(tap.clone()))
            } else {
                b
            }
        },
        |_, b| b.create_service(Echo).unwrap(),
    )
    .await;
    c.node(0)
        .wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    // Local call: not a remote action.
    c.node(0)
        .call_with(
            "echo.where",
            json!({}),
            CallOptions::default().node_id("node-0"),
        )
        .await
        .unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 0);
    let reply = c
        .node(0)
        .call_with(
            "echo.where",
            json!({}),
            CallOptions::default().node_id("node-1"),
        )
        .await
        .unwrap();
    assert_eq!(reply["node"], "node-1");
    assert_eq!(
        reply["meta"]["tappedAction"], "echo.where",
        "the hook's meta reached the callee"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    c.stop_all().await;
}
