//! The discoverer trait: how nodes find each other and learn who is alive.
//!
//! A discoverer never touches the registry. It reports typed [`DiscoveryEvent`]s through the
//! [`DiscoveryLink`] the broker gives it, and the broker applies them. The broker, not the
//! discoverer, checks heartbeat timeouts and removes offline nodes, so that logic exists once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::node_id::NodeId;
use crate::protocol::{HeartbeatPacket, InfoPacket, Packet, ProtocolVersion};
use crate::service_info::NodeInfo;
use crate::transporter::TransporterError;

/// What a discoverer learned.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryEvent {
    /// A node described itself (INFO).
    Info {
        /// The node.
        sender: NodeId,
        /// Its description.
        info: NodeInfo,
    },
    /// A node is alive.
    Heartbeat {
        /// The node.
        sender: NodeId,
        /// Its CPU usage.
        cpu: Option<f64>,
        /// The node's own counter of CPU changes (gossip compares it), when known.
        cpu_seq: Option<u64>,
        /// Its INFO seq, when the discoverer knows it (Redis, etcd).
        seq: Option<u64>,
        /// Its instance id (or a prefix of it), when the discoverer knows it.
        instance_id: Option<String>,
    },
    /// A peer believes this node is offline at `seq`: raise our seq above it, so the peer takes
    /// our next INFO as new (TCP gossip).
    LocalSeqAtLeast(u64),
    /// A peer vouches that a live process at `address` (instance `instance_id`) already holds
    /// this node's id: this node is a duplicate and must not join (TCP gossip).
    NodeIdTaken {
        /// The other process's instance id.
        instance_id: String,
        /// Where it listens.
        address: String,
    },
    /// A node left (`unexpected: false`) or vanished (`unexpected: true`).
    Disconnected {
        /// The node.
        node: NodeId,
        /// Whether it vanished without saying goodbye.
        unexpected: bool,
    },
}

/// What the registry knows of one node, for gossip digests.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDigest {
    /// The node.
    pub id: NodeId,
    /// Whether it is this node.
    pub local: bool,
    /// Whether it is online.
    pub available: bool,
    /// Its INFO seq.
    pub seq: u64,
    /// The process instance its last INFO came from.
    pub instance_id: String,
    /// Its CPU change counter.
    pub cpu_seq: u64,
    /// Its CPU usage.
    pub cpu: Option<f64>,
    /// Its INFO (with `port`), for online nodes.
    pub info: Option<NodeInfo>,
    /// Its host name.
    pub hostname: String,
    /// Its addresses.
    pub ip_list: Vec<String>,
    /// Its TCP port, when known.
    pub port: Option<u16>,
}

/// What the broker offers its discoverer.
pub trait DiscoveryLink: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &NodeId;
    /// This process's instance id.
    fn instance_id(&self) -> &str;
    /// The cluster namespace (part of Redis and etcd key names).
    fn namespace(&self) -> &str;
    /// The protocol version packets must carry.
    fn protocol_version(&self) -> ProtocolVersion;
    /// This node's current INFO.
    fn local_info(&self) -> NodeInfo;
    /// This machine's CPU usage (0–100), if known.
    fn cpu_usage(&self) -> Option<f64>;
    /// Every known node, this one included.
    fn nodes(&self) -> Vec<NodeDigest>;
    /// Sends a packet over the transporter, to one node or to all.
    fn send(
        &self,
        packet: Packet,
        target: Option<NodeId>,
    ) -> BoxFuture<'static, Result<(), TransporterError>>;
    /// Reports what was learned.
    fn report(&self, event: DiscoveryEvent);

    /// Whether the transporter delivers packets to this node now (see
    /// [`Transporter::is_ready`](crate::transporter::Transporter::is_ready)). Default: always.
    fn transporter_ready(&self) -> bool {
        true
    }
    /// Whether the broker still exists; a discoverer's timers stop when it does not (a broker
    /// dropped without `stop` must not keep beating for a dead node).
    fn alive(&self) -> bool {
        true
    }
    /// This node's INFO packet, as sent over the transporter and stored by key-value
    /// discoverers.
    fn info_packet(&self) -> InfoPacket {
        InfoPacket {
            info: self.local_info(),
            ver: self.protocol_version().as_str().to_owned(),
            sender: self.node_id().clone(),
        }
    }
    /// A HEARTBEAT packet with this node's CPU usage (and no seq, as Moleculer's Local
    /// discoverer sends it).
    fn heartbeat_packet(&self) -> HeartbeatPacket {
        HeartbeatPacket {
            cpu: self.cpu_usage(),
            seq: None,
            instance_id: None,
            ver: self.protocol_version().as_str().to_owned(),
            sender: self.node_id().clone(),
        }
    }
}

/// Timing every discoverer shares (the broker's heartbeat options).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscoveryTiming {
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Silence after which a node is dead.
    pub heartbeat_timeout: Duration,
}

/// Finds nodes and tells the broker who is alive. Implementors write `async fn`.
pub trait Discoverer: Send + Sync + 'static {
    /// A name for logs and options.
    fn name(&self) -> &'static str;

    /// Starts: announce this node, ask for the others, start sending heartbeats.
    fn start(
        &self,
        link: Arc<dyn DiscoveryLink>,
        timing: DiscoveryTiming,
    ) -> impl Future<Output = Result<(), TransporterError>> + Send;

    /// A discovery packet (DISCOVER, INFO, HEARTBEAT, DISCONNECT) arrived over the transporter.
    fn packet_received(&self, packet: Packet) -> impl Future<Output = ()> + Send;

    /// Publishes this node's INFO: to everyone (services changed) or to one node.
    fn send_local_info(&self, target: Option<NodeId>) -> impl Future<Output = ()> + Send;

    /// Asks one node for its INFO.
    fn discover_node(&self, node: NodeId) -> impl Future<Output = ()> + Send;

    /// Asks every node for its INFO.
    fn discover_all(&self) -> impl Future<Output = ()> + Send;

    /// Stops: says goodbye and stops the timers.
    fn stop(&self) -> impl Future<Output = ()> + Send;
}
