//! The supervisor's control socket: a Unix socket at `<tmp>/moleculer-<nodeID>.sock` taking
//! one JSON request per line (`{"cmd": "list"}`, `{"cmd": "restart", "target": "all"}`, ...)
//! and answering one JSON line. `moleculer pm` speaks it; so can `socat`.

use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

/// A request from the socket, with where its answer goes.
pub(crate) struct Request {
    pub command: Value,
    pub reply: oneshot::Sender<Value>,
}

/// Where the supervisor of node id `base` listens.
pub fn control_socket(base: &str) -> PathBuf {
    std::env::temp_dir().join(format!("moleculer-{base}.sock"))
}

/// Listens on `path` (replacing a stale socket) and forwards each request to `requests`.
pub(crate) fn listen(
    path: &PathBuf,
    requests: mpsc::UnboundedSender<Request>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = match serde_json::from_str::<Value>(&line) {
                        Ok(command) => {
                            let (reply, answer) = oneshot::channel();
                            if requests.send(Request { command, reply }).is_err() {
                                return;
                            }
                            answer.await.unwrap_or_else(
                                |_| json!({ "error": "the supervisor is stopping" }),
                            )
                        }
                        Err(err) => json!({ "error": format!("not a JSON request: {err}") }),
                    };
                    let mut text = answer.to_string();
                    text.push('\n');
                    if write.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

/// What `/proc` says of a process: CPU seconds used and resident memory in KiB.
pub(crate) fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Linux reports CPU time in ticks of 1/100 s (USER_HZ).
    Some((ticks as f64 / 100.0, rss))
}
