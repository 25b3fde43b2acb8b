//! Real processes over TCP on 127.0.0.1: the demo node (`examples/node.rs`, built by
//! `cargo test`) against an in-process broker.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use moleculer::runner::{builder_for, load_options};
use moleculer::ServiceBroker;
use serde_json::json;

fn node_binary() -> std::path::PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/node
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join("node");
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo test`, which builds the examples",
        bin.display()
    );
    bin
}

fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_node(urls: &str, id: &str) -> Peer {
    Peer(
        Command::new(node_binary())
            .current_dir(std::env::temp_dir())
            .env("MOL_NODE_ID", id)
            .env("MOL_TRANSPORTER", urls)
            .env("MOL_HEARTBEAT_INTERVAL", "1")
            .env("MOL_HEARTBEAT_TIMEOUT", "3")
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("demo node starts"),
    )
}

async fn local_broker(urls: &str) -> ServiceBroker {
    let env = [
        ("MOL_NODE_ID", "tester"),
        ("MOL_TRANSPORTER", urls),
        ("MOL_HEARTBEAT_INTERVAL", "1"),
        ("MOL_HEARTBEAT_TIMEOUT", "3"),
    ];
    let options = load_options(None, env.map(|(k, v)| (k.to_owned(), v.to_owned()))).unwrap();
    let broker = builder_for(&options).unwrap().build().unwrap();
    broker.start().await.unwrap();
    broker
}

fn available(broker: &ServiceBroker, node: &str) -> bool {
    broker.with_registry(|r| r.nodes().get(node).is_some_and(|n| n.available))
}

async fn wait(limit: Duration, check: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(start.elapsed())
}

/// A frozen process keeps its sockets open but answers nothing. Moleculer JS never drops such a
/// peer on TCP; here it is dropped once it has been silent for `heartbeatTimeout` (3 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_peer_is_dropped_after_the_heartbeat_timeout() {
    let ports = free_ports(2);
    let urls = format!(
        "tcp://127.0.0.1:{}/tester,127.0.0.1:{}/frozen",
        ports[0], ports[1]
    );
    let peer = spawn_node(&urls, "frozen");
    let broker = local_broker(&urls).await;
    assert!(
        wait(Duration::from_secs(20), || available(&broker, "frozen"))
            .await
            .is_some(),
        "the peer joins"
    );
    broker
        .wait_for_services(&["math"], Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        broker
            .call("math.add", json!({"a": 1, "b": 2}))
            .await
            .unwrap(),
        json!(3)
    );

    let pid = peer.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let stalled = tokio::spawn(broker.call("math.add", json!({"a": 1, "b": 1})));
    let dropped = wait(Duration::from_secs(10), || !available(&broker, "frozen")).await;
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let dropped = dropped.expect("a frozen peer is dropped");
    // Silent for heartbeatTimeout (3 s), noticed at the next check (every 1 s).
    assert!(
        dropped >= Duration::from_secs(2) && dropped <= Duration::from_secs(5),
        "dropped after {dropped:?}"
    );
    let err = tokio::time::timeout(Duration::from_millis(100), stalled)
        .await
        .expect("the stuck call is rejected at detection")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.name, "RequestRejectedError");
    broker.stop().await;
}

/// A killed process closes its sockets: its endpoints go at once, not after a timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_peer_is_dropped_when_its_socket_closes() {
    let ports = free_ports(2);
    let urls = format!(
        "tcp://127.0.0.1:{}/tester,127.0.0.1:{}/victim",
        ports[0], ports[1]
    );
    let mut peer = spawn_node(&urls, "victim");
    let broker = local_broker(&urls).await;
    assert!(
        wait(Duration::from_secs(20), || available(&broker, "victim"))
            .await
            .is_some()
    );
    peer.0.kill().unwrap();
    let dropped = wait(Duration::from_secs(5), || !available(&broker, "victim"))
        .await
        .expect("dropped");
    assert!(
        dropped < Duration::from_secs(1),
        "dropped after {dropped:?}, without waiting for a heartbeat timeout"
    );
    broker.stop().await;
}
