//! The `$node.metrics` listing: every metric under its Moleculer name, with its type, help and
//! values, filtered by `types`, `includes` and `excludes` as Moleculer's `metrics.list` is.

use moleculer_core::{MoleculerError, Result};
use moleculer_registry::wildcard;
use prometheus::proto::{MetricFamily, MetricType};
use serde_json::{json, Map, Value};

use super::BrokerMetrics;

/// Moleculer's name for a Prometheus one. Every `_` was a `.`, except in the few names with a
/// `-`.
pub(crate) fn dotted_name(prom: &str) -> String {
    prom.replace('_', ".")
        .replace("broadcast.local", "broadcast-local")
        .replace("circuit.breaker", "circuit-breaker")
        .replace("half.opened", "half-opened")
}

/// A parameter given as one string or a list of strings.
fn strings(params: &Value, key: &str) -> Result<Option<Vec<String>>> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| bad(key, &params[key])),
        Some(other) => Err(bad(key, other)),
    }
}

fn bad(key: &str, got: &Value) -> MoleculerError {
    MoleculerError::validation(
        format!("The '{key}' field must be a string or a list of strings (got {got})."),
        json!([{ "field": key, "type": "string|array", "actual": got }]),
    )
}

fn type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

fn values(family: &MetricFamily) -> Vec<Value> {
    family
        .get_metric()
        .iter()
        .map(|m| {
            let labels: Map<String, Value> = m
                .get_label()
                .iter()
                // The default labels are the node's, the same on every value.
                .filter(|l| !matches!(l.name(), "namespace" | "nodeID"))
                .map(|l| (l.name().to_owned(), Value::from(l.value())))
                .collect();
            match family.get_field_type() {
                MetricType::COUNTER => {
                    json!({ "labels": labels, "value": m.get_counter().get_value() })
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let buckets: Map<String, Value> = h
                        .get_bucket()
                        .iter()
                        .map(|b| {
                            (
                                b.upper_bound().to_string(),
                                Value::from(b.cumulative_count()),
                            )
                        })
                        .collect();
                    json!({
                        "labels": labels,
                        "count": h.get_sample_count(),
                        "sum": h.get_sample_sum(),
                        "buckets": buckets,
                    })
                }
                _ => json!({ "labels": labels, "value": m.get_gauge().get_value() }),
            }
        })
        .collect()
}

/// The listing for `$node.metrics` params.
pub(crate) fn list(metrics: &BrokerMetrics, params: &Value) -> Result<Value> {
    let types = strings(params, "types")?;
    let includes = strings(params, "includes")?;
    let excludes = strings(params, "excludes")?;
    let list = metrics
        .gather()
        .iter()
        .filter_map(|family| {
            let name = dotted_name(family.name());
            let kind = type_name(family.get_field_type());
            let wanted = types.as_ref().is_none_or(|t| t.iter().any(|t| t == kind))
                && includes
                    .as_ref()
                    .is_none_or(|p| p.iter().any(|p| wildcard::matches(&name, p)))
                && !excludes
                    .as_ref()
                    .is_some_and(|p| p.iter().any(|p| wildcard::matches(&name, p)));
            wanted.then(|| {
                json!({
                    "name": name,
                    "type": kind,
                    "description": family.help(),
                    "values": values(family),
                })
            })
        })
        .collect();
    Ok(Value::Array(list))
}
