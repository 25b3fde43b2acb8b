//! The etcd3 discoverer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, WatchOptions,
};
use moleculer_core::discoverer::{Discoverer, DiscoveryEvent, DiscoveryLink, DiscoveryTiming};
use moleculer_core::protocol::{DisconnectPacket, HeartbeatPacket, Packet, PacketType};
use moleculer_core::serializer::Serializer;
use moleculer_core::transporter::TransporterError;
use moleculer_core::{NodeId, OutageHold};
use parking_lot::Mutex;
use rand::Rng;
use tokio::task::JoinHandle;

use crate::keys;
use crate::options::Etcd3Options;

/// TTL of the INFO lease (Moleculer: 60 s).
const INFO_TTL_SECS: i64 = 60;

/// Discovery through etcd v3 (Moleculer's `Etcd3` discoverer, with a watch).
pub struct Etcd3Discoverer {
    opts: Etcd3Options,
    state: Mutex<Option<Arc<State>>>,
}

struct Lease {
    id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

struct State {
    link: Arc<dyn DiscoveryLink>,
    opts: Etcd3Options,
    prefix: String,
    serializer: Arc<dyn Serializer>,
    client: Mutex<Option<Client>>,
    timing: DiscoveryTiming,
    beat_lease: Mutex<Option<Lease>>,
    info_lease: Mutex<Option<Lease>>,
    /// Every lease granted and not yet revoked: `stop` revokes them even if a beat holds one.
    granted: Mutex<HashSet<i64>>,
    last_beat: Mutex<Option<String>>,
    info_seq: Mutex<Option<u64>>,
    /// Beat keys seen per node (from the watch and full reads).
    live: Mutex<HashMap<NodeId, HashSet<String>>>,
    cycle: AtomicU32,
    reachable: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// One beat at a time: a beat reads this node's INFO, then writes it; two interleaved (the
    /// timer's and an announcement's) could leave the older INFO in etcd for good.
    beating: tokio::sync::Mutex<()>,
    /// Holds nodes that beat only in etcd alive while it is unreachable.
    hold: OutageHold,
    /// Until then, a beat key missing from a full read proves nothing: etcd just came back
    /// (perhaps empty) and every node is still writing its keys again.
    judge_after: Mutex<Option<tokio::time::Instant>>,
}

impl Etcd3Discoverer {
    /// A discoverer with these options.
    pub fn new(opts: Etcd3Options) -> Self {
        Self {
            opts,
            state: Mutex::new(None),
        }
    }

    fn state(&self) -> Option<Arc<State>> {
        self.state.lock().clone()
    }
}

type EtcdResult<T> = Result<T, etcd_client::Error>;

impl State {
    fn ver(&self) -> String {
        self.link.protocol_version().as_str().to_owned()
    }

    fn endpoints(&self) -> String {
        self.opts.endpoints.join(",")
    }

    async fn client(&self) -> Option<Client> {
        if let Some(client) = self.client.lock().clone() {
            return Some(client);
        }
        match tokio::time::timeout(
            Duration::from_secs(2),
            Client::connect(&self.opts.endpoints, None),
        )
        .await
        {
            Ok(Ok(client)) => {
                *self.client.lock() = Some(client.clone());
                Some(client)
            }
            Ok(Err(err)) => {
                self.unreachable(&err.to_string());
                None
            }
            Err(_) => {
                self.unreachable("no answer within 2 s");
                None
            }
        }
    }

    fn unreachable(&self, why: &str) {
        if self.reachable.swap(false, Ordering::AcqRel) {
            tracing::error!(endpoints = %self.endpoints(), "etcd3 discoverer cannot reach etcd at {}: {why}; heartbeats go over the transporter until it is back", self.endpoints());
        }
    }

    fn heartbeat_packet(&self) -> Packet {
        let info = self.link.local_info();
        Packet::Heartbeat(HeartbeatPacket {
            seq: Some(info.seq),
            instance_id: Some(info.instance_id),
            ..self.link.heartbeat_packet()
        })
    }

    async fn beat_over_transporter(&self) {
        if let Err(err) = self.link.send(self.heartbeat_packet(), None).await {
            if !matches!(err, TransporterError::NotConnected) {
                tracing::debug!("cannot send a heartbeat over the transporter: {err}");
            }
        }
    }

    /// Keeps a lease alive; `false` when etcd says it is gone.
    async fn keep_alive(lease: &mut Lease) -> EtcdResult<bool> {
        lease.keeper.keep_alive().await?;
        Ok(matches!(lease.stream.message().await?, Some(resp) if resp.ttl() > 0))
    }

    async fn grant(&self, client: &mut Client, ttl: i64) -> EtcdResult<Lease> {
        let id = client.lease_grant(ttl, None).await?.id();
        self.granted.lock().insert(id);
        let (keeper, stream) = client.lease_keep_alive(id).await?;
        Ok(Lease { id, keeper, stream })
    }

    /// One heartbeat; over the transporter first while etcd is known to be unreachable.
    async fn beat(&self) {
        let _turn = self.beating.lock().await;
        let over_transporter = !self.reachable.load(Ordering::Acquire);
        if over_transporter {
            self.beat_over_transporter().await;
        }
        let limit = self.timing.heartbeat_interval.mul_f64(0.8);
        let written = match tokio::time::timeout(limit, self.beat_in_etcd()).await {
            Ok(Ok(())) => {
                if !self.reachable.swap(true, Ordering::AcqRel) {
                    let grace = self.timing.heartbeat_timeout;
                    *self.judge_after.lock() = Some(tokio::time::Instant::now() + grace);
                    tracing::info!(endpoints = %self.endpoints(), "etcd3 discoverer reached etcd; no node is judged by a missing key for {} s while every node writes its keys again", grace.as_secs_f64());
                }
                true
            }
            Ok(Err(err)) => {
                self.unreachable(&err.to_string());
                *self.client.lock() = None;
                false
            }
            Err(_) => {
                self.unreachable("no answer within the heartbeat interval");
                false
            }
        };
        if !written {
            if !over_transporter {
                self.beat_over_transporter().await;
            }
            let known: HashSet<NodeId> = self.live.lock().keys().cloned().collect();
            self.hold
                .hold(&*self.link, self.timing.heartbeat_timeout, |n| {
                    known.contains(n)
                });
        }
    }

    async fn beat_in_etcd(&self) -> EtcdResult<()> {
        let Some(mut client) = self.client().await else {
            return Err(etcd_client::Error::InvalidArgs("no connection".into()));
        };
        let info = self.link.info_packet();
        let seq = info.info.seq;
        // INFO first, so a peer that sees the new beat finds the matching INFO.
        let mut info_lease = self.info_lease.lock().take();
        if let Some(lease) = &mut info_lease {
            if !Self::keep_alive(lease).await? {
                tracing::warn!("the INFO lease was lost; granting a new one");
                info_lease = None;
            }
        }
        if info_lease.is_none() || *self.info_seq.lock() != Some(seq) {
            let lease = match info_lease.take() {
                Some(lease) => lease,
                None => self.grant(&mut client, INFO_TTL_SECS).await?,
            };
            if let Ok(value) = self.serializer.encode(&Packet::Info(info)) {
                client
                    .put(
                        keys::info(&self.prefix, self.link.node_id()),
                        value,
                        Some(PutOptions::new().with_lease(lease.id)),
                    )
                    .await?;
            }
            *self.info_seq.lock() = Some(seq);
            info_lease = Some(lease);
        }
        *self.info_lease.lock() = info_lease;

        let key = keys::beat(
            &self.prefix,
            self.link.node_id(),
            self.link.instance_id(),
            seq,
        );
        let ttl = self.timing.heartbeat_timeout.as_secs_f64().ceil().max(2.0) as i64;
        let mut lease = self.beat_lease.lock().take();
        if let Some(l) = &mut lease {
            if !Self::keep_alive(l).await? {
                tracing::warn!(
                    "the beat lease was lost (paused past its TTL, or revoked); granting a new one"
                );
                lease = None;
            }
        }
        let seq_changed = self
            .last_beat
            .lock()
            .as_deref()
            .is_some_and(|old| old != key);
        // A new seq gets a new lease; the old one is revoked after the new key is in place,
        // which deletes the old key without peers ever seeing no beat at all.
        let old = if seq_changed { lease.take() } else { None };
        let lease = match lease {
            Some(lease) => lease,
            None => self.grant(&mut client, ttl).await?,
        };
        let value = self
            .serializer
            .encode(&self.heartbeat_packet())
            .unwrap_or_default();
        client
            .put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease.id)),
            )
            .await?;
        if let Some(old) = old {
            client.lease_revoke(old.id).await?;
            self.granted.lock().remove(&old.id);
        }
        *self.beat_lease.lock() = Some(lease);
        *self.last_beat.lock() = Some(key);

        let cycle = self.cycle.fetch_add(1, Ordering::Relaxed);
        if self.opts.full_check > 0 && cycle % self.opts.full_check == 0 {
            self.full_read(&mut client).await?;
        }
        Ok(())
    }

    /// Reads every beat key: the watch's safety net, and the only source of CPU figures.
    async fn full_read(&self, client: &mut Client) -> EtcdResult<()> {
        let prefix = format!("{}/beats/", self.prefix);
        let resp = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        let me = self.link.node_id().clone();
        let mut now: HashMap<NodeId, HashSet<String>> = HashMap::new();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            let Some((node, hash, seq)) = keys::parse_beat(&self.prefix, key) else {
                tracing::warn!(
                    key,
                    "skipped a beat key that is not <nodeID>/<instance>/<seq>"
                );
                continue;
            };
            let node = NodeId::new(node);
            if node == me {
                continue;
            }
            let cpu = match self.serializer.decode(PacketType::Heartbeat, kv.value()) {
                Ok(Packet::Heartbeat(beat)) => beat.cpu,
                _ => {
                    tracing::warn!(key, "skipped a beat value that is not a HEARTBEAT packet");
                    None
                }
            };
            now.entry(node.clone()).or_default().insert(key.to_owned());
            self.link.report(DiscoveryEvent::Heartbeat {
                sender: node,
                cpu,
                cpu_seq: None,
                seq: Some(seq),
                instance_id: Some(hash.to_owned()),
            });
        }
        let judging = self
            .judge_after
            .lock()
            .is_none_or(|after| tokio::time::Instant::now() >= after);
        let gone: Vec<NodeId> = {
            let mut live = self.live.lock();
            if !judging {
                // Keep the missing ones on the books: judged once the grace is over.
                for (node, keys) in live.drain() {
                    now.entry(node).or_insert(keys);
                }
                *live = now;
                return Ok(());
            }
            let gone = live
                .keys()
                .filter(|n| !now.contains_key(*n))
                .cloned()
                .collect();
            *live = now;
            gone
        };
        for node in gone {
            self.link.report(DiscoveryEvent::Disconnected {
                node,
                unexpected: true,
            });
        }
        Ok(())
    }

    /// Follows the discovery prefix: a beat PUT is a heartbeat (or a join), the last beat key
    /// of a node deleted is its departure, and an INFO PUT the registry lacks is taken at once.
    async fn watch(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        while self.link.alive() {
            if let Some(mut client) = self.client().await {
                let prefix = format!("{}/", self.prefix);
                match client
                    .watch(prefix, Some(WatchOptions::new().with_prefix()))
                    .await
                {
                    Ok(mut stream) => {
                        backoff = Duration::from_millis(100);
                        while let Ok(Some(resp)) = stream.message().await {
                            for event in resp.events() {
                                self.on_watch_event(event);
                            }
                        }
                    }
                    Err(err) => tracing::debug!("cannot watch the discovery prefix: {err}"),
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn on_watch_event(&self, event: &etcd_client::Event) {
        let Some(kv) = event.kv() else { return };
        let Ok(key) = kv.key_str() else { return };
        if let Some(node) = keys::parse_info(&self.prefix, key) {
            if event.event_type() == EventType::Put {
                self.on_info_written(NodeId::new(node), key, kv.value());
            }
            return;
        }
        let Some((node, hash, seq)) = keys::parse_beat(&self.prefix, key) else {
            return;
        };
        let node = NodeId::new(node);
        if node == *self.link.node_id() {
            return;
        }
        match event.event_type() {
            EventType::Put => {
                self.live
                    .lock()
                    .entry(node.clone())
                    .or_default()
                    .insert(key.to_owned());
                self.link.report(DiscoveryEvent::Heartbeat {
                    sender: node,
                    cpu: None,
                    cpu_seq: None,
                    seq: Some(seq),
                    instance_id: Some(hash.to_owned()),
                });
            }
            EventType::Delete => {
                let last = {
                    let mut live = self.live.lock();
                    let keys = live.entry(node.clone()).or_default();
                    keys.remove(key);
                    let empty = keys.is_empty();
                    if empty {
                        live.remove(&node);
                    }
                    empty
                };
                if last {
                    self.link.report(DiscoveryEvent::Disconnected {
                        node,
                        unexpected: true,
                    });
                }
            }
        }
    }

    /// Takes INFO the registry does not hold yet: a node that wrote INFO before its first beat,
    /// or after a beat whose INFO fetch came too early (Moleculer writes them in either order).
    fn on_info_written(&self, node: NodeId, key: &str, value: &[u8]) {
        if node == *self.link.node_id() {
            return;
        }
        let Ok(Packet::Info(packet)) = self.serializer.decode(PacketType::Info, value) else {
            return tracing::warn!(key, "skipped an INFO key whose value is not an INFO packet");
        };
        let held = self
            .link
            .nodes()
            .iter()
            .any(|n| n.id == node && n.available && n.seq >= packet.info.seq);
        if !held {
            self.link.report(DiscoveryEvent::Info {
                sender: node,
                info: packet.info,
            });
        }
    }

    async fn fetch_info(&self, node: &NodeId) {
        let Some(mut client) = self.client().await else {
            return;
        };
        let key = keys::info(&self.prefix, node);
        match client.get(key.clone(), None).await {
            Ok(resp) => match resp.kvs().first() {
                Some(kv) => match self.serializer.decode(PacketType::Info, kv.value()) {
                    Ok(Packet::Info(info)) => self.link.report(DiscoveryEvent::Info {
                        sender: node.clone(),
                        info: info.info,
                    }),
                    _ => {
                        tracing::warn!(
                            key,
                            "skipped an INFO key whose value is not an INFO packet"
                        );
                    }
                },
                None => tracing::debug!(key, "no INFO for '{node}' yet"),
            },
            Err(err) => tracing::warn!(key, "cannot read an INFO key: {err}"),
        }
    }
}

impl Discoverer for Etcd3Discoverer {
    fn name(&self) -> &'static str {
        "Etcd3"
    }

    async fn start(
        &self,
        link: Arc<dyn DiscoveryLink>,
        timing: DiscoveryTiming,
    ) -> Result<(), TransporterError> {
        let state = Arc::new(State {
            prefix: keys::prefix(link.namespace()),
            link,
            opts: self.opts.clone(),
            serializer: self.opts.serializer.build(),
            client: Mutex::new(None),
            timing,
            beat_lease: Mutex::new(None),
            info_lease: Mutex::new(None),
            granted: Mutex::new(HashSet::new()),
            last_beat: Mutex::new(None),
            info_seq: Mutex::new(None),
            live: Mutex::new(HashMap::new()),
            cycle: AtomicU32::new(0),
            reachable: AtomicBool::new(true),
            hold: OutageHold::default(),
            judge_after: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            beating: tokio::sync::Mutex::new(()),
        });
        let beat_state = state.clone();
        let interval = timing.heartbeat_interval;
        let jitter = (interval.as_secs_f64() / 4.0).min(0.5);
        let period = Duration::from_secs_f64(
            (interval.as_secs_f64() + rand::rng().random_range(-jitter..=jitter)).max(0.05),
        );
        let beats = moleculer_core::task::spawn(async move {
            // At once (the first beat also reads every key), then every heartbeat interval.
            while beat_state.link.alive() {
                beat_state.beat().await;
                tokio::time::sleep(period).await;
            }
        });
        let watch = moleculer_core::task::spawn(state.clone().watch());
        state.tasks.lock().extend([beats, watch]);
        *self.state.lock() = Some(state);
        Ok(())
    }

    async fn packet_received(&self, packet: Packet) {
        let Some(state) = self.state() else { return };
        match packet {
            Packet::Info(p) => state.link.report(DiscoveryEvent::Info {
                sender: p.sender,
                info: p.info,
            }),
            Packet::Heartbeat(p) => state.hold.transporter_heartbeat(&*state.link, p),
            Packet::Disconnect(p) => state.link.report(DiscoveryEvent::Disconnected {
                node: p.sender,
                unexpected: false,
            }),
            // A DISCOVER is answered by the INFO key, which every beat keeps current.
            _ => {}
        }
    }

    async fn send_local_info(&self, _target: Option<NodeId>) {
        if let Some(state) = self.state() {
            state.beat().await;
        }
    }

    async fn discover_node(&self, node: NodeId) {
        if let Some(state) = self.state() {
            state.fetch_info(&node).await;
        }
    }

    async fn discover_all(&self) {
        let Some(state) = self.state() else { return };
        if let Some(mut client) = state.client().await {
            let _ = state.full_read(&mut client).await;
        }
    }

    async fn stop(&self) {
        let Some(state) = self.state.lock().take() else {
            return;
        };
        for task in state.tasks.lock().drain(..) {
            task.abort();
        }
        let goodbye = Packet::Disconnect(DisconnectPacket {
            ver: state.ver(),
            sender: state.link.node_id().clone(),
        });
        let _ = state.link.send(goodbye, None).await;
        if let Some(mut client) = state.client().await {
            // Revoking the leases deletes our keys; watchers see us go at once.
            let leases: Vec<i64> = state.granted.lock().drain().collect();
            for id in leases {
                // Already gone (expired, or revoked by a seq change) is fine.
                if let Err(err) = client.lease_revoke(id).await {
                    tracing::debug!("lease {id} not revoked: {err}");
                }
            }
        }
    }
}
