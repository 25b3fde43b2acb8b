//! Cluster membership: applies what the discoverer learned (INFO, heartbeats, departures) to the
//! registry, declares silent nodes dead, forgets long-offline ones, re-announces this node when
//! its services change, and reacts to another process using this node's id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::discoverer::DiscoveryEvent;
use moleculer_core::protocol::{DiscoverPacket, Packet};
use moleculer_core::service_info::NodeInfo;
use moleculer_core::{NodeId, Result};
use moleculer_registry::NodeChange;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::bridges::DynDiscoverer;
use crate::broker_state::{BrokerState, StateCell};
use crate::circuit_breaker::CircuitBreaker;
use crate::health::CpuSampler;
use crate::node_id_conflict::{NodeIdConflict, Verdict};
use crate::options::BrokerOptions;
use crate::shared_registry::SharedRegistry;
use crate::transit::outbound::{PingResult, Transit};

/// An internal event membership wants emitted (`$node.connected`, ...); a queue, because
/// discovery is applied under locks and in synchronous code.
pub(crate) type Notice = (String, Value);

/// This node's view of who is in the cluster.
pub(crate) struct Membership {
    node_id: NodeId,
    instance_id: String,
    heartbeat_timeout: f64,
    heartbeat_checks: bool,
    /// Seconds after which an offline node is forgotten; `None` never forgets.
    offline_cleanup: Option<f64>,
    info_debounce: Duration,
    registry: Arc<SharedRegistry>,
    transit: Arc<Transit>,
    discoverer: Arc<dyn DynDiscoverer>,
    state: Arc<StateCell>,
    breaker: Arc<CircuitBreaker>,
    conflict: Mutex<NodeIdConflict>,
    info_pending: AtomicBool,
    cpu: CpuSampler,
    /// Discovery packets, handed to the discoverer one at a time, in arrival order.
    discovery: mpsc::UnboundedSender<Packet>,
    discovery_rx: Mutex<Option<mpsc::UnboundedReceiver<Packet>>>,
    notices: mpsc::UnboundedSender<Notice>,
    notices_rx: Mutex<Option<mpsc::UnboundedReceiver<Notice>>>,
}

impl Membership {
    pub fn new(
        instance_id: String,
        options: &BrokerOptions,
        registry: Arc<SharedRegistry>,
        transit: Arc<Transit>,
        discoverer: Arc<dyn DynDiscoverer>,
        state: Arc<StateCell>,
        breaker: Arc<CircuitBreaker>,
    ) -> Self {
        let (discovery, discovery_rx) = mpsc::unbounded_channel();
        let (notices, notices_rx) = mpsc::unbounded_channel();
        let cleanup = options.clean_offline_nodes_timeout;
        Self {
            node_id: transit.node_id.clone(),
            instance_id,
            heartbeat_timeout: options.heartbeat_timeout,
            heartbeat_checks: !options.disable_heartbeat_checks,
            offline_cleanup: (!options.disable_offline_node_removing && cleanup > 0.0)
                .then_some(cleanup),
            info_debounce: Duration::from_millis(options.transit.service_changed_debounce_time),
            registry,
            transit,
            discoverer,
            state,
            breaker,
            conflict: Mutex::new(NodeIdConflict::default()),
            info_pending: AtomicBool::new(false),
            cpu: CpuSampler::default(),
            discovery,
            discovery_rx: Mutex::new(Some(discovery_rx)),
            notices,
            notices_rx: Mutex::new(Some(notices_rx)),
        }
    }

    pub fn discoverer(&self) -> &Arc<dyn DynDiscoverer> {
        &self.discoverer
    }

    /// The discovery packet queue, for the task that feeds the discoverer (taken once).
    pub fn take_discovery_queue(&self) -> Option<mpsc::UnboundedReceiver<Packet>> {
        self.discovery_rx.lock().take()
    }

    /// The notice queue, for the task that emits them (taken once).
    pub fn take_notices(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.notices_rx.lock().take()
    }

    /// Queues a discovery packet for the discoverer.
    pub fn discovery_packet(&self, packet: Packet) {
        let _ = self.discovery.send(packet);
    }

    fn notice(&self, name: &str, payload: Value) {
        let _ = self.notices.send((name.to_owned(), payload));
    }

    /// The instance id of a live process proven to use our node id, if any.
    pub fn conflicting_instance(&self) -> Option<String> {
        self.conflict.lock().confirmed().map(str::to_owned)
    }

    /// Applies what the discoverer learned.
    pub fn apply(self: &Arc<Self>, event: DiscoveryEvent) {
        match event {
            DiscoveryEvent::Info { sender, info } => self.node_info(&sender, info),
            DiscoveryEvent::Heartbeat {
                sender,
                cpu,
                cpu_seq,
                seq,
                instance_id,
            } => self.heartbeat(&sender, cpu, cpu_seq, seq, instance_id.as_deref()),
            DiscoveryEvent::LocalSeqAtLeast(seq) => self.registry.write().raise_local_seq(seq),
            DiscoveryEvent::Disconnected { node, unexpected } => self.node_gone(&node, unexpected),
            DiscoveryEvent::NodeIdTaken {
                instance_id,
                address,
            } => self.node_id_taken(&instance_id, &address),
        }
    }

    fn node_info(self: &Arc<Self>, sender: &NodeId, info: NodeInfo) {
        if *sender == self.node_id {
            return self.own_info(&info);
        }
        let now = self.registry.now();
        let change = match self.registry.write().process_node_info(sender, info, now) {
            Ok(change) => change,
            Err(err) => return tracing::warn!(node = %sender, "INFO refused: {err}"),
        };
        let node = self
            .registry
            .read()
            .nodes()
            .get(sender)
            .map_or(Value::Null, |n| {
                serde_json::to_value(n).unwrap_or(Value::Null)
            });
        match change {
            NodeChange::Connected { reconnected } => {
                tracing::info!(node = %sender, reconnected, "node connected");
                self.notice(
                    "$node.connected",
                    json!({ "node": node, "reconnected": reconnected }),
                );
            }
            NodeChange::Updated => self.notice("$node.updated", json!({ "node": node })),
        }
        self.registry.changed();
        self.notice("$services.changed", json!({ "localService": false }));
    }

    fn heartbeat(
        self: &Arc<Self>,
        sender: &NodeId,
        cpu: Option<f64>,
        cpu_seq: Option<u64>,
        seq: Option<u64>,
        instance: Option<&str>,
    ) {
        if *sender == self.node_id {
            return;
        }
        // A beat from the process we know proves it alive even when it announces a newer seq:
        // its INFO may be unreachable for a while (an etcd or Redis outage), and the node must
        // not be evicted meanwhile. A beat from another process (new instance) proves nothing.
        let (alive, needs_info) = {
            let registry = self.registry.read();
            match registry.nodes().get(sender) {
                None => (false, true),
                Some(node) => {
                    let same_process = instance.is_none_or(|i| node.instance_id.starts_with(i));
                    let alive = node.available && same_process;
                    (alive, !alive || seq.is_some_and(|s| s != node.seq))
                }
            }
        };
        if alive {
            let now = self.registry.now();
            self.registry
                .write()
                .heartbeat_with_seq(sender, cpu, cpu_seq, now);
        }
        if needs_info {
            let discoverer = self.discoverer.clone();
            let node = sender.clone();
            moleculer_core::task::spawn(async move { discoverer.discover_node(node).await });
        }
    }

    /// A PONG from `node` proves it alive.
    pub fn pong_received(&self, node: &NodeId) {
        let now = self.registry.now();
        self.registry.write().heartbeat(node, None, now);
    }

    /// A node left or was declared dead: drop its endpoints, reject what waits on it.
    pub fn node_gone(&self, node: &str, unexpected: bool) {
        let now = self.registry.now();
        let Some(gone) = self.registry.write().node_disconnected(node, now) else {
            return;
        };
        let rejected = self.transit.reject_pending_for(node);
        self.breaker.forget_node(node);
        tracing::info!(node, unexpected, rejected, "node disconnected");
        self.registry.changed();
        self.notice(
            "$node.disconnected",
            json!({ "node": gone, "unexpected": unexpected }),
        );
        self.notice("$services.changed", json!({ "localService": false }));
    }

    /// One round of the monitor: refresh this machine's CPU usage, declare silent nodes dead,
    /// forget nodes offline for too long.
    pub fn check(&self) {
        if let Some(cpu) = self.cpu.sample() {
            self.registry.write().set_local_cpu(cpu);
        }
        if self.heartbeat_checks {
            self.check_heartbeats();
        }
        if let Some(limit) = self.offline_cleanup {
            self.forget_offline(limit);
        }
    }

    /// Declares dead every node silent for longer than `heartbeatTimeout`.
    fn check_heartbeats(&self) {
        let now = self.registry.now();
        let timeout = self.heartbeat_timeout;
        let silent: Vec<NodeId> = self
            .registry
            .read()
            .nodes()
            .list()
            .into_iter()
            .filter(|n| !n.local && n.available && now - n.last_heartbeat_time > timeout)
            .map(|n| n.id.clone())
            .collect();
        for node in silent {
            tracing::warn!(node = %node, "no heartbeat for {timeout} s: node is declared dead");
            self.node_gone(&node, true);
        }
    }

    /// Forgets nodes offline for longer than `limit` seconds (`cleanOfflineNodesTimeout`).
    fn forget_offline(&self, limit: f64) {
        let now = self.registry.now();
        let stale: Vec<NodeId> = self
            .registry
            .read()
            .nodes()
            .list()
            .into_iter()
            .filter(|n| {
                !n.local && !n.available && n.offline_since.is_some_and(|t| now - t > limit)
            })
            .map(|n| n.id.clone())
            .collect();
        for node in stale {
            tracing::info!(node = %node, "removing node offline for over {limit} s");
            self.registry.write().remove_node(&node);
        }
    }

    /// Re-announces our INFO after `serviceChangedDebounceTime`, once for a burst of changes.
    pub fn schedule_info(self: &Arc<Self>) {
        if self.state.get() != BrokerState::Started
            || self.info_pending.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let me = Arc::downgrade(self);
        let wait = self.info_debounce;
        moleculer_core::task::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(me) = me.upgrade() else { return };
            me.info_pending.store(false, Ordering::Release);
            if me.state.get() == BrokerState::Started {
                me.discoverer.send_local_info(None).await;
            }
        });
    }

    /// An INFO that carries our own node id: our own echo, or another instance using our id.
    pub fn own_info(self: &Arc<Self>, info: &NodeInfo) {
        let verdict = self
            .conflict
            .lock()
            .on_info(&self.instance_id, &info.instance_id);
        match verdict {
            Verdict::Ignore => {}
            Verdict::Conflict => self.conflict_found(&info.instance_id),
            Verdict::Probe => {
                // Peers may now hold that INFO for ours: announce ourselves again, and ask that
                // instance to prove it is alive.
                self.schedule_info();
                let transit = self.transit.clone();
                let probe = Packet::Discover(DiscoverPacket {
                    instance_id: Some(self.instance_id.clone()),
                    ver: transit.ver(),
                    sender: self.node_id.clone(),
                });
                let target = self.node_id.clone();
                moleculer_core::task::spawn(async move {
                    let _ = transit.send(probe, Some(target)).await;
                });
            }
        }
    }

    /// A DISCOVER with our own node id: our echo, or a duplicate asking us to prove we live.
    pub fn own_discover(self: &Arc<Self>, packet: &DiscoverPacket) {
        let verdict = self
            .conflict
            .lock()
            .on_discover(&self.instance_id, packet.instance_id.as_deref());
        let Some(verdict) = verdict else { return };
        if verdict == Verdict::Conflict {
            self.conflict_found(packet.instance_id.as_deref().unwrap_or_default());
        }
        let discoverer = self.discoverer.clone();
        let me = self.node_id.clone();
        moleculer_core::task::spawn(async move { discoverer.send_local_info(Some(me)).await });
    }

    /// A peer vouches that a live process at `address` holds our node id: we are the newcomer.
    fn node_id_taken(self: &Arc<Self>, other: &str, address: &str) {
        if self.conflict.lock().taken(other) != Verdict::Conflict {
            return;
        }
        let starting = self.state.get() == BrokerState::Starting;
        tracing::error!(
            node = %self.node_id,
            ours = %self.instance_id,
            other,
            "nodeID conflict: a peer reports that the live node at {address} (instance {other}) already uses node id '{}'; {}",
            self.node_id,
            if starting {
                "this broker refuses to start"
            } else {
                "peers keep routing to that node, not to this process: stop it and give it a unique nodeID"
            }
        );
        self.notice(
            "$broker.error",
            json!({ "error": format!("nodeID conflict with instance {other} at {address}"), "module": "transit", "type": "nodeIdConflict" }),
        );
    }

    fn conflict_found(self: &Arc<Self>, other: &str) {
        let starting = self.state.get() == BrokerState::Starting;
        tracing::error!(
            node = %self.node_id,
            ours = %self.instance_id,
            other,
            "nodeID conflict: another live process (instance {other}) uses node id '{}'{}",
            self.node_id,
            if starting { "; this broker refuses to start" } else { "; the newcomer is refused, this node keeps its id" }
        );
        self.notice(
            "$broker.error",
            json!({ "error": format!("nodeID conflict with instance {other}"), "module": "transit", "type": "nodeIdConflict" }),
        );
        if !starting {
            // Peers may have taken the newcomer's INFO for ours: announce ourselves again.
            self.schedule_info();
        }
    }

    /// How often the Latency strategy wants hosts pinged; `None` while nothing uses it.
    pub fn latency_ping_interval(&self) -> Option<Duration> {
        self.registry.read().latency_ping_interval()
    }

    /// Pings one available node of every other host (latency is kept per host, as Moleculer
    /// does), each within `timeout`.
    pub async fn ping_hosts(&self, timeout: Duration) {
        let targets: Vec<NodeId> = {
            let registry = self.registry.read();
            let mut hosts: Vec<&str> = Vec::new();
            registry
                .nodes()
                .list()
                .into_iter()
                .filter(|n| !n.local && n.available)
                .filter(|n| {
                    let new = !hosts.contains(&n.hostname.as_str());
                    if new {
                        hosts.push(&n.hostname);
                    }
                    new
                })
                .map(|n| n.id.clone())
                .collect()
        };
        let pings = targets.iter().map(|node| async move {
            if let Err(err) = self.ping(node, timeout).await {
                tracing::debug!(node = %node, "latency ping failed: {err}");
            }
        });
        futures::future::join_all(pings).await;
    }

    /// A PING round trip to `node`; the result also feeds the Latency strategy and is announced
    /// as `$node.pong`.
    pub async fn ping(&self, node: &str, timeout: Duration) -> Result<PingResult> {
        let (id, result) = self.transit.ping(node, timeout).await?;
        self.registry
            .write()
            .nodes_mut()
            .record_latency(node, result.elapsed_ms);
        self.notice(
            "$node.pong",
            json!({ "nodeID": node, "elapsedTime": result.elapsed_ms, "timeDiff": result.time_diff_ms, "id": id }),
        );
        Ok(result)
    }
}
