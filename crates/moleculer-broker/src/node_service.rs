//! The internal `$node` service: what this node knows about the cluster, in Moleculer's shapes.

use std::sync::{Arc, Weak};

use moleculer_core::{Context, MoleculerError, Result};
use moleculer_registry::ListOptions;
use serde_json::{json, Value};

use crate::broker::BrokerInner;
use crate::service::{Service, ServiceSchema};

/// `$node.list`, `services`, `actions`, `events`, `health` and `options`.
pub(crate) struct NodeService {
    broker: Weak<BrokerInner>,
}

impl NodeService {
    pub(crate) fn new(broker: Weak<BrokerInner>) -> Self {
        Self { broker }
    }

    fn broker(&self) -> Result<Arc<BrokerInner>> {
        self.broker
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

impl Service for NodeService {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("$node")
            .raw_action("list", |svc: Arc<Self>, ctx: Context| async move {
                let p = ctx.params();
                let (only_available, with_services) = (
                    flag(p, "onlyAvailable", false)?,
                    flag(p, "withServices", false)?,
                );
                Ok(Value::from(
                    svc.broker()?
                        .read_registry()
                        .node_list(only_available, with_services),
                ))
            })
            .raw_action("services", |svc: Arc<Self>, ctx: Context| async move {
                let opts = list_options(ctx.params())?;
                Ok(Value::from(
                    svc.broker()?.read_registry().service_list(opts),
                ))
            })
            .raw_action("actions", |svc: Arc<Self>, ctx: Context| async move {
                let opts = list_options(ctx.params())?;
                Ok(Value::from(
                    svc.broker()?.read_registry().action_list_json(opts),
                ))
            })
            .raw_action("events", |svc: Arc<Self>, ctx: Context| async move {
                let opts = list_options(ctx.params())?;
                Ok(Value::from(
                    svc.broker()?.read_registry().event_list_json(opts),
                ))
            })
            .raw_action("health", |svc: Arc<Self>, _ctx: Context| async move {
                let broker = svc.broker()?;
                let client = broker.read_registry().nodes().local().client.clone();
                Ok(crate::health::health_status(&client, broker.uptime()))
            })
            .raw_action("options", |svc: Arc<Self>, _ctx: Context| async move {
                Ok(serde_json::to_value(svc.broker()?.options()).unwrap_or(Value::Null))
            })
    }
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
