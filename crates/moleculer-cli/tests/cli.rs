//! The `moleculer` command against a live cluster on 127.0.0.1: two in-process nodes over TCP,
//! the command run as a real process joining through the listed seed.

mod support;

use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use moleculer_test::services::{Echo, Listener, Recorder};
use std::process::Command;
use support::{free_port, moleculer, stdout_json};

/// A node with `Echo` and a `user.*` listener (recording into `heard`), on the cluster `urls`
/// names.
async fn node(id: &str, urls: &str, heard: &Recorder) -> ServiceBroker {
    node_with(id, urls, heard, &[]).await
}

/// [`node`] with more `MOL_*` settings.
async fn node_with(id: &str, urls: &str, heard: &Recorder, more: &[(&str, &str)]) -> ServiceBroker {
    let mut env = vec![
        ("MOL_NODE_ID".to_owned(), id.to_owned()),
        ("MOL_TRANSPORTER".to_owned(), urls.to_owned()),
    ];
    env.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let options = moleculer_runner::load_options(None, env).unwrap();
    let broker = moleculer_runner::builder_for(&options)
        .unwrap()
        .build()
        .unwrap();
    broker.create_service(Echo).unwrap();
    broker
        .create_service(Listener {
            name: "audit",
            group: None,
            pattern: "user.*",
            log: heard.clone(),
        })
        .unwrap();
    broker.start().await.unwrap();
    broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_calls_and_emits_on_a_live_cluster() {
    let (seed_port, other_port) = (free_port(), free_port());
    let urls = format!("tcp://127.0.0.1:{seed_port}/seed,127.0.0.1:{other_port}/other");
    let heard = Recorder::default();
    let seed = node("seed", &urls, &heard).await;
    let other = node("other", &urls, &heard).await;
    // The command knows only the seed; it learns `other` from it.
    let t = format!("tcp://127.0.0.1:{seed_port}/seed");

    let started = Instant::now();
    let out = moleculer(&["-t", &t, "--json", "nodes"]).await;
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = stdout_json(&out);
    let mut ids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["available"] == true)
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["other", "seed"]);
    println!("`moleculer nodes` joined, listed and left in {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    let services = stdout_json(&moleculer(&["-t", &t, "--json", "services"]).await);
    let echo = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "echo")
        .expect("echo is listed");
    assert_eq!(echo["nodes"].as_array().unwrap().len(), 2);

    let out = moleculer(&[
        "-t",
        &t,
        "--json",
        "call",
        "echo.where",
        r#"{"x":1}"#,
        "--node",
        "other",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = stdout_json(&out);
    assert_eq!(answer["node"], "other");
    assert_eq!(answer["params"]["x"], 1);

    let out = moleculer(&["-t", &t, "call", "echo.fail"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for part in [
        "it failed",
        "code: 422",
        "type: ECHO_FAILED",
        r#""reason":"asked to""#,
    ] {
        assert!(err.contains(part), "{part} in {err}");
    }

    let out = moleculer(&["-t", &t, "--wait", "500", "call", "nope.missing"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nope.missing"), "{err}");

    let out = moleculer(&["-t", &t, "call", "echo.where", "{not json"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));

    let out = moleculer(&["-t", &t, "broadcast", "user.created", r#"{"id":7}"#]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both = moleculer_test::eventually(Duration::from_secs(5), || heard.len() >= 2).await;
    let records = heard.take();
    assert!(both, "both nodes heard the broadcast: {records:?}");
    let mut nodes: Vec<&str> = records
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["other", "seed"]);
    assert_eq!(records[0]["data"]["id"], 7);

    let out = moleculer(&["-t", &t, "--json", "ping", "other"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)[0]["node"], "other");

    let out = moleculer(&[
        "-t",
        &t,
        "--json",
        "bench",
        "echo.where",
        "{}",
        "--time",
        "1",
        "--concurrency",
        "4",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout_json(&out);
    println!("bench: {report}");
    assert!(report["calls"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["errors"], 0);
    let p = &report["latencyMs"];
    assert!(p["p50"].as_f64().unwrap() <= p["p99"].as_f64().unwrap());
    assert!(p["p99"].as_f64().unwrap() <= p["max"].as_f64().unwrap());
    let counted: u64 = report["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, report["calls"].as_u64().unwrap());

    // The REPL reads lines from stdin; a failing line does not end it.
    let script = "call echo.where '{\"r\": 1}' --node seed\ncall echo.fail\nnodes\nexit\n";
    let repl_args = ["-t", t.as_str(), "--json", "repl"].map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_moleculer"))
            .args(&repl_args)
            .env_remove("MOL_NODE_ID")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(r#""r":1"#), "the call's answer: {stdout}");
    assert!(
        stderr.contains("ECHO_FAILED"),
        "the failing call's error: {stderr}"
    );
    assert!(
        stdout.contains(r#""id":"other""#),
        "the node list: {stdout}"
    );

    other.stop().await;
    seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_transporter_is_named_and_the_command_fails() {
    let dead = free_port();
    let url = format!("redis://127.0.0.1:{dead}");
    let started = Instant::now();
    let out = moleculer(&["-t", &url, "--wait", "1500", "nodes"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let out = moleculer(&["nodes"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no transporter"));

    let out = moleculer(&["--bogus"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monit_reads_every_nodes_metrics() {
    let (seed_port, other_port) = (free_port(), free_port());
    let urls = format!("tcp://127.0.0.1:{seed_port}/seed,127.0.0.1:{other_port}/other");
    let heard = Recorder::default();
    let metrics = [
        ("MOL_METRICS__ENABLED", "true"),
        ("MOL_METRICS__SERVE", "false"),
    ];
    let seed = node_with("seed", &urls, &heard, &metrics).await;
    let other = node("other", &urls, &heard).await;
    // Traffic served by the seed while the command watches.
    let caller = seed.clone();
    let traffic = tokio::spawn(async move {
        let opts = moleculer_core::CallOptions::default().node_id("seed");
        loop {
            let _ = caller
                .call_with("echo.where", serde_json::json!({}), opts.clone())
                .await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let t = format!("tcp://127.0.0.1:{seed_port}/seed");
    let out = moleculer(&[
        "-t",
        &t,
        "--json",
        "monit",
        "--count",
        "2",
        "--interval",
        "0.5",
    ])
    .await;
    traffic.abort();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2, "{frames:?}");
    let row = |frame: &serde_json::Value, node: &str| {
        frame
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node)
            .cloned()
            .unwrap_or_else(|| panic!("{node} in {frame}"))
    };
    let first = row(&frames[0], "seed");
    assert!(first["requestsPerSecond"].is_null(), "no rate yet: {first}");
    let second = row(&frames[1], "seed");
    let rate = second["requestsPerSecond"].as_f64().unwrap();
    assert!(rate > 10.0, "the seed serves calls: {second}");
    assert!(second["memoryBytes"].as_f64().unwrap() > 1e6, "{second}");
    assert_eq!(
        row(&frames[1], "other")["unavailable"],
        "metrics are off on this node"
    );
    seed.stop().await;
    other.stop().await;
}
