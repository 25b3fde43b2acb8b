//! EVENT: an event for one node.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::null_as_default;
use crate::context::Meta;
use crate::node_id::NodeId;

/// An event, sent to `MOL.EVENT.<target>` with the groups chosen for that node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPacket {
    /// Context id.
    #[serde(default)]
    pub id: Option<String>,
    /// Event name.
    pub event: String,
    /// Payload.
    #[serde(default)]
    pub data: Value,
    /// Groups this node should deliver to (absent: all).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Every matching handler (true) or one per group (false).
    #[serde(default)]
    pub broadcast: bool,
    /// Meta.
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: Meta,
    /// Headers (protocol 5 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Meta>,
    /// Depth.
    #[serde(default)]
    pub level: Option<u32>,
    /// Tracing flag.
    #[serde(default)]
    pub tracing: Option<bool>,
    /// Parent context id.
    #[serde(rename = "parentID", default)]
    pub parent_id: Option<String>,
    /// Root request id.
    #[serde(rename = "requestID", default)]
    pub request_id: Option<String>,
    /// Emitting service.
    #[serde(default)]
    pub caller: Option<String>,
    /// Always null in Moleculer 0.14/0.15.
    #[serde(rename = "needAck", default)]
    pub need_ack: Option<bool>,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
