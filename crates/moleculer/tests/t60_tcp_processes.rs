//! Real processes over TCP on 127.0.0.1: the demo node (`examples/node.rs`, built by
//! `cargo test`) against an in-process broker.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{available, common_env as env, free_ports, local_broker, wait, Node};

/// A frozen process keeps its sockets open but answers nothing. Moleculer JS never drops such a
/// peer on TCP; here it is dropped once it has been silent for `heartbeatTimeout` (3 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_peer_is_dropped_after_the_heartbeat_timeout() {
    let ports = free_ports(2);
    let urls = format!(
        "tcp://127.0.0.1:{}/tester,127.0.0.1:{}/frozen",
        ports[0], ports[1]
    );
    let peer = Node::start("frozen", &env(&urls));
    let broker = local_broker("tester", &env(&urls)).await;
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

    let pid = peer.pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let stalled = tokio::spawn(broker.call("math.add", json!({"a": 1, "b": 1})));
    let dropped = wait(Duration::from_secs(10), || !available(&broker, "frozen")).await;
    // The peer stays frozen until the stuck call has its answer: thawed earlier, it could
    // answer the call itself before the rejection lands (a race a loaded machine exposes).
    let stuck = tokio::time::timeout(Duration::from_secs(1), stalled).await;
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let dropped = dropped.expect("a frozen peer is dropped");
    // Silent for heartbeatTimeout (3 s), noticed at the next check (every 1 s).
    assert!(
        dropped >= Duration::from_secs(2) && dropped <= Duration::from_secs(5),
        "dropped after {dropped:?}"
    );
    let err = stuck
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
    let mut peer = Node::start("victim", &env(&urls));
    let broker = local_broker("tester", &env(&urls)).await;
    assert!(
        wait(Duration::from_secs(20), || available(&broker, "victim"))
            .await
            .is_some()
    );
    peer.kill().await;
    let dropped = wait(Duration::from_secs(5), || !available(&broker, "victim"))
        .await
        .expect("dropped");
    assert!(
        dropped < Duration::from_secs(1),
        "dropped after {dropped:?}, without waiting for a heartbeat timeout"
    );
    broker.stop().await;
}
