//! REQ: an action call.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::null_as_default;
use crate::context::Meta;
use crate::node_id::NodeId;

/// An action call, sent to `MOL.REQ.<target>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RequestPacket {
    /// Context id; the response carries it back.
    pub id: String,
    /// Full action name.
    pub action: String,
    /// Params (any JSON value).
    #[serde(default)]
    pub params: Value,
    /// Meta.
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: Meta,
    /// Headers (protocol 5 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Meta>,
    /// Remaining time in milliseconds (`null` or 0: none).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Call depth.
    #[serde(default = "one", deserialize_with = "level_or_one")]
    pub level: u32,
    /// Tracing flag.
    #[serde(default)]
    pub tracing: Option<bool>,
    /// Parent context id.
    #[serde(rename = "parentID", default)]
    pub parent_id: Option<String>,
    /// Root request id.
    #[serde(rename = "requestID", default)]
    pub request_id: Option<String>,
    /// Calling service.
    #[serde(default)]
    pub caller: Option<String>,
    /// Stream flag (streams are not supported; `true` is refused).
    #[serde(default)]
    pub stream: Option<bool>,
    /// Stream chunk sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Protocol version.
    pub ver: String,
    /// Sender node.
    pub sender: NodeId,
}

/// A REQUEST borrowed from the parts of a call, so it can be encoded without copying the
/// params and meta. Encodes exactly as [`RequestPacket`] does (that one encodes through this).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RequestRef<'a> {
    /// Context id; the response carries it back.
    pub id: &'a str,
    /// Full action name.
    pub action: &'a str,
    /// Params.
    pub params: &'a Value,
    /// Meta.
    pub meta: &'a Meta,
    /// Headers (protocol 5 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<&'a Meta>,
    /// Remaining time in milliseconds.
    pub timeout: Option<f64>,
    /// Call depth.
    pub level: u32,
    /// Tracing flag.
    pub tracing: Option<bool>,
    /// Parent context id.
    #[serde(rename = "parentID")]
    pub parent_id: Option<&'a str>,
    /// Root request id.
    #[serde(rename = "requestID")]
    pub request_id: Option<&'a str>,
    /// Calling service.
    pub caller: Option<&'a str>,
    /// Stream flag.
    pub stream: Option<bool>,
    /// Stream chunk sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Protocol version.
    pub ver: &'a str,
    /// Sender node.
    pub sender: &'a str,
}

impl RequestPacket {
    /// The packet as a [`RequestRef`].
    pub fn as_ref(&self) -> RequestRef<'_> {
        RequestRef {
            id: &self.id,
            action: &self.action,
            params: &self.params,
            meta: &self.meta,
            headers: self.headers.as_ref(),
            timeout: self.timeout,
            level: self.level,
            tracing: self.tracing,
            parent_id: self.parent_id.as_deref(),
            request_id: self.request_id.as_deref(),
            caller: self.caller.as_deref(),
            stream: self.stream,
            seq: self.seq,
            ver: &self.ver,
            sender: &self.sender,
        }
    }
}

impl Serialize for RequestPacket {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_ref().serialize(serializer)
    }
}

fn one() -> u32 {
    1
}

fn level_or_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or(1))
}
