//! Packet types and their names on the wire.

use std::fmt;
use std::str::FromStr;

/// The kind of a packet: the `<CMD>` part of a topic, or the type byte of a TCP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PacketType {
    /// An event for one node.
    Event,
    /// An action call.
    Request,
    /// The answer to a call.
    Response,
    /// "Send me your INFO".
    Discover,
    /// A node's description and services.
    Info,
    /// A node leaves.
    Disconnect,
    /// A node is alive.
    Heartbeat,
    /// Round-trip probe.
    Ping,
    /// Answer to a probe.
    Pong,
    /// TCP gossip: greeting.
    GossipHello,
    /// TCP gossip: digest request.
    GossipRequest,
    /// TCP gossip: digest response.
    GossipResponse,
}

impl PacketType {
    /// Every packet type.
    pub const ALL: [PacketType; 12] = [
        PacketType::Event,
        PacketType::Request,
        PacketType::Response,
        PacketType::Discover,
        PacketType::Info,
        PacketType::Disconnect,
        PacketType::Heartbeat,
        PacketType::Ping,
        PacketType::Pong,
        PacketType::GossipHello,
        PacketType::GossipRequest,
        PacketType::GossipResponse,
    ];

    /// The name Moleculer uses (`REQ`, `RES`, `EVENT`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PacketType::Event => "EVENT",
            PacketType::Request => "REQ",
            PacketType::Response => "RES",
            PacketType::Discover => "DISCOVER",
            PacketType::Info => "INFO",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Heartbeat => "HEARTBEAT",
            PacketType::Ping => "PING",
            PacketType::Pong => "PONG",
            PacketType::GossipHello => "GOSSIP_HELLO",
            PacketType::GossipRequest => "GOSSIP_REQ",
            PacketType::GossipResponse => "GOSSIP_RES",
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PacketType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PacketType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown packet type '{s}'"))
    }
}
