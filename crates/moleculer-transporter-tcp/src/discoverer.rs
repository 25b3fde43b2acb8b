//! Gossip discovery for the TCP transporter: GOSSIP_HELLO / GOSSIP_REQ / GOSSIP_RES, as
//! Moleculer's TCP transporter runs it, plus two things Moleculer does not do:
//!
//! - join at once: a new peer gets our REQ and our INFO (an unsolicited GOSSIP_RES, which
//!   Moleculer processes like any other) as soon as it is known, instead of at the next round;
//! - liveness: every heartbeat interval each online peer is PINGed, and any gossip or PONG from
//!   it counts as a heartbeat, so the broker drops a peer that keeps its socket open but has
//!   gone silent (a frozen process) after `heartbeatTimeout`. Moleculer turns heartbeats off on
//!   TCP and keeps such a peer forever. PING and PONG are standard packets, so Node.js peers
//!   answer them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use moleculer_core::discoverer::{
    Discoverer, DiscoveryEvent, DiscoveryLink, DiscoveryTiming, NodeDigest,
};
use moleculer_core::protocol::{GossipRequestPacket, GossipResponsePacket, Packet, PingPacket};
use moleculer_core::service_info::NodeInfo;
use moleculer_core::transporter::TransporterError;
use moleculer_core::NodeId;
use parking_lot::Mutex;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::peer_state::{PeerEvent, PeerState};

/// The discoverer paired with a [`TcpTransporter`](crate::TcpTransporter).
pub struct GossipDiscoverer {
    state: Arc<PeerState>,
    running: Mutex<Option<Running>>,
}

struct Running {
    link: Arc<dyn DiscoveryLink>,
    tasks: Vec<JoinHandle<()>>,
}

impl GossipDiscoverer {
    pub(crate) fn new(state: Arc<PeerState>) -> Self {
        Self {
            state,
            running: Mutex::new(None),
        }
    }

    fn link(&self) -> Option<Arc<dyn DiscoveryLink>> {
        self.running.lock().as_ref().map(|r| r.link.clone())
    }
}

/// The gossip state machine, owned by the timers and the packet handler alike.
pub(crate) struct Gossip {
    pub(crate) state: Arc<PeerState>,
    pub(crate) link: Arc<dyn DiscoveryLink>,
}

impl Gossip {
    pub(crate) fn ver(&self) -> String {
        self.link.protocol_version().as_str().to_owned()
    }

    /// Our INFO as peers should see it: with our port, the advertised address first in `ipList`.
    fn local_info(&self, at_least_seq: u64) -> NodeInfo {
        let mut info = self.link.local_info();
        info.port = Some(self.state.port());
        let host = &self.state.opts.host;
        info.ip_list.retain(|ip| ip != host);
        info.ip_list.insert(0, host.clone());
        info.seq = info.seq.max(at_least_seq);
        info
    }

    async fn send(&self, packet: Packet, target: &NodeId) {
        let kind = packet.kind();
        if let Err(err) = self.link.send(packet, Some(target.clone())).await {
            if !matches!(err, TransporterError::NotConnected) {
                tracing::debug!(node = %target, "cannot send {kind}: {err}");
            }
        }
    }

    fn request(&self, nodes: &[NodeDigest]) -> Packet {
        let mut online = BTreeMap::new();
        let mut offline = BTreeMap::new();
        for n in nodes {
            if n.available {
                online.insert(n.id.to_string(), (n.seq, n.cpu_seq, n.cpu.unwrap_or(0.0)));
            } else if n.seq > 0 {
                offline.insert(n.id.to_string(), n.seq);
            }
        }
        Packet::GossipRequest(GossipRequestPacket {
            online: (!online.is_empty()).then_some(online),
            offline: (!offline.is_empty()).then_some(offline),
            ver: self.ver(),
            sender: self.link.node_id().clone(),
        })
    }

    pub(crate) fn info_row(&self, n: &NodeDigest, at_least_seq: u64) -> Vec<Value> {
        let info = if n.local {
            Some(self.local_info(at_least_seq))
        } else {
            n.info.clone()
        };
        vec![
            serde_json::to_value(info).unwrap_or(Value::Null),
            json!(n.cpu_seq),
            json!(n.cpu.unwrap_or(0.0)),
        ]
    }

    /// Our own INFO, unasked (peers process any GOSSIP_RES): the fast path for joins and changes.
    async fn push_info(&self, target: &NodeId) {
        self.push_info_above(target, 0).await;
    }

    /// Our own INFO, with a seq of at least `at_least_seq`.
    async fn push_info_above(&self, target: &NodeId, at_least_seq: u64) {
        let nodes = self.link.nodes();
        let Some(me) = nodes.iter().find(|n| n.local) else {
            return;
        };
        let mut online = BTreeMap::new();
        online.insert(me.id.to_string(), self.info_row(me, at_least_seq));
        let packet = Packet::GossipResponse(GossipResponsePacket {
            online: Some(online),
            offline: None,
            ver: self.ver(),
            sender: me.id.clone(),
        });
        self.send(packet, target).await;
    }

    /// REQ to one random online peer, and sometimes to an offline or not-yet-known one.
    async fn round(&self) {
        let nodes = self.link.nodes();
        let request = self.request(&nodes);
        let online: Vec<NodeId> = nodes
            .iter()
            .filter(|n| n.available && !n.local)
            .map(|n| n.id.clone())
            .collect();
        let offline: Vec<NodeId> = nodes
            .iter()
            .filter(|n| !n.available)
            .map(|n| n.id.clone())
            .collect();
        // Static peers not online (never seen, or gone) are all tried every round, so a peer
        // that starts after us is found within one gossip period; Moleculer tries one random
        // offline node per round, which takes several periods with a few static peers.
        let waiting: Vec<NodeId> = self
            .state
            .peers
            .lock()
            .iter()
            .filter(|(id, peer)| {
                peer.static_peer && !nodes.iter().any(|n| n.id == **id && n.available)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let (to_online, to_offline) = {
            let mut rng = rand::rng();
            let to_online = online.choose(&mut rng).cloned();
            let chance = offline.len() as f64 / (online.len() as f64 + 1.0);
            let to_offline = (rng.random_bool(chance.min(1.0)))
                .then(|| offline.choose(&mut rng).cloned())
                .flatten();
            (to_online, to_offline)
        };
        for target in &waiting {
            self.greet(target).await;
        }
        let to_offline = to_offline.filter(|n| !waiting.contains(n));
        for target in to_online.into_iter().chain(to_offline) {
            self.send(request.clone(), &target).await;
        }
    }

    fn alive(&self, node: &NodeId) {
        self.link.report(DiscoveryEvent::Heartbeat {
            sender: node.clone(),
            cpu: None,
            cpu_seq: None,
            seq: None,
            instance_id: None,
        });
    }

    /// Moleculer's `processGossipRequest`.
    async fn on_request(&self, req: GossipRequestPacket) {
        self.alive(&req.sender);
        let nodes = self.link.nodes();
        if !nodes.iter().any(|n| n.id == req.sender) {
            // A peer we have never heard of: introduce ourselves; its own REQ will follow.
            self.push_info(&req.sender).await;
        }
        let online = req.online.unwrap_or_default();
        let offline = req.offline.unwrap_or_default();
        // The peer knows a newer INFO than we do (of itself or of a node it relays): pull it now
        // with our own REQ. Moleculer waits for its next random round, which can take seconds.
        let me = self.link.node_id();
        let newer = online.iter().any(|(id, &(seq, _, _))| {
            id.as_str() != me.as_str()
                && nodes
                    .iter()
                    .find(|n| n.id.as_str() == id.as_str())
                    .is_none_or(|n| !n.available || n.seq < seq)
        });
        if newer {
            let request = self.request(&nodes);
            self.send(request, &req.sender).await;
        }
        let mut res_online: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut res_offline: BTreeMap<String, u64> = BTreeMap::new();
        for n in &nodes {
            let id = n.id.as_str();
            let theirs = online
                .get(id)
                .map(|r| r.0)
                .or_else(|| offline.get(id).copied());
            match theirs {
                Some(seen) if seen >= n.seq => {
                    if let Some(&seq) = offline.get(id) {
                        if n.local {
                            // They think we are offline: come back with a higher seq.
                            self.link.report(DiscoveryEvent::LocalSeqAtLeast(seq + 1));
                            res_online.insert(id.to_owned(), self.info_row(n, seq + 1));
                        } else if n.available {
                            self.left(&n.id);
                        }
                    } else if let Some(&(_, cpu_seq, cpu)) = online.get(id) {
                        if n.available && !n.local {
                            if cpu_seq > n.cpu_seq {
                                self.link.report(DiscoveryEvent::Heartbeat {
                                    sender: n.id.clone(),
                                    cpu: Some(cpu),
                                    cpu_seq: Some(cpu_seq),
                                    seq: None,
                                    instance_id: None,
                                });
                            } else if cpu_seq < n.cpu_seq {
                                res_online.insert(
                                    id.to_owned(),
                                    vec![json!(n.cpu_seq), json!(n.cpu.unwrap_or(0.0))],
                                );
                            }
                        }
                    }
                }
                _ => {
                    if n.available {
                        res_online.insert(id.to_owned(), self.info_row(n, 0));
                    } else if n.seq > 0 {
                        res_offline.insert(id.to_owned(), n.seq);
                    }
                }
            }
        }
        if res_online.is_empty() && res_offline.is_empty() {
            return;
        }
        let packet = Packet::GossipResponse(GossipResponsePacket {
            online: (!res_online.is_empty()).then_some(res_online),
            offline: (!res_offline.is_empty()).then_some(res_offline),
            ver: self.ver(),
            sender: self.link.node_id().clone(),
        });
        self.send(packet, &req.sender).await;
    }

    /// Moleculer's `processGossipResponse`.
    async fn on_response(&self, res: GossipResponsePacket) {
        self.alive(&res.sender);
        let nodes = self.link.nodes();
        let me = self.link.node_id().clone();
        for (id, row) in res.online.unwrap_or_default() {
            let id = NodeId::new(id);
            if id == me {
                self.own_row(&res.sender, &row);
                continue;
            }
            let known = nodes.iter().find(|n| n.id == id);
            let (info, cpu_seq, cpu) = match row.as_slice() {
                [Value::Object(_), ..] => {
                    let info: Option<NodeInfo> = serde_json::from_value(row[0].clone())
                        .map_err(|e| tracing::warn!(node = %id, sender = %res.sender, "invalid node info in GOSSIP_RES: {e}"))
                        .ok();
                    (
                        info,
                        row.get(1).and_then(Value::as_u64),
                        row.get(2).and_then(Value::as_f64),
                    )
                }
                [cpu_seq, cpu] => (None, cpu_seq.as_u64(), cpu.as_f64()),
                _ => {
                    tracing::warn!(node = %id, sender = %res.sender, "invalid GOSSIP_RES row");
                    continue;
                }
            };
            if let Some(info) = info {
                let restarted = known.is_some_and(|n| n.instance_id != info.instance_id);
                if restarted && res.sender == id && known.is_some_and(|n| n.available) {
                    if let Some(live) = self.duplicate_of(&id, &info) {
                        self.refuse_duplicate(&id, live, &info).await;
                        continue;
                    }
                }
                // Newer news of the node; or a new process under its id (a restart), heard from
                // that process itself or about a node we hold as gone. A relayed INFO of the
                // process we already hold, not newer, is stale: it must not bring a node that
                // left back to life.
                let fresh = known.is_none_or(|n| {
                    n.seq < info.seq || (restarted && (res.sender == id || !n.available))
                });
                if fresh {
                    self.learn(&id, &info);
                    self.link.report(DiscoveryEvent::Info {
                        sender: id.clone(),
                        info,
                    });
                }
            }
            if let Some(cpu_seq) = cpu_seq {
                if known.is_none_or(|n| cpu_seq > n.cpu_seq) {
                    self.link.report(DiscoveryEvent::Heartbeat {
                        sender: id.clone(),
                        cpu,
                        cpu_seq: Some(cpu_seq),
                        seq: None,
                        instance_id: None,
                    });
                }
            }
        }
        let mut told_offline = None;
        for (id, seq) in res.offline.unwrap_or_default() {
            let id = NodeId::new(id);
            if id == me {
                // The peer holds us as gone at `seq` (we restarted, or it saw us stop): come
                // back above it, or it and everyone it gossips with keep dropping us.
                if nodes.iter().any(|n| n.local && n.seq <= seq) {
                    told_offline = Some(seq);
                }
                continue;
            }
            if nodes
                .iter()
                .any(|n| n.id == id && n.available && n.seq < seq)
            {
                self.left(&id);
            }
        }
        if let Some(seq) = told_offline {
            self.rejoin(&res.sender, seq).await;
        }
    }

    /// A peer that holds us as gone at `seq` gets our INFO above it.
    async fn rejoin(&self, peer: &NodeId, seq: u64) {
        self.link.report(DiscoveryEvent::LocalSeqAtLeast(seq + 1));
        self.push_info_above(peer, seq + 1).await;
    }

    /// A node said it stops (or a peer saw it stop): drop it as an expected departure and close
    /// our connection to it, which tells it we took the news.
    fn left(&self, node: &NodeId) {
        self.link.report(DiscoveryEvent::Disconnected {
            node: node.clone(),
            unexpected: false,
        });
        self.state.close_writer(node);
    }

    /// Learns where a node relayed by gossip listens.
    fn learn(&self, id: &NodeId, info: &NodeInfo) {
        if let Some(addr) = Self::listens(info) {
            self.state.update_address(id, addr, false);
        }
    }

    async fn ping_online(&self) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        for n in self
            .link
            .nodes()
            .into_iter()
            .filter(|n| n.available && !n.local)
        {
            let ping = Packet::Ping(PingPacket {
                time,
                id: format!("liveness-{}", rand::rng().random::<u64>()),
                ver: self.ver(),
                sender: self.link.node_id().clone(),
            });
            self.send(ping, &n.id).await;
        }
    }

    /// First contact: our REQ and our INFO at once.
    async fn greet(&self, node: &NodeId) {
        let request = self.request(&self.link.nodes());
        self.send(request, node).await;
        self.push_info(node).await;
    }
}

impl Discoverer for GossipDiscoverer {
    fn name(&self) -> &'static str {
        "TCP gossip"
    }

    async fn start(
        &self,
        link: Arc<dyn DiscoveryLink>,
        timing: DiscoveryTiming,
    ) -> Result<(), TransporterError> {
        let gossip = Arc::new(Gossip {
            state: self.state.clone(),
            link: link.clone(),
        });
        let mut tasks = Vec::new();
        let period = self.state.opts.gossip_period();
        let g = gossip.clone();
        tasks.push(moleculer_core::task::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                ticks.tick().await;
                g.round().await;
            }
        }));
        let g = gossip.clone();
        let every = timing.heartbeat_interval;
        tasks.push(moleculer_core::task::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                g.ping_online().await;
            }
        }));
        if let Some(mut events) = self.state.take_events() {
            let g = gossip.clone();
            tasks.push(moleculer_core::task::spawn(async move {
                while let Some(event) = events.recv().await {
                    match event {
                        PeerEvent::Closed(node) => g.link.report(DiscoveryEvent::Disconnected {
                            node,
                            unexpected: true,
                        }),
                        PeerEvent::Hello(node, addr) => {
                            let online = g.link.nodes().iter().any(|n| n.id == node && n.available);
                            if online {
                                // Anyone can say HELLO with any name: for a node we know to be
                                // online it is a sign of life, not news of where it lives.
                                g.state.learn_address(&node, addr, false);
                                g.alive(&node);
                            } else {
                                // A new or restarted node: it listens where it says.
                                g.state.update_address(&node, addr, false);
                                g.greet(&node).await;
                            }
                        }
                    }
                }
            }));
        }
        // Join at once: greet every static peer now rather than at the first round.
        let peers: Vec<NodeId> = self.state.peers.lock().keys().cloned().collect();
        for peer in &peers {
            gossip.greet(peer).await;
        }
        *self.running.lock() = Some(Running { link, tasks });
        Ok(())
    }

    async fn packet_received(&self, packet: Packet) {
        let Some(link) = self.link() else { return };
        let gossip = Gossip {
            state: self.state.clone(),
            link,
        };
        match packet {
            Packet::GossipRequest(req) => gossip.on_request(req).await,
            Packet::GossipResponse(res) => gossip.on_response(res).await,
            // The transporter learned the address and raised a peer event already.
            Packet::GossipHello(_) => {}
            other => tracing::debug!("the TCP gossip ignores {} packets", other.kind()),
        }
    }

    async fn send_local_info(&self, target: Option<NodeId>) {
        let Some(link) = self.link() else { return };
        let gossip = Gossip {
            state: self.state.clone(),
            link,
        };
        match target {
            Some(node) => gossip.push_info(&node).await,
            None => {
                // Services changed (or we are stopping): tell every online peer now.
                for n in gossip
                    .link
                    .nodes()
                    .into_iter()
                    .filter(|n| n.available && !n.local)
                {
                    gossip.push_info(&n.id).await;
                }
            }
        }
    }

    async fn discover_node(&self, node: NodeId) {
        let Some(link) = self.link() else { return };
        let gossip = Gossip {
            state: self.state.clone(),
            link,
        };
        let request = gossip.request(&gossip.link.nodes());
        gossip.send(request, &node).await;
    }

    async fn discover_all(&self) {
        let Some(link) = self.link() else { return };
        let gossip = Gossip {
            state: self.state.clone(),
            link,
        };
        gossip.round().await;
    }

    async fn stop(&self) {
        let Some(running) = self.running.lock().take() else {
            return;
        };
        for task in running.tasks {
            task.abort();
        }
        // There is no DISCONNECT over TCP. Say goodbye the way gossip does, listing ourselves
        // offline with a higher seq: peers (Node.js ones too) drop us at once as an expected
        // stop. A socket that closes without this is taken as a crash.
        let gossip = Gossip {
            state: self.state.clone(),
            link: running.link,
        };
        let nodes = gossip.link.nodes();
        let Some(me) = nodes.iter().find(|n| n.local) else {
            return;
        };
        let mut offline = BTreeMap::new();
        offline.insert(me.id.to_string(), me.seq + 1);
        let goodbye = Packet::GossipResponse(GossipResponsePacket {
            online: None,
            offline: Some(offline),
            ver: gossip.ver(),
            sender: me.id.clone(),
        });
        // Everyone that may hold us as online: the nodes we know online, and every peer whose
        // address we know (one that met us a moment ago may not be online for us yet).
        let mut targets: Vec<NodeId> = nodes
            .iter()
            .filter(|n| n.available && !n.local)
            .map(|n| n.id.clone())
            .collect();
        for (id, peer) in self.state.peers.lock().iter() {
            if peer.addr.is_some() && !targets.contains(id) {
                targets.push(id.clone());
            }
        }
        for target in &targets {
            gossip.send(goodbye.clone(), target).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Gossip request and response handling against a fake broker link: what is sent back and
    //! what is reported, for each case of Moleculer's `processGossipRequest` / `Response`.

    use futures::future::BoxFuture;
    use moleculer_core::protocol::ProtocolVersion;

    use super::*;
    use crate::options::TcpOptions;

    /// A broker as gossip sees it: a fixed node list, and a record of what gossip did.
    struct FakeLink {
        me: NodeId,
        nodes: Vec<NodeDigest>,
        sent: Mutex<Vec<(Packet, NodeId)>>,
        reported: Mutex<Vec<DiscoveryEvent>>,
    }

    impl DiscoveryLink for FakeLink {
        fn node_id(&self) -> &NodeId {
            &self.me
        }
        fn instance_id(&self) -> &str {
            "me-instance"
        }
        fn namespace(&self) -> &str {
            ""
        }
        fn protocol_version(&self) -> ProtocolVersion {
            ProtocolVersion::V5
        }
        fn local_info(&self) -> NodeInfo {
            info(3)
        }
        fn cpu_usage(&self) -> Option<f64> {
            None
        }
        fn nodes(&self) -> Vec<NodeDigest> {
            self.nodes.clone()
        }
        fn send(
            &self,
            packet: Packet,
            target: Option<NodeId>,
        ) -> BoxFuture<'static, Result<(), TransporterError>> {
            self.sent
                .lock()
                .push((packet, target.expect("gossip always targets one node")));
            Box::pin(async { Ok(()) })
        }
        fn report(&self, event: DiscoveryEvent) {
            self.reported.lock().push(event);
        }
    }

    fn info(seq: u64) -> NodeInfo {
        NodeInfo {
            seq,
            instance_id: "instance-1".into(),
            ip_list: vec!["127.0.0.1".into()],
            port: Some(7000 + seq as u16),
            ..NodeInfo::default()
        }
    }

    /// `me` (local, seq 3) and the given remote nodes: (id, available, seq, cpu_seq).
    fn gossip(remote: &[(&str, bool, u64, u64)]) -> (Gossip, Arc<FakeLink>) {
        let mut nodes = vec![digest("me", true, true, 3, 0)];
        for &(id, available, seq, cpu_seq) in remote {
            nodes.push(digest(id, false, available, seq, cpu_seq));
        }
        let link = Arc::new(FakeLink {
            me: NodeId::new("me"),
            nodes,
            sent: Mutex::new(Vec::new()),
            reported: Mutex::new(Vec::new()),
        });
        let state = Arc::new(PeerState::new(TcpOptions::default()));
        let gossip = Gossip {
            state,
            link: link.clone(),
        };
        (gossip, link)
    }

    fn digest(id: &str, local: bool, available: bool, seq: u64, cpu_seq: u64) -> NodeDigest {
        NodeDigest {
            id: NodeId::new(id),
            local,
            available,
            seq,
            instance_id: "instance-1".into(),
            cpu_seq,
            cpu: Some(10.0),
            info: available.then(|| info(seq)),
            hostname: String::new(),
            ip_list: Vec::new(),
            port: None,
        }
    }

    fn request(
        from: &str,
        online: &[(&str, u64, u64)],
        offline: &[(&str, u64)],
    ) -> GossipRequestPacket {
        GossipRequestPacket {
            online: Some(
                online
                    .iter()
                    .map(|&(id, seq, cpu_seq)| (id.to_owned(), (seq, cpu_seq, 50.0)))
                    .collect(),
            ),
            offline: (!offline.is_empty()).then(|| {
                offline
                    .iter()
                    .map(|&(id, seq)| (id.to_owned(), seq))
                    .collect()
            }),
            ver: "5".into(),
            sender: NodeId::new(from),
        }
    }

    fn response(
        from: &str,
        online: &[(&str, Vec<Value>)],
        offline: &[(&str, u64)],
    ) -> GossipResponsePacket {
        GossipResponsePacket {
            online: (!online.is_empty()).then(|| {
                online
                    .iter()
                    .map(|(id, row)| ((*id).to_owned(), row.clone()))
                    .collect()
            }),
            offline: (!offline.is_empty()).then(|| {
                offline
                    .iter()
                    .map(|&(id, seq)| (id.to_owned(), seq))
                    .collect()
            }),
            ver: "5".into(),
            sender: NodeId::new(from),
        }
    }

    /// The responses gossip sent, as (target, online ids, offline ids).
    fn responses(link: &FakeLink) -> Vec<(String, Vec<String>, Vec<String>)> {
        link.sent
            .lock()
            .iter()
            .filter_map(|(p, to)| match p {
                Packet::GossipResponse(r) => Some((
                    to.to_string(),
                    r.online.iter().flatten().map(|(k, _)| k.clone()).collect(),
                    r.offline.iter().flatten().map(|(k, _)| k.clone()).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    fn requests_to(link: &FakeLink) -> Vec<String> {
        link.sent
            .lock()
            .iter()
            .filter(|(p, _)| matches!(p, Packet::GossipRequest(_)))
            .map(|(_, to)| to.to_string())
            .collect()
    }

    fn is_heartbeat_of(event: &DiscoveryEvent, node: &str) -> bool {
        matches!(event, DiscoveryEvent::Heartbeat { sender, .. } if sender.as_str() == node)
    }

    #[tokio::test]
    async fn a_request_from_an_unknown_peer_gets_our_info_and_what_it_lacks() {
        let (g, link) = gossip(&[("b", true, 4, 1)]);
        g.on_request(request("c", &[("c", 1, 0)], &[])).await;
        let sent = responses(&link);
        // First our own INFO unasked, then the rows it lacks: us and b.
        assert_eq!(sent[0], ("c".into(), vec!["me".into()], vec![]));
        assert_eq!(sent[1], ("c".into(), vec!["b".into(), "me".into()], vec![]));
        assert!(
            link.reported.lock().iter().any(|e| is_heartbeat_of(e, "c")),
            "a REQ proves c alive"
        );
    }

    #[tokio::test]
    async fn a_peer_with_a_newer_info_is_asked_for_it_at_once() {
        let (g, link) = gossip(&[("b", true, 4, 1)]);
        g.on_request(request("b", &[("b", 5, 1), ("me", 3, 0)], &[]))
            .await;
        assert_eq!(requests_to(&link), vec!["b".to_string()]);
        // Nothing newer to tell it: we are up to date on both sides.
        assert!(responses(&link).is_empty());
    }

    #[tokio::test]
    async fn up_to_date_peers_exchange_nothing() {
        let (g, link) = gossip(&[("b", true, 4, 1)]);
        g.on_request(request("b", &[("b", 4, 1), ("me", 3, 0)], &[]))
            .await;
        assert!(link.sent.lock().is_empty());
    }

    #[tokio::test]
    async fn a_peer_that_thinks_we_are_offline_gets_our_info_with_a_higher_seq() {
        let (g, link) = gossip(&[("b", true, 4, 1)]);
        g.on_request(request("b", &[("b", 4, 1)], &[("me", 7)]))
            .await;
        let reported = link.reported.lock().clone();
        assert!(
            reported.contains(&DiscoveryEvent::LocalSeqAtLeast(8)),
            "{reported:?}"
        );
        let sent = link.sent.lock();
        let Some((Packet::GossipResponse(res), _)) = sent.first() else {
            panic!("a response: {sent:?}");
        };
        let row = &res.online.as_ref().unwrap()["me"];
        assert_eq!(row[0]["seq"], 8, "our INFO carries seq 8");
    }

    #[tokio::test]
    async fn a_node_the_peer_saw_leave_is_dropped_as_an_expected_stop() {
        let (g, link) = gossip(&[("b", true, 4, 1), ("c", true, 2, 0)]);
        g.on_request(request("b", &[("b", 4, 1), ("me", 3, 0)], &[("c", 2)]))
            .await;
        assert!(link
            .reported
            .lock()
            .contains(&DiscoveryEvent::Disconnected {
                node: NodeId::new("c"),
                unexpected: false,
            }));
    }

    #[tokio::test]
    async fn a_higher_cpu_seq_in_a_request_is_taken_a_lower_one_is_corrected() {
        let (g, link) = gossip(&[("b", true, 4, 5)]);
        g.on_request(request("b", &[("b", 4, 9), ("me", 3, 0)], &[]))
            .await;
        assert!(link.reported.lock().iter().any(|e| matches!(
            e,
            DiscoveryEvent::Heartbeat { sender, cpu_seq: Some(9), cpu: Some(c), .. } if sender.as_str() == "b" && *c == 50.0
        )));
        let (g, link) = gossip(&[("b", true, 4, 5), ("c", true, 2, 6)]);
        g.on_request(request("b", &[("b", 4, 5), ("c", 2, 1), ("me", 3, 0)], &[]))
            .await;
        let sent = link.sent.lock();
        let Some((Packet::GossipResponse(res), _)) = sent.first() else {
            panic!("a response: {sent:?}");
        };
        assert_eq!(
            res.online.as_ref().unwrap()["c"],
            vec![json!(6), json!(10.0)]
        );
    }

    #[tokio::test]
    async fn a_response_with_a_newer_info_is_reported_and_its_address_learned() {
        let (g, link) = gossip(&[("b", true, 4, 1)]);
        let row = vec![
            serde_json::to_value(info(6)).unwrap(),
            json!(2),
            json!(30.0),
        ];
        g.on_response(response("b", &[("b", row)], &[])).await;
        let reported = link.reported.lock().clone();
        assert!(reported.iter().any(|e| matches!(e, DiscoveryEvent::Info { sender, info } if sender.as_str() == "b" && info.seq == 6)));
        assert_eq!(
            g.state.address_of(&NodeId::new("b")),
            Some("127.0.0.1:7006".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_response_with_an_older_info_changes_nothing_but_liveness() {
        let (g, link) = gossip(&[("b", true, 4, 1)]);
        let row = vec![
            serde_json::to_value(info(3)).unwrap(),
            json!(1),
            json!(30.0),
        ];
        g.on_response(response("b", &[("b", row)], &[])).await;
        let reported = link.reported.lock().clone();
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(is_heartbeat_of(&reported[0], "b"));
    }

    #[tokio::test]
    async fn a_response_listing_a_node_offline_with_a_newer_seq_drops_it() {
        let (g, link) = gossip(&[("b", true, 4, 1), ("c", true, 2, 0)]);
        g.on_response(response("b", &[], &[("c", 3), ("me", 99)]))
            .await;
        let reported = link.reported.lock().clone();
        assert!(reported.contains(&DiscoveryEvent::Disconnected {
            node: NodeId::new("c"),
            unexpected: false
        }));
        assert!(
            !reported.iter().any(
                |e| matches!(e, DiscoveryEvent::Disconnected { node, .. } if node.as_str() == "me")
            ),
            "a peer's view of us never disconnects us"
        );
        let (g, link) = gossip(&[("c", true, 5, 0)]);
        g.on_response(response("b", &[], &[("c", 4)])).await;
        assert!(
            !link
                .reported
                .lock()
                .iter()
                .any(|e| matches!(e, DiscoveryEvent::Disconnected { .. })),
            "an older offline seq is stale news"
        );
    }

    #[tokio::test]
    async fn a_restarted_node_is_taken_from_itself_but_a_stale_relay_revives_no_one() {
        // `b` is held as gone at seq 9; its new process introduces itself with seq 2.
        let (g, link) = gossip(&[("b", false, 9, 0)]);
        let mut restarted = info(2);
        restarted.instance_id = "instance-2".into();
        let row = vec![
            serde_json::to_value(&restarted).unwrap(),
            json!(0),
            json!(0.0),
        ];
        g.on_response(response("b", &[("b", row)], &[])).await;
        assert!(link.reported.lock().iter().any(|e| matches!(e, DiscoveryEvent::Info { sender, info } if sender.as_str() == "b" && info.seq == 2)));
        // `c` left (held offline at seq 5); a peer that missed it relays its old INFO.
        let (g, link) = gossip(&[("c", false, 5, 0)]);
        let row = vec![serde_json::to_value(info(4)).unwrap(), json!(0), json!(0.0)];
        g.on_response(response("b", &[("c", row)], &[])).await;
        assert!(
            !link
                .reported
                .lock()
                .iter()
                .any(|e| matches!(e, DiscoveryEvent::Info { .. })),
            "the stale INFO is not taken"
        );
    }

    #[tokio::test]
    async fn a_peer_that_holds_us_as_gone_gets_our_info_above_its_seq() {
        let (g, link) = gossip(&[("b", true, 4, 1)]);
        g.on_response(response("b", &[], &[("me", 7)])).await;
        assert!(link
            .reported
            .lock()
            .contains(&DiscoveryEvent::LocalSeqAtLeast(8)));
        let sent = link.sent.lock();
        let Some((Packet::GossipResponse(res), to)) = sent.first() else {
            panic!("our INFO is pushed: {sent:?}");
        };
        assert_eq!(to.as_str(), "b");
        assert_eq!(res.online.as_ref().unwrap()["me"][0]["seq"], 8);
    }

    #[tokio::test]
    async fn a_malformed_row_is_skipped_and_the_rest_applied() {
        let (g, link) = gossip(&[("b", true, 4, 1), ("c", true, 2, 0)]);
        let good = vec![serde_json::to_value(info(5)).unwrap(), json!(1), json!(0.0)];
        g.on_response(response("b", &[("b", vec![json!("x")]), ("c", good)], &[]))
            .await;
        let reported = link.reported.lock().clone();
        assert!(reported
            .iter()
            .any(|e| matches!(e, DiscoveryEvent::Info { sender, .. } if sender.as_str() == "c")));
        assert!(!reported
            .iter()
            .any(|e| matches!(e, DiscoveryEvent::Info { sender, .. } if sender.as_str() == "b")));
    }
}
