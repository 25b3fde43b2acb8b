//! The JSON serializer.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{dispatch_decode, dispatch_encode, Serializer, SerializerError};
use crate::protocol::{Packet, PacketType};

/// JSON, UTF-8: Moleculer's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Serializer for Json {
    fn name(&self) -> &'static str {
        "JSON"
    }

    fn encode(&self, packet: &Packet) -> Result<Vec<u8>, SerializerError> {
        let kind = packet.kind();
        let encode = |p: &dyn erased::Encode| {
            p.to_json().map_err(|reason| SerializerError::Encode {
                kind,
                serializer: "JSON",
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
            serde_json::from_slice(bytes).map_err(|e| SerializerError::Decode {
                kind,
                serializer: "JSON",
                reason: e.to_string(),
            })
        }
        dispatch_decode!(kind, parse(bytes, kind))
    }

    fn sender_hint(&self, bytes: &[u8]) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        value.get("sender")?.as_str().map(str::to_owned)
    }
}

/// Object-safe encoding of any packet payload, so one closure serves every packet type.
pub(crate) mod erased {
    use super::Serialize;

    pub trait Encode {
        fn to_json(&self) -> Result<Vec<u8>, String>;
        fn to_msgpack(&self) -> Result<Vec<u8>, String>;
    }

    impl<T: Serialize> Encode for T {
        fn to_json(&self) -> Result<Vec<u8>, String> {
            serde_json::to_vec(self).map_err(|e| e.to_string())
        }
        fn to_msgpack(&self) -> Result<Vec<u8>, String> {
            rmp_serde::to_vec_named(self).map_err(|e| e.to_string())
        }
    }
}
