//! A graceful stop loses nothing: the node withdraws its services, keeps serving what is on its
//! way during `stopDelay` and while requests and events are in progress (at most
//! `tracking.shutdownTimeout`), and only then refuses requests, with a retryable error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{BrokerOptions, Service, ServiceBroker, ServiceSchema};
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_core::protocol::{Packet, PacketType, RequestPacket};
use moleculer_core::serializer::{Json, Serializer};
use moleculer_core::transporter::{Outgoing, Transporter, TransporterSetup};
use moleculer_core::{Context, Meta, NodeId, Result};
use moleculer_test::Cluster;
use serde_json::{json, Value};
use tokio::time::Instant;

/// `work.sleep {ms}` sleeps; `work.events` counts the `job.done` events it finished handling;
/// its `stopped` hook takes `stop_ms`.
struct Work {
    handled: Arc<AtomicUsize>,
    stop_ms: u64,
}

impl Service for Work {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("work")
            .raw_action("sleep", |_s: Arc<Self>, ctx: Context| async move {
                let ms = ctx.params()["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!(ms))
            })
            .event("job.done", |s: Arc<Self>, ctx: Context| async move {
                let ms = ctx.params()["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                s.handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
    }

    async fn stopped(self: Arc<Self>, _broker: ServiceBroker) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(self.stop_ms)).await;
        Ok(())
    }
}

fn options(i: usize, stop_delay: u64, shutdown_timeout: u64) -> BrokerOptions {
    let mut o = BrokerOptions {
        node_id: Some(Cluster::node_id(i)),
        ..BrokerOptions::default()
    };
    o.registry.stop_delay = stop_delay;
    o.tracking.shutdown_timeout = shutdown_timeout;
    o
}

async fn pair(stop_delay: u64, shutdown_timeout: u64, stop_ms: u64) -> (Cluster, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let c = Cluster::start(
        2,
        move |i, b| b.options(options(i, stop_delay, shutdown_timeout)),
        move |i, b| {
            if i == 1 {
                b.create_service(Work {
                    handled: h.clone(),
                    stop_ms,
                })
                .unwrap();
            }
        },
    )
    .await;
    c.node(0)
        .wait_for_services(&["work"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    (c, handled)
}

#[tokio::test(start_paused = true)]
async fn requests_that_arrive_while_peers_withdraw_the_node_are_served() {
    let (c, _) = pair(200, 5000, 0).await;
    // Packets take 50 ms: the caller keeps sending to node-1 for 50 ms after node-1 withdraws.
    c.bus.delay(Duration::from_millis(50));
    let callee = c.node(1).clone();
    let stopping = tokio::spawn(async move { callee.stop().await });
    let caller = c.node(0).clone();
    let mut calls = Vec::new();
    for _ in 0..8 {
        calls.push(tokio::spawn(caller.call("work.sleep", json!({"ms": 10}))));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut served = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => served += 1,
            // Refused by the caller itself, once it has taken the node's withdrawal: never by
            // node-1, which would name itself in the error.
            Err(err) => {
                assert_eq!(err.name, "ServiceNotAvailableError", "{err}");
                assert_eq!(err.node_id, None, "{err}");
            }
        }
    }
    assert!(
        served >= 5,
        "every call sent before the empty INFO arrived is answered ({served})"
    );
    stopping.await.unwrap();
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn the_drain_waits_for_requests_and_events_in_progress() {
    let (c, handled) = pair(100, 5000, 0).await;
    let long = tokio::spawn(c.node(0).call("work.sleep", json!({"ms": 1000})));
    c.node(0)
        .emit("job.done", json!({"ms": 800}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    c.node(1).stop().await;
    assert_eq!(
        long.await.unwrap().unwrap(),
        json!(1000),
        "the request in progress is answered"
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "the event in progress is handled"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(990) && took < Duration::from_millis(1100),
        "stop waited for the longest piece of work: {took:?}"
    );
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_never_returns_holds_the_stop_no_longer_than_the_shutdown_timeout() {
    let (c, _) = pair(100, 500, 0).await;
    let stuck = tokio::spawn(c.node(0).call("work.sleep", json!({"ms": 3_600_000})));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    c.node(1).stop().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(600),
        "stopDelay + shutdownTimeout"
    );
    let err = stuck.await.unwrap().unwrap_err();
    assert_eq!(
        err.name, "RequestRejectedError",
        "the caller hears the node left"
    );
    assert!(err.retryable);
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_transporter_local_work_is_drained_too() {
    let handled = Arc::new(AtomicUsize::new(0));
    let broker = ServiceBroker::builder().node_id("alone").build().unwrap();
    broker
        .create_service(Work {
            handled: handled.clone(),
            stop_ms: 0,
        })
        .unwrap();
    broker.start().await.unwrap();
    let call = tokio::spawn(broker.call("work.sleep", json!({"ms": 300})));
    let emit = tokio::spawn(broker.emit("job.done", json!({"ms": 400})));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let started = Instant::now();
    broker.stop().await;
    assert!(started.elapsed() >= Duration::from_millis(399));
    assert_eq!(call.await.unwrap().unwrap(), json!(300));
    emit.await.unwrap().unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

/// Sends one REQUEST for `action` straight to `node` from a raw client on the bus, and returns
/// the RESPONSE as JSON.
async fn raw_request(bus: &MemoryBus, node: &str, action: &str) -> Value {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = bus.transporter();
    client
        .connect(TransporterSetup::new(NodeId::new("raw"), "", tx))
        .await
        .unwrap();
    let req = Packet::Request(RequestPacket {
        id: "raw-1".into(),
        action: action.into(),
        params: json!({"ms": 1}),
        meta: Meta::new(),
        headers: Some(Meta::new()),
        timeout: None,
        level: 1,
        tracing: None,
        parent_id: None,
        request_id: Some("raw-1".into()),
        caller: None,
        stream: Some(false),
        seq: None,
        ver: "5".into(),
        sender: NodeId::new("raw"),
    });
    client
        .send(Outgoing {
            kind: PacketType::Request,
            target: Some(NodeId::new(node)),
            payload: Json.encode(&req).unwrap(),
        })
        .await
        .unwrap();
    loop {
        let incoming = rx.recv().await.expect("an answer");
        if incoming.kind == PacketType::Response {
            return serde_json::from_slice(&incoming.payload).unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_after_the_drain_gets_a_retryable_error_not_silence() {
    // The `stopped` hook takes 500 ms: the node is closing, not yet gone.
    let (c, _) = pair(100, 5000, 500).await;
    let callee = c.node(1).clone();
    let stopping = tokio::spawn(async move { callee.stop().await });
    // During stopDelay the node still serves...
    tokio::time::sleep(Duration::from_millis(50)).await;
    let res = raw_request(&c.bus, "node-1", "work.sleep").await;
    assert_eq!(res["success"], true, "{res}");
    // ...after the drain it refuses, saying so.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = raw_request(&c.bus, "node-1", "work.sleep").await;
    assert_eq!(res["success"], false, "{res}");
    assert_eq!(res["error"]["name"], "ServiceNotAvailableError");
    assert_eq!(res["error"]["retryable"], true);
    stopping.await.unwrap();
    c.stop_all().await;
}
