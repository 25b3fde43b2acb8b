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

/// What became of a delivered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The broker took it.
    Accepted,
    /// The broker dropped it as bad (malformed, oversized, wrong protocol version). A
    /// transporter may close a connection that sends little else.
    Refused,
    /// Nobody receives any more (the broker is gone).
    Closed,
}

/// Where a transporter delivers what it receives. The broker's sink handles requests,
/// responses and events right away, in the transporter's own task (no extra hop), and queues
/// discovery packets in order.
#[derive(Clone)]
pub struct IncomingSink(Arc<dyn Fn(Incoming) -> Delivery + Send + Sync>);

impl IncomingSink {
    /// A sink that calls `deliver` for every packet.
    pub fn new(deliver: impl Fn(Incoming) -> Delivery + Send + Sync + 'static) -> Self {
        Self(Arc::new(deliver))
    }

    /// Delivers a packet and says what became of it.
    pub fn deliver(&self, packet: Incoming) -> Delivery {
        (self.0)(packet)
    }

    /// Delivers a packet; `Err` gives back its kind when the receiver is gone.
    pub fn send(&self, packet: Incoming) -> Result<(), PacketType> {
        let kind = packet.kind;
        match self.deliver(packet) {
            Delivery::Closed => Err(kind),
            Delivery::Accepted | Delivery::Refused => Ok(()),
        }
    }
}

impl std::fmt::Debug for IncomingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IncomingSink")
    }
}

impl From<mpsc::UnboundedSender<Incoming>> for IncomingSink {
    /// A sink feeding a channel (tests read packets from its receiver).
    fn from(tx: mpsc::UnboundedSender<Incoming>) -> Self {
        Self::new(move |packet| match tx.send(packet) {
            Ok(()) => Delivery::Accepted,
            Err(_) => Delivery::Closed,
        })
    }
}

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
    pub fn new(
        node_id: NodeId,
        namespace: impl Into<String>,
        incoming: impl Into<IncomingSink>,
    ) -> Self {
        Self {
            node_id,
            namespace: namespace.into(),
            incoming: incoming.into(),
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
    /// The transporter could not listen where it should (a port in use, say).
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address it tried to listen on.
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

    /// Whether packets sent to this node reach it now (its subscriptions are in place). A
    /// discoverer does not advertise the node while this is false: peers would send it calls
    /// it cannot receive. Default: always.
    fn is_ready(&self) -> bool {
        true
    }
}
