//! Moleculer's Encryption middleware: AES in CBC mode with PKCS#7 padding, the key and the IV
//! taken as the UTF-8 bytes of the configured strings (as Node's crypto takes strings), the
//! same IV for every packet (as Moleculer does; [`super::Signing`] adds what this lacks).

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};

use super::settings::EncryptionSettings;

#[derive(Debug, Clone, Copy)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
}

/// The encryption layer.
pub struct Encryption {
    cipher: Cipher,
    key: Vec<u8>,
    iv: [u8; 16],
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl Encryption {
    /// From the settings: the algorithm must be one of the AES-CBC ones and the key and IV of
    /// its sizes; the error says which is wrong.
    pub fn new(settings: &EncryptionSettings) -> Result<Self, String> {
        let (cipher, key_len) = match settings.algorithm.as_str() {
            "aes-128-cbc" => (Cipher::Aes128, 16),
            "aes-192-cbc" => (Cipher::Aes192, 24),
            "aes-256-cbc" => (Cipher::Aes256, 32),
            other => {
                return Err(format!(
                    "transmit.encryption.algorithm '{other}' is not supported (aes-256-cbc, aes-192-cbc or aes-128-cbc)"
                ))
            }
        };
        let key = settings.password.as_bytes().to_vec();
        if key.len() != key_len {
            return Err(format!(
                "transmit.encryption.password must be {key_len} bytes for {} (it is {})",
                settings.algorithm,
                key.len()
            ));
        }
        let iv = settings
            .iv
            .as_deref()
            .ok_or_else(|| "transmit.encryption.iv is needed (16 bytes of text)".to_owned())?;
        let iv: [u8; 16] = iv.as_bytes().try_into().map_err(|_| {
            format!(
                "transmit.encryption.iv must be 16 bytes (it is {})",
                iv.len()
            )
        })?;
        Ok(Self { cipher, key, iv })
    }

    /// The packet, encrypted.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let (key, iv) = (self.key.as_slice(), &self.iv);
        // The sizes were checked in `new`.
        match self.cipher {
            Cipher::Aes128 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
                .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plain)),
            Cipher::Aes192 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv)
                .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plain)),
            Cipher::Aes256 => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
                .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plain)),
        }
        .unwrap_or_default()
    }

    /// The packet, decrypted; an error for a packet under another key (or none).
    pub fn decrypt(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let (key, iv) = (self.key.as_slice(), &self.iv);
        let plain = match self.cipher {
            Cipher::Aes128 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
                .map(|c| c.decrypt_padded_vec_mut::<Pkcs7>(bytes)),
            Cipher::Aes192 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
                .map(|c| c.decrypt_padded_vec_mut::<Pkcs7>(bytes)),
            Cipher::Aes256 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
                .map(|c| c.decrypt_padded_vec_mut::<Pkcs7>(bytes)),
        };
        match plain {
            Ok(Ok(plain)) => Ok(plain),
            _ => Err("cannot decrypt (another key, or not encrypted)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(password: &str, iv: &str) -> EncryptionSettings {
        EncryptionSettings {
            password: password.into(),
            iv: Some(iv.into()),
            algorithm: "aes-256-cbc".into(),
        }
    }

    #[test]
    fn round_trips_and_another_key_reads_nothing() {
        let e = Encryption::new(&settings(
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210",
        ))
        .unwrap();
        let sealed = e.encrypt(b"{\"ver\":\"5\"}");
        assert_eq!(sealed.len(), 16);
        assert_eq!(e.decrypt(&sealed).unwrap(), b"{\"ver\":\"5\"}");
        let other = Encryption::new(&settings(
            "x123456789abcdef0123456789abcdef",
            "fedcba9876543210",
        ))
        .unwrap();
        assert!(
            other.decrypt(&sealed).is_err()
                || other.decrypt(&sealed).unwrap() != b"{\"ver\":\"5\"}"
        );
        assert!(e.decrypt(b"plain text, not a block multiple").is_err());
    }

    #[test]
    fn wrong_sizes_and_algorithms_are_named() {
        let err = Encryption::new(&settings("short", "fedcba9876543210")).unwrap_err();
        assert!(err.contains("32 bytes"), "{err}");
        let err =
            Encryption::new(&settings("0123456789abcdef0123456789abcdef", "short")).unwrap_err();
        assert!(err.contains("16 bytes"), "{err}");
        let mut s = settings("0123456789abcdef0123456789abcdef", "fedcba9876543210");
        s.algorithm = "aes-256-gcm".into();
        assert!(Encryption::new(&s).unwrap_err().contains("not supported"));
    }

    #[test]
    fn matches_nodes_crypto() {
        // `crypto.createCipheriv("aes-256-cbc", "0123456789abcdef0123456789abcdef",
        // "fedcba9876543210")` over "hello" gives these bytes (Node.js 20).
        let e = Encryption::new(&settings(
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210",
        ))
        .unwrap();
        let sealed = e.encrypt(b"hello");
        let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, NODE_HELLO);
    }

    const NODE_HELLO: &str = "4369f252d11fc8b9354b69708387bd81";
}
