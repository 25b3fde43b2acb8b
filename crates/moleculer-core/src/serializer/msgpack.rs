//! The MessagePack format.

use super::Format;

/// MessagePack: one map per packet with string keys, as Moleculer's `MsgPack` (msgpack5) and
/// `Notepack` serializers write; float32 and float64 are both accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPack;

impl Format for MsgPack {
    const NAME: &'static str = "MsgPack";

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec_named(value).map_err(|e| e.to_string())
    }

    fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}
