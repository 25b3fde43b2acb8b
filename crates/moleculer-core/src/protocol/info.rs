//! INFO: a node's description and services.

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;
use crate::service_info::NodeInfo;

/// A node's description, broadcast to `MOL.INFO` or sent to `MOL.INFO.<requester>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoPacket {
    /// Services, addresses, instance id, seq, ...
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
