//! Transmit layers: what happens to a packet's bytes between the serializer and the wire.
//! Moleculer's Compression and Encryption middlewares, byte-compatible with Moleculer 0.15,
//! and, beyond Moleculer, a signature that authenticates every packet.
//!
//! On the way out a packet is serialized, compressed, encrypted, then signed; on the way in
//! the same in reverse. The layers sit in a [`Transmit`] serializer wrapped around the real
//! one, so every packet gets them: transit's, and the TCP transporter's own gossip packets
//! (as in Moleculer, where the middlewares wrap the transporter's `send` and `receive`).
//! Compression then encryption is what Moleculer does with
//! `middlewares: [Encryption(...), Compression(...)]`.

mod compression;
mod encryption;
mod settings;
mod signing;

use std::sync::Arc;

use crate::protocol::{Packet, PacketType, RequestRef};
use crate::serializer::{Serializer, SerializerError};

pub use compression::Compression;
pub use encryption::Encryption;
pub use settings::{CompressionSettings, EncryptionSettings, TransmitSettings};
pub use signing::Signing;

/// A serializer with transmit layers around it.
#[derive(Debug)]
pub struct Transmit {
    inner: Arc<dyn Serializer>,
    compression: Option<Compression>,
    encryption: Option<Encryption>,
    signing: Option<Signing>,
}

impl Transmit {
    /// `inner` with the layers `settings` names; `inner` itself when it names none.
    /// `max_packet_size` caps what a compressed packet may inflate to.
    pub fn wrap(
        inner: Arc<dyn Serializer>,
        settings: &TransmitSettings,
        max_packet_size: usize,
    ) -> Result<Arc<dyn Serializer>, String> {
        let compression = settings
            .compression
            .as_ref()
            .map(|c| Compression::new(c, max_packet_size))
            .transpose()?;
        let encryption = settings
            .encryption
            .as_ref()
            .map(Encryption::new)
            .transpose()?;
        let signing = Signing::from_settings(settings)?;
        if compression.is_none() && encryption.is_none() && signing.is_none() {
            return Ok(inner);
        }
        Ok(Arc::new(Transmit {
            inner,
            compression,
            encryption,
            signing,
        }))
    }

    fn seal(&self, kind: PacketType, mut bytes: Vec<u8>) -> Result<Vec<u8>, SerializerError> {
        let fail = |reason: String| SerializerError::Encode {
            kind,
            serializer: self.inner.name(),
            reason,
        };
        if let Some(c) = &self.compression {
            bytes = c.compress(bytes).map_err(fail)?;
        }
        if let Some(e) = &self.encryption {
            bytes = e.encrypt(&bytes);
        }
        if let Some(s) = &self.signing {
            bytes = s.sign(bytes);
        }
        Ok(bytes)
    }

    fn open(&self, kind: PacketType, bytes: &[u8]) -> Result<Vec<u8>, SerializerError> {
        let fail = |reason: String| SerializerError::Decode {
            kind,
            serializer: self.inner.name(),
            reason,
        };
        let mut owned;
        let mut bytes = bytes;
        if let Some(s) = &self.signing {
            // The TCP transporter reads a GOSSIP_HELLO before handing it on, so it opens twice;
            // a replayed hello only announces its sender's own address again.
            bytes = s
                .verify(bytes, kind != PacketType::GossipHello)
                .map_err(fail)?;
        }
        if let Some(e) = &self.encryption {
            owned = e.decrypt(bytes).map_err(fail)?;
            bytes = &owned;
        }
        if let Some(c) = &self.compression {
            owned = c.decompress(bytes).map_err(fail)?;
            return Ok(owned);
        }
        Ok(bytes.to_vec())
    }
}

impl Serializer for Transmit {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn encode(&self, packet: &Packet) -> Result<Vec<u8>, SerializerError> {
        let bytes = self.inner.encode(packet)?;
        self.seal(packet.kind(), bytes)
    }

    fn encode_request(&self, request: &RequestRef<'_>) -> Result<Vec<u8>, SerializerError> {
        let bytes = self.inner.encode_request(request)?;
        self.seal(PacketType::Request, bytes)
    }

    fn decode(&self, kind: PacketType, bytes: &[u8]) -> Result<Packet, SerializerError> {
        let plain = self.open(kind, bytes)?;
        self.inner.decode(kind, &plain)
    }

    fn sender_hint(&self, bytes: &[u8]) -> Option<String> {
        // Only a packet that opens tells who sent it; a forged one says nothing to trust.
        let plain = self.open(PacketType::GossipHello, bytes).ok()?;
        self.inner.sender_hint(&plain)
    }
}
