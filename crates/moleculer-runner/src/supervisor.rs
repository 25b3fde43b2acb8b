//! The supervisor (`--instances N`): this same binary, re-executed as N worker processes named
//! `<nodeID>-worker-<n>`. It only supervises: a worker that dies is started again under the
//! same name after a backoff that grows while it keeps dying and resets once it has stayed up;
//! a worker that keeps dying stops the whole group with a message saying why. SIGINT and SIGTERM
//! are passed on, every worker stops gracefully, stragglers are killed after a deadline, and
//! the supervisor exits 0 when all stopped cleanly. SIGHUP replaces the workers one at a time,
//! each new one started only after the old one stopped gracefully, and the next one only after
//! the new one is up (it says so through a ready file), so callers lose no call.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::control::{control_socket, listen, usage};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The variable that makes a re-executed process a worker, holding its number.
pub(crate) const WORKER_VAR: &str = "MOLECULER_WORKER";

/// The variable naming the file a worker writes once its broker has started.
pub(crate) const READY_FILE_VAR: &str = "MOLECULER_READY_FILE";
/// How long a replacement worker has to come up during a reload.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A worker that stayed up this long is healthy: its backoff and failure count start over.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The first restart delay; it doubles for each failure in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Failures in a row (each within [`STABLE_AFTER`] of its start) that stop the group.
const FLAP_LIMIT: u32 = 5;
/// How long workers get to stop gracefully before they are killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// How the supervisor runs its workers.
pub(crate) struct Plan {
    /// `<nodeID>` of `<nodeID>-worker-<n>`.
    pub base: String,
    pub instances: usize,
    /// The worker's command line, without the program and without `--instances`.
    pub args: Vec<OsString>,
}

struct Worker {
    name: String,
    pid: u32,
    started: Instant,
    /// Failures in a row.
    failures: u32,
}

/// Why the group stopped, for the exit code and the message.
pub(crate) enum Outcome {
    /// Stopped on a signal; whether every worker exited cleanly.
    Stopped { clean: bool },
    /// A worker kept dying.
    Flapping(String),
}

/// The worker name for number `n`.
pub(crate) fn worker_name(base: &str, n: usize) -> String {
    format!("{base}-worker-{n}")
}

/// Where worker `n` says it is up.
fn ready_file(n: usize) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("moleculer-{}-worker-{n}.ready", std::process::id()))
}

fn spawn(
    plan: &Plan,
    n: usize,
    exits: &mpsc::UnboundedSender<(usize, u32, ExitStatus)>,
) -> std::io::Result<Worker> {
    let name = worker_name(&plan.base, n);
    let exe = std::env::current_exe()?;
    let ready = ready_file(n);
    let _ = std::fs::remove_file(&ready);
    let mut child: Child = Command::new(exe)
        .args(&plan.args)
        .env(WORKER_VAR, n.to_string())
        .env(READY_FILE_VAR, &ready)
        .env("MOL_NODE_ID", &name)
        .stdin(Stdio::null())
        .kill_on_drop(false)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let exits = exits.clone();
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            let _ = exits.send((n, pid, status));
        }
    });
    tracing::info!(worker = %name, pid, "worker started");
    Ok(Worker {
        name,
        pid,
        started: Instant::now(),
        failures: 0,
    })
}

fn signal(pid: u32, sig: Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 0 {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// Runs the group until a stop signal or a flapping worker.
pub(crate) async fn supervise(plan: Plan) -> std::io::Result<Outcome> {
    use tokio::signal::unix::{signal as watch, SignalKind};
    let mut term = watch(SignalKind::terminate())?;
    let mut int = watch(SignalKind::interrupt())?;
    let mut hup = watch(SignalKind::hangup())?;
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let (requests_tx, mut requests) = mpsc::unbounded_channel();
    let socket = control_socket(&plan.base);
    if let Err(err) = listen(&socket, requests_tx) {
        tracing::warn!("no control socket at {}: {err}", socket.display());
    }
    let mut workers: BTreeMap<usize, Worker> = BTreeMap::new();
    for n in 1..=plan.instances {
        workers.insert(n, spawn(&plan, n, &exits_tx)?);
    }
    let mut manager = Manager::default();
    // Workers waiting for their restart: number -> (when, failures so far).
    let mut pending: BTreeMap<usize, (Instant, u32)> = BTreeMap::new();
    loop {
        let next_restart = pending.values().map(|(at, _)| *at).min();
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(request) = requests.recv() => {
                let answer = manager.handle(&request.command, &plan, &mut workers, &mut pending, &exits_tx);
                let _ = request.reply.send(answer);
            }
            _ = hup.recv() => {
                if let Err(why) = reload(&plan, &mut workers, &mut exits, &exits_tx).await {
                    tracing::error!("reload stopped: {why}");
                }
            }
            Some((n, pid, status)) = exits.recv() => {
                let Some(worker) = workers.get(&n).filter(|w| w.pid == pid) else { continue };
                let failures = if worker.started.elapsed() >= STABLE_AFTER { 1 } else { worker.failures + 1 };
                let name = worker.name.clone();
                workers.remove(&n);
                if manager.stopped.contains(&n) {
                    tracing::info!(worker = %name, "worker stopped on request ({})", describe(status));
                    continue;
                }
                if manager.restarting.remove(&n) {
                    *manager.restarts.entry(n).or_default() += 1;
                    workers.insert(n, spawn(&plan, n, &exits_tx)?);
                    continue;
                }
                *manager.restarts.entry(n).or_default() += 1;
                if failures >= FLAP_LIMIT {
                    let why = format!(
                        "worker {name} exited {failures} times in a row within {} s of starting (last: {}); stopping the group",
                        STABLE_AFTER.as_secs(),
                        describe(status)
                    );
                    stop_all(&mut workers, &mut exits).await;
                    return Ok(Outcome::Flapping(why));
                }
                let backoff = (FIRST_BACKOFF * 2u32.saturating_pow(failures - 1)).min(MAX_BACKOFF);
                tracing::warn!(worker = %name, "worker exited ({}); starting it again in {} ms", describe(status), backoff.as_millis());
                pending.insert(n, (Instant::now() + backoff, failures));
            }
            () = sleep_until(next_restart) => {
                let now = Instant::now();
                let due: Vec<usize> = pending.iter().filter(|(_, (at, _))| *at <= now).map(|(n, _)| *n).collect();
                for n in due {
                    let (_, failures) = pending.remove(&n).unwrap_or((now, 0));
                    let mut worker = spawn(&plan, n, &exits_tx)?;
                    worker.failures = failures;
                    workers.insert(n, worker);
                }
            }
        }
    }
    let clean = stop_all(&mut workers, &mut exits).await;
    for n in 1..=plan.instances.max(manager.highest) {
        let _ = std::fs::remove_file(ready_file(n));
    }
    let _ = std::fs::remove_file(&socket);
    Ok(Outcome::Stopped { clean })
}

/// What the control socket changed: workers stopped or being restarted on request, restart
/// counts, the size of the group.
#[derive(Default)]
struct Manager {
    stopped: BTreeSet<usize>,
    restarting: BTreeSet<usize>,
    restarts: BTreeMap<usize, u32>,
    /// Highest worker number ever run (for cleanup after a scale-down).
    highest: usize,
}

impl Manager {
    /// Answers one control request.
    fn handle(
        &mut self,
        command: &Value,
        plan: &Plan,
        workers: &mut BTreeMap<usize, Worker>,
        pending: &mut BTreeMap<usize, (Instant, u32)>,
        exits: &mpsc::UnboundedSender<(usize, u32, ExitStatus)>,
    ) -> Value {
        let numbers = |target: &str, all: Vec<usize>| -> Vec<usize> {
            if target == "all" {
                return all;
            }
            all.into_iter()
                .filter(|n| worker_name(&plan.base, *n) == target || n.to_string() == target)
                .collect()
        };
        let known: Vec<usize> = workers
            .keys()
            .chain(pending.keys())
            .chain(self.stopped.iter())
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let target = command["target"].as_str().unwrap_or("all");
        match command["cmd"].as_str().unwrap_or("") {
            "list" => Value::from(
                known
                    .iter()
                    .map(|n| {
                        self.describe_worker(plan, *n, workers.get(n), pending.contains_key(n))
                    })
                    .collect::<Vec<_>>(),
            ),
            "restart" | "stop" => {
                let chosen = numbers(target, known);
                if chosen.is_empty() {
                    return json!({ "error": format!("no worker '{target}'") });
                }
                let stop = command["cmd"] == "stop";
                for n in &chosen {
                    if stop {
                        self.stopped.insert(*n);
                        pending.remove(n);
                    } else {
                        self.restarting.insert(*n);
                    }
                    if let Some(worker) = workers.get(n) {
                        signal(worker.pid, Signal::SIGTERM);
                    } else if !stop && !self.stopped.contains(n) {
                        self.restarting.remove(n);
                    }
                }
                json!({ "ok": chosen.iter().map(|n| worker_name(&plan.base, *n)).collect::<Vec<_>>() })
            }
            "start" => {
                let chosen = numbers(target, self.stopped.iter().copied().collect());
                let mut started = Vec::new();
                for n in chosen {
                    self.stopped.remove(&n);
                    if let Ok(worker) = spawn(plan, n, exits) {
                        started.push(worker.name.clone());
                        workers.insert(n, worker);
                    }
                }
                json!({ "ok": started })
            }
            "scale" => {
                let Some(size) = command["size"]
                    .as_u64()
                    .filter(|s| *s >= 1)
                    .map(|s| s as usize)
                else {
                    return json!({ "error": "scale needs a size of at least 1" });
                };
                let mut changed = Vec::new();
                for n in 1..=size.max(self.highest).max(plan.instances) {
                    let running = workers.contains_key(&n) || pending.contains_key(&n);
                    if n <= size && !running {
                        self.stopped.remove(&n);
                        if let Ok(worker) = spawn(plan, n, exits) {
                            changed.push(format!("started {}", worker.name));
                            workers.insert(n, worker);
                        }
                    } else if n > size && running {
                        self.stopped.insert(n);
                        pending.remove(&n);
                        if let Some(worker) = workers.get(&n) {
                            signal(worker.pid, Signal::SIGTERM);
                        }
                        changed.push(format!("stopped {}", worker_name(&plan.base, n)));
                    }
                }
                self.highest = self.highest.max(size);
                json!({ "ok": changed })
            }
            other => {
                json!({ "error": format!("unknown command '{other}' (list, restart, stop, start, scale)") })
            }
        }
    }

    fn describe_worker(
        &self,
        plan: &Plan,
        n: usize,
        worker: Option<&Worker>,
        waiting: bool,
    ) -> Value {
        let name = worker_name(&plan.base, n);
        let restarts = self.restarts.get(&n).copied().unwrap_or(0);
        match worker {
            Some(w) => {
                let uptime = w.started.elapsed().as_secs_f64();
                let (cpu_s, rss_kib) = usage(w.pid).unwrap_or((0.0, 0));
                json!({
                    "worker": name, "pid": w.pid, "status": "online", "uptimeSeconds": uptime,
                    "restarts": restarts, "cpuPercent": 100.0 * cpu_s / uptime.max(0.001),
                    "memoryKiB": rss_kib,
                })
            }
            None => json!({
                "worker": name, "pid": null,
                "status": if waiting { "restarting" } else { "stopped" },
                "uptimeSeconds": 0, "restarts": restarts, "cpuPercent": 0, "memoryKiB": 0,
            }),
        }
    }
}

/// Replaces every running worker, one at a time: stop it gracefully, start it again, wait
/// until it is up, then the next.
async fn reload(
    plan: &Plan,
    workers: &mut BTreeMap<usize, Worker>,
    exits: &mut mpsc::UnboundedReceiver<(usize, u32, ExitStatus)>,
    exits_tx: &mpsc::UnboundedSender<(usize, u32, ExitStatus)>,
) -> Result<(), String> {
    let numbers: Vec<usize> = workers.keys().copied().collect();
    tracing::info!("reloading {} workers, one at a time", numbers.len());
    for n in numbers {
        let Some(old) = workers.remove(&n) else {
            continue;
        };
        signal(old.pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(Some((m, pid, _))) if m == n && pid == old.pid => break,
                // Another worker died meanwhile: it is started again at once.
                Ok(Some((m, pid, status))) => {
                    if workers.get(&m).is_some_and(|w| w.pid == pid) {
                        tracing::warn!(worker = %worker_name(&plan.base, m), "worker exited ({}) during the reload; starting it again", describe(status));
                        let worker = spawn(plan, m, exits_tx).map_err(|e| e.to_string())?;
                        workers.insert(m, worker);
                    }
                }
                Ok(None) => return Err("the exit channel closed".into()),
                Err(_) => {
                    signal(old.pid, Signal::SIGKILL);
                    tracing::error!(worker = %old.name, "worker did not stop within {} s: killed", STOP_DEADLINE.as_secs());
                }
            }
        }
        let worker = spawn(plan, n, exits_tx).map_err(|e| e.to_string())?;
        workers.insert(n, worker);
        let ready = ready_file(n);
        let up_by = Instant::now() + READY_WITHIN;
        while !ready.exists() {
            if Instant::now() > up_by {
                return Err(format!(
                    "{} did not come up within {} s",
                    old.name,
                    READY_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(worker = %old.name, "worker replaced");
    }
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// SIGTERM to every worker, SIGKILL to those still running at the deadline; whether all
/// exited cleanly.
async fn stop_all(
    workers: &mut BTreeMap<usize, Worker>,
    exits: &mut mpsc::UnboundedReceiver<(usize, u32, ExitStatus)>,
) -> bool {
    for worker in workers.values() {
        signal(worker.pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_DEADLINE;
    let mut clean = true;
    while !workers.is_empty() {
        match tokio::time::timeout_at(deadline, exits.recv()).await {
            Ok(Some((n, pid, status))) => {
                if workers.get(&n).is_some_and(|w| w.pid == pid) {
                    let worker = workers.remove(&n).map(|w| w.name).unwrap_or_default();
                    if !status.success() {
                        clean = false;
                        tracing::warn!(worker = %worker, "worker stopped with {}", describe(status));
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                for worker in workers.values() {
                    tracing::error!(worker = %worker.name, "worker did not stop within {} s: killing it", STOP_DEADLINE.as_secs());
                    signal(worker.pid, Signal::SIGKILL);
                }
                clean = false;
                // Reap them.
                let reap = Instant::now() + Duration::from_secs(5);
                while !workers.is_empty() {
                    match tokio::time::timeout_at(reap, exits.recv()).await {
                        Ok(Some((n, _, _))) => {
                            workers.remove(&n);
                        }
                        _ => break,
                    }
                }
            }
        }
    }
    clean
}

/// An exit status as words.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_named_after_the_node_id_from_1() {
        assert_eq!(worker_name("demo", 1), "demo-worker-1");
        assert_eq!(worker_name("orders", 12), "orders-worker-12");
    }
}
