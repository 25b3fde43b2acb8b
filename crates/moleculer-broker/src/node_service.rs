//! The internal `$node` service: what this node knows about the cluster, in Moleculer's shapes.

use std::sync::{Arc, Weak};

use moleculer_core::{Context, MoleculerError, Result};
use moleculer_registry::{listings, ListOptions};
use serde_json::{json, Value};

use crate::error::BrokerError;
use crate::metrics::{listing, BrokerMetrics};
use crate::service_schema::{BoundService, ServiceSchema};
use crate::shared_registry::SharedRegistry;

/// `$node.list`, `services`, `actions`, `events`, `health`, `metrics` and `options`.
struct NodeService {
    /// Weak: the registry holds this service's handlers, which hold the service.
    registry: Weak<SharedRegistry>,
    /// The broker's options as `$node.options` answers them.
    options: Value,
    /// The broker's metrics, when enabled (weak for the same reason).
    metrics: Option<Weak<BrokerMetrics>>,
}

/// The `$node` service, bound and ready to host.
pub(crate) fn node_service(
    registry: &Arc<SharedRegistry>,
    options: Value,
    metrics: Option<&Arc<BrokerMetrics>>,
) -> Result<BoundService, BrokerError> {
    let service = Arc::new(NodeService {
        registry: Arc::downgrade(registry),
        options,
        metrics: metrics.map(Arc::downgrade),
    });
    schema().bind(&service)
}

impl NodeService {
    fn registry(&self) -> Result<Arc<SharedRegistry>> {
        self.registry
            .upgrade()
            .ok_or_else(MoleculerError::broker_disconnected)
    }
}

/// A boolean parameter, accepting `true`/`false`, `"true"`/`"false"`, `1`/`0` as Moleculer's
/// `convert: true` does.
fn flag(params: &Value, key: &str, default: bool) -> Result<bool> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if matches!(s.as_str(), "true" | "1" | "on") => Ok(true),
        Some(Value::String(s)) if matches!(s.as_str(), "false" | "0" | "off") => Ok(false),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|x| x == 0.0 || x == 1.0) => {
            Ok(n.as_f64() == Some(1.0))
        }
        Some(other) => Err(MoleculerError::validation(
            format!("The '{key}' field must be a boolean (got {other})."),
            json!([{ "field": key, "type": "boolean", "actual": other }]),
        )),
    }
}

fn list_options(params: &Value) -> Result<ListOptions> {
    Ok(ListOptions {
        only_local: flag(params, "onlyLocal", false)?,
        only_available: flag(params, "onlyAvailable", false)?,
        skip_internal: flag(params, "skipInternal", false)?,
        with_endpoints: flag(params, "withEndpoints", false)?,
        with_actions: flag(params, "withActions", false)?,
        with_events: flag(params, "withEvents", false)?,
        grouping: flag(params, "grouping", true)?,
    })
}

fn schema() -> ServiceSchema<NodeService> {
    ServiceSchema::new("$node")
        .raw_action("list", |svc: Arc<NodeService>, ctx: Context| async move {
            let p = ctx.params();
            let (only_available, with_services) = (
                flag(p, "onlyAvailable", false)?,
                flag(p, "withServices", false)?,
            );
            let registry = svc.registry()?;
            let list = listings::node_list(&registry.read(), only_available, with_services);
            Ok(Value::from(list))
        })
        .raw_action(
            "services",
            |svc: Arc<NodeService>, ctx: Context| async move {
                let opts = list_options(ctx.params())?;
                let registry = svc.registry()?;
                let list = listings::service_list(&registry.read(), opts);
                Ok(Value::from(list))
            },
        )
        .raw_action(
            "actions",
            |svc: Arc<NodeService>, ctx: Context| async move {
                let opts = list_options(ctx.params())?;
                let registry = svc.registry()?;
                let list = listings::action_list(&registry.read(), opts);
                Ok(Value::from(list))
            },
        )
        .raw_action("events", |svc: Arc<NodeService>, ctx: Context| async move {
            let opts = list_options(ctx.params())?;
            let registry = svc.registry()?;
            let list = listings::event_list(&registry.read(), opts);
            Ok(Value::from(list))
        })
        .raw_action(
            "health",
            |svc: Arc<NodeService>, _ctx: Context| async move {
                let registry = svc.registry()?;
                let client = registry.read().nodes().local().client.clone();
                Ok(crate::health::health_status(&client, registry.now()))
            },
        )
        .raw_action(
            "metrics",
            |svc: Arc<NodeService>, ctx: Context| async move {
                let Some(metrics) = &svc.metrics else {
                    return Err(MoleculerError::client(
                        "Metrics feature is disabled",
                        400,
                        "METRICS_DISABLED",
                        Value::Null,
                    ));
                };
                let metrics = metrics
                    .upgrade()
                    .ok_or_else(MoleculerError::broker_disconnected)?;
                listing::list(&metrics, ctx.params())
            },
        )
        .raw_action(
            "options",
            |svc: Arc<NodeService>, _ctx: Context| async move { Ok(svc.options.clone()) },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_convert_like_moleculer() {
        let p = json!({"a": "true", "b": 0, "c": false, "d": "maybe"});
        assert!(flag(&p, "a", false).unwrap());
        assert!(!flag(&p, "b", true).unwrap());
        assert!(!flag(&p, "c", true).unwrap());
        assert!(flag(&p, "missing", true).unwrap());
        let err = flag(&p, "d", false).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("'d'"));
    }
}
