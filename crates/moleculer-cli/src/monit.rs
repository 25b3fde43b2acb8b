//! `moleculer monit`: a live view of every node's metrics, read through `$node.metrics` (so
//! Moleculer JS nodes with metrics on show too): requests served per second, errors per
//! second, mean time, requests in progress, CPU and memory. Rates are the change since the
//! previous refresh; the first frame has none yet.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use moleculer_core::CallOptions;
use serde_json::{json, Value};

use crate::commands::{settle, Failure};
use crate::table::{memory_words, render};
use crate::Cli;

/// The metrics `monit` reads.
const INCLUDES: [&str; 6] = [
    "moleculer.request.total",
    "moleculer.request.error.total",
    "moleculer.request.time",
    "moleculer.request.active",
    "process.cpu.utilization",
    "process.memory.rss",
];

/// One node's totals at one refresh.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Reading {
    /// Requests it served (local ones: calls it made to others are counted where they ran).
    served: f64,
    errors: f64,
    /// Sum and count of the timed requests, in ms.
    time_sum: f64,
    time_count: f64,
    active: f64,
    cpu: Option<f64>,
    rss: Option<f64>,
}

/// Sums a `$node.metrics` listing (Rust or JS) into a reading.
pub(crate) fn reading(list: &Value) -> Reading {
    let mut r = Reading::default();
    for metric in list.as_array().into_iter().flatten() {
        let values = metric["values"].as_array().into_iter().flatten();
        let local =
            values.filter(|v| v["labels"]["type"] == "local" || v["labels"]["type"].is_null());
        let name = metric["name"].as_str().unwrap_or_default();
        for v in local {
            let value = v["value"].as_f64().unwrap_or(0.0);
            match name {
                "moleculer.request.total" => r.served += value,
                "moleculer.request.error.total" => r.errors += value,
                "moleculer.request.active" => r.active += value,
                "moleculer.request.time" => {
                    r.time_sum += v["sum"].as_f64().unwrap_or(0.0);
                    r.time_count += v["count"].as_f64().unwrap_or(0.0);
                }
                "process.cpu.utilization" => r.cpu = Some(value),
                "process.memory.rss" => r.rss = Some(value),
                _ => {}
            }
        }
    }
    r
}

/// A frame's row for one node: its reading against the previous one.
pub(crate) fn row(node: &str, now: &Reading, before: Option<(&Reading, f64)>) -> Value {
    let rate = |f: fn(&Reading) -> f64| before.map(|(b, secs)| ((f(now) - f(b)) / secs).max(0.0));
    // The mean over the interval, from the timed calls in it.
    let mean = before.and_then(|(b, _)| {
        let count = now.time_count - b.time_count;
        (count > 0.0).then(|| (now.time_sum - b.time_sum) / count)
    });
    json!({
        "node": node,
        "requestsPerSecond": rate(|r| r.served),
        "errorsPerSecond": rate(|r| r.errors),
        "meanMs": mean,
        "active": now.active,
        "cpuPercent": now.cpu,
        "memoryBytes": now.rss,
    })
}

fn cell(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// The table of one frame.
pub(crate) fn frame(rows: &[Value]) -> String {
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            if let Some(why) = r["unavailable"].as_str() {
                return vec![
                    r["node"].as_str().unwrap_or_default().to_owned(),
                    why.to_owned(),
                ];
            }
            vec![
                r["node"].as_str().unwrap_or_default().to_owned(),
                cell(&r["requestsPerSecond"], 0),
                cell(&r["errorsPerSecond"], 0),
                cell(&r["meanMs"], 2),
                cell(&r["active"], 0),
                r["cpuPercent"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |c| format!("{c:.0}%")),
                r["memoryBytes"].as_f64().map_or_else(
                    || "-".into(),
                    |b| memory_words(&json!((b / 1024.0).round())),
                ),
            ]
        })
        .collect();
    render(
        &[
            "Node", "Req/s", "Err/s", "Mean ms", "Active", "CPU", "Memory",
        ],
        &lines,
    )
}

/// Refreshes every `interval` seconds, `count` times (or until Ctrl-C).
pub async fn run(
    cli: &Cli,
    broker: &ServiceBroker,
    interval: f64,
    count: Option<u64>,
) -> Result<(), Failure> {
    if !(0.1..=3600.0).contains(&interval) {
        return Err(Failure::usage(
            "--interval takes seconds between 0.1 and 3600",
        ));
    }
    let interval = Duration::from_secs_f64(interval);
    settle(broker, cli.wait()).await;
    let me = broker.node_id().to_string();
    let terminal = std::io::stdout().is_terminal() && !cli.json;
    let mut seen: HashMap<String, (Reading, Instant)> = HashMap::new();
    let mut frames = 0u64;
    loop {
        let opts = CallOptions::default().timeout(cli.wait());
        let outcomes = broker
            .call_all("$node.metrics", json!({ "includes": INCLUDES }), &opts)
            .await
            .map_err(|e| Failure::failed(format!("$node.metrics: {}", e.message)))?;
        let now = Instant::now();
        let mut rows: Vec<Value> = outcomes
            .into_iter()
            .filter(|o| o.node_id.as_str() != me)
            .map(|o| {
                let node = o.node_id.to_string();
                match o.result {
                    Ok(list) => {
                        let reading = reading(&list);
                        let before = seen
                            .get(&node)
                            .map(|(r, at)| (r, now.duration_since(*at).as_secs_f64()));
                        let row = row(&node, &reading, before);
                        seen.insert(node, (reading, now));
                        row
                    }
                    Err(err) if err.kind.as_deref() == Some("METRICS_DISABLED") => {
                        json!({ "node": node, "unavailable": "metrics are off on this node" })
                    }
                    Err(err) => json!({ "node": node, "unavailable": err.message }),
                }
            })
            .collect();
        rows.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
        if cli.json {
            println!("{}", Value::from(rows));
        } else {
            if terminal {
                // Clear the screen and go home, so the view stays in place.
                print!("\x1b[2J\x1b[H");
            }
            println!("{}\n", frame(&rows));
        }
        frames += 1;
        if count.is_some_and(|c| frames >= c) {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_sums_into_rates_and_a_mean() {
        let list = |served: f64, sum: f64, count: f64| {
            json!([
                { "name": "moleculer.request.total", "values": [
                    { "labels": { "type": "local", "action": "a" }, "value": served },
                    { "labels": { "type": "remote", "action": "b" }, "value": 1000.0 },
                ]},
                { "name": "moleculer.request.error.total", "values": [
                    { "labels": { "type": "local", "errorCode": "500" }, "value": 2.0 },
                ]},
                { "name": "moleculer.request.time", "values": [
                    { "labels": { "type": "local" }, "count": count, "sum": sum, "buckets": {} },
                ]},
                { "name": "process.cpu.utilization", "values": [{ "labels": {}, "value": 12.0 }] },
                { "name": "process.memory.rss", "values": [{ "labels": {}, "value": 10485760.0 }] },
            ])
        };
        let before = reading(&list(100.0, 50.0, 10.0));
        let now = reading(&list(300.0, 250.0, 30.0));
        assert_eq!(now.served, 300.0, "remote calls are counted where they ran");
        let r = row("n1", &now, Some((&before, 2.0)));
        assert_eq!(r["requestsPerSecond"], 100.0);
        assert_eq!(r["errorsPerSecond"], 0.0);
        assert_eq!(r["meanMs"], 10.0, "200 ms over 20 timed calls");
        assert_eq!(r["cpuPercent"], 12.0);
        let first = row("n1", &now, None);
        assert!(
            first["requestsPerSecond"].is_null(),
            "no rate before a second frame"
        );
        let text = frame(&[
            r,
            json!({ "node": "js-1", "unavailable": "metrics are off on this node" }),
        ]);
        assert!(
            text.contains("n1") && text.contains("100") && text.contains("10.00"),
            "{text}"
        );
        assert!(text.contains("metrics are off on this node"), "{text}");
    }
}
