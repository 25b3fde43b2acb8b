//! The demo node's services, shared by the `node` and `cluster` examples.

use std::sync::Arc;

use moleculer::prelude::*;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Pair {
    a: serde_json::Number,
    b: serde_json::Number,
}

impl Pair {
    fn floats(&self) -> (f64, f64) {
        (
            self.a.as_f64().unwrap_or(f64::NAN),
            self.b.as_f64().unwrap_or(f64::NAN),
        )
    }
}

/// `math.add` and `math.div`.
pub struct Math;

impl Math {
    /// Integers stay integers (`2 + 3` is `5`, as in JavaScript), otherwise floats.
    async fn add(self: Arc<Self>, _ctx: Context, p: Pair) -> Result<Value> {
        if let (Some(a), Some(b)) = (p.a.as_i64(), p.b.as_i64()) {
            if let Some(sum) = a.checked_add(b) {
                return Ok(json!(sum));
            }
        }
        let (a, b) = p.floats();
        Ok(json!(a + b))
    }

    async fn div(self: Arc<Self>, _ctx: Context, p: Pair) -> Result<Value> {
        let (a, b) = p.floats();
        if b == 0.0 {
            return Err(MoleculerError::client(
                "Division by zero",
                422,
                "DIVISION_BY_ZERO",
                json!({ "a": p.a, "b": p.b }),
            ));
        }
        Ok(json!(a / b))
    }
}

impl Service for Math {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("math")
            .action("add", Math::add)
            .action("div", Math::div)
    }
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

/// `greeter.hello`.
pub struct Greeter;

impl Service for Greeter {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("greeter").action(
            "hello",
            |_s: Arc<Self>, _ctx: Context, p: Name| async move { Ok(format!("Hello {}", p.name)) },
        )
    }
}

/// Handles `user.created` in group `mailer`; `mailer.received` returns what it got.
#[derive(Default)]
pub struct Mailer {
    received: Mutex<Vec<Value>>,
}

impl Service for Mailer {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("mailer")
            .event_def(
                EventDef::new("user.created", |s: Arc<Self>, ctx: Context| async move {
                    s.received.lock().push(ctx.params().clone());
                    Ok(())
                })
                .group("mailer"),
            )
            .raw_action("received", |s: Arc<Self>, _ctx: Context| async move {
                Ok(Value::from(s.received.lock().clone()))
            })
    }
}

/// `whoami.node`: which node answered (to show balancing).
pub struct WhoAmI;

impl Service for WhoAmI {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("whoami").raw_action("node", |_s: Arc<Self>, ctx: Context| async move {
            Ok(ctx.local_node_id().to_string())
        })
    }
}

#[derive(Deserialize)]
struct Relay {
    action: Option<String>,
    event: Option<String>,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    broadcast: bool,
}

/// `relay.call {action, params}` and `relay.emit {event, params, broadcast}`: this node calls or
/// emits on a caller's behalf (the interop suite drives Rust → Node.js traffic with it). The
/// caller's meta travels on, and the callee's meta and the relaying context's ids come back
/// in the reply.
pub struct RelayService;

impl Service for RelayService {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("relay")
            .action("call", |_s: Arc<Self>, ctx: Context, r: Relay| async move {
                let action = r.action.unwrap_or_default();
                let data = ctx.call(&action, r.params).await?;
                // The relaying context's ids, so a caller can check how its trace went on.
                let context = json!({
                    "id": &**ctx.id(), "parentID": ctx.parent_id(), "requestID": &**ctx.request_id(),
                    "level": ctx.level(), "tracing": ctx.tracing(),
                });
                Ok(json!({ "data": data, "meta": ctx.meta(), "context": context }))
            })
            .action("emit", |_s: Arc<Self>, ctx: Context, r: Relay| async move {
                let event = r.event.unwrap_or_default();
                if r.broadcast {
                    ctx.broadcast(&event, r.params).await?;
                } else {
                    ctx.emit(&event, r.params).await?;
                }
                Ok(true)
            })
    }
}

/// `cached.square {n}` → n·n, cached by `n` for 30 s when the node has a cacher;
/// `cached.profile {id, name}` (meta `tenant`) → the three, cached by `id`, `name` and
/// `#tenant`; `cached.runs` → how many times their handlers ran.
#[derive(Default)]
pub struct Cached {
    runs: std::sync::atomic::AtomicU64,
}

impl Cached {
    fn ran(&self) {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Service for Cached {
    fn schema(&self) -> ServiceSchema<Self> {
        let thirty = std::time::Duration::from_secs(30);
        ServiceSchema::new("cached")
            .action_def(
                ActionDef::raw("square", |s: Arc<Self>, ctx: Context| async move {
                    s.ran();
                    let n = ctx.params()["n"].as_i64().unwrap_or(0);
                    Ok::<Value, MoleculerError>(json!(n.saturating_mul(n)))
                })
                .cache(CacheOptions::keys(["n"]).ttl(thirty)),
            )
            .action_def(
                ActionDef::raw("profile", |s: Arc<Self>, ctx: Context| async move {
                    s.ran();
                    let p = ctx.params();
                    Ok::<Value, MoleculerError>(
                        json!({ "id": p["id"], "name": p["name"], "tenant": ctx.meta_get("tenant") }),
                    )
                })
                .cache(CacheOptions::keys(["id", "name", "#tenant"]).ttl(thirty)),
            )
            .raw_action("runs", |s: Arc<Self>, _ctx: Context| async move {
                Ok::<Value, MoleculerError>(json!(s.runs.load(std::sync::atomic::Ordering::Relaxed)))
            })
    }
}

/// Adds the demo services to a broker.
pub fn register(broker: &ServiceBroker) -> std::result::Result<(), moleculer::BrokerError> {
    broker.create_service(Math)?;
    broker.create_service(Greeter)?;
    broker.create_service(Mailer::default())?;
    broker.create_service(WhoAmI)?;
    broker.create_service(RelayService)?;
    broker.create_service(Cached::default())?;
    Ok(())
}

/// Logs to stderr (`RUST_LOG`, default `default_level`), in colour only on a terminal.
#[allow(dead_code)] // the cluster example's own process logs with it; nodes log through the runner
pub fn init_logging(default_level: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| default_level.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs a demo node through the runner: `moleculer.toml` (or `--config`), `MOL_*`, until
/// Ctrl-C or SIGTERM.
/// `log_level` applies when `RUST_LOG` is not set.
pub async fn run_node(log_level: &str) -> std::process::ExitCode {
    moleculer::runner::Runner::new()
        .name("demo node")
        .log_level(log_level)
        .setup(register)
        .run()
        .await
}
