//! Shared pieces of the benchmark binaries.

use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use serde_json::Value;

/// Calls per second with latency percentiles.
#[derive(Debug, Clone, Copy)]
pub struct CallStats {
    /// Calls per second.
    pub per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// Calls `action` from `in_flight` concurrent sequential callers for `measure` (after `warm_up`
/// calls), and reports throughput and latency.
pub async fn measure_calls(
    caller: &ServiceBroker,
    action: &str,
    params: &Value,
    in_flight: usize,
    warm_up: usize,
    measure: Duration,
) -> CallStats {
    for _ in 0..warm_up {
        caller
            .call(action, params.clone())
            .await
            .expect("warm-up call");
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (caller, params, action) = (caller.clone(), params.clone(), action.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while start.elapsed() < measure {
                let t = Instant::now();
                caller.call(&action, params.clone()).await.expect("call");
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("caller task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    CallStats {
        per_second: all.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes (tokio's clock).
pub async fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
