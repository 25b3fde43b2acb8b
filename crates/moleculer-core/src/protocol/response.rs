//! RES: the answer to a call.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::null_as_default;
use crate::context::Meta;
use crate::error::MoleculerError;
use crate::node_id::NodeId;

/// The answer to a REQ, sent to `MOL.RES.<caller>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsePacket {
    /// The request's id.
    pub id: String,
    /// The handler's meta after the call; merged into the caller's.
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: Meta,
    /// Response headers (protocol 5 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Meta>,
    /// Whether the call succeeded.
    pub success: bool,
    /// The result (null on error).
    #[serde(default)]
    pub data: Value,
    /// The error, when `success` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MoleculerError>,
    /// Stream flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stream chunk sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}
