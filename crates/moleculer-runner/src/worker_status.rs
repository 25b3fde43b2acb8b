//! What a running node says of itself in a status file, rewritten every second: its node id,
//! whether its transporter is connected, and the number of calls it has served. A worker's
//! status file is its ready file (a reload waits for it to appear, `moleculer pm monit` turns
//! the counts into calls per second); a lone node writes one for `--healthcheck`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::{ActionHandler, ActionInfo, Middleware};
use serde_json::{json, Value};

/// How often a worker rewrites its status.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Counts the calls this node serves (local actions, whoever called them).
#[derive(Clone, Default)]
pub(crate) struct CallCounter {
    served: Arc<AtomicU64>,
}

impl CallCounter {
    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Middleware for CallCounter {
    fn name(&self) -> &str {
        "WorkerCallCounter"
    }

    fn local_action(&self, next: ActionHandler, _action: &ActionInfo) -> ActionHandler {
        let served = self.served.clone();
        Arc::new(move |ctx| {
            served.fetch_add(1, Ordering::Relaxed);
            next(ctx)
        })
    }
}

/// Writes the status once now, then every second until the task is dropped.
pub(crate) fn report(
    file: PathBuf,
    node_id: String,
    counter: CallCounter,
    metrics: Option<String>,
    connected: impl Fn() -> bool + Send + 'static,
) {
    let write = move |calls: u64| {
        let status = json!({ "nodeID": node_id, "connected": connected(), "calls": calls, "metrics": metrics });
        // Write and rename, so the supervisor never reads half a file.
        let mut partial = file.as_os_str().to_owned();
        partial.push(".tmp");
        std::fs::write(&partial, status.to_string()).and_then(|()| std::fs::rename(&partial, &file))
    };
    if let Err(err) = write(counter.served()) {
        tracing::warn!("cannot write the ready file: {err}");
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if write(counter.served()).is_err() {
                return;
            }
        }
    });
}

/// A worker's last status, if it has written one.
pub(crate) fn read(file: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}
