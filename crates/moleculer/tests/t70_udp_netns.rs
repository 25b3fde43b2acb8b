//! UDP discovery (multicast and broadcast) between two demo nodes, each in a network namespace
//! this test creates, joined by a veth pair. Nothing is sent on the machine's real interfaces.
//! Needs root (`ip netns`); without it the test fails and says so.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the `ip` command (iproute2) is needed for the UDP namespace tests");
    assert!(
        out.status.success(),
        "ip {} failed: {} (these tests need root to create network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Two namespaces `<tag>-a` and `<tag>-b`, addresses 10.203.<n>.1 and .2 on a veth pair.
struct Namespaces {
    a: String,
    b: String,
}

impl Namespaces {
    fn create(tag: &str, subnet: u8) -> Self {
        let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
        let (va, vb) = (format!("{tag}-va"), format!("{tag}-vb"));
        let _ = Command::new("ip").args(["netns", "del", &a]).output();
        let _ = Command::new("ip").args(["netns", "del", &b]).output();
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &a]);
        ip(&["link", "set", &vb, "netns", &b]);
        for (ns, dev, host) in [(&a, &va, 1), (&b, &vb, 2)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.203.{subnet}.{host}/24"),
                "dev",
                dev,
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        Namespaces { a, b }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn node_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("examples")
        .join("node");
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo test`, which builds the examples",
        bin.display()
    );
    bin
}

struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(ns: &str, id: &str, addr: &str, udp: &[(&str, &str)]) -> Node {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "env"])
        .arg(format!("MOL_NODE_ID={id}"))
        .arg("MOL_TRANSPORTER=TCP")
        .arg("MOL_TRANSPORTER_OPTIONS__UDP_DISCOVERY=true")
        .arg("MOL_TRANSPORTER_OPTIONS__UDP_PERIOD=1")
        .arg(format!("MOL_TRANSPORTER_OPTIONS__BIND={addr}"))
        .arg(format!("MOL_TRANSPORTER_OPTIONS__HOST={addr}"))
        .arg("RUST_LOG=info");
    for (k, v) in udp {
        cmd.arg(format!("{k}={v}"));
    }
    let mut child = cmd
        .arg(node_binary())
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts in its namespace");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Node { child, lines }
}

/// Waits until the node logs that `peer` connected.
fn sees(node: &Node, peer: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match node.lines.recv_timeout(left) {
            Ok(line)
                if line.contains("node connected") && line.contains(&format!("node={peer}")) =>
            {
                return true
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

fn discover(tag: &str, subnet: u8, udp: &[(&str, &str)]) {
    let ns = Namespaces::create(tag, subnet);
    let a = start(&ns.a, "udp-a", &format!("10.203.{subnet}.1"), udp);
    std::thread::sleep(Duration::from_millis(300));
    let b = start(&ns.b, "udp-b", &format!("10.203.{subnet}.2"), udp);
    assert!(
        sees(&b, "udp-a", Duration::from_secs(15)),
        "udp-b found udp-a over UDP"
    );
    assert!(
        sees(&a, "udp-b", Duration::from_secs(15)),
        "udp-a found udp-b over UDP"
    );
}

#[test]
fn nodes_find_each_other_by_udp_multicast() {
    discover(
        "molmc",
        61,
        &[("MOL_TRANSPORTER_OPTIONS__UDP_MULTICAST", "239.0.0.0")],
    );
}

#[test]
fn nodes_find_each_other_by_udp_broadcast() {
    discover(
        "molbc",
        62,
        &[
            ("MOL_TRANSPORTER_OPTIONS__UDP_MULTICAST", "null"),
            ("MOL_TRANSPORTER_OPTIONS__UDP_BROADCAST", "10.203.62.255"),
        ],
    );
}
