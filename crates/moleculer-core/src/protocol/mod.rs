//! Moleculer's wire protocol: one file per packet, the packet envelope and topic names.
//!
//! Every packet is a flat map of its fields plus `ver` (protocol version, a string) and
//! `sender` (node id). The packet type travels outside the payload (the topic, or the TCP frame
//! header). Unknown fields are ignored, so newer peers can add fields.

mod disconnect;
mod discover;
mod event;
mod gossip;
mod heartbeat;
mod info;
mod packet;
mod packet_type;
mod ping;
mod pong;
mod request;
mod response;

pub use disconnect::DisconnectPacket;
pub use discover::DiscoverPacket;
pub use event::EventPacket;
pub use gossip::{GossipHelloPacket, GossipRequestPacket, GossipResponsePacket};
pub use heartbeat::HeartbeatPacket;
pub use info::InfoPacket;
pub use packet::{topic_name, topic_prefix, Packet};
pub use packet_type::PacketType;
pub use ping::PingPacket;
pub use pong::PongPacket;
pub use request::{RequestPacket, RequestRef};
pub use response::ResponsePacket;

/// A protocol version this crate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ProtocolVersion {
    /// Moleculer 0.14 (no `headers` fields).
    #[serde(rename = "4")]
    V4,
    /// Moleculer 0.15.
    #[default]
    #[serde(rename = "5")]
    V5,
}

impl ProtocolVersion {
    /// The `ver` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V4 => "4",
            ProtocolVersion::V5 => "5",
        }
    }

    /// Whether packets carry `headers` (protocol 5).
    pub fn has_headers(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Serde helpers shared by the packet files.
pub(crate) mod fields {
    use serde::{Deserialize, Deserializer};

    /// Accepts `null` (and absence, with `#[serde(default)]`) as the type's default.
    pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default + Deserialize<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }
}
