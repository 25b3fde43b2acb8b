//! The packet envelope and topic names.

use super::{
    DisconnectPacket, DiscoverPacket, EventPacket, GossipHelloPacket, GossipRequestPacket,
    GossipResponsePacket, HeartbeatPacket, InfoPacket, PacketType, PingPacket, PongPacket,
    RequestPacket, ResponsePacket,
};

/// One decoded packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// EVENT.
    Event(EventPacket),
    /// REQ.
    Request(RequestPacket),
    /// RES.
    Response(ResponsePacket),
    /// DISCOVER.
    Discover(DiscoverPacket),
    /// INFO.
    Info(InfoPacket),
    /// DISCONNECT.
    Disconnect(DisconnectPacket),
    /// HEARTBEAT.
    Heartbeat(HeartbeatPacket),
    /// PING.
    Ping(PingPacket),
    /// PONG.
    Pong(PongPacket),
    /// GOSSIP_HELLO (TCP).
    GossipHello(GossipHelloPacket),
    /// GOSSIP_REQ (TCP).
    GossipRequest(GossipRequestPacket),
    /// GOSSIP_RES (TCP).
    GossipResponse(GossipResponsePacket),
}

macro_rules! each_packet {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Packet::Event($p) => $e,
            Packet::Request($p) => $e,
            Packet::Response($p) => $e,
            Packet::Discover($p) => $e,
            Packet::Info($p) => $e,
            Packet::Disconnect($p) => $e,
            Packet::Heartbeat($p) => $e,
            Packet::Ping($p) => $e,
            Packet::Pong($p) => $e,
            Packet::GossipHello($p) => $e,
            Packet::GossipRequest($p) => $e,
            Packet::GossipResponse($p) => $e,
        }
    };
}

impl Packet {
    /// Its type.
    pub fn kind(&self) -> PacketType {
        match self {
            Packet::Event(_) => PacketType::Event,
            Packet::Request(_) => PacketType::Request,
            Packet::Response(_) => PacketType::Response,
            Packet::Discover(_) => PacketType::Discover,
            Packet::Info(_) => PacketType::Info,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Heartbeat(_) => PacketType::Heartbeat,
            Packet::Ping(_) => PacketType::Ping,
            Packet::Pong(_) => PacketType::Pong,
            Packet::GossipHello(_) => PacketType::GossipHello,
            Packet::GossipRequest(_) => PacketType::GossipRequest,
            Packet::GossipResponse(_) => PacketType::GossipResponse,
        }
    }

    /// The node that sent it.
    pub fn sender(&self) -> &str {
        each_packet!(self, p => &p.sender)
    }

    /// Its protocol version string.
    pub fn ver(&self) -> &str {
        each_packet!(self, p => &p.ver)
    }
}

/// `MOL` or `MOL-<namespace>`.
pub fn topic_prefix(namespace: &str) -> String {
    if namespace.is_empty() {
        "MOL".to_owned()
    } else {
        format!("MOL-{namespace}")
    }
}

/// `MOL[-<namespace>].<TYPE>[.<nodeID>]`.
pub fn topic_name(namespace: &str, kind: PacketType, target: Option<&str>) -> String {
    let prefix = topic_prefix(namespace);
    match target {
        Some(node) => format!("{prefix}.{kind}.{node}"),
        None => format!("{prefix}.{kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_moleculer() {
        assert_eq!(
            topic_name("", PacketType::Request, Some("node-1")),
            "MOL.REQ.node-1"
        );
        assert_eq!(
            topic_name("dev", PacketType::Heartbeat, None),
            "MOL-dev.HEARTBEAT"
        );
        assert_eq!(
            topic_name("dev", PacketType::GossipHello, None),
            "MOL-dev.GOSSIP_HELLO"
        );
    }
}
