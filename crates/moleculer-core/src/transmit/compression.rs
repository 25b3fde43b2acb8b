//! Moleculer 0.15's Compression middleware: a flag byte (0 plain, 1 compressed), then the
//! packet, compressed with deflate, raw deflate or gzip when it is at least `threshold` bytes.
//! What a packet inflates to is capped at `maxPacketSize`, so a small bomb cannot fill memory.

use std::io::{Read, Write};

use flate2::Compression as Level;

use super::settings::CompressionSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Deflate,
    DeflateRaw,
    Gzip,
}

/// The compression layer.
#[derive(Debug)]
pub struct Compression {
    method: Method,
    threshold: usize,
    max_size: usize,
}

impl Compression {
    /// From the settings; an unknown method is refused with the ones there are.
    pub fn new(settings: &CompressionSettings, max_size: usize) -> Result<Self, String> {
        let method = match settings.method.as_str() {
            "deflate" => Method::Deflate,
            "deflateRaw" => Method::DeflateRaw,
            "gzip" => Method::Gzip,
            other => {
                return Err(format!(
                    "transmit.compression.method '{other}' is not one of deflate, deflateRaw, gzip"
                ))
            }
        };
        Ok(Self {
            method,
            threshold: settings.threshold,
            max_size,
        })
    }

    /// The flag byte and the (maybe compressed) packet.
    pub fn compress(&self, plain: Vec<u8>) -> Result<Vec<u8>, String> {
        if plain.len() < self.threshold {
            let mut out = Vec::with_capacity(plain.len() + 1);
            out.push(0);
            out.extend_from_slice(&plain);
            return Ok(out);
        }
        let out = vec![1u8];
        let written = match self.method {
            Method::Deflate => {
                let mut e = flate2::write::ZlibEncoder::new(out, Level::default());
                e.write_all(&plain).and_then(|()| e.finish())
            }
            Method::DeflateRaw => {
                let mut e = flate2::write::DeflateEncoder::new(out, Level::default());
                e.write_all(&plain).and_then(|()| e.finish())
            }
            Method::Gzip => {
                let mut e = flate2::write::GzEncoder::new(out, Level::default());
                e.write_all(&plain).and_then(|()| e.finish())
            }
        };
        written.map_err(|e| format!("cannot compress: {e}"))
    }

    /// The packet inside; an error when it is not ours or inflates past the limit.
    pub fn decompress(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let (flag, body) = bytes
            .split_first()
            .ok_or_else(|| "an empty compressed packet".to_owned())?;
        match flag {
            0 => return Ok(body.to_vec()),
            1 => {}
            other => {
                return Err(format!(
                    "unknown compression flag {other} (not a compressed packet)"
                ))
            }
        }
        let limit = self.max_size as u64 + 1;
        let mut out = Vec::new();
        let read = match self.method {
            Method::Deflate => flate2::read::ZlibDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out),
            Method::DeflateRaw => flate2::read::DeflateDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out),
            Method::Gzip => flate2::read::GzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out),
        };
        read.map_err(|e| format!("cannot decompress: {e}"))?;
        if out.len() > self.max_size {
            return Err(format!(
                "the packet inflates past the {} byte limit (maxPacketSize)",
                self.max_size
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(method: &str, threshold: usize, max: usize) -> Compression {
        Compression::new(
            &CompressionSettings {
                method: method.into(),
                threshold,
            },
            max,
        )
        .unwrap()
    }

    #[test]
    fn round_trips_and_small_packets_stay_plain() {
        for method in ["deflate", "deflateRaw", "gzip"] {
            let c = layer(method, 100, 1 << 20);
            let big = b"abc".repeat(1000);
            let packed = c.compress(big.clone()).unwrap();
            assert_eq!(packed[0], 1);
            assert!(packed.len() < 200, "{method}: {}", packed.len());
            assert_eq!(c.decompress(&packed).unwrap(), big);
            let small = c.compress(b"hi".to_vec()).unwrap();
            assert_eq!(small, b"\0hi");
            assert_eq!(c.decompress(&small).unwrap(), b"hi");
        }
        assert!(Compression::new(
            &CompressionSettings {
                method: "brotli".into(),
                threshold: 0
            },
            10
        )
        .is_err());
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit() {
        let c = layer("deflate", 0, 10_000);
        let bomb = layer("deflate", 0, usize::MAX)
            .compress(vec![0; 5_000_000])
            .unwrap();
        assert!(bomb.len() < 10_000, "{}", bomb.len());
        let err = c.decompress(&bomb).unwrap_err();
        assert!(err.contains("10000 byte limit"), "{err}");
        assert!(c.decompress(b"\x01not deflate").is_err());
        assert!(c.decompress(b"\x07").unwrap_err().contains("flag"));
    }
}
