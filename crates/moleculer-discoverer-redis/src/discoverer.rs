//! The Redis discoverer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::discoverer::{Discoverer, DiscoveryEvent, DiscoveryLink, DiscoveryTiming};
use moleculer_core::protocol::{DisconnectPacket, HeartbeatPacket, Packet, PacketType};
use moleculer_core::serializer::Serializer;
use moleculer_core::transporter::TransporterError;
use moleculer_core::{NodeId, OutageHold};
use parking_lot::Mutex;
use rand::Rng;
use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::keys;
use crate::options::RedisDiscovererOptions;

/// INFO keys live this long without a rewrite (Moleculer: 30 min).
const INFO_TTL_SECS: u64 = 1800;

/// Discovery through Redis keys (Moleculer's `Redis` discoverer).
pub struct RedisDiscoverer {
    opts: RedisDiscovererOptions,
    state: Mutex<Option<Arc<State>>>,
}

struct State {
    link: Arc<dyn DiscoveryLink>,
    opts: RedisDiscovererOptions,
    prefix: String,
    serializer: Arc<dyn Serializer>,
    client: Option<redis::Client>,
    conn: Mutex<Option<ConnectionManager>>,
    timing: DiscoveryTiming,
    /// The beat key written last (deleted when the seq changes) and the seq of the INFO written.
    last_beat: Mutex<Option<String>>,
    info_seq: Mutex<Option<u64>>,
    /// Nodes whose beat key has been seen: only those can be declared gone by a missing key.
    seen: Mutex<HashSet<NodeId>>,
    cycle: AtomicU32,
    reachable: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// One beat (or INFO write) at a time: each reads this node's INFO, then writes it; two
    /// interleaved could leave the older INFO in Redis for good.
    beating: tokio::sync::Mutex<()>,
    /// Whether our last beat advertised this node (its transporter was ready).
    advertised: AtomicBool,
    /// Until then, a missing beat key proves nothing: Redis just came back (perhaps empty) and
    /// every node is still writing its keys again.
    judge_after: Mutex<Option<Instant>>,
    /// Holds nodes that beat only in Redis alive while it is unreachable.
    hold: OutageHold,
}

/// How often an unreachable Redis is tried again, and how soon a node not yet advertised
/// (its transporter not subscribed yet) beats again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

impl RedisDiscoverer {
    /// A discoverer with these options.
    pub fn new(opts: RedisDiscovererOptions) -> Self {
        Self {
            opts,
            state: Mutex::new(None),
        }
    }

    fn state(&self) -> Option<Arc<State>> {
        self.state.lock().clone()
    }
}

impl State {
    fn ver(&self) -> String {
        self.link.protocol_version().as_str().to_owned()
    }

    /// The shared connection, opened on demand: while Redis is unreachable every beat retries.
    async fn conn(&self) -> Option<ConnectionManager> {
        if let Some(conn) = self.conn.lock().clone() {
            return Some(conn);
        }
        let client = self.client.as_ref()?;
        // One quick attempt: a failed one is retried by the next beat or retry, and a slow
        // one must not hold back the heartbeats that go over the transporter meanwhile.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        match tokio::time::timeout(
            Duration::from_secs(1),
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        {
            Ok(Ok(conn)) => {
                *self.conn.lock() = Some(conn.clone());
                Some(conn)
            }
            Ok(Err(err)) => {
                self.unreachable(&err.to_string());
                None
            }
            Err(_) => {
                self.unreachable("no answer within 1 s");
                None
            }
        }
    }

    fn unreachable(&self, why: &str) {
        // A fresh connection per try from now on: the old one's own reconnect backoff would
        // keep us away for seconds after Redis is back.
        self.conn.lock().take();
        if self.reachable.swap(false, Ordering::AcqRel) {
            tracing::error!(url = %self.opts.url, "Redis discoverer cannot reach {}: {why}; heartbeats go over the transporter until it is back", self.opts.url);
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

    fn info_key(&self) -> String {
        keys::info(&self.prefix, self.link.node_id())
    }

    async fn write_info(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        let packet = self.link.info_packet();
        let seq = packet.info.seq;
        let Ok(value) = self.serializer.encode(&Packet::Info(packet)) else {
            return Ok(());
        };
        redis::cmd("SETEX")
            .arg(self.info_key())
            .arg(INFO_TTL_SECS)
            .arg(value)
            .query_async::<()>(conn)
            .await?;
        *self.info_seq.lock() = Some(seq);
        Ok(())
    }

    /// One heartbeat. While Redis is known to be unreachable, peers hear it over the
    /// transporter first, so a slow or dead Redis can never delay it past their timeout.
    async fn beat(&self) {
        let _turn = self.beating.lock().await;
        let over_transporter = !self.reachable.load(Ordering::Acquire);
        if over_transporter {
            self.beat_over_transporter().await;
        }
        let limit = self.timing.heartbeat_interval.mul_f64(0.8);
        let written = tokio::time::timeout(limit, self.beat_in_redis())
            .await
            .unwrap_or_else(|_| {
                self.unreachable("no answer within the heartbeat interval");
                false
            });
        if !written {
            if !over_transporter {
                self.beat_over_transporter().await;
            }
            self.hold_silent_nodes();
        }
    }

    /// One quick try while pending: a beat if Redis answers a PING; whether the node is
    /// advertised again.
    async fn retry(&self) -> bool {
        let Some(mut conn) = self.conn().await else {
            return false;
        };
        let pong = tokio::time::timeout(
            RETRY_EVERY,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        if !matches!(pong, Ok(Ok(_))) {
            return false;
        }
        self.beat().await;
        !self.pending()
    }

    /// Whether the node should beat again soon rather than in a heartbeat interval: Redis is
    /// unreachable, or this node is not advertised yet.
    fn pending(&self) -> bool {
        !self.reachable.load(Ordering::Acquire) || !self.advertised.load(Ordering::Acquire)
    }

    /// While Redis is unreachable, nodes we know through it that send no heartbeats over the
    /// transporter cannot prove they live, nor that they died: they are held until Redis is back.
    fn hold_silent_nodes(&self) {
        let seen = self.seen.lock().clone();
        self.hold
            .hold(&*self.link, self.timing.heartbeat_timeout, |n| {
                seen.contains(n)
            });
    }

    /// No node is judged by a missing beat key for a heartbeat timeout from now.
    fn hold_judgement(&self, why: &str) {
        let timeout = self.timing.heartbeat_timeout;
        *self.judge_after.lock() = Some(Instant::now() + timeout);
        tracing::info!(url = %self.opts.url, "{why}: every node writes its keys again; none is judged by a missing key for {} s", timeout.as_secs_f64());
    }

    /// Writes our beat (and our INFO when it changed or vanished), then looks at the others.
    /// Returns whether Redis took the beat.
    async fn beat_in_redis(&self) -> bool {
        let Some(mut conn) = self.conn().await else {
            return false;
        };
        let info = self.link.local_info();
        let key = keys::beat(
            &self.prefix,
            self.link.node_id(),
            &info.instance_id,
            info.seq,
        );
        let Ok(value) = self.serializer.encode(&self.heartbeat_packet()) else {
            return false;
        };
        let ttl = self.timing.heartbeat_timeout.as_secs_f64().ceil().max(1.0) as u64;
        // Peers route calls to a node they see beating: not before its transporter can take
        // them (after an outage of a Redis shared by both, the subscription may lag).
        let advertise = self.link.transporter_ready();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if advertise {
            let previous = self.last_beat.lock().clone();
            if let Some(old) = previous.filter(|old| *old != key) {
                pipe.cmd("DEL").arg(old).ignore();
            }
            pipe.cmd("SETEX").arg(&key).arg(ttl).arg(value).ignore();
        }
        pipe.cmd("EXISTS").arg(self.info_key());
        match pipe.query_async::<(i64,)>(&mut conn).await {
            Ok((info_exists,)) => {
                if advertise {
                    *self.last_beat.lock() = Some(key);
                }
                if self.advertised.swap(advertise, Ordering::AcqRel) != advertise && advertise {
                    tracing::debug!("advertised in Redis: the transporter is ready");
                }
                if !self.reachable.swap(true, Ordering::AcqRel) {
                    tracing::info!(url = %self.opts.url, "Redis discoverer reached {}", self.opts.url);
                    self.hold_judgement("Redis is reachable again");
                } else if info_exists == 0 && self.info_seq.lock().is_some() {
                    self.hold_judgement("Redis lost our INFO key (restarted empty or flushed)");
                }
                // A restarted or flushed Redis lost our INFO: write it again now (#764).
                if info_exists == 0 || *self.info_seq.lock() != Some(info.seq) {
                    if let Err(err) = self.write_info(&mut conn).await {
                        tracing::warn!(url = %self.opts.url, "cannot write the INFO key: {err}");
                    }
                }
                self.collect(&mut conn).await;
                true
            }
            Err(err) => {
                self.unreachable(&err.to_string());
                false
            }
        }
    }

    /// While Redis is unreachable, peers still learn that we live, over the transporter.
    async fn beat_over_transporter(&self) {
        if let Err(err) = self.link.send(self.heartbeat_packet(), None).await {
            if !matches!(err, TransporterError::NotConnected) {
                tracing::debug!("cannot send a heartbeat over the transporter: {err}");
            }
        }
    }

    async fn scan(&self, conn: &mut ConnectionManager) -> redis::RedisResult<Vec<String>> {
        let pattern = format!("{}-BEAT:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(self.opts.scan_length)
                .query_async(conn)
                .await?;
            found.extend(keys);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Moleculer's `collectOnlineNodes`: SCAN the beat keys, MGET them on full checks, report.
    async fn collect(&self, conn: &mut ConnectionManager) {
        let keys = match self.scan(conn).await {
            Ok(keys) => keys,
            Err(err) => {
                // No scan, no eviction.
                tracing::warn!(url = %self.opts.url, "cannot scan beat keys: {err}");
                return;
            }
        };
        let me = self.link.node_id().clone();
        let cycle = self.cycle.fetch_add(1, Ordering::Relaxed);
        let full = self.opts.full_check > 0 && cycle % self.opts.full_check == 0;
        let mut cpus: HashMap<String, Option<f64>> = HashMap::new();
        if full && !keys.is_empty() {
            match redis::cmd("MGET")
                .arg(&keys)
                .query_async::<Vec<Option<Vec<u8>>>>(conn)
                .await
            {
                Ok(values) => {
                    for (key, value) in keys.iter().zip(values) {
                        let Some(bytes) = value else { continue };
                        match self.serializer.decode(PacketType::Heartbeat, &bytes) {
                            Ok(Packet::Heartbeat(beat)) => {
                                cpus.insert(key.clone(), beat.cpu);
                            }
                            _ => tracing::warn!(
                                key,
                                "skipped a beat key whose value is not a HEARTBEAT packet"
                            ),
                        }
                    }
                }
                Err(err) => tracing::warn!("cannot read beat values: {err}"),
            }
        }
        let mut present = HashSet::new();
        for key in &keys {
            let Some((node, hash, seq)) = keys::parse_beat(&self.prefix, key) else {
                tracing::warn!(
                    key,
                    "skipped a beat key that is not <nodeID>|<instance>|<seq>"
                );
                continue;
            };
            let node = NodeId::new(node);
            if node == me {
                continue;
            }
            present.insert(node.clone());
            self.link.report(DiscoveryEvent::Heartbeat {
                sender: node,
                cpu: cpus.get(key).copied().flatten(),
                cpu_seq: None,
                seq: Some(seq),
                instance_id: Some(hash.to_owned()),
            });
        }
        let judging = self
            .judge_after
            .lock()
            .is_none_or(|after| Instant::now() >= after);
        let mut seen = self.seen.lock();
        if !judging {
            seen.extend(present);
            return;
        }
        let gone: Vec<NodeId> = self
            .link
            .nodes()
            .into_iter()
            .filter(|n| !n.local && n.available && seen.contains(&n.id) && !present.contains(&n.id))
            .map(|n| n.id)
            .collect();
        seen.extend(present);
        for node in gone {
            tracing::info!(node = %node, "beat key of '{node}' expired: the node is gone");
            seen.remove(&node);
            self.link.report(DiscoveryEvent::Disconnected {
                node,
                unexpected: true,
            });
        }
    }

    /// Moleculer's `discoverNode`: read its INFO key.
    async fn fetch_info(&self, node: &NodeId) {
        let Some(mut conn) = self.conn().await else {
            return;
        };
        let key = keys::info(&self.prefix, node);
        match redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await
        {
            Ok(Some(bytes)) => match self.serializer.decode(PacketType::Info, &bytes) {
                Ok(Packet::Info(info)) => self.link.report(DiscoveryEvent::Info {
                    sender: node.clone(),
                    info: info.info,
                }),
                Ok(_) | Err(_) => {
                    tracing::warn!(key, "skipped an INFO key whose value is not an INFO packet");
                }
            },
            Ok(None) => tracing::debug!(key, "no INFO for '{node}' yet"),
            Err(err) => tracing::warn!(key, "cannot read an INFO key: {err}"),
        }
    }
}

impl Discoverer for RedisDiscoverer {
    fn name(&self) -> &'static str {
        "Redis"
    }

    async fn start(
        &self,
        link: Arc<dyn DiscoveryLink>,
        timing: DiscoveryTiming,
    ) -> Result<(), TransporterError> {
        let client = redis::Client::open(self.opts.url.as_str())
            .map_err(|e| tracing::error!(url = %self.opts.url, "invalid Redis URL {}: {e}", self.opts.url))
            .ok();
        let state = Arc::new(State {
            prefix: keys::prefix(link.namespace()),
            link,
            opts: self.opts.clone(),
            serializer: self.opts.serializer.build(),
            client,
            conn: Mutex::new(None),
            timing,
            last_beat: Mutex::new(None),
            info_seq: Mutex::new(None),
            seen: Mutex::new(HashSet::new()),
            cycle: AtomicU32::new(rand::rng().random_range(0..self.opts.full_check.max(1))),
            reachable: AtomicBool::new(true),
            tasks: Mutex::new(Vec::new()),
            beating: tokio::sync::Mutex::new(()),
            advertised: AtomicBool::new(false),
            judge_after: Mutex::new(None),
            hold: OutageHold::default(),
        });
        let beat_state = state.clone();
        let interval = timing.heartbeat_interval;
        let jitter = (interval.as_secs_f64() / 4.0).min(0.5);
        let period = Duration::from_secs_f64(
            (interval.as_secs_f64() + rand::rng().random_range(-jitter..=jitter)).max(0.05),
        );
        let task = moleculer_core::task::spawn(async move {
            // At once (join fast), then every heartbeat interval.
            while beat_state.link.alive() {
                beat_state.beat().await;
                // Redis unreachable, or this node not advertised yet: try again soon, so the
                // node is back within a fraction of a second of Redis (or its subscription).
                let next = Instant::now() + period;
                while beat_state.pending() && Instant::now() + RETRY_EVERY < next {
                    tokio::time::sleep(RETRY_EVERY).await;
                    let retried = tokio::time::timeout(RETRY_EVERY * 3, beat_state.retry()).await;
                    if retried == Ok(true) {
                        break;
                    }
                }
                tokio::time::sleep_until(next).await;
            }
        });
        state.tasks.lock().push(task);
        *self.state.lock() = Some(state);
        Ok(())
    }

    async fn packet_received(&self, packet: Packet) {
        let Some(state) = self.state() else { return };
        match packet {
            // Moleculer answers a DISCOVER by rewriting its INFO key.
            Packet::Discover(_) => {
                if let Some(mut conn) = state.conn().await {
                    let _ = state.write_info(&mut conn).await;
                }
            }
            Packet::Info(p) => state.link.report(DiscoveryEvent::Info {
                sender: p.sender,
                info: p.info,
            }),
            Packet::Heartbeat(p) => state.hold.transporter_heartbeat(&*state.link, p),
            Packet::Disconnect(p) => state.link.report(DiscoveryEvent::Disconnected {
                node: p.sender,
                unexpected: false,
            }),
            other => tracing::debug!("the Redis discoverer ignores {} packets", other.kind()),
        }
    }

    async fn send_local_info(&self, target: Option<NodeId>) {
        let Some(state) = self.state() else { return };
        if target.is_none() {
            state.beat().await;
        } else if let Some(mut conn) = state.conn().await {
            let _turn = state.beating.lock().await;
            let _ = state.write_info(&mut conn).await;
        }
    }

    async fn discover_node(&self, node: NodeId) {
        if let Some(state) = self.state() {
            state.fetch_info(&node).await;
        }
    }

    async fn discover_all(&self) {
        let Some(state) = self.state() else { return };
        if let Some(mut conn) = state.conn().await {
            state.collect(&mut conn).await;
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
        if let Some(mut conn) = state.conn().await {
            let mut keys = vec![state.info_key()];
            keys.extend(state.last_beat.lock().clone());
            if let Err(err) = redis::cmd("DEL")
                .arg(&keys)
                .query_async::<i64>(&mut conn)
                .await
            {
                tracing::warn!("cannot remove our keys from Redis: {err}");
            }
        }
    }
}
