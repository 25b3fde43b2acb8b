//! The supervisor (`--instances N`): this same binary, re-executed as N worker processes named
//! `<nodeID>-worker-<n>`. It only supervises: a worker that dies is started again under the
//! same name after a backoff that grows while it keeps dying and resets once it has stayed up;
//! a worker that keeps dying stops the whole group with a message saying why. SIGINT and SIGTERM
//! are passed on, every worker stops gracefully, stragglers are killed after a deadline, and
//! the supervisor exits 0 when all stopped cleanly. SIGHUP replaces the workers one at a time,
//! each new one started only after the old one stopped gracefully, and the next one only after
//! the new one is up (it says so through a ready file), so callers lose no call.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::control::{control_socket, listen};
use crate::manager::Manager;
use crate::worker::{exit_words, ready_file, signal, spawn, worker_name, Exits, Plan, Worker};

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

/// Why the group stopped, for the exit code and the message.
pub(crate) enum Outcome {
    /// Stopped on a signal; whether every worker exited cleanly.
    Stopped { clean: bool },
    /// A worker kept dying.
    Flapping(String),
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
                let answer = if request.command["cmd"] == "reload" {
                    match reload(&plan, &mut workers, &mut exits, &exits_tx).await {
                        Ok(replaced) => {
                            manager.reloaded(&replaced);
                            json!({ "ok": replaced.iter().map(|n| worker_name(&plan.base, *n)).collect::<Vec<_>>() })
                        }
                        Err(why) => json!({ "error": format!("the reload stopped: {why}") }),
                    }
                } else {
                    manager.handle(&request.command, &plan, &mut workers, &mut pending, &exits_tx)
                };
                let _ = request.reply.send(answer);
            }
            _ = hup.recv() => {
                match reload(&plan, &mut workers, &mut exits, &exits_tx).await {
                    Ok(replaced) => manager.reloaded(&replaced),
                    Err(why) => tracing::error!("reload stopped: {why}"),
                }
            }
            Some((n, pid, status)) = exits.recv() => {
                let Some(worker) = workers.get(&n).filter(|w| w.pid == pid) else { continue };
                let failures = if worker.started.elapsed() >= STABLE_AFTER { 1 } else { worker.failures + 1 };
                let name = worker.name.clone();
                workers.remove(&n);
                manager.exited(n, status);
                if manager.stopped.contains(&n) {
                    tracing::info!(worker = %name, "worker stopped on request ({})", exit_words(status));
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
                        exit_words(status)
                    );
                    stop_all(&mut workers, &mut exits).await;
                    return Ok(Outcome::Flapping(why));
                }
                let backoff = (FIRST_BACKOFF * 2u32.saturating_pow(failures - 1)).min(MAX_BACKOFF);
                tracing::warn!(worker = %name, "worker exited ({}); starting it again in {} ms", exit_words(status), backoff.as_millis());
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

/// Replaces every running worker, one at a time: stop it gracefully, start it again, wait
/// until it is up, then the next.
async fn reload(
    plan: &Plan,
    workers: &mut BTreeMap<usize, Worker>,
    exits: &mut mpsc::UnboundedReceiver<(usize, u32, ExitStatus)>,
    exits_tx: &Exits,
) -> Result<Vec<usize>, String> {
    let numbers: Vec<usize> = workers.keys().copied().collect();
    tracing::info!("reloading {} workers, one at a time", numbers.len());
    let mut replaced = Vec::new();
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
                        tracing::warn!(worker = %worker_name(&plan.base, m), "worker exited ({}) during the reload; starting it again", exit_words(status));
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
        replaced.push(n);
    }
    Ok(replaced)
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
                        tracing::warn!(worker = %worker, "worker stopped with {}", exit_words(status));
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
