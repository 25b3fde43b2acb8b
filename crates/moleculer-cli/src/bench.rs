//! `moleculer bench`: calls an action with a fixed number of calls in flight for a while, then
//! reports throughput, latency percentiles and a histogram.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use moleculer_core::CallOptions;
use serde_json::{json, Value};

/// Upper bounds of the histogram buckets, in milliseconds (the last one is open).
const BUCKETS_MS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
];

/// What a run measured.
pub struct Report {
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Latencies of the successful calls, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
}

/// Runs `concurrency` callers for `time`; a progress line goes to stderr unless `quiet`.
pub async fn run(
    broker: &ServiceBroker,
    action: &str,
    params: Value,
    opts: CallOptions,
    time: Duration,
    concurrency: usize,
    quiet: bool,
) -> Report {
    let started = Instant::now();
    let deadline = started + time;
    let done = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (broker, action, params, opts, done) = (
                broker.clone(),
                action.to_owned(),
                params.clone(),
                opts.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut errors, mut first_error) = (0u64, None);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match broker
                        .call_with(&action, params.clone(), opts.clone())
                        .await
                    {
                        Ok(_) => latencies.push(t.elapsed().as_micros() as u64),
                        Err(err) => {
                            errors += 1;
                            first_error
                                .get_or_insert_with(|| format!("{}: {}", err.name, err.message));
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let progress = (!quiet).then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let share = (started.elapsed().as_secs_f64() / time.as_secs_f64()).min(1.0);
                let filled = (share * 30.0) as usize;
                eprint!(
                    "\r[{}{}] {:>5.1} s  {} calls",
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    started.elapsed().as_secs_f64(),
                    done.load(Ordering::Relaxed)
                );
                let _ = std::io::stderr().flush();
            }
        })
    });
    let mut report = Report {
        calls: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for caller in callers {
        if let Ok((latencies, errors, first_error)) = caller.await {
            report.latencies_us.extend(latencies);
            report.errors += errors;
            report.first_error = report.first_error.or(first_error);
        }
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    report.calls = report.latencies_us.len() as u64 + report.errors;
    report
}

impl Report {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1] as f64 / 1000.0
    }

    /// Calls per second (successful ones).
    pub fn per_second(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// (upper bound in ms, or `None` for the open bucket; count).
    pub fn histogram(&self) -> Vec<(Option<f64>, u64)> {
        let mut counts = vec![0u64; BUCKETS_MS.len() + 1];
        for us in &self.latencies_us {
            let ms = *us as f64 / 1000.0;
            let i = BUCKETS_MS
                .iter()
                .position(|b| ms <= *b)
                .unwrap_or(BUCKETS_MS.len());
            counts[i] += 1;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| (BUCKETS_MS.get(i).copied(), c))
            .collect()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "calls": self.calls,
            "errors": self.errors,
            "firstError": self.first_error,
            "seconds": self.elapsed.as_secs_f64(),
            "perSecond": self.per_second(),
            "latencyMs": {
                "p50": self.percentile_ms(50.0), "p90": self.percentile_ms(90.0),
                "p99": self.percentile_ms(99.0), "max": self.percentile_ms(100.0),
            },
            "histogram": self.histogram().into_iter().filter(|(_, c)| *c > 0)
                .map(|(b, c)| json!({ "upToMs": b, "count": c })).collect::<Vec<_>>(),
        })
    }

    /// The report for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} calls in {:.2} s: {:.0} calls/s, {} errors\nlatency: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
            self.calls,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.errors,
            self.percentile_ms(50.0),
            self.percentile_ms(90.0),
            self.percentile_ms(99.0),
            self.percentile_ms(100.0)
        );
        if let Some(err) = &self.first_error {
            out.push_str(&format!("first error: {err}\n"));
        }
        let histogram = self.histogram();
        let most = histogram.iter().map(|(_, c)| *c).max().unwrap_or(0).max(1);
        for (bound, count) in histogram.into_iter().filter(|(_, c)| *c > 0) {
            let label = bound.map_or_else(|| "> 1000 ms".to_owned(), |b| format!("<= {b} ms"));
            let bar = "#".repeat(((count as f64 / most as f64) * 40.0).ceil() as usize);
            out.push_str(&format!("{label:>11}  {count:>8}  {bar}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_buckets() {
        let report = Report {
            calls: 5,
            errors: 1,
            first_error: None,
            elapsed: Duration::from_secs(1),
            latencies_us: vec![100, 200, 300, 900, 30_000],
        };
        assert_eq!(report.percentile_ms(50.0), 0.3);
        assert_eq!(report.percentile_ms(100.0), 30.0);
        assert_eq!(report.per_second(), 5.0);
        let h = report.histogram();
        assert_eq!(h[0], (Some(0.1), 1));
        assert_eq!(h[1], (Some(0.25), 1));
        assert_eq!(h[2], (Some(0.5), 1));
        assert_eq!(h[3], (Some(1.0), 1));
        assert_eq!(h[8], (Some(50.0), 1));
        let json = report.to_json();
        assert_eq!(json["latencyMs"]["max"], 30.0);
        assert_eq!(json["histogram"].as_array().unwrap().len(), 5);
    }
}
