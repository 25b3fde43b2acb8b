//! The broker in a cluster: the receive loop, remote requests and events, what discovery
//! reports, heartbeat checks, nodeID conflicts, and the join and leave sequences.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use futures::future::{self, BoxFuture};
use moleculer_core::context::{ContextInit, EventGroups};
use moleculer_core::discoverer::{DiscoveryEvent, DiscoveryLink, DiscoveryTiming, NodeDigest};
use moleculer_core::protocol::{
    DiscoverPacket, EventPacket, Packet, PingPacket, PongPacket, ProtocolVersion, RequestPacket,
    ResponsePacket,
};
use moleculer_core::service_info::NodeInfo;
use moleculer_core::transporter::{Incoming, IncomingSink, TransporterError, TransporterSetup};
use moleculer_core::{
    Context, EventType, Meta, MoleculerError, NodeId, Result, SelectionContext, Visibility,
};
use moleculer_registry::NodeChange;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bridges::DynDiscoverer;
use crate::broker::{BrokerInner, STARTED, STARTING, STOPPED, STOPPING};
use crate::call_future::CallFuture;
use crate::error::BrokerError;
use crate::transit::{Reply, Transit};

/// A PONG as the pinger sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PingResult {
    /// The node that answered.
    pub node_id: NodeId,
    /// Round trip in milliseconds.
    pub elapsed_ms: f64,
    /// Its clock minus ours, in milliseconds, corrected by half the round trip.
    pub time_diff_ms: f64,
}

#[derive(Default)]
struct ConflictState {
    /// Foreign instances of our node id we have asked to prove they are alive.
    probed: HashSet<String>,
    /// A live duplicate, once proven.
    confirmed: Option<String>,
}

/// What a broker with a transporter needs beyond the local broker.
pub(crate) struct Cluster {
    pub transit: Arc<Transit>,
    pub discoverer: Arc<dyn DynDiscoverer>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    info_pending: AtomicBool,
    conflict: Mutex<ConflictState>,
    inflight: AtomicUsize,
    drained: Notify,
    pings: DashMap<String, (Instant, oneshot::Sender<PongPacket>)>,
    events: mpsc::UnboundedSender<(String, Value)>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, Value)>>>,
    cpu: crate::health::CpuSampler,
}

impl Cluster {
    pub fn new(transit: Transit, discoverer: Arc<dyn DynDiscoverer>) -> Self {
        let (events, events_rx) = mpsc::unbounded_channel();
        Self {
            transit: Arc::new(transit),
            discoverer,
            tasks: Mutex::new(Vec::new()),
            info_pending: AtomicBool::new(false),
            conflict: Mutex::new(ConflictState::default()),
            inflight: AtomicUsize::new(0),
            drained: Notify::new(),
            pings: DashMap::new(),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            cpu: crate::health::CpuSampler::default(),
        }
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().push(tokio::spawn(task));
    }
}

/// Counts a request being served, so a graceful stop can wait for it.
struct Inflight<'a>(&'a Cluster);

impl<'a> Inflight<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        cluster.inflight.fetch_add(1, Ordering::AcqRel);
        Inflight(cluster)
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Polls `work` once right here; only if it has to wait does it get a task of its own. Most
/// handlers answer without waiting, and this saves a task hop per request on the serving side.
fn run_inline_or_spawn(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut work = Box::pin(work);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if work.as_mut().poll(&mut cx).is_pending() {
        // Polled again by the runtime, which registers its own waker.
        tokio::spawn(work);
    }
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The discoverer's view of the broker.
struct Link {
    broker: Weak<BrokerInner>,
    node_id: NodeId,
    instance_id: String,
    namespace: String,
    version: ProtocolVersion,
}

impl DiscoveryLink for Link {
    fn node_id(&self) -> &NodeId {
        &self.node_id
    }
    fn instance_id(&self) -> &str {
        &self.instance_id
    }
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn alive(&self) -> bool {
        self.broker.strong_count() > 0
    }
    fn protocol_version(&self) -> ProtocolVersion {
        self.version
    }
    fn local_info(&self) -> NodeInfo {
        self.broker
            .upgrade()
            .map(|b| b.read_registry().local_node_info())
            .unwrap_or_default()
    }
    fn cpu_usage(&self) -> Option<f64> {
        self.broker
            .upgrade()
            .and_then(|b| b.read_registry().nodes().local().cpu)
    }
    fn nodes(&self) -> Vec<NodeDigest> {
        let Some(broker) = self.broker.upgrade() else {
            return Vec::new();
        };
        let registry = broker.read_registry();
        let local_info = registry.local_node_info();
        registry
            .nodes()
            .list()
            .into_iter()
            .map(|n| NodeDigest {
                id: n.id.clone(),
                local: n.local,
                available: n.available,
                seq: n.seq,
                cpu_seq: n.cpu_seq,
                cpu: n.cpu,
                info: n.available.then(|| {
                    if n.local {
                        local_info.clone()
                    } else {
                        NodeInfo {
                            services: n.services.clone(),
                            ip_list: n.ip_list.clone(),
                            hostname: n.hostname.clone(),
                            client: n.client.clone(),
                            config: n.config.clone(),
                            instance_id: n.instance_id.clone(),
                            metadata: n.metadata.clone(),
                            seq: n.seq,
                            port: n.port,
                        }
                    }
                }),
                hostname: n.hostname.clone(),
                ip_list: n.ip_list.clone(),
                port: n.port,
            })
            .collect()
    }
    fn send(
        &self,
        packet: Packet,
        target: Option<NodeId>,
    ) -> BoxFuture<'static, Result<(), TransporterError>> {
        let transit = self
            .broker
            .upgrade()
            .and_then(|b| b.cluster().map(|c| c.transit.clone()));
        Box::pin(async move {
            match transit {
                Some(transit) => transit.send(packet, target).await,
                None => Err(TransporterError::NotConnected),
            }
        })
    }
    fn report(&self, event: DiscoveryEvent) {
        if let Some(broker) = self.broker.upgrade() {
            broker.apply_discovery(event);
        }
    }
}

impl BrokerInner {
    /// Connects the transporter, starts receiving and discovering. Called by `start` before the
    /// services start, so remote dependencies can be found.
    pub(crate) async fn join_cluster(self: &Arc<Self>) -> Result<(), BrokerError> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        // Requests, responses and events are handled in the transporter's task as they arrive;
        // discovery packets go through one queue so they are applied in order.
        let (ordered, mut discovery) = mpsc::unbounded_channel::<Packet>();
        let weak = Arc::downgrade(self);
        let sink = IncomingSink::new(move |incoming| match weak.upgrade() {
            Some(broker) => {
                broker.receive(incoming, &ordered);
                true
            }
            None => false,
        });
        let setup = TransporterSetup {
            node_id: self.node_id().clone(),
            namespace: self.options().namespace.clone(),
            incoming: sink,
            serializer: cluster.transit.serializer.clone(),
            version: cluster.transit.version,
        };
        cluster
            .transit
            .transporter
            .connect(setup)
            .await
            .map_err(|e| BrokerError::Transporter(e.to_string()))?;
        let discoverer = cluster.discoverer.clone();
        cluster.spawn(async move {
            while let Some(packet) = discovery.recv().await {
                discoverer.packet_received(packet).await;
            }
        });
        if let Some(mut events) = cluster.events_rx.lock().take() {
            let weak = Arc::downgrade(self);
            cluster.spawn(async move {
                while let Some((name, payload)) = events.recv().await {
                    let Some(broker) = weak.upgrade() else { break };
                    broker.emit_internal(&name, payload).await;
                }
            });
        }
        let link = Arc::new(Link {
            broker: Arc::downgrade(self),
            node_id: self.node_id().clone(),
            instance_id: self.instance_id().to_owned(),
            namespace: self.options().namespace.clone(),
            version: cluster.transit.version,
        });
        let timing = DiscoveryTiming {
            heartbeat_interval: Duration::from_secs_f64(self.options().heartbeat_interval),
            heartbeat_timeout: Duration::from_secs_f64(self.options().heartbeat_timeout),
        };
        cluster
            .discoverer
            .start(link, timing)
            .await
            .map_err(|e| BrokerError::Transporter(e.to_string()))?;
        cluster.discoverer.discover_all().await;
        tracing::info!(
            node = %self.node_id(),
            transporter = cluster.transit.transporter.name(),
            discoverer = cluster.discoverer.name(),
            serializer = cluster.transit.serializer.name(),
            "joined the cluster"
        );
        self.start_monitor(cluster);
        Ok(())
    }

    /// Announces this node's services at once (no debounce) and checks for a duplicate node id.
    pub(crate) async fn announce(self: &Arc<Self>) -> Result<(), BrokerError> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        cluster.discoverer.send_local_info(None).await;
        // Give a live duplicate of our node id a moment to prove itself (see `on_own_info`).
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Some(other) = cluster.conflict.lock().confirmed.clone() {
                return Err(BrokerError::NodeIdConflict {
                    node_id: self.node_id().to_string(),
                    other_instance: other,
                });
            }
        }
        Ok(())
    }

    /// Leaves the cluster. Graceful: announce an empty service list, wait `stopDelay`, let
    /// in-flight requests finish (the caller stops the services), then say DISCONNECT.
    pub(crate) async fn withdraw_services(self: &Arc<Self>) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        cluster.discoverer.send_local_info(None).await;
        tokio::time::sleep(Duration::from_millis(self.options().registry.stop_delay)).await;
        let drain = async {
            while cluster.inflight.load(Ordering::Acquire) > 0 {
                let notified = cluster.drained.notified();
                if cluster.inflight.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let limit = self
            .options()
            .request_timeout()
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        if tokio::time::timeout(limit, drain).await.is_err() {
            tracing::warn!(
                inflight = cluster.inflight.load(Ordering::Acquire),
                "stopping with requests still in flight"
            );
        }
    }

    /// Says goodbye (unless `quietly`, after a nodeID conflict) and disconnects.
    pub(crate) async fn leave_cluster(&self, quietly: bool) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if quietly {
            // Not even DISCONNECT: peers must keep the node that legitimately owns this id.
            for task in cluster.tasks.lock().drain(..) {
                task.abort();
            }
        } else {
            cluster.discoverer.stop().await;
        }
        cluster.transit.transporter.disconnect().await;
        for task in cluster.tasks.lock().drain(..) {
            task.abort();
        }
        cluster.transit.reject_all();
    }

    fn start_monitor(self: &Arc<Self>, cluster: &Cluster) {
        let weak = Arc::downgrade(self);
        let every = Duration::from_secs_f64(self.options().heartbeat_interval);
        cluster.spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(broker) = weak.upgrade() else { break };
                if let Some(cpu) = broker.cluster().and_then(|c| c.cpu.sample()) {
                    broker.write_registry().set_local_cpu(cpu);
                }
                broker.check_remote_nodes();
                broker.check_offline_nodes();
            }
        });
    }

    /// Declares dead every node silent for longer than `heartbeatTimeout`.
    fn check_remote_nodes(&self) {
        if self.options().disable_heartbeat_checks {
            return;
        }
        let now = self.uptime();
        let timeout = self.options().heartbeat_timeout;
        let silent: Vec<NodeId> = self
            .read_registry()
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

    /// Forgets nodes offline for longer than `cleanOfflineNodesTimeout`.
    fn check_offline_nodes(&self) {
        let opts = self.options();
        if opts.disable_offline_node_removing || opts.clean_offline_nodes_timeout <= 0.0 {
            return;
        }
        let now = self.uptime();
        let stale: Vec<NodeId> = self
            .read_registry()
            .nodes()
            .list()
            .into_iter()
            .filter(|n| {
                !n.local
                    && !n.available
                    && n.offline_since
                        .is_some_and(|t| now - t > opts.clean_offline_nodes_timeout)
            })
            .map(|n| n.id.clone())
            .collect();
        for node in stale {
            tracing::info!(node = %node, "removing node offline for over {} s", opts.clean_offline_nodes_timeout);
            self.write_registry().remove_node(&node);
        }
    }

    fn queue_event(&self, name: &str, payload: Value) {
        if let Some(cluster) = self.cluster() {
            let _ = cluster.events.send((name.to_owned(), payload));
        }
    }

    /// Applies what the discoverer learned.
    pub(crate) fn apply_discovery(self: &Arc<Self>, event: DiscoveryEvent) {
        match event {
            DiscoveryEvent::Info { sender, info } => self.node_info(&sender, info),
            DiscoveryEvent::Heartbeat {
                sender,
                cpu,
                cpu_seq,
                seq,
                instance_id,
            } => {
                self.heartbeat(&sender, cpu, cpu_seq, seq, instance_id.as_deref());
            }
            DiscoveryEvent::LocalSeqAtLeast(seq) => self.write_registry().raise_local_seq(seq),
            DiscoveryEvent::Disconnected { node, unexpected } => self.node_gone(&node, unexpected),
        }
    }

    fn node_info(self: &Arc<Self>, sender: &NodeId, info: NodeInfo) {
        if sender == self.node_id() {
            return self.on_own_info(&info);
        }
        let now = self.uptime();
        let result = self.write_registry().process_node_info(sender, info, now);
        let (change, node) = match result {
            Ok(change) => (
                change,
                self.read_registry()
                    .nodes()
                    .get(sender)
                    .map(|n| serde_json::to_value(n).unwrap_or(Value::Null)),
            ),
            Err(err) => return tracing::warn!(node = %sender, "INFO refused: {err}"),
        };
        let node = node.unwrap_or(Value::Null);
        match change {
            NodeChange::Connected { reconnected } => {
                tracing::info!(node = %sender, reconnected, "node connected");
                self.queue_event(
                    "$node.connected",
                    json!({ "node": node, "reconnected": reconnected }),
                );
            }
            NodeChange::Updated => self.queue_event("$node.updated", json!({ "node": node })),
        }
        self.registry_changed();
        self.queue_event("$services.changed", json!({ "localService": false }));
    }

    /// An INFO that carries our own node id: our own echo, or another instance using our id.
    fn on_own_info(self: &Arc<Self>, info: &NodeInfo) {
        if info.instance_id == self.instance_id() || info.instance_id.is_empty() {
            return;
        }
        let Some(cluster) = self.cluster() else {
            return;
        };
        let mut conflict = cluster.conflict.lock();
        if conflict.probed.contains(&info.instance_id) {
            // It answered our probe: a live process uses our node id.
            self.conflict_confirmed(&mut conflict, &info.instance_id);
            return;
        }
        // Maybe a replay of an old INFO (issue #629): ask that instance to prove it is alive.
        conflict.probed.insert(info.instance_id.clone());
        drop(conflict);
        // Either way peers may now hold that INFO for ours: announce ourselves again.
        self.schedule_info();
        let transit = cluster.transit.clone();
        let probe = Packet::Discover(DiscoverPacket {
            instance_id: Some(self.instance_id().to_owned()),
            ver: transit.ver(),
            sender: self.node_id().clone(),
        });
        let target = self.node_id().clone();
        tokio::spawn(async move {
            let _ = transit.send(probe, Some(target)).await;
        });
    }

    fn conflict_confirmed(self: &Arc<Self>, conflict: &mut ConflictState, other: &str) {
        if conflict.confirmed.is_some() {
            return;
        }
        conflict.confirmed = Some(other.to_owned());
        let starting = self.state() == STARTING;
        tracing::error!(
            node = %self.node_id(),
            ours = self.instance_id(),
            other,
            "nodeID conflict: another live process (instance {other}) uses node id '{}'{}",
            self.node_id(),
            if starting { "; this broker refuses to start" } else { "; the newcomer is refused, this node keeps its id" }
        );
        self.queue_event(
            "$broker.error",
            json!({ "error": format!("nodeID conflict with instance {other}"), "module": "transit", "type": "nodeIdConflict" }),
        );
        if !starting {
            // Peers may have taken the newcomer's INFO for ours: announce ourselves again.
            self.schedule_info();
        }
    }

    /// A DISCOVER with our own node id: our echo, or a duplicate asking us to prove we live.
    fn on_own_discover(self: &Arc<Self>, packet: &DiscoverPacket) {
        let Some(other) = packet
            .instance_id
            .as_deref()
            .filter(|i| *i != self.instance_id())
        else {
            return;
        };
        let Some(cluster) = self.cluster() else {
            return;
        };
        self.conflict_confirmed(&mut cluster.conflict.lock(), other);
        let discoverer = cluster.discoverer.clone();
        let me = self.node_id().clone();
        tokio::spawn(async move { discoverer.send_local_info(Some(me)).await });
    }

    fn heartbeat(
        self: &Arc<Self>,
        sender: &NodeId,
        cpu: Option<f64>,
        cpu_seq: Option<u64>,
        seq: Option<u64>,
        instance: Option<&str>,
    ) {
        if sender == self.node_id() {
            return;
        }
        // A beat from the process we know proves it alive even when it announces a newer seq:
        // its INFO may be unreachable for a while (an etcd or Redis outage), and the node must
        // not be evicted meanwhile. A beat from another process (new instance) proves nothing.
        let (alive, needs_info) = {
            let registry = self.read_registry();
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
            let now = self.uptime();
            self.write_registry()
                .heartbeat_with_seq(sender, cpu, cpu_seq, now);
        }
        if needs_info {
            if let Some(cluster) = self.cluster() {
                let discoverer = cluster.discoverer.clone();
                let node = sender.clone();
                tokio::spawn(async move { discoverer.discover_node(node).await });
            }
        }
    }

    /// A node left or was declared dead: drop its endpoints, reject what waits on it.
    pub(crate) fn node_gone(&self, node: &str, unexpected: bool) {
        let now = self.uptime();
        let Some(gone) = self.write_registry().node_disconnected(node, now) else {
            return;
        };
        let rejected = self
            .cluster()
            .map_or(0, |c| c.transit.reject_pending_for(node));
        tracing::info!(node, unexpected, rejected, "node disconnected");
        self.registry_changed();
        self.queue_event(
            "$node.disconnected",
            json!({ "node": gone, "unexpected": unexpected }),
        );
        self.queue_event("$services.changed", json!({ "localService": false }));
    }

    /// Re-announces our INFO after `serviceChangedDebounceTime`, once for a burst of changes.
    pub(crate) fn schedule_info(self: &Arc<Self>) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if self.state() != STARTED || cluster.info_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let wait = Duration::from_millis(self.options().transit.service_changed_debounce_time);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(broker) = weak.upgrade() else { return };
            let Some(cluster) = broker.cluster() else {
                return;
            };
            cluster.info_pending.store(false, Ordering::Release);
            if broker.state() == STARTED {
                cluster.discoverer.send_local_info(None).await;
            }
        });
    }

    /// Decodes and dispatches one incoming packet, without awaiting: requests and events get a
    /// task of their own, responses complete their waiter at once, discovery packets are queued.
    fn receive(self: &Arc<Self>, incoming: Incoming, discovery: &mpsc::UnboundedSender<Packet>) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let transit = &cluster.transit;
        if incoming.payload.len() > transit.max_packet_size {
            transit.stats.oversized.fetch_add(1, Ordering::Relaxed);
            let sender = transit.serializer.sender_hint(&incoming.payload);
            tracing::warn!(
                kind = %incoming.kind,
                sender = sender.as_deref().unwrap_or("unknown"),
                "dropped a {} byte packet above the {} byte limit",
                incoming.payload.len(),
                transit.max_packet_size
            );
            return;
        }
        let packet = match transit.serializer.decode(incoming.kind, &incoming.payload) {
            Ok(packet) => packet,
            Err(err) => {
                transit.stats.malformed.fetch_add(1, Ordering::Relaxed);
                let sender = transit.serializer.sender_hint(&incoming.payload);
                tracing::warn!(
                    sender = sender.as_deref().unwrap_or("unknown"),
                    "dropped a packet: {err}"
                );
                return;
            }
        };
        if packet.ver() != transit.version.as_str() && !transit.disable_version_check {
            transit.stats.wrong_version.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                sender = packet.sender(),
                kind = %packet.kind(),
                "dropped a packet with protocol version '{}' (this node speaks '{}')",
                packet.ver(),
                transit.version.as_str()
            );
            return;
        }
        let from_self = packet.sender() == self.node_id().as_str();
        match packet {
            Packet::Request(req) => run_inline_or_spawn(self.clone().serve_request(req)),
            Packet::Response(res) => {
                let reply: Reply = if res.success {
                    Ok((res.data, res.meta))
                } else {
                    let mut err = res.error.unwrap_or_else(|| {
                        MoleculerError::new(
                            "Unknown error from the remote node",
                            500,
                            "UNKNOWN",
                            Value::Null,
                        )
                    });
                    if err.node_id.is_none() {
                        err.node_id = Some(res.sender.to_string());
                    }
                    Err(err)
                };
                transit.resolve(&res.id, reply);
            }
            Packet::Event(ev) => run_inline_or_spawn(self.clone().serve_event(ev)),
            Packet::Ping(ping) if !from_self => {
                let pong = Packet::Pong(PongPacket {
                    time: ping.time,
                    id: ping.id,
                    arrived: epoch_ms(),
                    ver: transit.ver(),
                    sender: self.node_id().clone(),
                });
                let transit = transit.clone();
                tokio::spawn(async move {
                    let _ = transit.send(pong, Some(ping.sender)).await;
                });
            }
            Packet::Pong(pong) if !from_self => {
                // Any PONG proves the node is alive (the TCP discoverer pings for this).
                let now = self.uptime();
                self.write_registry().heartbeat(&pong.sender, None, now);
                if let Some((_, (_, reply))) = cluster.pings.remove(&pong.id) {
                    let _ = reply.send(pong);
                }
            }
            Packet::Info(info) if from_self => self.on_own_info(&info.info),
            Packet::Discover(discover) if from_self => self.on_own_discover(&discover),
            packet if from_self => tracing::trace!("ignored our own {} echo", packet.kind()),
            packet @ (Packet::Discover(_)
            | Packet::Info(_)
            | Packet::Heartbeat(_)
            | Packet::Disconnect(_)
            | Packet::GossipHello(_)
            | Packet::GossipRequest(_)
            | Packet::GossipResponse(_)) => {
                let _ = discovery.send(packet);
            }
            Packet::Ping(_) | Packet::Pong(_) => {}
        }
    }

    /// Serves a REQ from another node and answers with a RES.
    async fn serve_request(self: Arc<Self>, req: RequestPacket) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let _inflight = Inflight::new(cluster);
        let (id, caller) = (req.id.clone(), req.sender.clone());
        let (success, data, error, meta) = match self.run_request(req).await {
            Ok((data, meta)) => (true, data, None, meta),
            Err(mut err) => {
                if err.node_id.is_none() {
                    err.node_id = Some(self.node_id().to_string());
                }
                (false, Value::Null, Some(err), Meta::new())
            }
        };
        let transit = &cluster.transit;
        let response = Packet::Response(ResponsePacket {
            id,
            meta,
            headers: transit.version.has_headers().then(Meta::new),
            success,
            data,
            error,
            stream: None,
            seq: None,
            ver: transit.ver(),
            sender: self.node_id().clone(),
        });
        if let Err(err) = transit.send(response, Some(caller.clone())).await {
            tracing::warn!(node = %caller, "cannot send a response: {err}");
        }
    }

    async fn run_request(&self, req: RequestPacket) -> Reply {
        // Registered services are ready while the broker still starts; only a stopping node
        // turns requests away.
        if matches!(self.state(), STOPPING | STOPPED) {
            return Err(MoleculerError::service_not_available(
                &req.action,
                Some(self.node_id()),
            ));
        }
        if req.stream == Some(true) {
            return Err(MoleculerError::client(
                "Streams are not supported by this node",
                400,
                "STREAMS_NOT_SUPPORTED",
                json!({ "action": req.action }),
            ));
        }
        let timeout = req
            .timeout
            .filter(|t| *t > 0.0)
            .map(|t| Duration::from_secs_f64(t / 1000.0));
        let deadline = timeout.map(|t| Instant::now() + t);
        let (fut, ctx) = {
            let registry = self.read_registry();
            let endpoint = registry.local_action_endpoint(&req.action);
            // Protected actions are callable from this node only; Moleculer checks this on the
            // caller side alone, so a hand-made REQ could reach them.
            let Some(local) = endpoint
                .filter(|e| e.info.visibility() != Visibility::Protected)
                .and_then(|e| e.handler.as_ref())
            else {
                return Err(MoleculerError::service_not_found(
                    &req.action,
                    Some(self.node_id()),
                ));
            };
            let ctx = Context::new(ContextInit {
                target: local.target.clone(),
                id: Some(Arc::from(req.id.as_str())),
                request_id: req.request_id.as_deref().map(Arc::from),
                parent_id: req.parent_id.as_deref().map(Arc::from),
                level: req.level,
                caller: req.caller.as_deref().map(Arc::from),
                caller_node: Some(req.sender.clone()),
                event: None,
                params: req.params,
                meta: req.meta,
                headers: req.headers.unwrap_or_default(),
                timeout,
                deadline,
            });
            let handler_ctx = ctx.clone();
            let fut = crate::broker::start_handler(
                || (local.handler)(handler_ctx),
                &req.action,
                self.node_id(),
            );
            (fut, ctx)
        };
        let result = CallFuture::running(fut, ctx.clone(), deadline, None).await;
        result.map(|data| (data, ctx.take_meta()))
    }

    /// Delivers an EVENT from another node to the local handlers it was meant for.
    async fn serve_event(self: Arc<Self>, ev: EventPacket) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let _inflight = Inflight::new(cluster);
        let kind = if ev.broadcast {
            EventType::Broadcast
        } else {
            EventType::Emit
        };
        let groups = ev.groups.clone().filter(|g| !g.is_empty());
        let origin = crate::broker::EventOrigin {
            request_id: ev.request_id.as_deref().map(Arc::from),
            parent_id: ev.parent_id.as_deref().map(Arc::from),
            level: ev.level.unwrap_or(1),
            caller: ev.caller.as_deref().map(Arc::from),
            caller_node: Some(ev.sender.clone()),
            headers: ev.headers.clone().unwrap_or_default(),
        };
        let run = {
            let registry = self.read_registry();
            let selection = SelectionContext {
                params: &ev.data,
                meta: &ev.meta,
            };
            let filter = match groups.as_deref() {
                None => EventGroups::All,
                Some([one]) => EventGroups::One(Arc::from(one.as_str())),
                Some(many) => {
                    EventGroups::Many(many.iter().map(|s| Arc::from(s.as_str())).collect())
                }
            };
            let picks: Vec<_> = registry
                .local_event_endpoints(&ev.event, groups.as_deref(), ev.broadcast, &selection)
                .filter_map(|ep| Some((ep.handler.as_ref()?, &ep.name, filter.clone())))
                .collect();
            self.start_local_deliveries(
                picks,
                &ev.event,
                kind,
                ev.data.clone(),
                ev.meta.clone(),
                &origin,
            )
        };
        run.await;
    }

    /// Sends a REQ to `target` and waits for the answer, merging the callee's meta into the
    /// parent context.
    pub(crate) fn remote_call(
        &self,
        target: NodeId,
        request: RequestPacket,
        timeout: Option<Duration>,
        parent: Option<Context>,
    ) -> CallFuture {
        let Some(cluster) = self.cluster() else {
            return CallFuture::failed(MoleculerError::service_not_available(
                &request.action,
                Some(&target),
            ));
        };
        let transit = cluster.transit.clone();
        CallFuture::boxed(Box::pin(async move {
            match transit.request(target, request, timeout).await {
                Ok((data, meta)) => {
                    if let Some(parent) = parent {
                        parent.merge_meta(meta);
                    }
                    Ok(data)
                }
                Err(err) => Err(err),
            }
        }))
    }

    /// Builds the EVENT packets for remote nodes; sending happens when the returned future runs.
    pub(crate) fn remote_events(
        &self,
        sends: Vec<(NodeId, EventPacket)>,
    ) -> Option<BoxFuture<'static, ()>> {
        if sends.is_empty() {
            return None;
        }
        let transit = self.cluster()?.transit.clone();
        Some(Box::pin(async move {
            for (node, packet) in sends {
                if let Err(err) = transit
                    .send(Packet::Event(packet), Some(node.clone()))
                    .await
                {
                    tracing::warn!(node = %node, "cannot send an event: {err}");
                }
            }
        }))
    }

    /// A PING round trip to one node; the result also feeds the Latency strategy.
    pub(crate) async fn ping(&self, node: &str, timeout: Duration) -> Result<PingResult> {
        let cluster = self
            .cluster()
            .ok_or_else(MoleculerError::broker_disconnected)?;
        let id = moleculer_core::node_id::generate_id();
        let (tx, rx) = oneshot::channel();
        let sent_at = Instant::now();
        cluster.pings.insert(id.clone(), (sent_at, tx));
        let time = epoch_ms();
        let ping = Packet::Ping(PingPacket {
            time,
            id: id.clone(),
            ver: cluster.transit.ver(),
            sender: self.node_id().clone(),
        });
        if let Err(err) = cluster.transit.send(ping, Some(NodeId::new(node))).await {
            cluster.pings.remove(&id);
            tracing::warn!(node, "cannot send a ping: {err}");
            return Err(MoleculerError::broker_disconnected());
        }
        let pong = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(pong)) => pong,
            _ => {
                cluster.pings.remove(&id);
                return Err(MoleculerError::request_timeout("$node.ping", node));
            }
        };
        let elapsed_ms = sent_at.elapsed().as_secs_f64() * 1000.0;
        let time_diff_ms = (epoch_ms() - pong.arrived - elapsed_ms / 2.0).round();
        self.write_registry()
            .nodes_mut()
            .record_latency(node, elapsed_ms);
        self.queue_event("$node.pong", json!({ "nodeID": node, "elapsedTime": elapsed_ms, "timeDiff": time_diff_ms, "id": id }));
        Ok(PingResult {
            node_id: NodeId::new(node),
            elapsed_ms,
            time_diff_ms,
        })
    }

    /// Runs an event's local deliveries and remote sends concurrently.
    pub(crate) fn join_sends(
        local: Option<BoxFuture<'static, ()>>,
        remote: Option<BoxFuture<'static, ()>>,
    ) -> BoxFuture<'static, ()> {
        match (local, remote) {
            (Some(l), Some(r)) => Box::pin(async move {
                future::join(l, r).await;
            }),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => Box::pin(async {}),
        }
    }
}
