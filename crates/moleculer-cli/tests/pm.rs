//! `moleculer pm` against a real supervisor: the `supervised` example run with `--instances 2`
//! on 127.0.0.1, a caller node keeping its workers busy, and the command run as a process.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, moleculer, stdout_json};

/// target/<profile>/examples/supervised, built by `cargo test` with this crate's examples.
fn supervised_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join("supervised");
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo test`",
        bin.display()
    );
    bin
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
/// The text a `/metrics` endpoint on this port serves.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("nothing listens on {port}: {e}"));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pm_describes_logs_monitors_and_reloads_a_supervised_group() {
    let base = format!("pmcli{}", std::process::id());
    let urls = format!(
        "tcp://127.0.0.1:{}/{base}-worker-1,127.0.0.1:{}/{base}-worker-2,127.0.0.1:{}/caller",
        free_port(),
        free_port(),
        free_port()
    );
    let log_dir = std::env::temp_dir().join(format!("{base}-logs"));
    let _ = std::fs::remove_dir_all(&log_dir);
    // Worker n serves its metrics on metrics_port + n - 1: two free ports in a row.
    let metrics_port = (0..50)
        .map(|_| free_port())
        .find(|p| *p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
        .expect("two free ports in a row");
    let mut supervisor: Child = Command::new(supervised_binary())
        .args([
            "--instances",
            "2",
            "--silent",
            "--log-max-size",
            "1K",
            "--log-dir",
        ])
        .arg(&log_dir)
        .env("MOL_NODE_ID", &base)
        .env("MOL_TRANSPORTER", &urls)
        .env("MOL_METRICS__ENABLED", "true")
        .env("MOL_METRICS__PORT", metrics_port.to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // A caller with no services, calling without retries all along.
    let env = vec![
        ("MOL_NODE_ID".to_owned(), "caller".to_owned()),
        ("MOL_TRANSPORTER".to_owned(), urls.clone()),
    ];
    let options = moleculer_runner::load_options(None, env).unwrap();
    let caller = moleculer_runner::builder_for(&options)
        .unwrap()
        .build()
        .unwrap();
    caller.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut served_by = std::collections::BTreeSet::new();
    while served_by.len() < 2 {
        assert!(Instant::now() < deadline, "the workers did not serve");
        if let Ok(answer) = caller.call("echo.where", json!({})).await {
            served_by.insert(answer["node"].as_str().unwrap_or_default().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each worker is scraped on its own port, and names itself.
    for n in 1..=2u16 {
        let text = scrape(metrics_port + n - 1).await;
        assert!(
            text.contains(&format!("nodeID=\"{base}-worker-{n}\"")),
            "worker {n} on port {}: {text}",
            metrics_port + n - 1
        );
        assert!(
            text.contains("moleculer_request_total{action=\"echo.where\""),
            "{text}"
        );
    }
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (caller, running, ok, failed) =
            (caller.clone(), running.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match caller.call("echo.where", json!({})).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    // monit: calls/s per worker from the change between refreshes.
    let out = moleculer(&[
        "--json",
        "pm",
        &base,
        "monit",
        "--count",
        "3",
        "--interval",
        "0.5",
    ])
    .await;
    let frames: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 3, "{}", String::from_utf8_lossy(&out.stderr));
    for worker in frames[2].as_array().unwrap() {
        assert!(
            worker["callsPerSecond"].as_f64().unwrap() > 10.0,
            "a busy worker serves calls: {worker}"
        );
        assert!(worker["cpuPercent"].as_f64().unwrap() > 0.0, "{worker}");
        assert!(worker["memoryKiB"].as_u64().unwrap() > 0, "{worker}");
    }

    // describe: one worker, everything known of it.
    let out = moleculer(&["--json", "pm", &base, "describe", "1"]).await;
    let described = &stdout_json(&out)[0];
    assert_eq!(described["worker"], format!("{base}-worker-1"));
    assert_eq!(described["status"], "online");
    assert!(described["calls"].as_u64().unwrap() > 0, "{described}");
    let log_1 = log_dir.join(format!("{base}-worker-1.log"));
    assert_eq!(described["logFile"], log_1.to_str().unwrap());
    assert_eq!(
        described["metrics"],
        format!("http://127.0.0.1:{metrics_port}/metrics")
    );
    let out = moleculer(&["pm", &base, "describe", "1"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Calls served") && text.contains("Log file"),
        "{text}"
    );

    // logs: the worker's own output, captured.
    let out = moleculer(&["pm", &base, "logs", "1", "--lines", "200"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("echo node ready node={base}-worker-1")),
        "{text}"
    );
    let out = moleculer(&["pm", &base, "logs", "--lines", "2"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "two lines of each worker: {text}");
    assert!(text.contains(&format!("{base}-worker-2 | ")), "{text}");

    // logs --follow sees what the workers write next, through a reload.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_moleculer"))
        .args(["pm", &base, "logs", "--lines", "0", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before_reload = ok.load(Ordering::Relaxed);
    let out = moleculer(&["pm", &base, "reload"]).await;
    assert_eq!(
        stdout_json(&out)["ok"],
        json!([format!("{base}-worker-1"), format!("{base}-worker-2")])
    );
    let mut followed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while followed
        .iter()
        .filter(|l: &&String| l.contains("echo node ready"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "follow printed: {followed:#?}");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            followed.push(line);
        }
    }
    assert!(followed
        .iter()
        .any(|l| l.starts_with(&format!("{base}-worker-1 | ")) && l.contains("ready")));
    let _ = follow.kill();
    let _ = follow.wait();

    until(Duration::from_secs(5), "calls after the reload", || {
        ok.load(Ordering::Relaxed) > before_reload + 100
    })
    .await;
    running.store(false, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a reload loses no call ({} served)",
        ok.load(Ordering::Relaxed)
    );

    // Rotation kept every file within its 1 KiB and the old output in .1.
    let rotated = log_dir.join(format!("{base}-worker-1.log.1"));
    assert!(file_size(&rotated) > 0, "the log was rotated");
    for entry in std::fs::read_dir(&log_dir).unwrap() {
        let path = entry.unwrap().path();
        assert!(file_size(&path) <= 1024, "{} is too big", path.display());
    }
    let out = moleculer(&["pm", &base, "list"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Restarts"), "{text}");

    caller.stop().await;
    let _ = Command::new("kill")
        .args(["-TERM", &supervisor.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || supervisor.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    std::fs::remove_dir_all(&log_dir).unwrap();

    let out = moleculer(&["pm", &base, "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("no supervisor of '{base}'")));
}
