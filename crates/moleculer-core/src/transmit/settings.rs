//! The `transmit` section of the broker options.

use serde::{Deserialize, Deserializer, Serialize};

/// `[transmit]`: the layers every packet goes through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TransmitSettings {
    /// Moleculer's Encryption middleware.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSettings>,
    /// Moleculer's Compression middleware.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionSettings>,
    /// Signs every packet with HMAC-SHA256 under this secret (beyond Moleculer: only nodes of
    /// this crate read signed packets).
    #[serde(skip_serializing)]
    pub secret: Option<String>,
    /// More secrets whose signatures are accepted (for rotating `secret`).
    #[serde(skip_serializing)]
    pub accepted_secrets: Vec<String>,
    /// How old (or how far ahead) a signed packet may be, in seconds (default 60).
    pub replay_window: Option<u64>,
}

/// `[transmit.encryption]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionSettings {
    /// The key, as UTF-8 text (as Node's crypto takes a string): 32 bytes for aes-256-cbc.
    #[serde(skip_serializing)]
    pub password: String,
    /// The initialization vector, as UTF-8 text: 16 bytes.
    #[serde(skip_serializing)]
    pub iv: Option<String>,
    /// `aes-256-cbc` (default), `aes-192-cbc` or `aes-128-cbc`.
    #[serde(default = "aes_256_cbc")]
    pub algorithm: String,
}

fn aes_256_cbc() -> String {
    "aes-256-cbc".into()
}

/// `[transmit.compression]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompressionSettings {
    /// `deflate` (default), `deflateRaw` or `gzip`.
    #[serde(default = "deflate")]
    pub method: String,
    /// Packets smaller than this many bytes go uncompressed (default 1 KiB); a number or
    /// `"1kb"`, `"512b"`, `"2mb"`.
    #[serde(default = "one_kib", deserialize_with = "byte_size")]
    pub threshold: usize,
}

fn deflate() -> String {
    "deflate".into()
}

fn one_kib() -> usize {
    1024
}

/// A byte count as Moleculer's `parseByteString` reads it: a number, or `<n>b|kb|mb|gb`.
fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(usize),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(text) => parse_bytes(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "'{text}' is not a size (a number of bytes, or like \"1kb\", \"512b\", \"2mb\")"
            ))
        }),
    }
}

fn parse_bytes(text: &str) -> Option<usize> {
    let lower = text.trim().to_ascii_lowercase();
    let at = lower.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = lower.split_at(at);
    let scale = match unit.trim() {
        "b" => 1.0,
        "kb" => 1024.0,
        "mb" => 1024.0 * 1024.0,
        "gb" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    Some((n * scale) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_as_moleculer_reads_them() {
        let c: CompressionSettings = serde_json::from_str(r#"{"threshold": "1kb"}"#).unwrap();
        assert_eq!((c.method.as_str(), c.threshold), ("deflate", 1024));
        let c: CompressionSettings =
            serde_json::from_str(r#"{"method": "gzip", "threshold": 100}"#).unwrap();
        assert_eq!(c.threshold, 100);
        let err =
            serde_json::from_str::<CompressionSettings>(r#"{"threshold": "lots"}"#).unwrap_err();
        assert!(err.to_string().contains("not a size"), "{err}");
    }
}
