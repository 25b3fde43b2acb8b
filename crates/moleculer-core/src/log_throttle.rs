//! Rate-limited warnings: a peer that sends a flood of bad input must not flood the log.
//!
//! Each kind of trouble has a key (say, the reason and the peer). The first occurrence is
//! logged at once; further ones within the window are only counted, and the next one logged
//! after the window carries that count, so nothing goes unreported and the log grows by at most
//! one line per key and window.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Most keys remembered; past this, keys whose window has passed are forgotten.
const MAX_KEYS: usize = 1024;

/// Decides which occurrences of a repeated warning are logged.
#[derive(Debug)]
pub struct LogThrottle {
    window: Duration,
    keys: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    logged_at: Instant,
    suppressed: u64,
}

impl LogThrottle {
    /// At most one line per key every `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether to log this occurrence of `key`: `Some(n)` to log it, `n` being how many were
    /// held back since the last line for that key; `None` to only count it.
    pub fn admit(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut keys = self.keys.lock();
        if let Some(slot) = keys.get_mut(key) {
            if now.duration_since(slot.logged_at) < self.window {
                slot.suppressed += 1;
                return None;
            }
            let held = slot.suppressed;
            *slot = Slot {
                logged_at: now,
                suppressed: 0,
            };
            return Some(held);
        }
        if keys.len() >= MAX_KEYS {
            let window = self.window;
            keys.retain(|_, s| now.duration_since(s.logged_at) < window);
        }
        if keys.len() < MAX_KEYS {
            keys.insert(
                key.to_owned(),
                Slot {
                    logged_at: now,
                    suppressed: 0,
                },
            );
        }
        Some(0)
    }

    /// The sentence appended to a line that stands for `held` more occurrences.
    pub fn held_note(&self, held: u64) -> String {
        if held == 0 {
            String::new()
        } else {
            format!(
                " ({held} more like it in the last {} s were not logged)",
                self.window.as_secs()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_key_and_window_with_the_count_of_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(throttle.admit("bad:a"), Some(0));
        for _ in 0..99 {
            assert_eq!(throttle.admit("bad:a"), None);
        }
        assert_eq!(throttle.admit("bad:b"), Some(0), "keys are independent");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(throttle.admit("bad:a"), Some(99));
        assert_eq!(throttle.admit("bad:a"), None);
        assert_eq!(
            throttle.held_note(99),
            " (99 more like it in the last 10 s were not logged)"
        );
        assert_eq!(throttle.held_note(0), "");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_keys_stays_bounded() {
        let throttle = LogThrottle::new(Duration::from_secs(1));
        for i in 0..(MAX_KEYS * 3) {
            throttle.admit(&format!("k{i}"));
        }
        assert!(throttle.keys.lock().len() <= MAX_KEYS);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(throttle.admit("fresh"), Some(0), "old keys make room");
    }
}
