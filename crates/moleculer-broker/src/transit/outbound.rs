//! Transit, sending side: builds and encodes packets, hands them to the transporter, and
//! matches RESPONSE and PONG packets to the calls and pings that wait for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use moleculer_core::protocol::{
    EventPacket, Packet, PacketType, PingPacket, PongPacket, ProtocolVersion, RequestRef,
    ResponsePacket,
};
use moleculer_core::serializer::Serializer;
use moleculer_core::transporter::{Outgoing, TransporterError};
use moleculer_core::{Context, Meta, MoleculerError, NodeId, Origin, Result};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::pending::{PendingRequests, Reply};
use crate::bridges::DynTransporter;
use crate::options::TransitSettings;

/// Counters of what transit dropped, for tests and monitoring.
#[derive(Debug, Default)]
pub struct TransitStats {
    /// Packets that could not be decoded (malformed, truncated, unknown fields of the wrong type).
    pub malformed: AtomicU64,
    /// Packets above the size limit.
    pub oversized: AtomicU64,
    /// Packets with another protocol version.
    pub wrong_version: AtomicU64,
    /// Responses nobody waits for (late, after a timeout).
    pub orphan_responses: AtomicU64,
    /// Packets handed to the transporter, by type (indexed like [`PacketType::ALL`]).
    pub sent: [AtomicU64; PacketType::ALL.len()],
    /// Bytes handed to the transporter.
    pub sent_bytes: AtomicU64,
    /// Packets received from the transporter, by type, before any check.
    pub received: [AtomicU64; PacketType::ALL.len()],
    /// Bytes received from the transporter.
    pub received_bytes: AtomicU64,
}

impl TransitStats {
    /// Every dropped packet, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
            + self.oversized.load(Ordering::Relaxed)
            + self.wrong_version.load(Ordering::Relaxed)
    }

    /// Counts one packet handed to the transporter.
    #[inline]
    pub(crate) fn count_sent(&self, kind: PacketType, bytes: usize) {
        self.sent[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one packet received from the transporter.
    #[inline]
    pub(crate) fn count_received(&self, kind: PacketType, bytes: usize) {
        self.received[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

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

/// Milliseconds since the Unix epoch (PING and PONG carry wall-clock times).
pub(crate) fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The sending half of transit, shared by calls, events, discovery and the receive side.
pub(crate) struct Transit {
    pub node_id: NodeId,
    pub version: ProtocolVersion,
    pub serializer: Arc<dyn Serializer>,
    pub transporter: Arc<dyn DynTransporter>,
    pub max_packet_size: usize,
    pub disable_version_check: bool,
    pub stats: TransitStats,
    pending: PendingRequests,
    pings: DashMap<String, oneshot::Sender<PongPacket>>,
}

/// Forgets a pending request when its caller stops waiting (timeout, send failure, or the
/// caller's future was dropped), so nothing lingers until a reply that may never come.
struct PendingGuard<'a> {
    transit: &'a Transit,
    id: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.transit.pending.remove(self.id);
    }
}

impl Transit {
    pub fn new(
        node_id: NodeId,
        version: ProtocolVersion,
        serializer: Arc<dyn Serializer>,
        transporter: Arc<dyn DynTransporter>,
        settings: &TransitSettings,
    ) -> Self {
        Self {
            node_id,
            version,
            serializer,
            transporter,
            max_packet_size: settings.max_packet_size,
            disable_version_check: settings.disable_version_check,
            stats: TransitStats::default(),
            pending: PendingRequests::new(settings.max_queue_size),
            pings: DashMap::new(),
        }
    }

    /// The protocol version every packet carries.
    pub fn ver(&self) -> String {
        self.version.as_str().to_owned()
    }

    /// Encodes and sends one packet, to `target` or to every node.
    pub async fn send(
        &self,
        packet: Packet,
        target: Option<NodeId>,
    ) -> Result<(), TransporterError> {
        let kind = packet.kind();
        let payload = self
            .serializer
            .encode(&packet)
            .map_err(|e| TransporterError::Send {
                kind,
                reason: e.to_string(),
            })?;
        self.stats.count_sent(kind, payload.len());
        self.transporter
            .send(Outgoing {
                kind,
                target,
                payload,
            })
            .await
    }

    /// Encodes the REQUEST for a call context: everything the callee needs to rebuild it,
    /// borrowed from the context (params and meta are not copied).
    fn encode_request(&self, ctx: &Context) -> Result<Vec<u8>, TransporterError> {
        let request_id = ctx.request_id();
        let ver = self.version.as_str();
        ctx.with_meta(|meta| {
            self.serializer.encode_request(&RequestRef {
                id: ctx.id(),
                action: ctx.action().unwrap_or_default(),
                params: ctx.params(),
                meta,
                headers: self.version.has_headers().then(|| ctx.headers()),
                timeout: ctx.timeout().map(|t| t.as_secs_f64() * 1000.0),
                level: ctx.level(),
                tracing: ctx.tracing(),
                parent_id: ctx.parent_id(),
                request_id: Some(request_id),
                caller: ctx.caller(),
                stream: Some(false),
                seq: None,
                ver,
                sender: &self.node_id,
            })
        })
        .map_err(|e| TransporterError::Send {
            kind: PacketType::Request,
            reason: e.to_string(),
        })
    }

    /// Sends the REQUEST for `ctx` to the node that runs its action and waits for the answer,
    /// at most the context's timeout. The request is rejected at once if that node leaves.
    pub async fn request(&self, ctx: &Context) -> Reply {
        let target = ctx.local_node_id();
        let action = ctx.action().unwrap_or_default();
        let rx = self.pending.add(ctx.id().clone(), target, action)?;
        let guard = PendingGuard {
            transit: self,
            id: ctx.id(),
        };
        let sent = match self.encode_request(ctx) {
            Ok(payload) => {
                self.stats.count_sent(PacketType::Request, payload.len());
                self.transporter
                    .send(Outgoing {
                        kind: PacketType::Request,
                        target: Some(target.clone()),
                        payload,
                    })
                    .await
            }
            Err(err) => Err(err),
        };
        if let Err(err) = sent {
            tracing::warn!(node = %target, action, "cannot send a request: {err}");
            return Err(match err {
                TransporterError::NotConnected => MoleculerError::broker_disconnected(),
                other => MoleculerError::request_not_sent(action, target, &other.to_string()),
            });
        }
        let answer = match ctx.timeout() {
            Some(limit) => match tokio::time::timeout(limit, rx).await {
                Ok(answer) => answer,
                Err(_) => return Err(MoleculerError::request_timeout(action, target)),
            },
            None => rx.await,
        };
        // Answered (or rejected): the entry is gone already.
        std::mem::forget(guard);
        answer.unwrap_or_else(|_| Err(MoleculerError::request_rejected(action, target)))
    }

    /// Completes the pending request `id`; an answer nobody waits for is counted as orphan.
    pub fn resolve(&self, id: &str, reply: Reply) {
        if !self.pending.resolve(id, reply) {
            self.stats.orphan_responses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rejects every request pending on `node` (it left or was declared dead).
    pub fn reject_pending_for(&self, node: &str) -> usize {
        self.pending.reject_for(node)
    }

    /// Rejects everything pending (the broker stops).
    pub fn reject_all(&self) {
        self.pending.reject_all();
    }

    /// How many requests wait for an answer.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The RESPONSE answering request `id`.
    pub fn response_packet(&self, id: String, reply: Reply) -> Packet {
        let (success, data, error, meta) = match reply {
            Ok((data, meta)) => (true, data, None, meta),
            Err(mut err) => {
                if err.node_id.is_none() {
                    err.node_id = Some(self.node_id.to_string());
                }
                (false, Value::Null, Some(err), Meta::new())
            }
        };
        Packet::Response(ResponsePacket {
            id,
            meta,
            headers: self.version.has_headers().then(Meta::new),
            success,
            data,
            error,
            stream: None,
            seq: None,
            ver: self.ver(),
            sender: self.node_id.clone(),
        })
    }

    /// An EVENT for one node. `groups` are the groups chosen for that node (emit) or the
    /// caller's group filter (broadcast).
    #[allow(clippy::too_many_arguments)]
    pub fn event_packet(
        &self,
        event: &str,
        data: Value,
        groups: Option<Vec<String>>,
        broadcast: bool,
        meta: Meta,
        headers: &Meta,
        origin: &Origin,
    ) -> EventPacket {
        EventPacket {
            id: Some(moleculer_core::node_id::generate_id()),
            event: event.to_owned(),
            data,
            groups,
            broadcast,
            meta,
            headers: self.version.has_headers().then(|| headers.clone()),
            level: Some(origin.level),
            tracing: origin.tracing,
            parent_id: origin.parent_id.as_deref().map(str::to_owned),
            request_id: origin.request_id.as_deref().map(str::to_owned),
            caller: origin.caller.as_deref().map(str::to_owned),
            need_ack: None,
            ver: self.ver(),
            sender: self.node_id.clone(),
        }
    }

    /// The PONG answering `ping`.
    pub fn pong_for(&self, ping: &PingPacket) -> Packet {
        Packet::Pong(PongPacket {
            time: ping.time,
            id: ping.id.clone(),
            arrived: epoch_ms(),
            ver: self.ver(),
            sender: self.node_id.clone(),
        })
    }

    /// A PING round trip to `node`; answers the PING's id with the result.
    pub async fn ping(&self, node: &str, timeout: Duration) -> Result<(String, PingResult)> {
        let id = moleculer_core::node_id::generate_id();
        let (tx, rx) = oneshot::channel();
        let sent_at = Instant::now();
        self.pings.insert(id.clone(), tx);
        let ping = Packet::Ping(PingPacket {
            time: epoch_ms(),
            id: id.clone(),
            ver: self.ver(),
            sender: self.node_id.clone(),
        });
        if let Err(err) = self.send(ping, Some(NodeId::new(node))).await {
            self.pings.remove(&id);
            tracing::warn!(node, "cannot send a ping: {err}");
            return Err(MoleculerError::broker_disconnected());
        }
        let pong = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(pong)) => pong,
            _ => {
                self.pings.remove(&id);
                return Err(MoleculerError::request_timeout("$node.ping", node));
            }
        };
        let elapsed_ms = sent_at.elapsed().as_secs_f64() * 1000.0;
        let result = PingResult {
            node_id: NodeId::new(node),
            elapsed_ms,
            time_diff_ms: (epoch_ms() - pong.arrived - elapsed_ms / 2.0).round(),
        };
        Ok((id, result))
    }

    /// A PONG arrived: completes the ping that waits for it, if any.
    pub fn pong_arrived(&self, pong: PongPacket) {
        if let Some((_, waiter)) = self.pings.remove(&pong.id) {
            let _ = waiter.send(pong);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use moleculer_core::transporter::{Transporter, TransporterSetup};
    use moleculer_core::{BrokerHandle, ContextTarget};

    use super::*;

    /// A transporter whose every send fails with `error`.
    struct Failing(TransporterError);

    impl Transporter for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        async fn connect(&self, _: TransporterSetup) -> Result<(), TransporterError> {
            Ok(())
        }
        async fn send(&self, _: Outgoing) -> Result<(), TransporterError> {
            Err(self.0.clone())
        }
        async fn disconnect(&self) {}
    }

    fn transit(error: TransporterError) -> Transit {
        Transit::new(
            NodeId::new("caller"),
            ProtocolVersion::V5,
            Arc::new(moleculer_core::serializer::Json),
            Arc::new(Failing(error)),
            &TransitSettings::default(),
        )
    }

    fn call_to(node: &str) -> Context {
        let target = Arc::new(ContextTarget {
            broker: Weak::<crate::broker_core::BrokerCore>::new() as Weak<dyn BrokerHandle>,
            local_node: NodeId::new(node),
            service: "math".into(),
            action: Some("math.add".into()),
            tracker: None,
            bulkhead: None,
            breaker: None,
            retry: None,
            meter: None,
        });
        Context::for_call(
            target,
            None,
            Origin::child_of(None),
            Value::Null,
            Meta::new(),
            Meta::new(),
            Some(Duration::from_secs(1)),
        )
    }

    #[tokio::test]
    async fn a_failed_send_keeps_its_cause_and_leaves_nothing_pending() {
        let transit = transit(TransporterError::Send {
            kind: moleculer_core::protocol::PacketType::Request,
            reason: "connection to 'b' closed".into(),
        });
        let err = transit.request(&call_to("b")).await.unwrap_err();
        assert_eq!(
            (err.name.as_str(), err.code),
            ("BrokerDisconnectedError", 502)
        );
        assert!(err.retryable);
        assert!(
            err.message.contains("connection to 'b' closed") && err.message.contains("'math.add'"),
            "{}",
            err.message
        );
        assert_eq!(err.data["nodeID"], "b");
        assert_eq!(transit.pending_count(), 0);
    }

    #[tokio::test]
    async fn a_disconnected_transporter_is_moleculers_broker_disconnected() {
        let transit = transit(TransporterError::NotConnected);
        let err = transit.request(&call_to("b")).await.unwrap_err();
        assert_eq!(err, MoleculerError::broker_disconnected());
        assert_eq!(transit.pending_count(), 0);
    }

    #[tokio::test]
    async fn a_dropped_caller_leaves_nothing_pending() {
        // A transporter that accepts: the request waits for an answer that never comes.
        let waiting = Transit::new(
            NodeId::new("caller"),
            ProtocolVersion::V5,
            Arc::new(moleculer_core::serializer::Json),
            Arc::new(moleculer_core::memory_transporter::MemoryBus::new().transporter()),
            &TransitSettings::default(),
        );
        waiting
            .transporter
            .connect(TransporterSetup::new(
                NodeId::new("caller"),
                "",
                tokio::sync::mpsc::unbounded_channel().0,
            ))
            .await
            .unwrap();
        let ctx = call_to("b");
        let mut call = Box::pin(waiting.request(&ctx));
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert_eq!(waiting.pending_count(), 1);
        drop(call);
        assert_eq!(waiting.pending_count(), 0);
    }
}
