//! The registry: nodes, services, actions and events, and the routing decisions on them.

use std::collections::HashMap;
use std::sync::Arc;

use moleculer_core::service_info::{NodeInfo, ServiceInfo, Visibility};
use moleculer_core::strategy::{SelectionContext, Strategy};
use moleculer_core::NodeId;
use serde_json::Value;

use crate::action_catalog::ActionCatalog;
use crate::endpoint::{ActionEndpoint, EventEndpoint};
use crate::endpoint_list::EndpointList;
use crate::error::RegistryError;
use crate::event_catalog::EventCatalog;
use crate::node::Node;
use crate::node_catalog::NodeCatalog;
use crate::service_catalog::{ServiceCatalog, ServiceItem};
use crate::strategies::{LatencyOptions, StrategyConfig, StrategyKind};

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

/// The service registry of one broker. Pure: no I/O, no clock (times are passed in as seconds
/// on the broker's clock). `A` and `E` are the broker's local action and event handler types.
#[derive(Debug)]
pub struct Registry<A, E> {
    opts: RegistryOptions,
    /// This node announces no services (it is stopping) while still serving them.
    withdrawn: bool,
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
            withdrawn: false,
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

    /// Stops announcing this node's services (its INFO lists none from now on) while they stay
    /// registered and callable here: a stopping node keeps serving what is already on its way.
    pub fn withdraw_local_services(&mut self) {
        if !self.withdrawn {
            self.withdrawn = true;
            self.nodes.local_mut().seq += 1;
        }
    }

    /// The descriptions of this node's services, as INFO carries them (none once withdrawn).
    pub fn local_services_info(&self) -> Vec<ServiceInfo> {
        if self.withdrawn {
            return Vec::new();
        }
        self.services
            .on_node(self.nodes.local_id())
            .map(ServiceItem::to_info)
            .collect()
    }

    /// This node's INFO payload.
    pub fn local_node_info(&self) -> NodeInfo {
        self.nodes.local().info(self.local_services_info())
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

    /// Chooses the endpoint for a retry: as [`next_action_endpoint`](Self::next_action_endpoint)
    /// but avoiding the nodes in `avoid` when another node can serve.
    pub fn next_action_endpoint_avoiding(
        &self,
        action: &str,
        ctx: &SelectionContext<'_>,
        avoid: &[NodeId],
    ) -> Result<&ActionEndpoint<A>, Miss> {
        let list = self.actions.get(action).ok_or(Miss::NotFound)?;
        list.next_avoiding(&self.nodes, ctx, self.opts.prefer_local, avoid)
            .ok_or(Miss::NotAvailable)
    }

    /// Switches `action`'s endpoint on `node_id` on or off for balancing (the circuit breaker);
    /// `false` when there is no such endpoint or it already was so.
    pub fn set_action_endpoint_available(
        &mut self,
        action: &str,
        node_id: &str,
        available: bool,
    ) -> bool {
        self.actions
            .get_mut(action)
            .is_some_and(|list| list.set_available(node_id, available))
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

    /// How often to ping other hosts for the Latency strategy: the shortest `pingInterval` of
    /// the default strategy and of the actions that choose Latency; `None` when nothing uses it.
    pub fn latency_ping_interval(&self) -> Option<std::time::Duration> {
        let interval = |options: Option<&Value>| {
            let opts: LatencyOptions = options
                .and_then(|o| serde_json::from_value(o.clone()).ok())
                .unwrap_or_default();
            std::time::Duration::from_secs(opts.ping_interval.max(1))
        };
        let default = (self.opts.strategy.kind == StrategyKind::Latency)
            .then(|| interval(Some(&self.opts.strategy.options)));
        let per_action = self.actions.lists().into_iter().filter_map(|list| {
            let info = &list.endpoints().first()?.info;
            let kind: StrategyKind = info.strategy.as_deref()?.parse().ok()?;
            (kind == StrategyKind::Latency).then(|| interval(info.strategy_options.as_ref()))
        });
        default.into_iter().chain(per_action).min()
    }

    /// The action catalog.
    pub fn actions(&self) -> &ActionCatalog<A> {
        &self.actions
    }

    /// The event catalog.
    pub fn events(&self) -> &EventCatalog<E> {
        &self.events
    }
}

#[cfg(test)]
mod tests;
