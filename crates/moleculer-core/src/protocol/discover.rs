//! DISCOVER: "send me your INFO".

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;

/// Broadcast to `MOL.DISCOVER`, or sent to `MOL.DISCOVER.<node>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoverPacket {
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
