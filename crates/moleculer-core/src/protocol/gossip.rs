//! GOSSIP_HELLO, GOSSIP_REQ and GOSSIP_RES: the TCP transporter's discovery packets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::node_id::NodeId;

/// Sent first on every new outbound TCP connection: who we are and where we listen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GossipHelloPacket {
    /// Our address (host name or IP).
    #[serde(default)]
    pub host: String,
    /// Our TCP port.
    #[serde(default)]
    pub port: u16,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}

/// What the sender knows: `online: {nodeID: [seq, cpuSeq, cpu]}`, `offline: {nodeID: seq}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GossipRequestPacket {
    /// Online nodes (the sender included) with `[seq, cpuSeq, cpu]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<BTreeMap<String, (u64, u64, f64)>>,
    /// Offline nodes with their seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<BTreeMap<String, u64>>,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}

/// What the requester is missing: `online` rows are `[info, cpuSeq, cpu]` or `[cpuSeq, cpu]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GossipResponsePacket {
    /// Online nodes: full info, or a CPU update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<BTreeMap<String, Vec<Value>>>,
    /// Offline nodes with their seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<BTreeMap<String, u64>>,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
