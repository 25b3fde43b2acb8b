//! DISCONNECT: a node leaves.

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;

/// Broadcast to `MOL.DISCONNECT` when a broker stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisconnectPacket {
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
