//! Rolling restarts and crashes with real demo node processes on 127.0.0.1, over TCP and over a
//! Redis server this test starts: three nodes serve `math.add` while a caller keeps 24 calls in
//! flight.
//!
//! - Each node in turn is stopped with SIGTERM and started again under its node id: a caller
//!   with retries off sees no failed call.
//! - One node is killed with SIGKILL: a caller with retries on sees no failed call; the time
//!   until the dead node gets no more calls is printed.

mod support;

use std::time::{Duration, Instant};

use moleculer_test::servers::RedisServer;
use support::{available, common_env, local_broker, serving, tcp_urls, wait, Load, Node};

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// Starts the three nodes and a caller (`caller_env` on top of `env`); waits until the caller
/// reaches every node.
async fn cluster(
    env: &[(String, String)],
    caller_env: &[(&str, &str)],
) -> (Vec<Node>, moleculer::ServiceBroker) {
    let nodes: Vec<Node> = NODES.iter().map(|id| Node::start(id, env)).collect();
    let mut caller_vars = env.to_vec();
    caller_vars.extend(
        caller_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let caller = local_broker("caller", &caller_vars).await;
    for id in NODES {
        serving(&caller, id, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{id} serves"));
    }
    (nodes, caller)
}

async fn rolling_restart(transport: &str, env: Vec<(String, String)>) {
    let (mut nodes, caller) = cluster(&env, &[]).await;
    let load = Load::start(&caller, 24);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in &mut nodes {
        let before = load.answered();
        let stopped_in = node.terminate().await;
        let id = node.id.clone();
        *node = Node::start(&id, &env);
        let back_in = serving(&caller, &id, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{id} serves again"));
        println!("{transport}: {id} stopped in {stopped_in:?}, served again {back_in:?} after its restart");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(load.answered() > before, "calls kept flowing");
    }
    let (answered, failures) = load.finish().await;
    println!(
        "{transport}: {answered} calls answered, {} failed",
        failures.len()
    );
    assert!(answered > 500, "{answered} calls");
    assert!(failures.is_empty(), "failed calls: {failures:#?}");
    caller.stop().await;
}

async fn crash_under_load(transport: &str, env: Vec<(String, String)>) {
    let retries = [
        ("MOL_RETRY_POLICY__ENABLED", "true"),
        ("MOL_RETRY_POLICY__RETRIES", "5"),
        ("MOL_RETRY_POLICY__DELAY", "100"),
    ];
    let (mut nodes, caller) = cluster(&env, &retries).await;
    let load = Load::start(&caller, 24);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    nodes[1].kill().await;
    wait(Duration::from_secs(10), || !available(&caller, "node-2"))
        .await
        .expect("the dead node is dropped");
    println!(
        "{transport}: node-2 killed; no call is routed to it {:?} after SIGKILL",
        killed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (answered, failures) = load.finish().await;
    println!(
        "{transport}: {answered} calls answered, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failed calls: {failures:#?}");
    caller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_rolling_restart_fails_no_call_without_retries() {
    let mut ids = NODES.to_vec();
    ids.push("caller");
    rolling_restart("TCP", common_env(&tcp_urls(&ids))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rolling_restart_fails_no_call_without_retries() {
    let redis = RedisServer::start();
    rolling_restart("Redis", common_env(&redis.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_crash_under_load_fails_no_call_with_retries() {
    let mut ids = NODES.to_vec();
    ids.push("caller");
    crash_under_load("TCP", common_env(&tcp_urls(&ids))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_under_load_fails_no_call_with_retries() {
    let redis = RedisServer::start();
    crash_under_load("Redis", common_env(&redis.url())).await;
}
