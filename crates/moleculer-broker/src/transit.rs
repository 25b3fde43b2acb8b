//! Transit: encoding packets, sending them, and matching responses to pending requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use moleculer_core::protocol::{Packet, ProtocolVersion, RequestPacket};
use moleculer_core::serializer::Serializer;
use moleculer_core::transporter::{Outgoing, TransporterError};
use moleculer_core::{Meta, MoleculerError, NodeId, Result};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::bridges::DynTransporter;

/// What a remote call answers: the data and the callee's meta.
pub(crate) type Reply = Result<(Value, Meta)>;

struct Pending {
    node: NodeId,
    action: String,
    reply: oneshot::Sender<Reply>,
}

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
}

impl TransitStats {
    /// Every dropped packet, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
            + self.oversized.load(Ordering::Relaxed)
            + self.wrong_version.load(Ordering::Relaxed)
    }
}

pub(crate) struct Transit {
    pub version: ProtocolVersion,
    pub serializer: Arc<dyn Serializer>,
    pub transporter: Arc<dyn DynTransporter>,
    pub max_queue_size: usize,
    pub max_packet_size: usize,
    pub disable_version_check: bool,
    pending: DashMap<String, Pending>,
    pub stats: TransitStats,
}

impl Transit {
    pub fn new(
        version: ProtocolVersion,
        serializer: Arc<dyn Serializer>,
        transporter: Arc<dyn DynTransporter>,
        settings: &crate::options::TransitSettings,
    ) -> Self {
        Self {
            version,
            serializer,
            transporter,
            max_queue_size: settings.max_queue_size,
            max_packet_size: settings.max_packet_size,
            disable_version_check: settings.disable_version_check,
            pending: DashMap::new(),
            stats: TransitStats::default(),
        }
    }

    pub fn ver(&self) -> String {
        self.version.as_str().to_owned()
    }

    /// Encodes and sends one packet.
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
        self.transporter
            .send(Outgoing {
                kind,
                target,
                payload,
            })
            .await
    }

    /// Sends a REQ and waits for its RES. The request is rejected at once if the node leaves.
    pub async fn request(
        &self,
        target: NodeId,
        request: RequestPacket,
        timeout: Option<Duration>,
    ) -> Reply {
        let action = request.action.clone();
        if self.pending.len() >= self.max_queue_size {
            return Err(MoleculerError::queue_is_full(
                &action,
                &target,
                self.pending.len(),
                self.max_queue_size,
            ));
        }
        let id = request.id.clone();
        let (tx, rx) = oneshot::channel();
        self.pending.insert(
            id.clone(),
            Pending {
                node: target.clone(),
                action: action.clone(),
                reply: tx,
            },
        );
        if let Err(err) = self
            .send(Packet::Request(request), Some(target.clone()))
            .await
        {
            self.pending.remove(&id);
            tracing::warn!(node = %target, action = %action, "cannot send request: {err}");
            return Err(MoleculerError::broker_disconnected());
        }
        let answer = match timeout {
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.pending.remove(&id);
                    return Err(MoleculerError::request_timeout(&action, &target));
                }
            },
            None => rx.await,
        };
        answer.unwrap_or_else(|_| Err(MoleculerError::request_rejected(&action, &target)))
    }

    /// Completes the pending request `id`. Returns `false` for an orphan response.
    pub fn resolve(&self, id: &str, reply: Reply) -> bool {
        match self.pending.remove(id) {
            Some((_, pending)) => {
                let _ = pending.reply.send(reply);
                true
            }
            None => {
                self.stats.orphan_responses.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Rejects every request pending on `node` (it left or was declared dead).
    pub fn reject_pending_for(&self, node: &str) -> usize {
        let ids: Vec<String> = self
            .pending
            .iter()
            .filter(|p| *p.node == *node)
            .map(|p| p.key().clone())
            .collect();
        for id in &ids {
            if let Some((_, pending)) = self.pending.remove(id) {
                let _ = pending.reply.send(Err(MoleculerError::request_rejected(
                    &pending.action,
                    &pending.node,
                )));
            }
        }
        ids.len()
    }

    /// Rejects everything pending (the broker stops).
    pub fn reject_all(&self) {
        let ids: Vec<String> = self.pending.iter().map(|p| p.key().clone()).collect();
        for id in ids {
            if let Some((_, pending)) = self.pending.remove(&id) {
                let _ = pending
                    .reply
                    .send(Err(MoleculerError::broker_disconnected()));
            }
        }
    }

    /// How many requests wait for an answer.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}
