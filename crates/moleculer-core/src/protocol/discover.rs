//! DISCOVER: "send me your INFO".

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;

/// Broadcast to `MOL.DISCOVER`, or sent to `MOL.DISCOVER.<node>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoverPacket {
    /// The asking instance (our extension, ignored by Node.js): a DISCOVER sent to our own node
    /// id by another instance proves that a live duplicate uses our id.
    #[serde(
        rename = "instanceID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_id: Option<String>,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
