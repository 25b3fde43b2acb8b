//! The transporter trait: how packets travel between nodes.
//!
//! A transporter moves encoded packets. It knows nothing of their meaning: the broker encodes and
//! decodes, and hands the transporter a type, an optional target node and the bytes.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::node_id::NodeId;
use crate::protocol::{PacketType, ProtocolVersion};
use crate::serializer::Serializer;

/// A packet to send: to one node (`target`) or to every node (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Packet type.
    pub kind: PacketType,
    /// Target node, or `None` to broadcast.
    pub target: Option<NodeId>,
    /// Encoded packet.
    pub payload: Vec<u8>,
}

/// A packet that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Packet type.
    pub kind: PacketType,
    /// Encoded packet.
    pub payload: Vec<u8>,
}

/// Where a transporter delivers what it receives.
pub type IncomingSink = mpsc::UnboundedSender<Incoming>;

/// What a transporter needs to know when it connects.
#[derive(Clone)]
pub struct TransporterSetup {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster namespace (part of topic names).
    pub namespace: String,
    /// Where to deliver incoming packets.
    pub incoming: IncomingSink,
    /// The cluster's serializer, for transporters that speak packets of their own (TCP gossip).
    pub serializer: Arc<dyn Serializer>,
    /// The protocol version packets carry.
    pub version: ProtocolVersion,
}

impl std::fmt::Debug for TransporterSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransporterSetup")
            .field("node_id", &self.node_id)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl TransporterSetup {
    /// A setup with the default serializer (JSON) and protocol 5, for tests of transporters.
    pub fn new(node_id: NodeId, namespace: impl Into<String>, incoming: IncomingSink) -> Self {
        Self {
            node_id,
            namespace: namespace.into(),
            incoming,
            serializer: Arc::new(crate::serializer::Json),
            version: ProtocolVersion::V5,
        }
    }
}

/// Local failures of a transporter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransporterError {
    /// Not connected (yet, or any more).
    #[error("the transporter is not connected")]
    NotConnected,
    /// The connection could not be made.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// Where it tried to connect.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// A packet could not be sent.
    #[error("cannot send {kind} packet: {reason}")]
    Send {
        /// Packet type.
        kind: PacketType,
        /// Why.
        reason: String,
    },
}

/// Moves packets between nodes. Implementors write `async fn`; the broker holds them behind an
/// object-safe bridge.
pub trait Transporter: Send + Sync + 'static {
    /// A name for logs and `$node.options`.
    fn name(&self) -> &'static str;

    /// Connects, subscribes to this node's topics, and starts delivering to `setup.incoming`.
    fn connect(
        &self,
        setup: TransporterSetup,
    ) -> impl Future<Output = Result<(), TransporterError>> + Send;

    /// Sends one packet.
    fn send(&self, packet: Outgoing) -> impl Future<Output = Result<(), TransporterError>> + Send;

    /// Disconnects; nothing is delivered afterwards.
    fn disconnect(&self) -> impl Future<Output = ()> + Send;
}
