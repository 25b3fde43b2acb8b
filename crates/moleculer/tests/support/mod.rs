//! Real demo node processes (`examples/node.rs`, built by `cargo test`) on 127.0.0.1, and
//! in-process brokers configured the same way, for the process-level tests.

#![allow(dead_code)]

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moleculer::runner::{builder_for, load_options};
use moleculer::{CallOptions, ServiceBroker};
use parking_lot::Mutex;
use serde_json::json;

/// The demo node binary next to this test's.
pub fn node_binary() -> std::path::PathBuf {
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

/// `n` free loopback ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

/// `tcp://` urls for these node ids on fresh ports.
pub fn tcp_urls(ids: &[&str]) -> String {
    let ports = free_ports(ids.len());
    let entries: Vec<String> = ids
        .iter()
        .zip(ports)
        .map(|(id, port)| format!("127.0.0.1:{port}/{id}"))
        .collect();
    format!("tcp://{}", entries.join(","))
}

/// A demo node process; killed (if still running) when dropped.
pub struct Node {
    pub id: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment every process and in-process broker of a test shares.
pub fn common_env(transporter: &str) -> Vec<(String, String)> {
    [
        ("MOL_TRANSPORTER", transporter),
        ("MOL_HEARTBEAT_INTERVAL", "1"),
        ("MOL_HEARTBEAT_TIMEOUT", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl Node {
    /// Starts the demo node `id` with `env` (and `MOL_NODE_ID=id`).
    pub fn start(id: &str, env: &[(String, String)]) -> Node {
        let child = Command::new(node_binary())
            .current_dir(std::env::temp_dir())
            .envs(env.iter().cloned())
            .env("MOL_NODE_ID", id)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("demo node starts");
        Node {
            id: id.to_owned(),
            child,
        }
    }

    /// Starts the demo node `id` under `wrapper` (say `["prlimit", "--nofile=256"]`), its
    /// standard error written to `stderr`.
    pub fn start_with(
        id: &str,
        env: &[(String, String)],
        wrapper: &[&str],
        stderr: &std::path::Path,
    ) -> Node {
        let bin = node_binary();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = command
            .current_dir(std::env::temp_dir())
            .envs(env.iter().cloned())
            .env("MOL_NODE_ID", id)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(stderr).expect("stderr file"))
            .spawn()
            .expect("demo node starts");
        Node {
            id: id.to_owned(),
            child,
        }
    }

    /// Whether the process has exited, and its exit code if so.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().unwrap().map(|s| s.code())
    }

    /// The process's resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// CPU time the process used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // Linux reports these in clock ticks of 1/100 s (USER_HZ).
        Duration::from_millis(ticks * 10)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// SIGTERM, then waits for the process to exit (as a supervisor would before restarting
    /// it); returns how long the graceful stop took.
    pub async fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        self.signal("-TERM");
        self.wait_exit(Duration::from_secs(15)).await;
        started.elapsed()
    }

    /// SIGKILL, and the process is reaped.
    pub async fn kill(&mut self) {
        self.signal("-KILL");
        self.wait_exit(Duration::from_secs(5)).await;
    }

    async fn wait_exit(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} did not exit", self.id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An in-process broker (no services) with `env` plus its own node id.
pub async fn local_broker(id: &str, env: &[(String, String)]) -> ServiceBroker {
    let mut vars = env.to_vec();
    vars.push(("MOL_NODE_ID".into(), id.into()));
    let options = load_options(None, vars).unwrap();
    let broker = builder_for(&options).unwrap().build().unwrap();
    broker.start().await.unwrap();
    broker
}

/// Whether `broker` sees `node` as available.
pub fn available(broker: &ServiceBroker, node: &str) -> bool {
    broker.with_registry(|r| r.nodes().get(node).is_some_and(|n| n.available))
}

/// Polls `check` every 5 ms; how long it took, or `None` after `limit`.
pub async fn wait(limit: Duration, check: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(start.elapsed())
}

/// Waits until `node` answers `whoami.node` through `broker`; how long it took.
pub async fn serving(broker: &ServiceBroker, node: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let pinned = CallOptions::default().node_id(node);
        if let Ok(answer) = broker.call_with("whoami.node", json!({}), pinned).await {
            if answer == node {
                return Some(start.elapsed());
            }
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Calls kept in flight by a set of sequential callers, counting what they got.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `in_flight` callers of `math.add` through `broker`, until [`Load::finish`].
    pub fn start(broker: &ServiceBroker, in_flight: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..in_flight)
            .map(|i| {
                let (broker, stop, ok, errors) =
                    (broker.clone(), stop.clone(), ok.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut n: i64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        match broker.call("math.add", json!({"a": i, "b": n})).await {
                            Ok(sum) if sum == json!(i as i64 + n) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(wrong) => errors.lock().push(format!("wrong answer {wrong}")),
                            Err(err) => errors.lock().push(format!(
                                "{} from {}: {}",
                                err.name,
                                err.node_id.as_deref().unwrap_or("the caller"),
                                err.message
                            )),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            errors,
            tasks,
        }
    }

    /// Calls answered so far.
    pub fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the callers; returns (answered calls, failures).
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let errors = self.errors.lock().clone();
        (self.ok.load(Ordering::Relaxed), errors)
    }
}
