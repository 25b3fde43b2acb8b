//! PING: a round-trip probe.

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;

/// Sent to `MOL.PING.<node>`; answered with PONG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingPacket {
    /// Sender's clock, ms since the epoch.
    pub time: f64,
    /// Probe id.
    pub id: String,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
