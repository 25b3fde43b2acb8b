//! The TCP frame: a 6-byte header, then the serialized packet.
//!
//! ```text
//! byte 0     checksum: byte1 ^ byte2 ^ byte3 ^ byte4 ^ byte5
//! bytes 1-4  total frame length, header included, u32 big-endian
//! byte 5     packet type id (EVENT=1 REQ=2 RES=3 PING=4 PONG=5 GOSSIP_REQ=6 GOSSIP_RES=7 GOSSIP_HELLO=8)
//! ```

use moleculer_core::protocol::PacketType;

/// Header length.
pub const HEADER_LEN: usize = 6;

/// Why a byte stream is not a valid frame sequence. The connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The checksum byte does not match the header.
    #[error("wrong check byte: expected {expected:#04x}, got {got:#04x}")]
    BadChecksum {
        /// What the header says it should be.
        expected: u8,
        /// What came.
        got: u8,
    },
    /// The declared length is shorter than the header itself.
    #[error("frame length {0} is below the 6-byte header")]
    TooShort(u32),
    /// The declared length is above the limit.
    #[error("frame of {len} bytes is above the {max} byte limit")]
    TooLarge {
        /// Declared length.
        len: u32,
        /// Limit.
        max: usize,
    },
    /// The type byte is not a TCP packet type.
    #[error("unknown packet type id {0}")]
    UnknownType(u8),
}

/// The type id Moleculer's TCP transporter uses, for the types it carries.
pub fn type_id(kind: PacketType) -> Option<u8> {
    Some(match kind {
        PacketType::Event => 1,
        PacketType::Request => 2,
        PacketType::Response => 3,
        PacketType::Ping => 4,
        PacketType::Pong => 5,
        PacketType::GossipRequest => 6,
        PacketType::GossipResponse => 7,
        PacketType::GossipHello => 8,
        _ => return None,
    })
}

/// The packet type of a type id.
pub fn kind_of(id: u8) -> Option<PacketType> {
    Some(match id {
        1 => PacketType::Event,
        2 => PacketType::Request,
        3 => PacketType::Response,
        4 => PacketType::Ping,
        5 => PacketType::Pong,
        6 => PacketType::GossipRequest,
        7 => PacketType::GossipResponse,
        8 => PacketType::GossipHello,
        _ => return None,
    })
}

/// One frame: header and payload. `None` for types TCP does not carry or oversize payloads.
pub fn encode(kind: PacketType, payload: &[u8]) -> Option<Vec<u8>> {
    let id = type_id(kind)?;
    let len = u32::try_from(HEADER_LEN + payload.len()).ok()?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    let l = len.to_be_bytes();
    frame.push(l[0] ^ l[1] ^ l[2] ^ l[3] ^ id);
    frame.extend_from_slice(&l);
    frame.push(id);
    frame.extend_from_slice(payload);
    Some(frame)
}

/// Splits a byte stream into frames, across reads of any size.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the next frame starts: consumed bytes are dropped in bulk, not frame by frame,
    /// so a read holding hundreds of small frames is not shifted hundreds of times.
    start: usize,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames above `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame,
        }
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not make a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or an error (after which the
    /// stream is unusable).
    pub fn next_frame(&mut self) -> Result<Option<(PacketType, Vec<u8>)>, FrameError> {
        let pending = &self.buf[self.start..];
        if pending.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = &pending[..HEADER_LEN];
        let expected = h[1] ^ h[2] ^ h[3] ^ h[4] ^ h[5];
        if h[0] != expected {
            return Err(FrameError::BadChecksum {
                expected,
                got: h[0],
            });
        }
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        if (len as usize) < HEADER_LEN {
            return Err(FrameError::TooShort(len));
        }
        if len as usize > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let kind = kind_of(h[5]).ok_or(FrameError::UnknownType(h[5]))?;
        if pending.len() < len as usize {
            return Ok(None);
        }
        let payload = pending[HEADER_LEN..len as usize].to_vec();
        self.start += len as usize;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some((kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const KINDS: [PacketType; 8] = [
        PacketType::Event,
        PacketType::Request,
        PacketType::Response,
        PacketType::Ping,
        PacketType::Pong,
        PacketType::GossipRequest,
        PacketType::GossipResponse,
        PacketType::GossipHello,
    ];

    #[test]
    fn header_matches_moleculer() {
        let frame = encode(PacketType::Request, b"{}").unwrap();
        assert_eq!(&frame[1..5], &8u32.to_be_bytes());
        assert_eq!(frame[5], 2);
        assert_eq!(
            frame[0],
            frame[1] ^ frame[2] ^ frame[3] ^ frame[4] ^ frame[5]
        );
        assert!(
            encode(PacketType::Info, b"{}").is_none(),
            "INFO does not travel over TCP"
        );
    }

    /// Property: any sequence of frames, cut into chunks of any sizes, decodes to the same
    /// frames in order.
    #[test]
    fn frames_survive_any_chunking() {
        let mut rng = SmallRng::seed_from_u64(42);
        for _ in 0..500 {
            let frames: Vec<(PacketType, Vec<u8>)> = (0..rng.random_range(1..8))
                .map(|_| {
                    let kind = KINDS[rng.random_range(0..KINDS.len())];
                    let payload: Vec<u8> = (0..rng.random_range(0..300))
                        .map(|_| rng.random())
                        .collect();
                    (kind, payload)
                })
                .collect();
            let stream: Vec<u8> = frames
                .iter()
                .flat_map(|(k, p)| encode(*k, p).unwrap())
                .collect();
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut out = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let step = rng.random_range(1..=64).min(stream.len() - at);
                decoder.push(&stream[at..at + step]);
                at += step;
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            assert_eq!(out, frames);
            assert_eq!(decoder.buffered(), 0);
        }
    }

    /// Property: random bytes never panic the decoder; they end in an error or a wait.
    #[test]
    fn garbage_never_panics() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..5000 {
            let bytes: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            let mut decoder = FrameDecoder::new(1024);
            decoder.push(&bytes);
            for _ in 0..10 {
                match decoder.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn each_bad_header_has_its_error() {
        let mut good = encode(PacketType::Event, b"abc").unwrap();
        good[0] ^= 0xff;
        let mut d = FrameDecoder::new(1024);
        d.push(&good);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::BadChecksum { .. })
        ));

        let short = [3u8 ^ 1, 0, 0, 0, 3, 1];
        let mut d = FrameDecoder::new(1024);
        d.push(&short);
        assert_eq!(d.next_frame(), Err(FrameError::TooShort(3)));

        let big = encode(PacketType::Event, &vec![0; 2000]).unwrap();
        let mut d = FrameDecoder::new(1024);
        d.push(&big[..HEADER_LEN]);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                len: 2006,
                max: 1024
            })
        ));

        let mut unknown = encode(PacketType::Event, b"").unwrap();
        unknown[5] = 9;
        unknown[0] = unknown[1] ^ unknown[2] ^ unknown[3] ^ unknown[4] ^ 9;
        let mut d = FrameDecoder::new(1024);
        d.push(&unknown);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownType(9)));

        let truncated = encode(PacketType::Event, b"abcdef").unwrap();
        let mut d = FrameDecoder::new(1024);
        d.push(&truncated[..8]);
        assert_eq!(
            d.next_frame(),
            Ok(None),
            "a truncated frame waits for more bytes"
        );
    }
}
