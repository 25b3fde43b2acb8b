//! HEARTBEAT: a node is alive.

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;

/// Broadcast every `heartbeatInterval` to `MOL.HEARTBEAT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatPacket {
    /// CPU usage 0–100, or null.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// INFO seq (sent by the Redis and etcd discoverers; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Instance id (Redis and etcd discoverers; optional).
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
