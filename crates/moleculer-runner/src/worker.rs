//! One worker process of a supervised group: how it is named, started (this same binary with
//! `MOLECULER_WORKER` set, its output captured to its log file) and signalled.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::worker_logs::{capture, LogFile, LogPolicy, Stream};

/// The variable that makes a re-executed process a worker, holding its number.
pub(crate) const WORKER_VAR: &str = "MOLECULER_WORKER";

/// The variable naming the file a worker writes once its broker has started.
pub(crate) const READY_FILE_VAR: &str = "MOLECULER_READY_FILE";

/// Worker exits, as (number, pid, status).
pub(crate) type Exits = mpsc::UnboundedSender<(usize, u32, ExitStatus)>;

/// How the supervisor runs its workers.
pub(crate) struct Plan {
    /// `<nodeID>` of `<nodeID>-worker-<n>`.
    pub base: String,
    pub instances: usize,
    /// The worker's command line, without the program.
    pub args: Vec<OsString>,
    /// Where the workers' output goes.
    pub logs: LogPolicy,
}

/// A running worker.
pub(crate) struct Worker {
    pub name: String,
    pub pid: u32,
    pub started: Instant,
    /// The same moment, for people.
    pub started_at: SystemTime,
    /// Failures in a row.
    pub failures: u32,
}

/// The worker name for number `n`.
pub(crate) fn worker_name(base: &str, n: usize) -> String {
    format!("{base}-worker-{n}")
}

/// Where worker `n` says it is up, and how many calls it has served.
pub(crate) fn ready_file(n: usize) -> PathBuf {
    std::env::temp_dir().join(format!("moleculer-{}-worker-{n}.ready", std::process::id()))
}

/// Starts worker `n`; its exit is reported on `exits`.
pub(crate) fn spawn(plan: &Plan, n: usize, exits: &Exits) -> std::io::Result<Worker> {
    let name = worker_name(&plan.base, n);
    let exe = std::env::current_exe()?;
    let ready = ready_file(n);
    let _ = std::fs::remove_file(&ready);
    let log = LogFile::open(
        plan.logs.file_of(&name),
        plan.logs.max_bytes,
        plan.logs.keep,
    )
    .map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot open the log file of {name}: {e}"))
    })?;
    let log = Arc::new(Mutex::new(log));
    let mut child = Command::new(exe)
        .args(&plan.args)
        .env(WORKER_VAR, n.to_string())
        .env(READY_FILE_VAR, &ready)
        .env("MOL_NODE_ID", &name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .spawn()?;
    let echo = plan.logs.echo;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(capture(out, log.clone(), echo.then_some(Stream::Out)));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(capture(err, log, echo.then_some(Stream::Err)));
    }
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
        started_at: SystemTime::now(),
        failures: 0,
    })
}

/// Sends `sig` to `pid`, if it is a real pid.
pub(crate) fn signal(pid: u32, sig: Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 0 {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// An exit status as words.
pub(crate) fn exit_words(status: ExitStatus) -> String {
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
