//! The runner as an operator meets it, through the demo node binary: flags, exit codes, errors
//! as sentences, and a graceful stop on SIGTERM that exits 0.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{common_env, local_broker, serving, tcp_urls};

fn demo() -> Command {
    let mut command = Command::new(support::node_binary());
    command
        .current_dir(std::env::temp_dir())
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` to exit; panics after `limit`.
async fn exit_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn bad_flags_and_a_missing_config_file_exit_2_with_a_sentence() {
    let out = demo().arg("--instancez").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--instancez"), "{err}");

    let out = demo()
        .args(["--config", "/nonexistent/moleculer.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the config file /nonexistent/moleculer.toml does not exist"),
        "{err}"
    );

    let out = demo().env("MOL_HEARTBEAT_INTERVALL", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("heartbeatIntervall"), "{err}");
    assert!(
        !err.contains("Key {"),
        "a sentence, not a debug dump: {err}"
    );

    let out = demo().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    for flag in ["--config", "--env-file", "--silent", "--version"] {
        assert!(help.contains(flag), "{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_node_gracefully_and_exits_0() {
    let env = common_env(&tcp_urls(&["runner-node", "caller"]));
    let mut child = demo()
        .envs(env.iter().cloned())
        .env("MOL_NODE_ID", "runner-node")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let caller = local_broker("caller", &env).await;
    serving(&caller, "runner-node", Duration::from_secs(20))
        .await
        .expect("the node serves");
    let mut events = caller.local_events();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = exit_within(&mut child, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    // Peers saw a goodbye, not a crash.
    let gone = support::wait(Duration::from_secs(5), || {
        !support::available(&caller, "runner-node")
    })
    .await;
    assert!(gone.is_some());
    let mut unexpected = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.name == "$node.disconnected" {
            unexpected.push(e.payload["unexpected"].clone());
        }
    }
    assert_eq!(unexpected, [serde_json::Value::Bool(false)]);
    caller.stop().await;
}

/// The demo node as a supervisor of `instances` workers named `<base>-worker-<n>`.
fn supervisor(base: &str, instances: usize, env: &[(String, String)]) -> std::process::Child {
    demo()
        .envs(env.iter().cloned())
        .env("MOL_NODE_ID", base)
        .args(["--instances", &instances.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The supervisor's live children.
fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_named_workers_restart_a_killed_one_and_all_stop_on_sigterm() {
    // Only the caller is listed: the workers join through it on ports of their own.
    let env = common_env(&tcp_urls(&["caller"]));
    let mut supervisor = supervisor("demo", 2, &env);
    let caller = local_broker("caller", &env).await;
    for worker in ["demo-worker-1", "demo-worker-2"] {
        serving(&caller, worker, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{worker} serves"));
    }
    let first = children(supervisor.id());
    assert_eq!(first.len(), 2, "two worker processes: {first:?}");
    // SIGKILL one worker: it comes back under its own name.
    let victim = first[0];
    assert!(Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let restarted = support::wait(Duration::from_secs(10), || {
        let now = children(supervisor.id());
        now.len() == 2 && !now.contains(&victim)
    })
    .await;
    assert!(restarted.is_some(), "the killed worker was started again");
    for worker in ["demo-worker-1", "demo-worker-2"] {
        serving(&caller, worker, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{worker} serves after the restart"));
    }
    let workers = children(supervisor.id());
    // SIGTERM: every worker stops gracefully, the supervisor exits 0, nothing is left behind.
    assert!(Command::new("kill")
        .args(["-TERM", &supervisor.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = exit_within(&mut supervisor, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        workers.iter().all(|pid| !alive(*pid)),
        "workers left behind: {workers:?}"
    );
    caller.stop().await;
}

#[test]
fn a_worker_that_keeps_dying_stops_the_group_with_a_reason() {
    // Every worker must listen on a port that is taken: each exits at once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let started = Instant::now();
    let out = demo()
        .env("MOL_TRANSPORTER", "TCP")
        .env("MOL_TRANSPORTER_OPTIONS__PORT", port.to_string())
        .env("MOL_NODE_ID", "flappy")
        .args(["--instances", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("the group stopped after {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("worker flappy-worker-1 exited 5 times in a row")
            && err.contains("last: exit code 1"),
        "{err}"
    );
    // Restarted with a growing backoff (100, 200, 400, 800 ms), not at once.
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_the_workers_one_by_one_and_no_call_fails() {
    let env = common_env(&tcp_urls(&["caller"]));
    let mut supervisor = supervisor("rolling", 3, &env);
    let caller = local_broker("caller", &env).await;
    for worker in ["rolling-worker-1", "rolling-worker-2", "rolling-worker-3"] {
        serving(&caller, worker, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{worker} serves"));
    }
    let before = children(supervisor.id());
    assert_eq!(before.len(), 3);
    // A caller without retries keeps 20 calls in flight through the reload.
    let load = support::Load::start(&caller, 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(Command::new("kill")
        .args(["-HUP", &supervisor.id().to_string()])
        .status()
        .unwrap()
        .success());
    let replaced = support::wait(Duration::from_secs(60), || {
        let now = children(supervisor.id());
        now.len() == 3 && now.iter().all(|pid| !before.contains(pid))
    })
    .await
    .expect("every worker was replaced");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (answered, failures) = load.finish().await;
    println!(
        "reload of 3 workers took {replaced:?}; {answered} calls answered, {} failed",
        failures.len()
    );
    assert!(answered > 100, "{answered}");
    assert!(failures.is_empty(), "{failures:?}");
    for worker in ["rolling-worker-1", "rolling-worker-2", "rolling-worker-3"] {
        serving(&caller, worker, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{worker} serves after the reload"));
    }
    assert!(Command::new("kill")
        .args(["-TERM", &supervisor.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        exit_within(&mut supervisor, Duration::from_secs(20))
            .await
            .code(),
        Some(0)
    );
    caller.stop().await;
}

/// One request to a supervisor's control socket, and its answer.
async fn control(base: &str, request: serde_json::Value) -> serde_json::Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let path = moleculer::runner::control_socket(base);
    // The socket file appears on bind, a moment before the supervisor listens on it.
    let mut tries = 0;
    let stream = loop {
        match tokio::net::UnixStream::connect(&path).await {
            Ok(stream) => break stream,
            Err(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("cannot reach {}: {err}", path.display()),
        }
    };
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

/// (status, restarts, pid) of worker `n` in a `list` answer.
fn worker_status(list: &serde_json::Value, n: usize) -> (String, u64, Option<u64>) {
    let w = &list[n - 1];
    (
        w["status"].as_str().unwrap().to_owned(),
        w["restarts"].as_u64().unwrap(),
        w["pid"].as_u64(),
    )
}

/// The `list` answer once worker `n` is online (its broker has started).
async fn online(base: &str, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = control(base, serde_json::json!({"cmd": "list"})).await;
        if list.as_array().unwrap().len() >= n && worker_status(&list, n).0 == "online" {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "worker {n} is not online: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_lists_restarts_stops_starts_and_scales_workers() {
    let base = format!("pm{}", std::process::id());
    let mut supervisor = supervisor(&base, 2, &[("MOL_TRANSPORTER".into(), "TCP".into())]);
    let socket = moleculer::runner::control_socket(&base);
    support::wait(Duration::from_secs(10), || socket.exists())
        .await
        .expect("the control socket appears");
    let list = online(&base, 2).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["worker"], format!("{base}-worker-1"));
    let (_, _, first_pid) = worker_status(&list, 1);
    assert!(list[0]["memoryKiB"].as_u64().unwrap() > 0, "{list}");

    control(&base, serde_json::json!({"cmd": "restart", "target": "1"})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = control(&base, serde_json::json!({"cmd": "list"})).await;
        let (state, restarts, pid) = worker_status(&list, 1);
        if state == "online" && restarts == 1 && pid != first_pid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker 1 was not restarted: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let answer = control(
        &base,
        serde_json::json!({"cmd": "stop", "target": format!("{base}-worker-2")}),
    )
    .await;
    assert_eq!(answer["ok"][0], format!("{base}-worker-2"), "{answer}");
    let scaled = control(&base, serde_json::json!({"cmd": "scale", "size": 3})).await;
    assert!(scaled["ok"].to_string().contains("worker-3"), "{scaled}");
    let list = online(&base, 3).await;
    assert_eq!(worker_status(&list, 2).0, "stopped", "{list}");
    let bad = control(&base, serde_json::json!({"cmd": "explode"})).await;
    assert!(bad["error"].as_str().unwrap().contains("explode"), "{bad}");

    assert!(Command::new("kill")
        .args(["-TERM", &supervisor.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        exit_within(&mut supervisor, Duration::from_secs(20))
            .await
            .code(),
        Some(0)
    );
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_object_per_line_naming_the_broker() {
    use std::io::BufRead;
    let mut child = demo()
        .env("MOL_NODE_ID", "json-node")
        .env("MOL_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines.iter().any(|l: &String| l.contains("demo node ready")) {
        assert!(Instant::now() < deadline, "no ready line: {lines:#?}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        exit_within(&mut child, Duration::from_secs(15))
            .await
            .code(),
        Some(0)
    );
    lines.extend(rx.try_iter());
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        objects
            .iter()
            .any(|o| o["span"]["name"] == "broker" && o["span"]["node"] == "json-node"),
        "a line from inside the broker names it: {lines:#?}"
    );

    let out = demo().env("MOL_LOG_FORMAT", "xml").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("logFormat") && err.contains("xml"), "{err}");
}
