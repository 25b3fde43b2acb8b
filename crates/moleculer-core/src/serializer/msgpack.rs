//! The MessagePack serializer.

use serde::de::DeserializeOwned;

use super::json::erased;
use super::{dispatch_decode, dispatch_encode, Serializer, SerializerError};
use crate::protocol::{Packet, PacketType};

/// MessagePack: one map per packet with string keys, as Moleculer's `MsgPack` (msgpack5) and
/// `Notepack` serializers write; float32 and float64 are both accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPack;

impl Serializer for MsgPack {
    fn name(&self) -> &'static str {
        "MsgPack"
    }

    fn encode(&self, packet: &Packet) -> Result<Vec<u8>, SerializerError> {
        let kind = packet.kind();
        let encode = |p: &dyn erased::Encode| {
            p.to_msgpack().map_err(|reason| SerializerError::Encode {
                kind,
                serializer: "MsgPack",
                reason,
            })
        };
        dispatch_encode!(packet, encode)
    }

    fn decode(&self, kind: PacketType, bytes: &[u8]) -> Result<Packet, SerializerError> {
        fn parse<T: DeserializeOwned>(
            bytes: &[u8],
            kind: PacketType,
        ) -> Result<T, SerializerError> {
            rmp_serde::from_slice(bytes).map_err(|e| SerializerError::Decode {
                kind,
                serializer: "MsgPack",
                reason: e.to_string(),
            })
        }
        dispatch_decode!(kind, parse(bytes, kind))
    }

    fn sender_hint(&self, bytes: &[u8]) -> Option<String> {
        let value: serde_json::Value = rmp_serde::from_slice(bytes).ok()?;
        value.get("sender")?.as_str().map(str::to_owned)
    }
}
