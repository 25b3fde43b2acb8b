//! A cluster of demo nodes as separate processes over TCP, with no server: calls balanced
//! across them, a balanced event, and a node killed with traffic moving to the others.
//!
//! Run with: `cargo run --example cluster` (no server needed; everything stays on 127.0.0.1).
//!
//! The example starts three copies of itself as `node-1`..`node-3` (the same demo node as
//! `cargo run --example node`), joins them with an in-process client broker, and prints what
//! happens and how long it took.

#[path = "support/demo.rs"]
mod demo;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use moleculer::prelude::*;
use serde_json::json;
use tokio::process::{Child, Command};

const NODES: usize = 3;

fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("bound").port())
        .collect()
}

fn spawn_node(urls: &str, i: usize) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .env("CLUSTER_ROLE", "node")
        .env("MOL_NODE_ID", format!("node-{i}"))
        .env("MOL_TRANSPORTER", urls)
        .env("MOL_HEARTBEAT_INTERVAL", "1")
        .env("MOL_HEARTBEAT_TIMEOUT", "3")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
}

fn endpoints(broker: &ServiceBroker, action: &str) -> usize {
    broker.with_registry(|r| r.action_list(action).map_or(0, |l| l.endpoints().len()))
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    check: impl Fn() -> bool,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > timeout {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(start.elapsed())
}

async fn served_by(
    client: &ServiceBroker,
    n: usize,
) -> Result<BTreeMap<String, usize>, Box<dyn std::error::Error>> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let node = client.call("whoami.node", json!({})).await?;
        *counts
            .entry(node.as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    Ok(counts)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("CLUSTER_ROLE").as_deref() == Ok("node") {
        let code = demo::run_node("warn").await;
        if code != std::process::ExitCode::SUCCESS {
            std::process::exit(1);
        }
        return Ok(());
    }
    demo::init_logging("warn");

    let ports = free_ports(NODES + 1);
    let mut entries: Vec<String> = (1..=NODES)
        .map(|i| format!("127.0.0.1:{}/node-{i}", ports[i - 1]))
        .collect();
    entries.push(format!("127.0.0.1:{}/client", ports[NODES]));
    let urls = format!("tcp://{}", entries.join(","));
    println!("cluster over TCP, static urls: {urls}");

    let started = Instant::now();
    let mut children = Vec::new();
    for i in 1..=NODES {
        children.push(spawn_node(&urls, i)?);
    }
    let options = moleculer::runner::load_options(
        None,
        [
            ("MOL_NODE_ID", "client"),
            ("MOL_TRANSPORTER", urls.as_str()),
            ("MOL_HEARTBEAT_INTERVAL", "1"),
            ("MOL_HEARTBEAT_TIMEOUT", "3"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )?;
    let client = moleculer::runner::builder_for(&options)?
        .prefer_local(false)
        .build()?;
    client.start().await?;
    let joined = wait_for("all nodes", Duration::from_secs(60), || {
        endpoints(&client, "math.add") == NODES
    })
    .await?;
    println!(
        "{NODES} node processes callable {:.0} ms after launch (processes start, then join)",
        (started.elapsed()).as_secs_f64() * 1000.0
    );
    let _ = joined;

    println!(
        "\nmath.add {{a: 2, b: 3}} -> {}",
        client.call("math.add", json!({"a": 2, "b": 3})).await?
    );
    println!(
        "greeter.hello {{name: \"Ada\"}} -> {}",
        client.call("greeter.hello", json!({"name": "Ada"})).await?
    );
    match client.call("math.div", json!({"a": 1, "b": 0})).await {
        Err(e) => println!(
            "math.div {{a: 1, b: 0}} -> {} {} (code {}, type {})",
            e.name,
            e.message,
            e.code,
            e.kind()
        ),
        Ok(v) => println!("math.div {{a: 1, b: 0}} -> {v}"),
    }
    println!(
        "\n9 calls, round robin over the nodes: {:?}",
        served_by(&client, 9).await?
    );

    for id in 1..=6 {
        client.emit("user.created", json!({ "id": id })).await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = BTreeMap::new();
    for i in 1..=NODES {
        let node = format!("node-{i}");
        let received = client
            .call_with(
                "mailer.received",
                json!({}),
                CallOptions::default().node_id(node.as_str()),
            )
            .await?;
        got.insert(node, received.as_array().map_or(0, Vec::len));
    }
    println!("6 balanced user.created events, received per node (group mailer): {got:?}");

    println!("\nkilling node-2 (SIGKILL) ...");
    let killed_at = Instant::now();
    children[1].start_kill()?;
    let gone = wait_for("node-2 removal", Duration::from_secs(10), || {
        !client.with_registry(|r| r.nodes().get("node-2").is_some_and(|n| n.available))
    })
    .await?;
    println!(
        "node-2's endpoints removed {:.1} ms after the kill (its socket closed)",
        gone.as_secs_f64() * 1000.0
    );
    let _ = killed_at;
    println!("9 calls after the kill: {:?}", served_by(&client, 9).await?);

    client.stop().await;
    for mut child in children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    println!("\ndone");
    Ok(())
}
