//! The process manager: the supervisor's answers to `moleculer pm` (through the control
//! socket): list and describe workers, restart, stop, start and scale them, and say where
//! their logs are. Reloads are run by the supervisor itself, which owns the exit channel.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitStatus;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::control::usage;
use crate::worker::{exit_words, ready_file, signal, spawn, worker_name, Exits, Plan, Worker};
use crate::worker_status;

/// What the control socket changed: workers stopped or being restarted on request, restart
/// counts, the size of the group.
#[derive(Default)]
pub(crate) struct Manager {
    /// Workers stopped on request: not restarted until `start`.
    pub stopped: BTreeSet<usize>,
    /// Workers stopped by `restart`: started again as soon as they exit.
    pub restarting: BTreeSet<usize>,
    /// Restarts per worker, whatever their cause.
    pub restarts: BTreeMap<usize, u32>,
    /// Highest worker number ever run (for cleanup after a scale-down).
    pub highest: usize,
    /// How and when each worker last exited.
    last_exit: BTreeMap<usize, (String, SystemTime)>,
}

impl Manager {
    /// Notes that worker `n` exited.
    pub fn exited(&mut self, n: usize, status: ExitStatus) {
        self.last_exit
            .insert(n, (exit_words(status), SystemTime::now()));
    }

    /// Notes that a reload replaced these workers (each counts as a restart).
    pub fn reloaded(&mut self, numbers: &[usize]) {
        for n in numbers {
            *self.restarts.entry(*n).or_default() += 1;
        }
    }

    /// Answers one control request.
    pub fn handle(
        &mut self,
        command: &Value,
        plan: &Plan,
        workers: &mut BTreeMap<usize, Worker>,
        pending: &mut BTreeMap<usize, (Instant, u32)>,
        exits: &Exits,
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
            "describe" | "logs" => {
                let chosen = numbers(target, known);
                if chosen.is_empty() {
                    return json!({ "error": format!("no worker '{target}'") });
                }
                let describe = command["cmd"] == "describe";
                Value::from(
                    chosen
                        .iter()
                        .map(|n| {
                            if describe {
                                self.describe_worker(
                                    plan,
                                    *n,
                                    workers.get(n),
                                    pending.contains_key(n),
                                )
                            } else {
                                let name = worker_name(&plan.base, *n);
                                json!({ "worker": name, "file": plan.logs.file_of(&name) })
                            }
                        })
                        .collect::<Vec<_>>(),
                )
            }
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
                json!({ "error": format!("unknown command '{other}' (list, describe, logs, restart, reload, stop, start, scale)") })
            }
        }
    }

    /// Everything known of worker `n`: `list` shows the first columns, `describe` all.
    fn describe_worker(
        &self,
        plan: &Plan,
        n: usize,
        worker: Option<&Worker>,
        waiting: bool,
    ) -> Value {
        let name = worker_name(&plan.base, n);
        let restarts = self.restarts.get(&n).copied().unwrap_or(0);
        let last_exit = self
            .last_exit
            .get(&n)
            .map(|(how, at)| json!({ "status": how, "at": unix_ms(*at) }));
        let mut described = json!({
            "worker": name, "number": n, "pid": null,
            "status": if waiting { "restarting" } else { "stopped" },
            "uptimeSeconds": 0, "startedAt": null, "restarts": restarts, "cpuPercent": 0,
            "cpuSeconds": 0, "memoryKiB": 0, "calls": null, "lastExit": last_exit,
            "logFile": plan.logs.file_of(&name),
            "command": std::env::current_exe().ok().map(|exe| {
                std::iter::once(exe.into_os_string())
                    .chain(plan.args.iter().cloned())
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        });
        if let Some(w) = worker {
            let uptime = w.started.elapsed().as_secs_f64();
            let (cpu_s, rss_kib) = usage(w.pid).unwrap_or((0.0, 0));
            let status = worker_status::read(&ready_file(n));
            described["pid"] = w.pid.into();
            described["status"] = if status.is_some() {
                "online"
            } else {
                "starting"
            }
            .into();
            described["uptimeSeconds"] = uptime.into();
            described["startedAt"] = unix_ms(w.started_at).into();
            described["cpuSeconds"] = cpu_s.into();
            described["cpuPercent"] = (100.0 * cpu_s / uptime.max(0.001)).into();
            described["memoryKiB"] = rss_kib.into();
            described["calls"] = status.as_ref().map_or(Value::Null, |s| s["calls"].clone());
            described["metrics"] = status.map_or(Value::Null, |s| s["metrics"].clone());
        }
        described
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
