//! Signed packets, beyond Moleculer: every packet carries a timestamp, a random nonce and an
//! HMAC-SHA256 over them and its bytes. A packet whose signature matches none of the accepted
//! secrets, whose timestamp is outside the replay window, or whose nonce was already seen in
//! that window is refused. Moleculer JS nodes cannot read signed packets.
//!
//! Layout: `0x01 | timestamp (ms, 8 bytes BE) | nonce (12) | packet | HMAC (32)`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use rand::RngCore;
use sha2::Sha256;

use super::settings::TransmitSettings;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 12;
const TAG: usize = 32;
/// Nonces remembered at most (the oldest are forgotten first; with the window, enough for
/// far more packets per second than a node handles).
const MAX_NONCES: usize = 1 << 20;

type HmacSha256 = Hmac<Sha256>;

/// The signing layer.
pub struct Signing {
    /// The first signs; all verify.
    secrets: Vec<HmacSha256>,
    window: Duration,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    nonces: HashMap<[u8; 12], u64>,
    order: VecDeque<([u8; 12], u64)>,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("secrets", &self.secrets.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Signing {
    /// From `transmit.secret`, `acceptedSecrets` and `replayWindow`; none without a secret.
    pub fn from_settings(settings: &TransmitSettings) -> Result<Option<Self>, String> {
        let Some(secret) = &settings.secret else {
            if !settings.accepted_secrets.is_empty() {
                return Err("transmit.acceptedSecrets needs transmit.secret".into());
            }
            return Ok(None);
        };
        let mut secrets = Vec::new();
        for s in std::iter::once(secret).chain(&settings.accepted_secrets) {
            if s.len() < 16 {
                return Err("a transmit secret must be at least 16 bytes".into());
            }
            secrets.push(HmacSha256::new_from_slice(s.as_bytes()).map_err(|e| e.to_string())?);
        }
        Ok(Some(Self {
            secrets,
            window: Duration::from_secs(settings.replay_window.unwrap_or(60).max(1)),
            seen: Mutex::default(),
        }))
    }

    /// The packet in its signed envelope.
    pub fn sign(&self, packet: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + packet.len() + TAG);
        out.push(VERSION);
        out.extend_from_slice(&now_ms().to_be_bytes());
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&packet);
        let mut mac = self.secrets[0].clone();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The packet inside a valid, fresh, first-seen envelope.
    pub fn verify<'a>(&self, bytes: &'a [u8], replay_check: bool) -> Result<&'a [u8], String> {
        if bytes.len() < HEADER + TAG || bytes[0] != VERSION {
            return Err("not a signed packet".into());
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG);
        let genuine = self.secrets.iter().any(|secret| {
            let mut mac = secret.clone();
            mac.update(signed);
            mac.verify_slice(tag).is_ok()
        });
        if !genuine {
            return Err(
                "its signature matches no accepted secret (tampered, or another key)".into(),
            );
        }
        let sent = u64::from_be_bytes(signed[1..9].try_into().unwrap_or_default());
        let now = now_ms();
        let window = self.window.as_millis() as u64;
        if sent + window < now || sent > now + window {
            return Err(format!(
                "it was signed {} s away from now, outside the {} s replay window",
                now.abs_diff(sent) / 1000,
                self.window.as_secs()
            ));
        }
        if replay_check {
            let nonce: [u8; 12] = signed[9..HEADER].try_into().unwrap_or_default();
            let mut seen = self.seen.lock();
            while let Some((old, at)) = seen.order.front().copied() {
                if at + 2 * window >= now && seen.order.len() < MAX_NONCES {
                    break;
                }
                seen.order.pop_front();
                seen.nonces.remove(&old);
            }
            if seen.nonces.insert(nonce, now).is_some() {
                return Err("it was already received (a replay)".into());
            }
            seen.order.push_back((nonce, now));
        }
        Ok(&signed[HEADER..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signing(secret: &str, accepted: &[&str]) -> Signing {
        let settings = TransmitSettings {
            secret: Some(secret.into()),
            accepted_secrets: accepted.iter().map(|s| (*s).to_owned()).collect(),
            ..TransmitSettings::default()
        };
        Signing::from_settings(&settings).unwrap().unwrap()
    }

    #[test]
    fn a_signed_packet_opens_once() {
        let s = signing("a-cluster-secret-1", &[]);
        let sealed = s.sign(b"packet".to_vec());
        assert_eq!(s.verify(&sealed, true).unwrap(), b"packet");
        let again = s.verify(&sealed, true).unwrap_err();
        assert!(again.contains("replay"), "{again}");
    }

    #[test]
    fn tampering_or_another_secret_is_refused() {
        let s = signing("a-cluster-secret-1", &[]);
        let mut sealed = s.sign(b"packet".to_vec());
        let at = HEADER + 2;
        sealed[at] ^= 1;
        assert!(s.verify(&sealed, true).unwrap_err().contains("signature"));
        let other = signing("another-secret-22", &[]);
        assert!(other.verify(&s.sign(b"p".to_vec()), true).is_err());
        assert!(s
            .verify(b"short", true)
            .unwrap_err()
            .contains("not a signed packet"));
        let mut truncated = s.sign(b"packet".to_vec());
        truncated.truncate(truncated.len() - 1);
        assert!(s.verify(&truncated, true).is_err());
    }

    #[test]
    fn rotation_accepts_the_old_secret_while_signing_with_the_new() {
        let old = signing("the-old-secret-000", &[]);
        let rotating = signing("the-new-secret-111", &["the-old-secret-000"]);
        assert_eq!(
            rotating.verify(&old.sign(b"x".to_vec()), true).unwrap(),
            b"x"
        );
        let from_new = rotating.sign(b"y".to_vec());
        assert!(
            old.verify(&from_new, true).is_err(),
            "old nodes do not take the new secret"
        );
        let new_only = signing("the-new-secret-111", &[]);
        assert_eq!(new_only.verify(&from_new, true).unwrap(), b"y");
    }

    #[test]
    fn a_packet_outside_the_window_is_refused() {
        let s = signing("a-cluster-secret-1", &[]);
        let mut stale = vec![VERSION];
        stale.extend_from_slice(&(now_ms() - 120_000).to_be_bytes());
        stale.extend_from_slice(&[7u8; 12]);
        stale.extend_from_slice(b"old");
        let mut mac = s.secrets[0].clone();
        mac.update(&stale);
        stale.extend_from_slice(&mac.finalize().into_bytes());
        let err = s.verify(&stale, true).unwrap_err();
        assert!(err.contains("replay window"), "{err}");
        let short = Signing::from_settings(&TransmitSettings {
            secret: Some("short".into()),
            ..TransmitSettings::default()
        });
        assert!(short.unwrap_err().contains("16 bytes"));
    }
}
