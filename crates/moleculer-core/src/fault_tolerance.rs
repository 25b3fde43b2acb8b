//! Fault-tolerance settings with Moleculer's names and defaults: `retryPolicy`,
//! `circuitBreaker` and `bulkhead`. They are set for a whole broker and per action (or event
//! handler, for the bulkhead), and an action's settings travel in INFO, so a caller applies the
//! retry and breaker settings the callee declared, as Moleculer does.
//!
//! Every field is optional. An action's settings are laid over the broker's field by field (as
//! Moleculer merges them with `Object.assign`), and a field set nowhere takes Moleculer's
//! default, so `RetryPolicy { retries: Some(3), ..Default::default() }` on an action changes
//! only the count.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::MoleculerError;

/// A function that decides about an error: whether a retry policy retries it, or whether a
/// circuit breaker counts it as a failure (Moleculer's `check`).
pub type ErrorCheck = Arc<dyn Fn(&MoleculerError) -> bool + Send + Sync>;

/// Why a setting is refused: the key (relative to its section) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The key, e.g. `maxDelay`.
    pub key: &'static str,
    /// Why it is refused, as a sentence fragment.
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        key,
        reason: reason.into(),
    }
}

/// Retrying failed calls (`retryPolicy`). Off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Whether calls are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Attempts after the first (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Milliseconds before the first retry (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<u64>,
    /// Longest wait between attempts, in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<u64>,
    /// Each wait is the previous one times this (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Waits are drawn between half and all of the computed delay, so callers that failed
    /// together do not retry together (default on; Moleculer has no jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
    /// A call pinned to a node (`CallOptions::node_id`) is retried on that node only (default
    /// off: as in Moleculer, a retry may go to any node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_node_pin: Option<bool>,
}

impl RetryPolicy {
    /// Whether retries are on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }
    /// Attempts after the first.
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(5)
    }
    /// The first wait, in milliseconds.
    pub fn delay(&self) -> u64 {
        self.delay.unwrap_or(100)
    }
    /// The longest wait, in milliseconds.
    pub fn max_delay(&self) -> u64 {
        self.max_delay.unwrap_or(1000)
    }
    /// The growth factor of the waits.
    pub fn factor(&self) -> f64 {
        self.factor.unwrap_or(2.0)
    }
    /// Whether waits are jittered.
    pub fn jitter(&self) -> bool {
        self.jitter.unwrap_or(true)
    }
    /// Whether retries stay on a pinned node.
    pub fn keep_node_pin(&self) -> bool {
        self.keep_node_pin.unwrap_or(false)
    }

    /// This policy's fields over `base`'s.
    #[must_use]
    pub fn over(&self, base: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            enabled: self.enabled.or(base.enabled),
            retries: self.retries.or(base.retries),
            delay: self.delay.or(base.delay),
            max_delay: self.max_delay.or(base.max_delay),
            factor: self.factor.or(base.factor),
            jitter: self.jitter.or(base.jitter),
            keep_node_pin: self.keep_node_pin.or(base.keep_node_pin),
        }
    }

    /// Refuses contradictions.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let factor = self.factor();
        if !factor.is_finite() || factor < 1.0 {
            return Err(invalid(
                "factor",
                format!("must be 1 or more, or waits would shrink (got {factor})"),
            ));
        }
        if self.max_delay() < self.delay() {
            return Err(invalid(
                "maxDelay",
                format!(
                    "must not be below delay ({} ms), got {} ms",
                    self.delay(),
                    self.max_delay()
                ),
            ));
        }
        Ok(())
    }
}

/// A retry policy resolved to the numbers a failed call needs. Small and `Copy`, since an
/// endpoint's context target carries one for every call made to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPlan {
    /// Attempts after the first; 0 when retries are off.
    pub retries: u32,
    /// The first wait, in milliseconds.
    pub delay_ms: u32,
    /// The longest wait, in milliseconds.
    pub max_delay_ms: u32,
    /// The growth factor of the waits.
    pub factor: f32,
    /// Whether waits are drawn between half and all of their length.
    pub jitter: bool,
}

impl RetryPlan {
    /// The plan of `policy`, with the attempt count of a call (`retries`) when it sets one.
    pub fn of(policy: &RetryPolicy, retries: Option<u32>) -> Self {
        let clamp = |ms: u64| u32::try_from(ms).unwrap_or(u32::MAX);
        RetryPlan {
            retries: if policy.is_enabled() {
                retries.unwrap_or_else(|| policy.retries())
            } else {
                0
            },
            delay_ms: clamp(policy.delay()),
            max_delay_ms: clamp(policy.max_delay()),
            factor: policy.factor() as f32,
            jitter: policy.jitter(),
        }
    }

    /// The wait before retry number `attempt` (1 for the first), before jitter:
    /// `min(delay × factor^(attempt−1), maxDelay)` milliseconds.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let raw = f64::from(self.delay_ms) * f64::from(self.factor).powi(exp);
        raw.min(f64::from(self.max_delay_ms)).max(0.0) as u64
    }

    /// The wait before retry number `attempt`, jittered when the plan says so.
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        let ms = self.backoff_ms(attempt);
        if self.jitter && ms > 1 {
            use rand::Rng;
            std::time::Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
        } else {
            std::time::Duration::from_millis(ms)
        }
    }
}

/// Switching off a failing endpoint (`circuitBreaker`), kept by each caller per endpoint
/// (`nodeID:action`). Off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerOptions {
    /// Whether the breaker is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Failure rate (0–1) that opens the breaker (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Seconds of one counting window (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_time: Option<f64>,
    /// Requests in a window before the rate is judged (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_request_count: Option<u32>,
    /// Milliseconds an open breaker waits before letting one probe through (default 10 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_time: Option<u64>,
}

impl CircuitBreakerOptions {
    /// Whether the breaker is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }
    /// The failure rate that opens it.
    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(0.5)
    }
    /// Seconds of one counting window.
    pub fn window_time(&self) -> f64 {
        self.window_time.unwrap_or(60.0)
    }
    /// Requests before the rate counts.
    pub fn min_request_count(&self) -> u32 {
        self.min_request_count.unwrap_or(20)
    }
    /// Milliseconds before a probe.
    pub fn half_open_time(&self) -> u64 {
        self.half_open_time.unwrap_or(10_000)
    }

    /// These options' fields over `base`'s.
    #[must_use]
    pub fn over(&self, base: &CircuitBreakerOptions) -> CircuitBreakerOptions {
        CircuitBreakerOptions {
            enabled: self.enabled.or(base.enabled),
            threshold: self.threshold.or(base.threshold),
            window_time: self.window_time.or(base.window_time),
            min_request_count: self.min_request_count.or(base.min_request_count),
            half_open_time: self.half_open_time.or(base.half_open_time),
        }
    }

    /// Refuses contradictions.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let threshold = self.threshold();
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(invalid(
                "threshold",
                format!("must be above 0 and at most 1 (a failure rate), got {threshold}"),
            ));
        }
        let window = self.window_time();
        if !(window.is_finite() && window > 0.0) {
            return Err(invalid(
                "windowTime",
                format!("must be above 0 seconds, got {window}"),
            ));
        }
        if self.half_open_time() == 0 {
            return Err(invalid("halfOpenTime", "must be above 0 ms"));
        }
        Ok(())
    }
}

/// Limiting concurrent executions of a local action or event handler (`bulkhead`). Off by
/// default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkheadOptions {
    /// Whether the bulkhead is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Executions at the same time (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Waiting requests before `QueueIsFullError`; 0 means no limit (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<u32>,
}

impl BulkheadOptions {
    /// Whether the bulkhead is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }
    /// Executions at the same time.
    pub fn concurrency(&self) -> u32 {
        self.concurrency.unwrap_or(10)
    }
    /// Waiting requests allowed (0: no limit).
    pub fn max_queue_size(&self) -> u32 {
        self.max_queue_size.unwrap_or(100)
    }

    /// These options' fields over `base`'s.
    #[must_use]
    pub fn over(&self, base: &BulkheadOptions) -> BulkheadOptions {
        BulkheadOptions {
            enabled: self.enabled.or(base.enabled),
            concurrency: self.concurrency.or(base.concurrency),
            max_queue_size: self.max_queue_size.or(base.max_queue_size),
        }
    }

    /// Refuses contradictions.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.concurrency() == 0 {
            return Err(invalid(
                "concurrency",
                "must be at least 1, or nothing would ever run",
            ));
        }
        Ok(())
    }
}

/// A setting of a peer's INFO that does not fit its shape is dropped, not the whole INFO.
pub(crate) fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_moleculers() {
        let r = RetryPolicy::default();
        assert_eq!(
            (
                r.is_enabled(),
                r.retries(),
                r.delay(),
                r.max_delay(),
                r.factor()
            ),
            (false, 5, 100, 1000, 2.0)
        );
        let c = CircuitBreakerOptions::default();
        assert_eq!(
            (
                c.is_enabled(),
                c.threshold(),
                c.window_time(),
                c.min_request_count(),
                c.half_open_time()
            ),
            (false, 0.5, 60.0, 20, 10_000)
        );
        let b = BulkheadOptions::default();
        assert_eq!(
            (b.is_enabled(), b.concurrency(), b.max_queue_size()),
            (false, 10, 100)
        );
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_max_delay() {
        let r = RetryPlan::of(&RetryPolicy::default(), None);
        let waits: Vec<u64> = (1..=6).map(|n| r.backoff_ms(n)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn an_action_setting_overrides_only_what_it_sets() {
        let broker = RetryPolicy {
            enabled: Some(true),
            retries: Some(5),
            ..RetryPolicy::default()
        };
        let action = RetryPolicy {
            retries: Some(1),
            ..RetryPolicy::default()
        };
        let merged = action.over(&broker);
        assert!(merged.is_enabled());
        assert_eq!(merged.retries(), 1);
    }

    #[test]
    fn contradictions_name_their_key() {
        let bad = RetryPolicy {
            delay: Some(500),
            max_delay: Some(100),
            ..RetryPolicy::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "maxDelay");
        let bad = CircuitBreakerOptions {
            threshold: Some(1.5),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "threshold");
        let bad = BulkheadOptions {
            concurrency: Some(0),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "concurrency");
    }

    #[test]
    fn moleculer_json_reads_and_unknown_keys_are_refused() {
        let r: RetryPolicy =
            serde_json::from_str(r#"{"enabled":true,"retries":3,"maxDelay":2000}"#).unwrap();
        assert_eq!((r.retries(), r.max_delay()), (3, 2000));
        let err = serde_json::from_str::<RetryPolicy>(r#"{"retires":3}"#).unwrap_err();
        assert!(err.to_string().contains("retires"), "{err}");
    }
}
