//! `moleculer pm <nodeID> monit`: a live view of each worker's CPU, memory and calls per
//! second, refreshed every interval from the supervisor's `list` (CPU and calls are the change
//! since the last refresh, not averages since start).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::commands::Failure;
use crate::control_client::ask;
use crate::table::{duration_words, memory_words, render};
use crate::Cli;

/// What a worker had used at the previous refresh.
struct Seen {
    pid: u64,
    cpu_seconds: f64,
    calls: Option<u64>,
    at: Instant,
}

/// Refreshes every `interval` seconds, `count` times (or until Ctrl-C).
pub async fn run(cli: &Cli, node: &str, interval: f64, count: Option<u64>) -> Result<(), Failure> {
    if !(0.1..=3600.0).contains(&interval) {
        return Err(Failure::usage(
            "--interval takes seconds between 0.1 and 3600",
        ));
    }
    let interval = Duration::from_secs_f64(interval);
    let terminal = std::io::stdout().is_terminal() && !cli.json;
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut frames = 0u64;
    loop {
        let list = ask(node, &json!({ "cmd": "list" }), cli.wait()).await?;
        let now = Instant::now();
        let rows: Vec<Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| rates(w, &mut seen, now))
            .collect();
        if cli.json {
            println!("{}", Value::from(rows));
        } else {
            if terminal {
                // Clear the screen and go home, so the view stays in place.
                print!("\x1b[2J\x1b[H");
            }
            println!("{}\n", frame(node, &rows));
        }
        frames += 1;
        if count.is_some_and(|c| frames >= c) {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

/// One worker's row: CPU % and calls/s since the last refresh of the same process (on the
/// first refresh, CPU is the average since start and calls/s is unknown).
fn rates(worker: &Value, seen: &mut HashMap<String, Seen>, now: Instant) -> Value {
    let name = worker["worker"].as_str().unwrap_or_default().to_owned();
    let pid = worker["pid"].as_u64().unwrap_or(0);
    let cpu_seconds = worker["cpuSeconds"].as_f64().unwrap_or(0.0);
    let calls = worker["calls"].as_u64();
    let before = seen.get(&name).filter(|s| s.pid == pid && pid != 0);
    let (cpu, calls_per_s) = match before {
        Some(b) => {
            let dt = now.duration_since(b.at).as_secs_f64().max(0.001);
            let cpu = 100.0 * (cpu_seconds - b.cpu_seconds).max(0.0) / dt;
            let rate = calls
                .zip(b.calls)
                .map(|(c, p)| c.saturating_sub(p) as f64 / dt);
            (cpu, rate)
        }
        None => (worker["cpuPercent"].as_f64().unwrap_or(0.0), None),
    };
    seen.insert(
        name.clone(),
        Seen {
            pid,
            cpu_seconds,
            calls,
            at: now,
        },
    );
    json!({
        "worker": name, "pid": worker["pid"], "status": worker["status"],
        "uptimeSeconds": worker["uptimeSeconds"], "restarts": worker["restarts"],
        "cpuPercent": cpu, "memoryKiB": worker["memoryKiB"], "callsPerSecond": calls_per_s,
    })
}

fn frame(node: &str, rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["worker"].as_str().unwrap_or_default().to_owned(),
                r["pid"]
                    .as_u64()
                    .map_or_else(|| "-".into(), |p| p.to_string()),
                r["status"].as_str().unwrap_or_default().to_owned(),
                format!("{:.1}%", r["cpuPercent"].as_f64().unwrap_or(0.0)),
                memory_words(&r["memoryKiB"]),
                r["callsPerSecond"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |c| format!("{c:.0}")),
                r["restarts"].to_string(),
                duration_words(r["uptimeSeconds"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    format!(
        "{node}: {} workers (Ctrl-C to leave)\n{}",
        rows.len(),
        render(
            &["Worker", "PID", "Status", "CPU", "Memory", "Calls/s", "Restarts", "Uptime"],
            &cells
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_calls_are_rates_since_the_last_refresh_of_the_same_process() {
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        let w = |pid: u64, cpu: f64, calls: u64| {
            json!({"worker": "d-worker-1", "pid": pid, "cpuSeconds": cpu, "cpuPercent": 7.0,
                   "calls": calls, "status": "online", "memoryKiB": 2048, "restarts": 0,
                   "uptimeSeconds": 3})
        };
        let first = rates(&w(10, 1.0, 100), &mut seen, t0);
        assert_eq!(
            first["cpuPercent"], 7.0,
            "the first frame shows the average"
        );
        assert!(first["callsPerSecond"].is_null());
        let second = rates(&w(10, 1.5, 2100), &mut seen, t0 + Duration::from_secs(2));
        assert_eq!(second["cpuPercent"], 25.0);
        assert_eq!(second["callsPerSecond"], 1000.0);
        // A restarted worker (new pid) starts over.
        let third = rates(&w(11, 0.1, 5), &mut seen, t0 + Duration::from_secs(3));
        assert!(third["callsPerSecond"].is_null());
        let text = frame("d", &[second]);
        assert!(text.contains("1000") && text.contains("25.0%") && text.contains("2.0 MiB"));
    }
}
