//! The registry: nodes, services, actions and events, and the routing decisions on them.

use std::collections::HashMap;
use std::sync::Arc;

use moleculer_core::service_info::{ActionInfo, EventInfo, NodeInfo, ServiceInfo, Visibility};
use moleculer_core::strategy::{SelectionContext, Strategy};
use moleculer_core::NodeId;
use serde_json::{json, Map, Value};

use crate::action_catalog::ActionCatalog;
use crate::endpoint::{ActionEndpoint, Endpoint, EventEndpoint};
use crate::endpoint_list::EndpointList;
use crate::error::RegistryError;
use crate::event_catalog::EventCatalog;
use crate::node::Node;
use crate::node_catalog::NodeCatalog;
use crate::service_catalog::{ServiceCatalog, ServiceItem};
use crate::strategies::StrategyConfig;

/// Registry options (Moleculer's `registry` broker options).
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The strategy for actions and events that do not choose their own.
    pub strategy: StrategyConfig,
    /// Serve calls locally when this node hosts the action (default on).
    pub prefer_local: bool,
    /// How many ping results the Latency strategy averages per host.
    pub latency_collect_count: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            strategy: StrategyConfig::default(),
            prefer_local: true,
            latency_collect_count: 5,
        }
    }
}

/// A local service to register: its description and the handlers of its actions and events.
#[derive(Debug)]
pub struct LocalService<A, E> {
    /// The description, as it will appear in INFO.
    pub info: ServiceInfo,
    /// Handlers by full action name.
    pub actions: HashMap<String, A>,
    /// Handlers by event name.
    pub events: HashMap<String, E>,
}

/// What an INFO did to the node that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// First seen, or seen again after being offline.
    Connected {
        /// Seen again after being offline.
        reconnected: bool,
    },
    /// Already known and online.
    Updated,
}

/// Why no endpoint was found for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The action was never registered (or not on the requested node).
    NotFound,
    /// It is registered, but no endpoint can take the call right now.
    NotAvailable,
}

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

/// The service registry of one broker. Pure: no I/O, no clock (times are passed in as seconds
/// on the broker's clock). `A` and `E` are the broker's local action and event handler types.
#[derive(Debug)]
pub struct Registry<A, E> {
    opts: RegistryOptions,
    nodes: NodeCatalog,
    services: ServiceCatalog,
    actions: ActionCatalog<A>,
    events: EventCatalog<E>,
}

impl<A: Clone, E: Clone> Registry<A, E> {
    /// A registry whose local node is `local` (its id, hostname, client, metadata, instance id).
    pub fn new(mut local: Node, opts: RegistryOptions) -> Self {
        local.local = true;
        local.available = true;
        local.seq = local.seq.max(1);
        let nodes = NodeCatalog::new(local, opts.latency_collect_count);
        Self {
            opts,
            nodes,
            services: ServiceCatalog::default(),
            actions: ActionCatalog::default(),
            events: EventCatalog::default(),
        }
    }

    /// The options.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// Known nodes.
    pub fn nodes(&self) -> &NodeCatalog {
        &self.nodes
    }

    /// Known nodes, mutably (heartbeats, CPU, latency).
    pub fn nodes_mut(&mut self) -> &mut NodeCatalog {
        &mut self.nodes
    }

    /// Known services.
    pub fn services(&self) -> &ServiceCatalog {
        &self.services
    }

    /// The local node id.
    pub fn local_node_id(&self) -> &NodeId {
        self.nodes.local_id()
    }

    fn strategy_for(&self, name: Option<&str>, options: Option<&Value>) -> Box<dyn Strategy> {
        if let Some(name) = name {
            match StrategyConfig::new(name, options.cloned().unwrap_or(Value::Null)) {
                Ok(config) => return config.build().unwrap_or_else(|_| self.default_strategy()),
                Err(err) => tracing::warn!("{err}; using the default strategy instead"),
            }
        }
        self.default_strategy()
    }

    fn default_strategy(&self) -> Box<dyn Strategy> {
        // Checked when the options were built, so building again cannot fail.
        self.opts
            .strategy
            .build()
            .unwrap_or_else(|_| Box::new(crate::strategies::RoundRobin::default()))
    }

    /// Registers a service of this node. Its actions and events become routable at once.
    pub fn register_local_service(
        &mut self,
        service: &LocalService<A, E>,
    ) -> Result<(), RegistryError> {
        let local_id = self.nodes.local_id().clone();
        let full_name = service.info.full_name();
        if self.services.has(&full_name, Some(&local_id)) {
            return Err(RegistryError::DuplicateService(full_name));
        }
        let mut item = ServiceItem::new(local_id, &service.info, true);
        item.full_name = full_name;
        self.add_endpoints(&item, Some(&service.actions), Some(&service.events));
        self.services.upsert(item);
        self.nodes.local_mut().seq += 1;
        Ok(())
    }

    /// Removes a service of this node. Returns whether it was registered.
    pub fn unregister_local_service(&mut self, full_name: &str) -> bool {
        let local_id = self.nodes.local_id().clone();
        let Some(item) = self.services.remove(full_name, &local_id) else {
            return false;
        };
        self.remove_endpoints(&item);
        self.nodes.local_mut().seq += 1;
        true
    }

    fn add_endpoints(
        &mut self,
        item: &ServiceItem,
        actions: Option<&HashMap<String, A>>,
        events: Option<&HashMap<String, E>>,
    ) {
        let service: Arc<str> = Arc::from(item.full_name.as_str());
        for (name, info) in &item.actions {
            let visible = match info.visibility() {
                Visibility::Published | Visibility::Public => true,
                Visibility::Protected => item.local,
                Visibility::Private => false,
            };
            if !visible {
                continue;
            }
            let mut info = info.clone();
            if info.name.is_empty() {
                info.name.clone_from(name);
            }
            let strategy =
                self.strategy_for(info.strategy.as_deref(), info.strategy_options.as_ref());
            let endpoint = ActionEndpoint {
                name: Arc::from(info.name.as_str()),
                node_id: item.node_id.clone(),
                local: item.local,
                service: service.clone(),
                handler: actions.and_then(|h| h.get(&info.name).cloned()),
                info: Arc::new(info),
                available: true,
            };
            self.actions.add(endpoint, || strategy);
        }
        for (name, info) in &item.events {
            let mut info = info.clone();
            if info.name.is_empty() {
                info.name.clone_from(name);
            }
            // The group defaults to the service name, not its versioned name.
            let group: Arc<str> = Arc::from(info.group.as_deref().unwrap_or(&item.name));
            let strategy =
                self.strategy_for(info.strategy.as_deref(), info.strategy_options.as_ref());
            let endpoint = EventEndpoint {
                name: Arc::from(info.name.as_str()),
                node_id: item.node_id.clone(),
                local: item.local,
                service: service.clone(),
                handler: events.and_then(|h| h.get(&info.name).cloned()),
                info: Arc::new(info),
                available: true,
            };
            self.events.add(endpoint, group, || strategy);
        }
    }

    fn remove_endpoints(&mut self, item: &ServiceItem) {
        for (name, info) in &item.actions {
            let action = if info.name.is_empty() {
                name
            } else {
                &info.name
            };
            self.actions.remove(action, &item.full_name, &item.node_id);
        }
        for (name, info) in &item.events {
            let pattern = if info.name.is_empty() {
                name
            } else {
                &info.name
            };
            self.events.remove(pattern, &item.full_name, &item.node_id);
        }
    }

    /// The descriptions of this node's services, as INFO carries them.
    pub fn local_services_info(&self) -> Vec<ServiceInfo> {
        self.services
            .on_node(self.nodes.local_id())
            .map(ServiceItem::to_info)
            .collect()
    }

    /// This node's INFO payload.
    pub fn local_node_info(&self) -> NodeInfo {
        let local = self.nodes.local();
        NodeInfo {
            services: self.local_services_info(),
            ip_list: local.ip_list.clone(),
            hostname: local.hostname.clone(),
            client: local.client.clone(),
            config: local.config.clone(),
            instance_id: local.instance_id.clone(),
            metadata: local.metadata.clone(),
            seq: local.seq,
            port: local.port,
        }
    }

    /// Applies an INFO from a remote node: creates or revives the node and re-registers its
    /// services when its seq grew, it came back, or it restarted.
    pub fn process_node_info(
        &mut self,
        sender: &NodeId,
        info: NodeInfo,
        now: f64,
    ) -> Result<NodeChange, RegistryError> {
        if sender == self.nodes.local_id() {
            return Err(RegistryError::OwnNodeId(sender.to_string()));
        }
        let (change, reregister) = match self.nodes.get_mut(sender) {
            None => {
                let mut node = Node::new(sender.clone(), false);
                node.last_heartbeat_time = now;
                node.update(info, false);
                self.nodes.insert(node);
                (NodeChange::Connected { reconnected: false }, true)
            }
            Some(node) if !node.available => {
                node.available = true;
                node.offline_since = None;
                node.last_heartbeat_time = now;
                node.update(info, true);
                (NodeChange::Connected { reconnected: true }, true)
            }
            Some(node) => {
                node.last_heartbeat_time = now;
                let reregister = node.update(info, false);
                (NodeChange::Updated, reregister)
            }
        };
        if reregister {
            self.register_remote_services(sender);
        }
        Ok(change)
    }

    /// Replaces everything registered for a remote node with what its last INFO lists.
    fn register_remote_services(&mut self, node_id: &NodeId) {
        self.unregister_services_by_node(node_id);
        let services = self
            .nodes
            .get(node_id)
            .map(|n| n.services.clone())
            .unwrap_or_default();
        for info in &services {
            let item = ServiceItem::new(node_id.clone(), info, false);
            self.add_endpoints(&item, None, None);
            self.services.upsert(item);
        }
    }

    fn unregister_services_by_node(&mut self, node_id: &str) {
        self.services.remove_all_by_node(node_id);
        self.actions.remove_by_node(node_id);
        self.events.remove_by_node(node_id);
    }

    /// A heartbeat from a known node. Returns `false` when the node is unknown or offline, so the
    /// caller should ask it for INFO.
    pub fn heartbeat(&mut self, node_id: &str, cpu: Option<f64>, now: f64) -> bool {
        self.heartbeat_with_seq(node_id, cpu, None, now)
    }

    /// A heartbeat carrying the node's own CPU change counter (gossip).
    pub fn heartbeat_with_seq(
        &mut self,
        node_id: &str,
        cpu: Option<f64>,
        cpu_seq: Option<u64>,
        now: f64,
    ) -> bool {
        match self.nodes.get_mut(node_id) {
            Some(node) if node.available && !node.local => {
                node.heartbeat(cpu, now);
                if let Some(seq) = cpu_seq {
                    node.cpu_seq = seq;
                }
                true
            }
            _ => false,
        }
    }

    /// Records this node's own CPU usage; returns the CPU change counter.
    pub fn set_local_cpu(&mut self, cpu: f64) -> u64 {
        let local = self.nodes.local_mut();
        if local.cpu != Some(cpu) {
            local.cpu = Some(cpu);
            local.cpu_seq += 1;
        }
        local.cpu_seq
    }

    /// Raises this node's INFO seq to at least `seq`.
    pub fn raise_local_seq(&mut self, seq: u64) {
        let local = self.nodes.local_mut();
        local.seq = local.seq.max(seq);
    }

    /// Sets the TCP port this node advertises.
    pub fn set_local_port(&mut self, port: u16) {
        self.nodes.local_mut().port = Some(port);
    }

    /// Marks a remote node offline and drops its endpoints. Returns the node when it was online.
    pub fn node_disconnected(&mut self, node_id: &str, now: f64) -> Option<Node> {
        let node = self
            .nodes
            .get_mut(node_id)
            .filter(|n| n.available && !n.local)?;
        node.disconnected(now);
        let snapshot = node.clone();
        self.unregister_services_by_node(node_id);
        Some(snapshot)
    }

    /// Forgets an offline node.
    pub fn remove_node(&mut self, node_id: &str) -> Option<Node> {
        self.unregister_services_by_node(node_id);
        self.nodes.remove(node_id)
    }

    /// The action's endpoint list, if the action was ever registered.
    pub fn action_list(&self, action: &str) -> Option<&EndpointList<ActionEndpoint<A>>> {
        self.actions.get(action)
    }

    /// Chooses the endpoint for a call.
    pub fn next_action_endpoint(
        &self,
        action: &str,
        ctx: &SelectionContext<'_>,
    ) -> Result<&ActionEndpoint<A>, Miss> {
        let list = self.actions.get(action).ok_or(Miss::NotFound)?;
        list.next(&self.nodes, ctx, self.opts.prefer_local)
            .ok_or(Miss::NotAvailable)
    }

    /// The endpoint of `action` on one node.
    pub fn action_endpoint_on_node(
        &self,
        action: &str,
        node_id: &str,
    ) -> Result<&ActionEndpoint<A>, Miss> {
        self.actions
            .get(action)
            .and_then(|l| l.on_node(node_id))
            .ok_or(Miss::NotFound)
    }

    /// The endpoint of a local action, whatever the balancing (a request addressed to this node).
    pub fn local_action_endpoint(&self, action: &str) -> Option<&ActionEndpoint<A>> {
        let list = self.actions.get(action)?;
        list.endpoints().iter().find(|e| e.local && e.available)
    }

    /// Balanced emit: one endpoint per matching (pattern, group), limited to `groups` if given.
    pub fn balanced_event_endpoints<'a, 's>(
        &'a self,
        event: &'s str,
        groups: Option<&'s [String]>,
        ctx: &'s SelectionContext<'s>,
    ) -> impl Iterator<Item = (&'a EventEndpoint<E>, &'a Arc<str>)> + use<'a, 's, A, E> {
        self.events.matching(event).filter_map(move |list| {
            let group = list.group()?;
            if groups.is_some_and(|g| !g.iter().any(|x| **x == **group)) {
                return None;
            }
            list.next(&self.nodes, ctx, self.opts.prefer_local)
                .map(|ep| (ep, group))
        })
    }

    /// Broadcast: every available endpoint of every matching list (limited to `groups`).
    pub fn all_event_endpoints<'a, 's>(
        &'a self,
        event: &'s str,
        groups: Option<&'s [String]>,
    ) -> impl Iterator<Item = &'a EventEndpoint<E>> + use<'a, 's, A, E> {
        self.events
            .matching(event)
            .filter(move |list| {
                groups.is_none_or(|g| {
                    list.group()
                        .is_some_and(|grp| g.iter().any(|x| **x == **grp))
                })
            })
            .flat_map(|list| list.endpoints().iter().filter(|e| e.available))
    }

    /// The local handlers that receive an event that arrived for this node: all of them for a
    /// broadcast, one per group otherwise (Moleculer's `emitLocalServices`).
    pub fn local_event_endpoints<'a, 's>(
        &'a self,
        event: &'s str,
        groups: Option<&'s [String]>,
        broadcast: bool,
        ctx: &'s SelectionContext<'s>,
    ) -> impl Iterator<Item = &'a EventEndpoint<E>> + use<'a, 's, A, E> {
        self.events
            .matching(event)
            .filter(move |list| match (groups, list.group()) {
                (Some(g), Some(grp)) if !g.is_empty() => g.iter().any(|x| **x == **grp),
                _ => true,
            })
            .flat_map(move |list| {
                let (all, one) = if broadcast {
                    (
                        Some(list.endpoints().iter().filter(|e| e.local && e.available)),
                        None,
                    )
                } else {
                    (None, list.next_local(&self.nodes, ctx))
                };
                all.into_iter().flatten().chain(one)
            })
    }

    /// Whether `full_name` runs on any known node.
    pub fn has_service(&self, full_name: &str) -> bool {
        self.services.has(full_name, None)
    }

    /// `$node.list`.
    pub fn node_list(&self, only_available: bool, with_services: bool) -> Vec<Value> {
        self.nodes
            .list()
            .into_iter()
            .filter(|n| !only_available || n.available)
            .map(|n| {
                let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
                if with_services {
                    let services = if n.local {
                        self.local_services_info()
                    } else {
                        n.services.clone()
                    };
                    v["services"] = serde_json::to_value(services).unwrap_or(Value::Null);
                }
                v
            })
            .collect()
    }

    fn node_available(&self, node_id: &str) -> bool {
        self.nodes.get(node_id).is_some_and(|n| n.available)
    }

    /// `$node.services`. Grouped entries merge the actions of every node (Moleculer kept only
    /// the first node's, issue #1362).
    pub fn service_list(&self, opts: ListOptions) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for svc in self.services.items() {
            let available = self.node_available(&svc.node_id);
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

    fn endpoints_json<T: Endpoint>(&self, list: &EndpointList<T>) -> Value {
        list.endpoints()
            .iter()
            .map(|e| json!({ "nodeID": e.node_id(), "state": e.is_available(), "available": self.node_available(e.node_id()) }))
            .collect()
    }

    fn keep<T: Endpoint>(&self, list: &EndpointList<T>, opts: ListOptions) -> bool {
        !((opts.skip_internal && list.name().starts_with('$'))
            || (opts.only_local && !list.has_local())
            || (opts.only_available && !list.has_available()))
    }

    /// `$node.actions`.
    pub fn action_list_json(&self, opts: ListOptions) -> Vec<Value> {
        let mut out = Vec::new();
        for list in self.actions.lists() {
            if !self.keep(list, opts) {
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
                entry["endpoints"] = self.endpoints_json(list);
            }
            out.push(entry);
        }
        out
    }

    /// `$node.events`.
    pub fn event_list_json(&self, opts: ListOptions) -> Vec<Value> {
        let mut out = Vec::new();
        for list in self.events.lists() {
            if !self.keep(list, opts) {
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
                entry["endpoints"] = self.endpoints_json(list);
            }
            out.push(entry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moleculer_core::service_info::Version;
    use serde_json::json;

    type Reg = Registry<&'static str, &'static str>;

    fn registry(prefer_local: bool) -> Reg {
        let opts = RegistryOptions {
            prefer_local,
            ..Default::default()
        };
        Registry::new(Node::new("local".into(), true), opts)
    }

    fn service(
        name: &str,
        version: Option<Version>,
        actions: &[(&str, Option<Visibility>)],
        events: &[(&str, Option<&str>)],
    ) -> ServiceInfo {
        let full_name = moleculer_core::service_info::versioned_name(name, version.as_ref());
        let mut info = ServiceInfo {
            name: name.into(),
            version,
            full_name: full_name.clone(),
            ..Default::default()
        };
        for (raw, visibility) in actions {
            let name = format!("{full_name}.{raw}");
            info.actions.insert(
                name.clone(),
                ActionInfo {
                    name,
                    raw_name: Some((*raw).into()),
                    visibility: *visibility,
                    ..Default::default()
                },
            );
        }
        for (event, group) in events {
            info.events.insert(
                (*event).into(),
                EventInfo {
                    name: (*event).into(),
                    group: group.map(Into::into),
                    ..Default::default()
                },
            );
        }
        info
    }

    fn remote_info(seq: u64, instance: &str, services: Vec<ServiceInfo>) -> NodeInfo {
        NodeInfo {
            services,
            seq,
            instance_id: instance.into(),
            hostname: "h".into(),
            ..Default::default()
        }
    }

    fn local(reg: &mut Reg, info: ServiceInfo, handler: &'static str) {
        let actions = info.actions.keys().map(|k| (k.clone(), handler)).collect();
        let events = info.events.keys().map(|k| (k.clone(), handler)).collect();
        reg.register_local_service(&LocalService {
            info,
            actions,
            events,
        })
        .unwrap();
    }

    fn pick(reg: &Reg, action: &str) -> Result<String, Miss> {
        reg.next_action_endpoint(action, &SelectionContext::empty())
            .map(|e| e.node_id.to_string())
    }

    #[test]
    fn versioned_actions_route_to_remote_nodes_in_turn() {
        let mut reg = registry(true);
        let svc = service("posts", Some(Version::Number(2)), &[("find", None)], &[]);
        for node in ["n1", "n2"] {
            let change = reg
                .process_node_info(&node.into(), remote_info(2, node, vec![svc.clone()]), 0.0)
                .unwrap();
            assert_eq!(change, NodeChange::Connected { reconnected: false });
        }
        let picks: Vec<_> = (0..4)
            .map(|_| pick(&reg, "v2.posts.find").unwrap())
            .collect();
        assert_eq!(picks, ["n1", "n2", "n1", "n2"]);
        assert!(reg.has_service("v2.posts"));
        assert_eq!(pick(&reg, "posts.find"), Err(Miss::NotFound));
    }

    #[test]
    fn prefer_local_keeps_calls_here_unless_disabled() {
        for (prefer, expect_remote) in [(true, false), (false, true)] {
            let mut reg = registry(prefer);
            local(
                &mut reg,
                service("math", None, &[("add", None)], &[]),
                "local-add",
            );
            reg.process_node_info(
                &"n1".into(),
                remote_info(2, "i", vec![service("math", None, &[("add", None)], &[])]),
                0.0,
            )
            .unwrap();
            let picks: Vec<_> = (0..4).map(|_| pick(&reg, "math.add").unwrap()).collect();
            assert_eq!(
                picks.iter().any(|n| n == "n1"),
                expect_remote,
                "prefer_local={prefer}: {picks:?}"
            );
        }
    }

    #[test]
    fn internal_actions_stay_local() {
        let mut reg = registry(false);
        local(
            &mut reg,
            service("$node", None, &[("list", None)], &[]),
            "h",
        );
        reg.process_node_info(
            &"n1".into(),
            remote_info(2, "i", vec![service("$node", None, &[("list", None)], &[])]),
            0.0,
        )
        .unwrap();
        for _ in 0..4 {
            assert_eq!(pick(&reg, "$node.list").unwrap(), "local");
        }
        assert_eq!(
            reg.action_endpoint_on_node("$node.list", "n1")
                .unwrap()
                .node_id,
            "n1"
        );
    }

    #[test]
    fn visibility_rules() {
        let mut reg = registry(true);
        let actions = [
            ("pub", Some(Visibility::Public)),
            ("prot", Some(Visibility::Protected)),
            ("priv", Some(Visibility::Private)),
        ];
        local(&mut reg, service("a", None, &actions, &[]), "h");
        reg.process_node_info(
            &"n1".into(),
            remote_info(2, "i", vec![service("b", None, &actions, &[])]),
            0.0,
        )
        .unwrap();
        assert!(pick(&reg, "a.pub").is_ok());
        assert!(
            pick(&reg, "a.prot").is_ok(),
            "protected is callable on its own node"
        );
        assert_eq!(pick(&reg, "a.priv"), Err(Miss::NotFound));
        assert!(pick(&reg, "b.pub").is_ok());
        assert_eq!(
            pick(&reg, "b.prot"),
            Err(Miss::NotFound),
            "a remote protected action is not registered"
        );
        assert_eq!(pick(&reg, "b.priv"), Err(Miss::NotFound));
    }

    #[test]
    fn a_disconnected_node_loses_its_endpoints_and_comes_back() {
        let mut reg = registry(true);
        let svc = service("math", None, &[("add", None)], &[("user.created", None)]);
        reg.process_node_info(&"n1".into(), remote_info(2, "i1", vec![svc.clone()]), 0.0)
            .unwrap();
        assert!(reg.node_disconnected("n1", 5.0).is_some());
        assert_eq!(pick(&reg, "math.add"), Err(Miss::NotAvailable));
        assert!(reg
            .balanced_event_endpoints("user.created", None, &SelectionContext::empty())
            .next()
            .is_none());
        assert!(
            reg.node_disconnected("n1", 6.0).is_none(),
            "already offline"
        );
        assert!(
            !reg.heartbeat("n1", Some(3.0), 7.0),
            "an offline node must be asked for INFO"
        );
        let change = reg
            .process_node_info(&"n1".into(), remote_info(2, "i1", vec![svc]), 8.0)
            .unwrap();
        assert_eq!(change, NodeChange::Connected { reconnected: true });
        assert_eq!(pick(&reg, "math.add").unwrap(), "n1");
    }

    #[test]
    fn seq_and_instance_decide_re_registration() {
        let mut reg = registry(true);
        reg.process_node_info(
            &"n1".into(),
            remote_info(2, "i1", vec![service("a", None, &[("x", None)], &[])]),
            0.0,
        )
        .unwrap();
        // Same seq, same instance: the service list is not re-read.
        reg.process_node_info(
            &"n1".into(),
            remote_info(2, "i1", vec![service("b", None, &[("y", None)], &[])]),
            0.0,
        )
        .unwrap();
        assert!(pick(&reg, "a.x").is_ok());
        assert_eq!(pick(&reg, "b.y"), Err(Miss::NotFound));
        // Higher seq: replaced.
        let change = reg
            .process_node_info(
                &"n1".into(),
                remote_info(3, "i1", vec![service("b", None, &[("y", None)], &[])]),
                0.0,
            )
            .unwrap();
        assert_eq!(change, NodeChange::Updated);
        assert_eq!(pick(&reg, "a.x"), Err(Miss::NotAvailable));
        assert!(pick(&reg, "b.y").is_ok());
        // Restarted (new instance) with a lower seq: replaced too.
        reg.process_node_info(
            &"n1".into(),
            remote_info(1, "i2", vec![service("c", None, &[("z", None)], &[])]),
            0.0,
        )
        .unwrap();
        assert!(pick(&reg, "c.z").is_ok());
        assert_eq!(pick(&reg, "b.y"), Err(Miss::NotAvailable));
    }

    #[test]
    fn own_node_id_in_info_is_refused() {
        let mut reg = registry(true);
        let err = reg
            .process_node_info(&"local".into(), remote_info(2, "x", vec![]), 0.0)
            .unwrap_err();
        assert_eq!(err, RegistryError::OwnNodeId("local".into()));
    }

    #[test]
    fn balanced_events_pick_one_endpoint_per_group() {
        let mut reg = registry(false);
        reg.process_node_info(
            &"b".into(),
            remote_info(
                2,
                "i",
                vec![
                    service("mail", None, &[], &[("user.created", None)]),
                    service("payments", None, &[], &[("user.*", None)]),
                ],
            ),
            0.0,
        )
        .unwrap();
        reg.process_node_info(
            &"c".into(),
            remote_info(
                2,
                "i",
                vec![
                    service("mail", None, &[], &[("user.created", None)]),
                    service("audit", None, &[], &[("**", Some("auditGroup"))]),
                ],
            ),
            0.0,
        )
        .unwrap();
        let picks: Vec<_> = reg
            .balanced_event_endpoints("user.created", None, &SelectionContext::empty())
            .collect();
        let mut groups: Vec<_> = picks.iter().map(|(_, g)| g.to_string()).collect();
        groups.sort();
        assert_eq!(groups, ["auditGroup", "mail", "payments"]);
        let only_mail = ["mail".to_string()];
        assert_eq!(
            reg.balanced_event_endpoints(
                "user.created",
                Some(&only_mail),
                &SelectionContext::empty()
            )
            .count(),
            1
        );
        let all: Vec<_> = reg
            .all_event_endpoints("user.created", None)
            .map(|e| e.node_id.to_string())
            .collect();
        assert_eq!(all.len(), 4);
        assert!(
            reg.balanced_event_endpoints("order.created", None, &SelectionContext::empty())
                .count()
                == 1,
            "only ** matches"
        );
    }

    #[test]
    fn local_delivery_is_one_per_group_or_all_for_broadcast() {
        let mut reg = registry(true);
        local(
            &mut reg,
            service("mail", None, &[], &[("user.created", None)]),
            "mail-1",
        );
        local(
            &mut reg,
            service("mail2", None, &[], &[("user.created", Some("mail"))]),
            "mail-2",
        );
        local(
            &mut reg,
            service("audit", None, &[], &[("user.*", None)]),
            "audit",
        );
        let sel = SelectionContext::empty();
        assert_eq!(
            reg.local_event_endpoints("user.created", None, false, &sel)
                .count(),
            2
        );
        assert_eq!(
            reg.local_event_endpoints("user.created", None, true, &sel)
                .count(),
            3
        );
        let audit = ["audit".to_string()];
        let only_audit: Vec<_> = reg
            .local_event_endpoints("user.created", Some(&audit), false, &sel)
            .collect();
        assert_eq!(
            only_audit
                .iter()
                .map(|e| e.handler.unwrap())
                .collect::<Vec<_>>(),
            ["audit"]
        );
    }

    #[test]
    fn duplicate_local_service_is_refused_and_seq_grows() {
        let mut reg = registry(true);
        let seq = reg.nodes().local().seq;
        local(&mut reg, service("math", None, &[("add", None)], &[]), "h");
        assert_eq!(reg.nodes().local().seq, seq + 1);
        let dup = LocalService {
            info: service("math", None, &[], &[]),
            actions: HashMap::new(),
            events: HashMap::new(),
        };
        assert_eq!(
            reg.register_local_service(&dup).unwrap_err(),
            RegistryError::DuplicateService("math".into())
        );
        assert!(reg.unregister_local_service("math"));
        assert_eq!(pick(&reg, "math.add"), Err(Miss::NotAvailable));
        assert_eq!(reg.local_node_info().seq, seq + 2);
    }

    #[test]
    fn per_action_strategy_comes_from_its_definition() {
        let mut reg = registry(false);
        let mut svc = service("kv", None, &[("get", None)], &[]);
        let action = svc.actions.get_mut("kv.get").unwrap();
        action.strategy = Some("Shard".into());
        action.strategy_options = Some(json!({"shardKey": "key"}));
        for node in ["a", "b", "c"] {
            reg.process_node_info(&node.into(), remote_info(2, node, vec![svc.clone()]), 0.0)
                .unwrap();
        }
        let meta = Map::new();
        for k in 0..20 {
            let params = json!({"key": format!("k{k}")});
            let ctx = SelectionContext {
                params: &params,
                meta: &meta,
            };
            let first = reg
                .next_action_endpoint("kv.get", &ctx)
                .unwrap()
                .node_id
                .clone();
            for _ in 0..3 {
                assert_eq!(
                    reg.next_action_endpoint("kv.get", &ctx).unwrap().node_id,
                    first,
                    "shard keys stick to one node"
                );
            }
        }
    }

    #[test]
    fn list_outputs_have_moleculers_shape() {
        let mut reg = registry(true);
        local(
            &mut reg,
            service("math", None, &[("add", None)], &[("user.created", None)]),
            "h",
        );
        reg.process_node_info(
            &"n1".into(),
            remote_info(2, "i", vec![service("math", None, &[("add", None)], &[])]),
            0.0,
        )
        .unwrap();
        let grouped = reg.service_list(ListOptions {
            grouping: true,
            with_actions: true,
            ..Default::default()
        });
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped[0]["nodes"], json!(["local", "n1"]));
        assert!(grouped[0]["actions"]["math.add"].is_object());
        let flat = reg.service_list(ListOptions::default());
        assert_eq!(flat.len(), 2);
        assert!(flat.iter().any(|s| s["nodeID"] == "n1"));
        let actions = reg.action_list_json(ListOptions {
            with_endpoints: true,
            ..Default::default()
        });
        assert_eq!(actions[0]["name"], "math.add");
        assert_eq!(actions[0]["count"], 2);
        assert_eq!(actions[0]["hasLocal"], true);
        assert_eq!(actions[0]["endpoints"].as_array().unwrap().len(), 2);
        let events = reg.event_list_json(ListOptions {
            only_local: true,
            ..Default::default()
        });
        assert_eq!(events[0]["group"], "math");
        let nodes = reg.node_list(false, true);
        assert_eq!(nodes.len(), 2);
        for key in [
            "id",
            "instanceID",
            "available",
            "local",
            "lastHeartbeatTime",
            "cpu",
            "seq",
            "ipList",
            "hostname",
            "client",
        ] {
            assert!(nodes[0].get(key).is_some(), "missing {key}");
        }
        assert!(nodes[0]["services"].is_array());
    }
}
