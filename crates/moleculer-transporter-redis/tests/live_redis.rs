//! The Redis transporter against a real redis-server: restarts and outages.

use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use moleculer_test::servers::RedisServer;
use moleculer_test::services::Echo;
use moleculer_transporter_redis::{RedisOptions, RedisTransporter};
use serde_json::json;

fn broker(id: &str, url: &str) -> ServiceBroker {
    let redis = RedisTransporter::new(url.parse::<RedisOptions>().unwrap());
    ServiceBroker::builder()
        .node_id(id)
        .heartbeat(1.0, 3.0)
        .transporter(redis)
        .build()
        .unwrap()
}

#[tokio::test]
async fn calls_resume_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let (a, b) = (broker("a", &redis.url()), broker("b", &redis.url()));
    b.create_service(Echo).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    a.wait_for_services(&["echo"], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(a.call("echo.where", json!({})).await.unwrap()["node"], "b");

    redis.restart();
    // Subscriptions come back with backoff; heartbeats keep both nodes known to each other.
    let mut answered = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if a.call_with(
            "echo.where",
            json!({}),
            moleculer_core::CallOptions::default().timeout(Duration::from_millis(500)),
        )
        .await
        .is_ok()
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "calls work again after Redis restarts");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn redis_down_at_start_is_retried_and_local_calls_keep_working() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let a = broker("a", &url);
    a.create_service(Echo).unwrap();
    a.start().await.expect("the broker starts without Redis");
    assert_eq!(
        a.call("echo.where", json!({})).await.unwrap()["node"],
        "a",
        "local calls work"
    );
    redis.restart();
    let b = broker("b", &url);
    b.start().await.unwrap();
    assert!(
        moleculer_test::eventually(Duration::from_secs(15), || a
            .with_registry(|r| r.nodes().get("b").is_some_and(|n| n.available)))
        .await,
        "a finds b once Redis is up"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_packet_for_a_node_nobody_listens_for_fails_at_once() {
    use moleculer_core::protocol::PacketType;
    use moleculer_core::transporter::{Outgoing, Transporter, TransporterSetup};
    use moleculer_core::NodeId;
    let redis = RedisServer::start();
    let transporter = RedisTransporter::new(redis.url().parse::<RedisOptions>().unwrap());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    transporter
        .connect(TransporterSetup {
            node_id: NodeId::new("sender"),
            namespace: "nobody".into(),
            incoming: tx.into(),
            serializer: moleculer_core::serializer::SerializerKind::Json.build(),
            version: moleculer_core::protocol::ProtocolVersion::V5,
        })
        .await
        .unwrap();
    assert!(transporter.is_ready(), "subscribed");
    let err = transporter
        .send(Outgoing {
            kind: PacketType::Request,
            target: Some(NodeId::new("gone")),
            payload: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("'gone' is not subscribed"),
        "{err}"
    );
    // A packet for ourselves has a subscriber; a broadcast is never refused.
    for target in [Some(NodeId::new("sender")), None] {
        transporter
            .send(Outgoing {
                kind: PacketType::Info,
                target,
                payload: b"{}".to_vec(),
            })
            .await
            .unwrap();
    }
    transporter.disconnect().await;
    assert!(!transporter.is_ready());
}
