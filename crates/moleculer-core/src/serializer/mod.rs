//! Serializers: how packets become bytes. JSON and MsgPack, byte-compatible with Moleculer's
//! JSON and MsgPack/Notepack serializers (one map per packet, `ver` and `sender` inside).

mod json;
mod msgpack;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use json::Json;
pub use msgpack::MsgPack;

use crate::protocol::{Packet, PacketType, RequestRef};

/// Why a packet could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SerializerError {
    /// Encoding failed.
    #[error("cannot encode {kind} packet with {serializer}: {reason}")]
    Encode {
        /// Packet type.
        kind: PacketType,
        /// Serializer name.
        serializer: &'static str,
        /// Why.
        reason: String,
    },
    /// Decoding failed (malformed, truncated, or missing required fields).
    #[error("cannot decode {kind} packet with {serializer}: {reason}")]
    Decode {
        /// Packet type.
        kind: PacketType,
        /// Serializer name.
        serializer: &'static str,
        /// Why.
        reason: String,
    },
}

/// A data format (JSON, MessagePack): the only part that differs between the built-in
/// serializers. Every `Format` is a [`Serializer`].
pub trait Format: Send + Sync + fmt::Debug + 'static {
    /// Its name in config.
    const NAME: &'static str;
    /// Encodes a packet payload.
    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String>;
    /// Decodes a packet payload.
    fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String>;
}

/// Turns packets into bytes and back. All nodes of a cluster must use the same one.
pub trait Serializer: Send + Sync + fmt::Debug + 'static {
    /// Its name in config (`JSON`, `MsgPack`).
    fn name(&self) -> &'static str;
    /// Encodes a packet.
    fn encode(&self, packet: &Packet) -> Result<Vec<u8>, SerializerError>;
    /// Encodes a REQUEST from borrowed parts (the call path: no copy of params or meta).
    fn encode_request(&self, request: &RequestRef<'_>) -> Result<Vec<u8>, SerializerError>;
    /// Decodes a packet of the given type.
    fn decode(&self, kind: PacketType, bytes: &[u8]) -> Result<Packet, SerializerError>;

    /// The `sender` of a packet that failed to decode, if it can be read at all (for the warning).
    fn sender_hint(&self, bytes: &[u8]) -> Option<String>;
}

/// The built-in serializers, by config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SerializerKind {
    /// JSON (Moleculer's default).
    #[default]
    #[serde(rename = "JSON")]
    Json,
    /// MessagePack (Moleculer's `MsgPack` and `Notepack` produce the same maps).
    #[serde(rename = "MsgPack", alias = "Notepack")]
    MsgPack,
}

impl FromStr for SerializerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "msgpack" | "notepack" => Ok(Self::MsgPack),
            _ => Err(format!(
                "unknown serializer '{s}' (expected JSON, MsgPack or Notepack)"
            )),
        }
    }
}

impl SerializerKind {
    /// A serializer instance.
    pub fn build(self) -> Arc<dyn Serializer> {
        match self {
            SerializerKind::Json => Arc::new(Json),
            SerializerKind::MsgPack => Arc::new(MsgPack),
        }
    }
}

macro_rules! dispatch_encode {
    ($packet:expr, $f:expr) => {
        match $packet {
            Packet::Event(p) => $f(p),
            Packet::Request(p) => $f(p),
            Packet::Response(p) => $f(p),
            Packet::Discover(p) => $f(p),
            Packet::Info(p) => $f(p),
            Packet::Disconnect(p) => $f(p),
            Packet::Heartbeat(p) => $f(p),
            Packet::Ping(p) => $f(p),
            Packet::Pong(p) => $f(p),
            Packet::GossipHello(p) => $f(p),
            Packet::GossipRequest(p) => $f(p),
            Packet::GossipResponse(p) => $f(p),
        }
    };
}

macro_rules! dispatch_decode {
    ($kind:expr, $f:expr) => {
        match $kind {
            PacketType::Event => $f.map(Packet::Event),
            PacketType::Request => $f.map(Packet::Request),
            PacketType::Response => $f.map(Packet::Response),
            PacketType::Discover => $f.map(Packet::Discover),
            PacketType::Info => $f.map(Packet::Info),
            PacketType::Disconnect => $f.map(Packet::Disconnect),
            PacketType::Heartbeat => $f.map(Packet::Heartbeat),
            PacketType::Ping => $f.map(Packet::Ping),
            PacketType::Pong => $f.map(Packet::Pong),
            PacketType::GossipHello => $f.map(Packet::GossipHello),
            PacketType::GossipRequest => $f.map(Packet::GossipRequest),
            PacketType::GossipResponse => $f.map(Packet::GossipResponse),
        }
    };
}

impl<F: Format> Serializer for F {
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn encode(&self, packet: &Packet) -> Result<Vec<u8>, SerializerError> {
        let kind = packet.kind();
        dispatch_encode!(packet, F::to_vec).map_err(|reason| SerializerError::Encode {
            kind,
            serializer: F::NAME,
            reason,
        })
    }

    fn encode_request(&self, request: &RequestRef<'_>) -> Result<Vec<u8>, SerializerError> {
        F::to_vec(request).map_err(|reason| SerializerError::Encode {
            kind: PacketType::Request,
            serializer: F::NAME,
            reason,
        })
    }

    fn decode(&self, kind: PacketType, bytes: &[u8]) -> Result<Packet, SerializerError> {
        let result: Result<Packet, String> = dispatch_decode!(kind, F::from_slice(bytes));
        result.map_err(|reason| SerializerError::Decode {
            kind,
            serializer: F::NAME,
            reason,
        })
    }

    fn sender_hint(&self, bytes: &[u8]) -> Option<String> {
        let value: serde_json::Value = F::from_slice(bytes).ok()?;
        value.get("sender")?.as_str().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Meta;
    use crate::error::MoleculerError;
    use crate::protocol::*;
    use crate::service_info::NodeInfo;
    use serde_json::json;

    fn samples() -> Vec<Packet> {
        let mut meta = Meta::new();
        meta.insert("user".into(), json!({"id": 5}));
        vec![
            Packet::Request(RequestPacket {
                id: "r1".into(),
                action: "math.add".into(),
                params: json!({"a": 1, "b": 2.5}),
                meta: meta.clone(),
                headers: Some(Meta::new()),
                timeout: Some(1000.0),
                level: 2,
                tracing: None,
                parent_id: Some("p".into()),
                request_id: Some("root".into()),
                caller: Some("api".into()),
                stream: Some(false),
                seq: None,
                ver: "5".into(),
                sender: "node-a".into(),
            }),
            Packet::Response(ResponsePacket {
                id: "r1".into(),
                meta,
                headers: None,
                success: false,
                data: serde_json::Value::Null,
                error: Some(
                    MoleculerError::client("bad", 422, "BAD", json!({"f": 1}))
                        .with_node_id("node-b"),
                ),
                stream: None,
                seq: None,
                ver: "5".into(),
                sender: "node-b".into(),
            }),
            Packet::Event(EventPacket {
                id: Some("e".into()),
                event: "user.created".into(),
                data: json!({"id": 1}),
                groups: Some(vec!["mail".into()]),
                broadcast: false,
                meta: Meta::new(),
                headers: None,
                level: Some(1),
                tracing: None,
                parent_id: None,
                request_id: None,
                caller: None,
                need_ack: None,
                ver: "5".into(),
                sender: "node-a".into(),
            }),
            Packet::Info(InfoPacket {
                info: NodeInfo {
                    seq: 3,
                    instance_id: "i".into(),
                    ..Default::default()
                },
                ver: "5".into(),
                sender: "node-a".into(),
            }),
            Packet::Heartbeat(HeartbeatPacket {
                cpu: Some(12.0),
                seq: None,
                instance_id: None,
                ver: "5".into(),
                sender: "n".into(),
            }),
            Packet::Discover(DiscoverPacket {
                instance_id: Some("i".into()),
                ver: "5".into(),
                sender: "n".into(),
            }),
            Packet::Disconnect(DisconnectPacket {
                ver: "5".into(),
                sender: "n".into(),
            }),
            Packet::Ping(PingPacket {
                time: 1.0,
                id: "x".into(),
                ver: "5".into(),
                sender: "n".into(),
            }),
            Packet::Pong(PongPacket {
                time: 1.0,
                id: "x".into(),
                arrived: 2.0,
                ver: "5".into(),
                sender: "n".into(),
            }),
        ]
    }

    #[test]
    fn every_packet_round_trips_through_both_serializers() {
        for serializer in [
            SerializerKind::Json.build(),
            SerializerKind::MsgPack.build(),
        ] {
            for packet in samples() {
                let bytes = serializer.encode(&packet).unwrap();
                let back = serializer.decode(packet.kind(), &bytes).unwrap();
                assert_eq!(back, packet, "{} {}", serializer.name(), packet.kind());
            }
        }
    }

    /// Property: no bytes make decoding panic, whatever the packet type and serializer: random
    /// bytes, and valid packets with bytes flipped, cut short or spliced together. (A panic here
    /// would take a transporter task down with it.)
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        let kinds = PacketType::ALL;
        let mut rng = SmallRng::seed_from_u64(11);
        for serializer in [
            SerializerKind::Json.build(),
            SerializerKind::MsgPack.build(),
        ] {
            let valid: Vec<Vec<u8>> = samples()
                .iter()
                .map(|p| serializer.encode(p).unwrap())
                .collect();
            let mut decoded = 0;
            for round in 0..20_000 {
                let bytes: Vec<u8> = match round % 4 {
                    0 => (0..rng.random_range(0..200))
                        .map(|_| rng.random())
                        .collect(),
                    1 => {
                        let mut b = valid[rng.random_range(0..valid.len())].clone();
                        for _ in 0..rng.random_range(1..4) {
                            let at = rng.random_range(0..b.len());
                            b[at] = rng.random();
                        }
                        b
                    }
                    2 => {
                        let b = &valid[rng.random_range(0..valid.len())];
                        b[..rng.random_range(0..b.len())].to_vec()
                    }
                    _ => {
                        let a = &valid[rng.random_range(0..valid.len())];
                        let b = &valid[rng.random_range(0..valid.len())];
                        let mut out = a[..rng.random_range(0..a.len())].to_vec();
                        out.extend_from_slice(&b[rng.random_range(0..b.len())..]);
                        out
                    }
                };
                let kind = kinds[rng.random_range(0..kinds.len())];
                if serializer.decode(kind, &bytes).is_ok() {
                    decoded += 1;
                }
                let _ = serializer.sender_hint(&bytes);
            }
            // The mutations are not all fatal: some still decode, so the valid paths ran too.
            assert!(decoded > 0, "{}: nothing decoded", serializer.name());
        }
    }

    #[test]
    fn decodes_a_node_js_request() {
        let js = br#"{"id":"0d33","action":"v2.math.add","params":{"a":1,"b":2},"meta":{"u":1},"headers":{},"timeout":1000,
            "level":1,"tracing":null,"parentID":null,"requestID":"0d33","caller":null,"stream":false,"ver":"5","sender":"node-a","future":1}"#;
        let Packet::Request(req) = Json.decode(PacketType::Request, js).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(req.action, "v2.math.add");
        assert_eq!(req.timeout, Some(1000.0));
        assert_eq!(req.meta["u"], json!(1));
    }

    #[test]
    fn decodes_notepack_float32_and_float64() {
        // {"time": 0.5 as float32, "id": "x", "ver": "5", "sender": "n"} as msgpack5 writes it.
        let mut bytes = vec![0x84, 0xa4];
        bytes.extend(b"time");
        bytes.extend([0xca, 0x3f, 0x00, 0x00, 0x00, 0xa2]);
        bytes.extend(b"id");
        bytes.extend([0xa1, b'x', 0xa3]);
        bytes.extend(b"ver");
        bytes.extend([0xa1, b'5', 0xa6]);
        bytes.extend(b"sender");
        bytes.extend([0xa1, b'n']);
        let Packet::Ping(ping) = MsgPack.decode(PacketType::Ping, &bytes).unwrap() else {
            panic!()
        };
        assert_eq!(ping.time, 0.5);
    }

    #[test]
    fn msgpack_writes_maps_with_string_keys() {
        let bytes = MsgPack.encode(&samples()[6]).unwrap();
        // fixmap of 2: "ver": "5", "sender": "n"
        assert_eq!(bytes[0], 0x82);
        assert_eq!(&bytes[1..5], &[0xa3, b'v', b'e', b'r']);
    }

    #[test]
    fn garbage_is_an_error_naming_the_packet_type() {
        for serializer in [
            SerializerKind::Json.build(),
            SerializerKind::MsgPack.build(),
        ] {
            let err = serializer
                .decode(PacketType::Request, b"\xc1not a packet")
                .unwrap_err();
            assert!(err.to_string().contains("REQ"), "{err}");
            let truncated = &serializer.encode(&samples()[0]).unwrap()[..10];
            assert!(serializer.decode(PacketType::Request, truncated).is_err());
        }
        assert!(
            Json.decode(PacketType::GossipHello, b"{}").is_err(),
            "a HELLO without sender is refused"
        );
    }
}
