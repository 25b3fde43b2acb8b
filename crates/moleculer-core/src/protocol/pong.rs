//! PONG: the answer to a PING.

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;

/// Sent to `MOL.PONG.<pinger>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PongPacket {
    /// The PING's `time`, echoed.
    pub time: f64,
    /// The PING's `id`, echoed.
    pub id: String,
    /// Receiver's clock when the PING arrived, ms since the epoch.
    pub arrived: f64,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
