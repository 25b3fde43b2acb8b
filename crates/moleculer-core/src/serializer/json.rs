//! The JSON format.

use super::Format;

/// JSON, UTF-8: Moleculer's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Format for Json {
    const NAME: &'static str = "JSON";

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }

    fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
