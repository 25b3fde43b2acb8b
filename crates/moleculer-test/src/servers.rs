//! Real servers for live tests (Redis, etcd), started on loopback ports of their own.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on 127.0.0.1 and a free port, without persistence; stopped when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until `what` accepts connections on `port`; panics naming it after `within`.
fn wait_for_port(what: &str, port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not open port {port} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a server process and reaps it.
fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl RedisServer {
    /// Starts one. Panics with instructions when `redis-server` is not installed.
    pub fn start() -> Self {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): install it (apt-get install redis-server) or run ./scripts/test.sh, which does"));
        self.child = Some(child);
        wait_for_port("redis-server", self.port, Duration::from_secs(10));
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `etcd` on 127.0.0.1 with free client and peer ports and a throwaway data directory;
/// stopped (and its directory removed) when dropped.
pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts one. Panics with instructions when `etcd` is not installed.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "moleculer-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut server = EtcdServer {
            client_port: free_port(),
            peer_port: free_port(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--name", "test", "--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}"), "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd ({e}): install it (apt-get install etcd-server) or run ./scripts/test.sh, which does"));
        self.child = Some(child);
        wait_for_port("etcd", self.client_port, Duration::from_secs(15));
    }

    /// `etcd3://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("etcd3://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<port>`, for a client.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Kills the server; its data stays for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
