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

/// Why bytes are not a frame to accept. After a bad header ([`FrameError::is_fatal`]) the
/// stream cannot be read on and the connection is dropped; a frame that is only too large or of
/// an unknown type is skipped, and the frames after it are read as usual.
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

impl FrameError {
    /// Whether the stream is lost: the header cannot be trusted, so where the next frame starts
    /// is unknown.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FrameError::BadChecksum { .. } | FrameError::TooShort(_)
        )
    }
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

/// Splits a byte stream into frames, across reads of any size. It holds only the bytes of a
/// frame not yet complete, and gives its memory back once it holds nothing, so an idle
/// connection costs no buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the next frame starts: consumed bytes are dropped in bulk, not frame by frame,
    /// so a read holding hundreds of small frames is not shifted hundreds of times.
    start: usize,
    /// Bytes still to discard of a frame being skipped.
    skip: usize,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames above `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            skip: 0,
            max_frame,
        }
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.skip > 0 {
            let dropped = self.skip.min(bytes.len());
            self.skip -= dropped;
            bytes = &bytes[dropped..];
        }
        if bytes.is_empty() {
            return;
        }
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

    /// Whether a frame has begun and not ended (bytes held, or a skipped frame not yet past).
    pub fn in_frame(&self) -> bool {
        self.buffered() > 0 || self.skip > 0
    }

    /// Bytes of memory held.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or an error. After a fatal
    /// error ([`FrameError::is_fatal`]) the stream is unusable; after any other, the bad frame
    /// is being skipped and decoding goes on.
    pub fn next_frame(&mut self) -> Result<Option<(PacketType, Vec<u8>)>, FrameError> {
        let pending = &self.buf[self.start..];
        if pending.len() < HEADER_LEN {
            self.release_if_empty();
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
        let refused = if len as usize > self.max_frame {
            Some(FrameError::TooLarge {
                len,
                max: self.max_frame,
            })
        } else {
            kind_of(h[5])
                .is_none()
                .then_some(FrameError::UnknownType(h[5]))
        };
        if let Some(err) = refused {
            // The header is sound, so the frame's end is known: skip it, never buffer it.
            let held = pending.len().min(len as usize);
            self.skip = len as usize - held;
            self.consume(held);
            return Err(err);
        }
        if pending.len() < len as usize {
            return Ok(None);
        }
        let kind = kind_of(h[5]).ok_or(FrameError::UnknownType(h[5]))?;
        let payload = pending[HEADER_LEN..len as usize].to_vec();
        self.consume(len as usize);
        Ok(Some((kind, payload)))
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Gives a large buffer back once nothing is held (a small one is kept for the next read).
    fn release_if_empty(&mut self) {
        if self.buffered() == 0 && self.buf.capacity() > 4096 {
            self.buf = Vec::new();
            self.start = 0;
        }
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
    fn an_oversized_or_unknown_frame_is_skipped_and_the_next_one_read() {
        let mut stream = encode(PacketType::Event, b"first").unwrap();
        stream.extend(encode(PacketType::Request, &vec![7; 5000]).unwrap());
        let mut unknown = encode(PacketType::Event, b"future").unwrap();
        unknown[5] = 42;
        unknown[0] = unknown[1] ^ unknown[2] ^ unknown[3] ^ unknown[4] ^ 42;
        stream.extend(unknown);
        stream.extend(encode(PacketType::Ping, b"last").unwrap());
        // Fed in small pieces, so the oversized frame is skipped across many reads without
        // being held.
        let mut d = FrameDecoder::new(1024);
        let (mut frames, mut errors, mut most_held) = (Vec::new(), Vec::new(), 0);
        for chunk in stream.chunks(100) {
            d.push(chunk);
            most_held = most_held.max(d.buffered());
            loop {
                match d.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(err) => {
                        assert!(!err.is_fatal(), "{err}");
                        errors.push(err);
                    }
                }
            }
        }
        assert_eq!(
            frames,
            vec![
                (PacketType::Event, b"first".to_vec()),
                (PacketType::Ping, b"last".to_vec())
            ]
        );
        assert_eq!(
            errors,
            vec![
                FrameError::TooLarge {
                    len: 5006,
                    max: 1024
                },
                FrameError::UnknownType(42)
            ]
        );
        assert!(most_held <= 200, "held {most_held} bytes");
        assert!(!d.in_frame());
    }

    #[test]
    fn an_idle_decoder_gives_its_memory_back() {
        let mut d = FrameDecoder::new(1 << 20);
        let big = encode(PacketType::Event, &vec![1; 100_000]).unwrap();
        d.push(&big[..50_000]);
        assert!(d.in_frame());
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&big[50_000..]);
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.capacity(), 0, "nothing held, nothing allocated");
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
