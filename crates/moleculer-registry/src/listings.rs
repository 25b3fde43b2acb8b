//! The `$node.*` listings: nodes, services, actions and events in the shapes Moleculer's
//! `$node.list`, `$node.services`, `$node.actions` and `$node.events` answer.

use moleculer_core::service_info::{ActionInfo, EventInfo};
use serde_json::{json, Map, Value};

use crate::endpoint::Endpoint;
use crate::endpoint_list::EndpointList;
use crate::registry::Registry;

/// Filters of `$node.services`, `$node.actions` and `$node.events`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOptions {
    /// Only what this node hosts.
    pub only_local: bool,
    /// Only what is available.
    pub only_available: bool,
    /// Leave out `$`-prefixed internals.
    pub skip_internal: bool,
    /// Include endpoints (actions, events).
    pub with_endpoints: bool,
    /// Include actions (services).
    pub with_actions: bool,
    /// Include events (services).
    pub with_events: bool,
    /// One entry per service with a list of nodes, rather than one per (service, node).
    pub grouping: bool,
}

/// `$node.list`.
pub fn node_list<A: Clone, E: Clone>(
    registry: &Registry<A, E>,
    only_available: bool,
    with_services: bool,
) -> Vec<Value> {
    registry
        .nodes()
        .list()
        .into_iter()
        .filter(|n| !only_available || n.available)
        .map(|n| {
            let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
            if with_services {
                let services = if n.local {
                    registry.local_services_info()
                } else {
                    n.services.clone()
                };
                v["services"] = serde_json::to_value(services).unwrap_or(Value::Null);
            }
            v
        })
        .collect()
}

fn node_available<A: Clone, E: Clone>(registry: &Registry<A, E>, node_id: &str) -> bool {
    registry.nodes().get(node_id).is_some_and(|n| n.available)
}

/// `$node.services`. Grouped entries merge the actions of every node (Moleculer kept only
/// the first node's, issue #1362).
pub fn service_list<A: Clone, E: Clone>(
    registry: &Registry<A, E>,
    opts: ListOptions,
) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for svc in registry.services().items() {
        let available = node_available(registry, &svc.node_id);
        if (opts.skip_internal && svc.name.starts_with('$'))
            || (opts.only_local && !svc.local)
            || (opts.only_available && !available)
        {
            continue;
        }
        let actions = || -> Map<String, Value> {
            svc.actions
                .iter()
                .filter(|(_, a)| !a.is_legacy_protected())
                .map(|(k, a)| (k.clone(), serde_json::to_value(a).unwrap_or(Value::Null)))
                .collect()
        };
        let existing = if opts.grouping {
            out.iter_mut()
                .find(|v| v["fullName"] == svc.full_name.as_str())
        } else {
            None
        };
        if let Some(entry) = existing {
            if let Some(nodes) = entry["nodes"].as_array_mut() {
                nodes.push(json!(svc.node_id));
            }
            if opts.with_actions {
                if let Some(map) = entry["actions"].as_object_mut() {
                    for (k, v) in actions() {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            continue;
        }
        let mut entry = json!({
            "name": svc.name, "version": svc.version, "fullName": svc.full_name,
            "settings": svc.settings, "metadata": svc.metadata, "local": svc.local, "available": available,
        });
        if opts.grouping {
            entry["nodes"] = json!([svc.node_id]);
        } else {
            entry["nodeID"] = json!(svc.node_id);
        }
        if opts.with_actions {
            entry["actions"] = Value::Object(actions());
        }
        if opts.with_events {
            let events: Map<String, Value> = svc
                .events
                .iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, e)| (k.clone(), serde_json::to_value(e).unwrap_or(Value::Null)))
                .collect();
            entry["events"] = Value::Object(events);
        }
        out.push(entry);
    }
    out
}

fn endpoints_json<A: Clone, E: Clone, T: Endpoint>(
    registry: &Registry<A, E>,
    list: &EndpointList<T>,
) -> Value {
    list.endpoints()
        .iter()
        .map(|e| json!({ "nodeID": e.node_id(), "state": e.is_available(), "available": node_available(registry, e.node_id()) }))
        .collect()
}

fn keep<T: Endpoint>(list: &EndpointList<T>, opts: ListOptions) -> bool {
    !((opts.skip_internal && list.name().starts_with('$'))
        || (opts.only_local && !list.has_local())
        || (opts.only_available && !list.has_available()))
}

/// `$node.actions`.
pub fn action_list<A: Clone, E: Clone>(registry: &Registry<A, E>, opts: ListOptions) -> Vec<Value> {
    let mut out = Vec::new();
    for list in registry.actions().lists() {
        if !keep(list, opts) {
            continue;
        }
        let first: Option<&ActionInfo> = list.endpoints().first().map(|e| &*e.info);
        if first.is_some_and(ActionInfo::is_legacy_protected) {
            continue;
        }
        let mut entry = json!({
            "name": list.name(), "count": list.endpoints().len(),
            "hasLocal": list.has_local(), "available": list.has_available(),
        });
        if let Some(info) = first {
            entry["action"] = serde_json::to_value(info).unwrap_or(Value::Null);
        }
        if opts.with_endpoints && !list.endpoints().is_empty() {
            entry["endpoints"] = endpoints_json(registry, list);
        }
        out.push(entry);
    }
    out
}

/// `$node.events`.
pub fn event_list<A: Clone, E: Clone>(registry: &Registry<A, E>, opts: ListOptions) -> Vec<Value> {
    let mut out = Vec::new();
    for list in registry.events().lists() {
        if !keep(list, opts) {
            continue;
        }
        let first: Option<&EventInfo> = list.endpoints().first().map(|e| &*e.info);
        let mut entry = json!({
            "name": list.name(), "group": list.group(), "count": list.endpoints().len(),
            "hasLocal": list.has_local(), "available": list.has_available(),
        });
        if let Some(info) = first {
            entry["event"] = serde_json::to_value(info).unwrap_or(Value::Null);
        }
        if opts.with_endpoints && !list.endpoints().is_empty() {
            entry["endpoints"] = endpoints_json(registry, list);
        }
        out.push(entry);
    }
    out
}
