//! Joining the cluster and running one command there.

use std::time::{Duration, Instant};

use moleculer_broker::ServiceBroker;
use moleculer_core::{CallOptions, EmitOptions, MoleculerError};
use serde_json::{json, Value};

use crate::table::render;
use crate::{Cli, Command};

/// Why the command failed: the text for stderr and the exit code.
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            message: format!("error: {}", message.into()),
            code: 2,
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self {
            message: format!("error: {}", message.into()),
            code: 1,
        }
    }

    /// A call's error, with what a script needs to tell errors apart.
    fn call(err: &MoleculerError) -> Self {
        Self {
            message: format!(
                "{}: {}\n  code: {}\n  type: {}\n  node: {}\n  data: {}",
                err.name,
                err.message,
                err.code,
                err.kind.as_deref().unwrap_or("-"),
                err.node_id.as_deref().unwrap_or("-"),
                err.data
            ),
            code: 1,
        }
    }
}

/// The configuration with the flags laid over it, and this run's own node id.
fn environment(cli: &Cli) -> Vec<(String, String)> {
    let mut overrides: Vec<(&str, Option<&String>)> = vec![
        ("MOL_TRANSPORTER", cli.transporter.as_ref()),
        ("MOL_NAMESPACE", cli.namespace.as_ref()),
        ("MOL_SERIALIZER", cli.serializer.as_ref()),
        ("MOL_DISCOVERER", cli.discoverer.as_ref()),
    ];
    let node_id = format!("cli-{}", std::process::id());
    overrides.push(("MOL_NODE_ID", Some(&node_id)));
    let set: Vec<(String, String)> = overrides
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.clone())))
        .collect();
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .collect();
    env.extend(set);
    env
}

/// Builds and starts this run's broker, and waits until its transporter is connected.
pub async fn join(cli: &Cli) -> Result<ServiceBroker, Failure> {
    let config = moleculer_runner::config_file(cli.config.as_deref()).map_err(Failure::usage)?;
    let options = moleculer_runner::load_options(Some(&config), environment(cli))
        .map_err(|e| Failure::usage(e.to_string()))?;
    let Some(transporter) = options.transporter.clone() else {
        return Err(Failure::usage(
            "no transporter: pass --transporter, or set `transporter` in moleculer.toml or MOL_TRANSPORTER",
        ));
    };
    let broker = moleculer_runner::builder_for(&options)
        .and_then(|b| b.build().map_err(Into::into))
        .map_err(|e| Failure::usage(e.to_string()))?;
    let wait = cli.wait();
    match tokio::time::timeout(wait, broker.start()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            return Err(Failure::failed(format!(
                "cannot join through {transporter}: {err}"
            )))
        }
        Err(_) => {
            return Err(Failure::failed(format!(
                "cannot join through {transporter} within {} ms",
                wait.as_millis()
            )))
        }
    }
    let deadline = Instant::now() + wait;
    while !broker.is_connected() {
        if Instant::now() > deadline {
            broker.stop().await;
            return Err(Failure::failed(format!(
                "cannot reach the transporter {transporter} within {} ms",
                wait.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(broker)
}

/// Waits until the set of known nodes has not changed for a moment (peers answer a newcomer at
/// once, so this takes a fraction of a second, not a heartbeat period), at most `wait`.
pub(crate) async fn settle(broker: &ServiceBroker, wait: Duration) {
    let quiet = Duration::from_millis(250);
    let deadline = Instant::now() + wait;
    let count = || broker.with_registry(|r| r.nodes().list().len());
    let mut last = count();
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure::usage(format!("{what} are not valid JSON: {e}")))
}

async fn internal(broker: &ServiceBroker, action: &str, params: Value) -> Result<Value, Failure> {
    broker
        .call(action, params)
        .await
        .map_err(|e| Failure::failed(format!("{action}: {}", e.message)))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_json(v: &Value) {
    println!("{v}");
}

/// Runs one command on the joined broker (the REPL runs each of its lines through here).
pub async fn dispatch(cli: &Cli, command: &Command, broker: &ServiceBroker) -> Result<(), Failure> {
    let me = broker.node_id().to_string();
    let not_me = |v: &Value| v["id"] != me.as_str() && v["nodeID"] != me.as_str();
    match command {
        Command::Nodes => {
            settle(broker, cli.wait()).await;
            let list = internal(broker, "$node.list", json!({ "withServices": true })).await?;
            let nodes: Vec<Value> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| not_me(n))
                .cloned()
                .collect();
            if cli.json {
                print_json(&Value::from(nodes));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    let services = n["services"].as_array().map_or(0, |s| {
                        s.iter()
                            .filter(|s| !text(&s["name"]).starts_with('$'))
                            .count()
                    });
                    vec![
                        text(&n["id"]),
                        services.to_string(),
                        text(&n["client"]["version"]),
                        text(&n["client"]["type"]),
                        text(&n["ipList"][0]),
                        if n["available"] == true {
                            "ONLINE"
                        } else {
                            "OFFLINE"
                        }
                        .into(),
                        n["cpu"]
                            .as_f64()
                            .map(|c| format!("{c:.0}%"))
                            .unwrap_or_else(|| "?".into()),
                    ]
                })
                .collect();
            println!(
                "{}",
                render(
                    &["Node ID", "Services", "Version", "Client", "IP", "State", "CPU"],
                    &rows
                )
            );
        }
        Command::Services => {
            settle(broker, cli.wait()).await;
            let list = internal(
                broker,
                "$node.services",
                json!({ "skipInternal": true, "withActions": true, "withEvents": true }),
            )
            .await?;
            let services: Vec<Value> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let mut s = s.clone();
                    if let Some(nodes) = s["nodes"].as_array_mut() {
                        nodes.retain(|n| *n != me.as_str());
                    }
                    s
                })
                .filter(|s| s["nodes"].as_array().is_some_and(|n| !n.is_empty()))
                .collect();
            if cli.json {
                print_json(&Value::from(services));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = services
                .iter()
                .map(|s| {
                    vec![
                        text(&s["name"]),
                        text(&s["version"]),
                        if s["available"] == true {
                            "OK"
                        } else {
                            "FAILED"
                        }
                        .into(),
                        s["actions"].as_object().map_or(0, |a| a.len()).to_string(),
                        s["events"].as_object().map_or(0, |e| e.len()).to_string(),
                        s["nodes"].as_array().map_or(0, |n| n.len()).to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                render(
                    &["Service", "Version", "State", "Actions", "Events", "Nodes"],
                    &rows
                )
            );
        }
        Command::Actions | Command::Events => {
            settle(broker, cli.wait()).await;
            let action = if matches!(command, Command::Actions) {
                "$node.actions"
            } else {
                "$node.events"
            };
            let list = internal(
                broker,
                action,
                json!({ "skipInternal": true, "withEndpoints": true }),
            )
            .await?;
            let items: Vec<Value> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let mut a = a.clone();
                    if let Some(eps) = a["endpoints"].as_array_mut() {
                        eps.retain(|e| e["nodeID"] != me.as_str());
                    }
                    a
                })
                .filter(|a| a["endpoints"].as_array().is_some_and(|e| !e.is_empty()))
                .collect();
            if cli.json {
                print_json(&Value::from(items));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|a| {
                    let eps = a["endpoints"].as_array().cloned().unwrap_or_default();
                    let up = eps
                        .iter()
                        .filter(|e| e["available"] == true && e["state"] == true)
                        .count();
                    vec![
                        text(&a["name"]),
                        eps.len().to_string(),
                        if up > 0 { "OK" } else { "FAILED" }.into(),
                    ]
                })
                .collect();
            let first = if matches!(command, Command::Actions) {
                "Action"
            } else {
                "Event"
            };
            println!("{}", render(&[first, "Nodes", "State"], &rows));
        }
        Command::Call {
            action,
            params,
            meta,
            node,
            timeout,
        } => {
            let params = parse_json("the parameters", params)?;
            let mut opts = CallOptions::default();
            if let Some(meta) = meta {
                match parse_json("the meta", meta)? {
                    Value::Object(map) => opts = opts.meta(map),
                    _ => return Err(Failure::usage("the meta must be a JSON object")),
                }
            }
            if let Some(node) = node {
                opts = opts.node_id(node.as_str());
            }
            let limit = timeout.map(Duration::from_millis).unwrap_or(cli.wait());
            opts = opts.timeout(limit);
            // The service may not be known yet: wait for it (not for a heartbeat period).
            if let Some((service, _)) = action.rsplit_once('.') {
                let _ = broker.wait_for_services(&[service], Some(cli.wait())).await;
            }
            match broker.call_with(action, params, opts).await {
                Ok(result) if cli.json => print_json(&result),
                Ok(result) => println!(
                    "{}",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                ),
                Err(err) => return Err(Failure::call(&err)),
            }
        }
        Command::Emit { event, payload } | Command::Broadcast { event, payload } => {
            let payload = parse_json("the payload", payload)?;
            settle(broker, cli.wait()).await;
            let sent = if matches!(command, Command::Emit { .. }) {
                broker
                    .emit_with(event, payload, EmitOptions::default())
                    .await
            } else {
                broker
                    .broadcast_with(event, payload, EmitOptions::default())
                    .await
            };
            sent.map_err(|e| Failure::call(&e))?;
            if cli.json {
                print_json(&json!({ "event": event, "sent": true }));
            } else {
                println!("'{event}' sent");
            }
        }
        Command::Ping { node } => {
            settle(broker, cli.wait()).await;
            let targets: Vec<String> = match node {
                Some(node) => vec![node.clone()],
                None => broker.with_registry(|r| {
                    r.nodes()
                        .list()
                        .into_iter()
                        .filter(|n| n.available && !n.local)
                        .map(|n| n.id.to_string())
                        .collect()
                }),
            };
            let mut answers = Vec::new();
            let mut failed = Vec::new();
            for target in targets {
                match broker.ping(&target, cli.wait()).await {
                    Ok(pong) => answers.push(json!({ "node": target, "ms": pong.elapsed_ms, "timeDiffMs": pong.time_diff_ms })),
                    Err(err) => failed.push(format!("{target}: {}", err.message)),
                }
            }
            if cli.json {
                print_json(&Value::from(answers));
            } else {
                for a in &answers {
                    println!(
                        "pong from {}: {:.2} ms (clock difference {:.0} ms)",
                        text(&a["node"]),
                        a["ms"].as_f64().unwrap_or(0.0),
                        a["timeDiffMs"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            if !failed.is_empty() {
                return Err(Failure::failed(format!(
                    "no pong from {}",
                    failed.join("; ")
                )));
            }
        }
        Command::Bench {
            action,
            params,
            time,
            concurrency,
            node,
        } => {
            let params = parse_json("the parameters", params)?;
            if !(time.is_finite() && *time > 0.0) {
                return Err(Failure::usage(
                    "--time must be a positive number of seconds",
                ));
            }
            let mut opts = CallOptions::default().timeout(cli.wait());
            if let Some(node) = node {
                opts = opts.node_id(node.as_str());
            }
            if let Some((service, _)) = action.rsplit_once('.') {
                let _ = broker.wait_for_services(&[service], Some(cli.wait())).await;
            }
            // One call first: an action that cannot be called is an error, not a benchmark.
            if let Err(err) = broker.call_with(action, params.clone(), opts.clone()).await {
                return Err(Failure::call(&err));
            }
            let report = crate::bench::run(
                broker,
                action,
                params,
                opts,
                Duration::from_secs_f64(*time),
                *concurrency,
                cli.json,
            )
            .await;
            if cli.json {
                print_json(&report.to_json());
            } else {
                print!("{}", report.to_text());
            }
        }
        Command::Monit { .. } => {
            return Err(Failure::usage("monit runs on its own, not from the REPL"))
        }
        Command::Repl => return Err(Failure::usage("the REPL does not nest")),
        Command::Pm { .. } => return Err(Failure::usage("pm runs on its own, not from the REPL")),
        Command::Info => {
            settle(broker, cli.wait()).await;
            let options = internal(broker, "$node.options", json!({})).await?;
            let (nodes, services) = broker.with_registry(|r| {
                let nodes = r
                    .nodes()
                    .list()
                    .into_iter()
                    .filter(|n| n.available && !n.local)
                    .count();
                (nodes, 0usize)
            });
            let services = internal(broker, "$node.services", json!({ "skipInternal": true }))
                .await?
                .as_array()
                .map_or(services, |s| s.len());
            let info = json!({
                "namespace": options["namespace"],
                "transporter": options["transporter"],
                "serializer": options["serializer"],
                "nodes": nodes,
                "services": services,
                "cliNode": me,
            });
            if cli.json {
                print_json(&info);
            } else {
                for (k, v) in info.as_object().into_iter().flatten() {
                    println!("{k:<12} {}", text(v));
                }
            }
        }
    }
    Ok(())
}
