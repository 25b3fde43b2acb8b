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
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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
