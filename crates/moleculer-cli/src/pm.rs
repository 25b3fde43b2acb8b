//! `moleculer pm <nodeID> ...`: the workers of a supervisor on this machine, through its
//! control socket.

use std::time::Duration;

use serde_json::{json, Value};

use crate::commands::Failure;
use crate::control_client::ask;
use crate::table::{duration_words, memory_words, render};
use crate::{Cli, PmAction};

/// How long a reload may take before the CLI stops waiting (each worker has up to 30 s to
/// stop and 30 s to come up; this covers a few slow ones).
const RELOAD_WAIT: Duration = Duration::from_secs(300);

/// Runs one `pm` action against the supervisor of `node`.
pub async fn run(cli: &Cli, node: &str, action: &PmAction) -> Result<(), Failure> {
    let request = match action {
        PmAction::List => json!({ "cmd": "list" }),
        PmAction::Describe { target } => json!({ "cmd": "describe", "target": target }),
        PmAction::Reload => json!({ "cmd": "reload" }),
        PmAction::Restart { target } => json!({ "cmd": "restart", "target": target }),
        PmAction::Stop { target } => json!({ "cmd": "stop", "target": target }),
        PmAction::Start { target } => json!({ "cmd": "start", "target": target }),
        PmAction::Scale { size } => json!({ "cmd": "scale", "size": size }),
        PmAction::Logs {
            target,
            lines,
            follow,
        } => return crate::pm_logs::run(cli, node, target, *lines, *follow).await,
        PmAction::Monit { interval, count } => {
            return crate::pm_monit::run(cli, node, *interval, *count).await
        }
    };
    let wait = match action {
        PmAction::Reload => RELOAD_WAIT.max(cli.wait()),
        _ => cli.wait(),
    };
    let answer = ask(node, &request, wait).await?;
    match action {
        _ if cli.json => println!("{answer}"),
        PmAction::List => println!("{}", list_table(&answer)),
        PmAction::Describe { .. } => {
            for worker in answer.as_array().into_iter().flatten() {
                println!("{}\n", describe_table(worker));
            }
        }
        _ => println!("{answer}"),
    }
    Ok(())
}

fn pid_words(pid: &Value) -> String {
    pid.as_u64().map_or_else(|| "-".into(), |p| p.to_string())
}

fn list_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            vec![
                w["worker"].as_str().unwrap_or_default().to_owned(),
                pid_words(&w["pid"]),
                w["status"].as_str().unwrap_or_default().to_owned(),
                duration_words(w["uptimeSeconds"].as_f64().unwrap_or(0.0)),
                w["restarts"].to_string(),
                format!("{:.1}%", w["cpuPercent"].as_f64().unwrap_or(0.0)),
                memory_words(&w["memoryKiB"]),
            ]
        })
        .collect();
    render(
        &[
            "Worker", "PID", "Status", "Uptime", "Restarts", "CPU", "Memory",
        ],
        &rows,
    )
}

fn describe_table(w: &Value) -> String {
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let last_exit = match &w["lastExit"] {
        Value::Null => "-".to_owned(),
        exit => {
            let ago = exit["at"]
                .as_u64()
                .map(|at| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    duration_words(now.saturating_sub(at) as f64 / 1000.0)
                })
                .unwrap_or_default();
            format!("{} ({ago} ago)", text(&exit["status"]))
        }
    };
    let rows = vec![
        vec!["Worker".into(), text(&w["worker"])],
        vec!["Status".into(), text(&w["status"])],
        vec!["PID".into(), pid_words(&w["pid"])],
        vec![
            "Uptime".into(),
            duration_words(w["uptimeSeconds"].as_f64().unwrap_or(0.0)),
        ],
        vec!["Restarts".into(), text(&w["restarts"])],
        vec!["Last exit".into(), last_exit],
        vec![
            "CPU".into(),
            format!(
                "{:.1}% ({:.2} s in all)",
                w["cpuPercent"].as_f64().unwrap_or(0.0),
                w["cpuSeconds"].as_f64().unwrap_or(0.0)
            ),
        ],
        vec!["Memory".into(), memory_words(&w["memoryKiB"])],
        vec!["Calls served".into(), text(&w["calls"])],
        vec!["Metrics".into(), text(&w["metrics"])],
        vec!["Log file".into(), text(&w["logFile"])],
        vec!["Command".into(), text(&w["command"])],
    ];
    render(&["Field", "Value"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_every_field_a_person_looks_for() {
        let text = describe_table(&json!({
            "worker": "demo-worker-2", "status": "online", "pid": 42, "uptimeSeconds": 65,
            "restarts": 1, "lastExit": {"status": "killed by signal 9", "at": 0},
            "cpuPercent": 1.5, "cpuSeconds": 0.98, "memoryKiB": 10240, "calls": 1234,
            "logFile": "/tmp/l/demo-worker-2.log", "command": "/bin/node --instances 2",
        }));
        for expected in [
            "demo-worker-2",
            "online",
            "1 m 05 s",
            "killed by signal 9",
            "1.5% (0.98 s in all)",
            "10.0 MiB",
            "1234",
            "/tmp/l/demo-worker-2.log",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }
}
