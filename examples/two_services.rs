//! Two services on one broker calling each other, plus a balanced event.
//!
//! Run with: `cargo run --example two_services` (no server needed).
//!
//! `stats.summary` calls `math.add` and `math.div`; `math.describe` calls back into
//! `stats.count`; every `math.add` emits `math.added`, which `stats` counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moleculer::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Pair {
    a: f64,
    b: f64,
}

/// Arithmetic.
struct Math;

impl Math {
    async fn add(self: Arc<Self>, ctx: Context, p: Pair) -> Result<f64> {
        let sum = p.a + p.b;
        ctx.emit("math.added", json!({ "sum": sum })).await?;
        Ok(sum)
    }

    async fn div(self: Arc<Self>, _ctx: Context, p: Pair) -> Result<f64> {
        if p.b == 0.0 {
            return Err(MoleculerError::client(
                "Division by zero",
                422,
                "DIVISION_BY_ZERO",
                json!({ "a": p.a }),
            ));
        }
        Ok(p.a / p.b)
    }

    async fn describe(self: Arc<Self>, ctx: Context, _p: Value) -> Result<String> {
        let count = ctx.call("stats.count", Value::Null).await?;
        Ok(format!("math has added {count} times so far"))
    }
}

impl Service for Math {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("math")
            .action("add", Math::add)
            .action("div", Math::div)
            .action("describe", Math::describe)
    }
}

/// Uses math, and counts `math.added` events.
#[derive(Default)]
struct Stats {
    added: AtomicU64,
}

#[derive(Deserialize)]
struct Numbers {
    values: Vec<f64>,
}

impl Stats {
    async fn summary(self: Arc<Self>, ctx: Context, p: Numbers) -> Result<Value> {
        let mut total = 0.0;
        for v in &p.values {
            total = ctx
                .call("math.add", json!({ "a": total, "b": v }))
                .await?
                .as_f64()
                .unwrap_or(total);
        }
        let mean = ctx
            .call("math.div", json!({ "a": total, "b": p.values.len() }))
            .await?;
        Ok(json!({ "total": total, "mean": mean }))
    }

    async fn count(self: Arc<Self>, _ctx: Context, _p: Value) -> Result<u64> {
        Ok(self.added.load(Ordering::Relaxed))
    }

    async fn on_added(self: Arc<Self>, _ctx: Context) -> Result<()> {
        self.added.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Service for Stats {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("stats")
            .dependencies(["math"])
            .action("summary", Stats::summary)
            .action("count", Stats::count)
            .event("math.added", Stats::on_added)
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let broker = ServiceBroker::builder().node_id("example-node").build()?;
    broker.create_service(Math)?;
    broker.create_service(Stats::default())?;
    broker.start().await?;

    let summary = broker
        .call("stats.summary", json!({ "values": [3, 4, 5] }))
        .await?;
    println!("stats.summary {{values: [3, 4, 5]}} -> {summary}");
    println!(
        "math.describe -> {}",
        broker.call("math.describe", Value::Null).await?
    );
    match broker.call("math.div", json!({ "a": 1, "b": 0 })).await {
        Err(err) => println!(
            "math.div {{a: 1, b: 0}} -> {} (code {}, type {})",
            err.message,
            err.code,
            err.kind()
        ),
        Ok(v) => println!("math.div unexpectedly answered {v}"),
    }
    match broker.call("math.add", json!({ "a": 1 })).await {
        Err(err) => println!("math.add {{a: 1}} -> {} ({})", err.message, err.name),
        Ok(v) => println!("math.add unexpectedly answered {v}"),
    }
    let services = broker
        .call("$node.services", json!({ "skipInternal": true }))
        .await?;
    let names: Vec<&str> = services
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["fullName"].as_str())
        .collect();
    println!("$node.services -> {names:?}");
    broker.stop().await;
    Ok(())
}
