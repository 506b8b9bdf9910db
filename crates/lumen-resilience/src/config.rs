//! Resilience settings as plain serde types: a tuning profile gives every default; explicit
//! settings override it. The server layers them with figment (`[timeouts]`, `[retry]`,
//! `[breaker]`, `[admission]`, `profile`); an embedder can build them in code.
//!
//! Timeouts resolve in layers, each overriding the one before: the profile's preset for the
//! operation → `[timeouts]` (all operations) → `[timeouts.<operation>]` → `[timeouts.per_model.<id>]`
//! → the request's `x-lumen-timeout-ms` header, which can only lower the total and first-byte caps.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::{Backoff, BreakerConfig, RetryPolicy, Timeouts};

/// A setting that cannot work, with the key that names it (`retry.chat_attempts`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidSetting {
    pub key: String,
    pub reason: String,
}

/// Named like the server's error constructor so the validation below reads the same.
struct ConfigError;

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> InvalidSetting {
        InvalidSetting {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Named presets from the deployment guide (see docs/tuning.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 7–8B models: low latency, short deadlines, few retries.
    Small,
    /// 14–32B models.
    #[default]
    Medium,
    /// MoE and large dense models: long prefill, the longest deadlines, the most retries.
    Large,
}

/// One profile's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub connect_ms: u64,
    pub first_byte_ms: u64,
    pub idle_ms: u64,
    pub total_ms: u64,
    pub embeddings_total_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_step_ms: u64,
    pub backoff_max_ms: u64,
    pub max_concurrent: usize,
    pub queue_size: usize,
    pub queue_timeout_ms: u64,
    pub breaker_cooldown_ms: u64,
}

impl Profile {
    pub fn preset(self) -> Preset {
        match self {
            Self::Small => Preset {
                connect_ms: 1_000,
                first_byte_ms: 15_000,
                idle_ms: 10_000,
                total_ms: 120_000,
                embeddings_total_ms: 30_000,
                max_attempts: 2,
                backoff_base_ms: 25,
                backoff_step_ms: 25,
                backoff_max_ms: 250,
                max_concurrent: 2_048,
                queue_size: 256,
                queue_timeout_ms: 2_000,
                breaker_cooldown_ms: 5_000,
            },
            Self::Medium => Preset {
                connect_ms: 2_000,
                first_byte_ms: 60_000,
                idle_ms: 30_000,
                total_ms: 600_000,
                embeddings_total_ms: 60_000,
                max_attempts: 3,
                backoff_base_ms: 50,
                backoff_step_ms: 100,
                backoff_max_ms: 1_000,
                max_concurrent: 1_024,
                queue_size: 512,
                queue_timeout_ms: 5_000,
                breaker_cooldown_ms: 10_000,
            },
            Self::Large => Preset {
                connect_ms: 3_000,
                first_byte_ms: 180_000,
                idle_ms: 60_000,
                total_ms: 1_800_000,
                embeddings_total_ms: 120_000,
                max_attempts: 4,
                backoff_base_ms: 100,
                backoff_step_ms: 250,
                backoff_max_ms: 3_000,
                max_concurrent: 512,
                queue_size: 1_024,
                queue_timeout_ms: 15_000,
                breaker_cooldown_ms: 30_000,
            },
        }
    }
}

/// The operations that have their own deadlines and retry counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Chat,
    Completions,
    Embeddings,
    Models,
    Health,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
            Self::Health => "health",
        }
    }
}

/// Deadline overrides, in milliseconds; unset keeps the layer below, 0 disables.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutOverrides {
    pub first_byte_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

impl TimeoutOverrides {
    fn apply(&self, t: &mut Timeouts) {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        if let Some(v) = self.first_byte_ms {
            t.first_byte = ms(v);
        }
        if let Some(v) = self.idle_ms {
            t.idle = ms(v);
        }
        if let Some(v) = self.total_ms {
            t.total = ms(v);
        }
    }
}

/// `[timeouts]`: connect (per backend), defaults for every operation, and overrides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP/TLS connect. Per backend rather than per operation, because connections are pooled
    /// and shared by every operation.
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
    pub chat: TimeoutOverrides,
    pub completions: TimeoutOverrides,
    pub embeddings: TimeoutOverrides,
    /// Model discovery (`/v1/models`).
    pub models: TimeoutOverrides,
    pub health: TimeoutOverrides,
    /// Per model, keyed by public or engine id; applies to every operation on that model.
    pub per_model: BTreeMap<String, TimeoutOverrides>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    #[default]
    Linear,
    Exponential,
}

/// `[retry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all (1 = no retries), for every operation unless overridden below.
    pub max_attempts: Option<u32>,
    pub chat_attempts: Option<u32>,
    pub completions_attempts: Option<u32>,
    pub embeddings_attempts: Option<u32>,
    pub backoff: BackoffKind,
    pub base_ms: Option<u64>,
    /// Linear only: added per further attempt.
    pub step_ms: Option<u64>,
    pub max_ms: Option<u64>,
    /// Exponential only: full jitter.
    pub jitter: bool,
    /// An engine `Retry-After` above this is not waited out; the client gets it instead.
    pub max_retry_after_ms: u64,
    /// Engine HTTP statuses worth another attempt. Other 4xx never are (they describe the
    /// request), whatever this says.
    pub retryable_statuses: Vec<u16>,
    /// Retries allowed per recent request (0.2 = at most 20 % extra load)...
    pub budget_ratio: f64,
    /// ...plus this many per second, so a quiet gateway can still retry.
    pub budget_min_per_sec: u32,
    pub budget_window_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: None,
            chat_attempts: None,
            completions_attempts: None,
            embeddings_attempts: None,
            backoff: BackoffKind::Linear,
            base_ms: None,
            step_ms: None,
            max_ms: None,
            jitter: true,
            max_retry_after_ms: 5_000,
            retryable_statuses: crate::DEFAULT_RETRYABLE_STATUSES.to_vec(),
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            budget_window_ms: 10_000,
        }
    }
}

/// `[breaker]`, per backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Open after this many failures in a row (0 = off).
    pub consecutive_failures: u32,
    /// Also open at this failure ratio over `window_ms` (0 = off)...
    pub failure_ratio: f64,
    pub window_ms: u64,
    /// ...once the window has this many requests.
    pub min_requests: u32,
    pub cooldown_ms: Option<u64>,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.0,
            window_ms: 10_000,
            min_requests: 20,
            cooldown_ms: None,
        }
    }
}

/// `[admission]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Concurrent requests across the gateway (0 = unlimited).
    pub max_concurrent: Option<usize>,
    /// Concurrent requests per backend (0 or unset = unlimited).
    pub per_backend_max_concurrent: Option<usize>,
    /// Requests that may wait for a slot; beyond it, 429.
    pub queue_size: Option<usize>,
    /// Longest wait for a slot; beyond it, 503.
    pub queue_timeout_ms: Option<u64>,
    /// Slots above `max_concurrent` for a key with nothing running and nothing waiting, so a
    /// team that sends now and then does not wait for a slot to free under another team's
    /// flood (see `FairAdmission::with_headroom`). Default 1; 0 makes the cap exact.
    pub headroom: Option<usize>,
}

/// One slot: enough for the light keys of a fleet to skip the wait for a release (they take
/// it in turn), and a bound the engines barely notice.
pub const DEFAULT_HEADROOM: usize = 1;

/// Everything above, resolved against the profile: what the gateway uses per request.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub connect: Option<Duration>,
    base: [Timeouts; 5],
    per_model: BTreeMap<String, TimeoutOverrides>,
    retry: [RetryPolicy; 3],
    pub budget: (f64, u32, Duration),
    pub breaker: BreakerConfig,
    pub max_concurrent: Option<usize>,
    pub per_backend_max_concurrent: Option<usize>,
    pub queue_size: usize,
    pub queue_timeout: Duration,
    pub headroom: usize,
}

fn index(op: Operation) -> usize {
    match op {
        Operation::Chat => 0,
        Operation::Completions => 1,
        Operation::Embeddings => 2,
        Operation::Models => 3,
        Operation::Health => 4,
    }
}

impl Resolved {
    pub fn new(
        profile: Profile,
        t: &TimeoutsConfig,
        r: &RetryConfig,
        b: &BreakerSettings,
        a: &AdmissionConfig,
    ) -> Result<Self, InvalidSetting> {
        let p = profile.preset();
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        let global = TimeoutOverrides {
            first_byte_ms: t.first_byte_ms,
            idle_ms: t.idle_ms,
            total_ms: t.total_ms,
        };
        let op_base = |op: Operation| {
            let mut out = match op {
                Operation::Chat | Operation::Completions => Timeouts {
                    first_byte: ms(p.first_byte_ms),
                    idle: ms(p.idle_ms),
                    total: ms(p.total_ms),
                },
                Operation::Embeddings => Timeouts {
                    first_byte: None,
                    idle: None,
                    total: ms(p.embeddings_total_ms),
                },
                Operation::Models | Operation::Health => Timeouts {
                    first_byte: None,
                    idle: None,
                    total: ms(5_000),
                },
            };
            global.apply(&mut out);
            let own = match op {
                Operation::Chat => &t.chat,
                Operation::Completions => &t.completions,
                Operation::Embeddings => &t.embeddings,
                Operation::Models => &t.models,
                Operation::Health => &t.health,
            };
            own.apply(&mut out);
            out
        };
        let base_ms = r.base_ms.unwrap_or(p.backoff_base_ms);
        let max_ms = r.max_ms.unwrap_or(p.backoff_max_ms);
        let backoff = match r.backoff {
            BackoffKind::Linear => Backoff::linear(
                Duration::from_millis(base_ms),
                Duration::from_millis(r.step_ms.unwrap_or(p.backoff_step_ms)),
                Duration::from_millis(max_ms),
            ),
            BackoffKind::Exponential => Backoff::exponential(
                Duration::from_millis(base_ms),
                Duration::from_millis(max_ms),
                r.jitter,
            ),
        }
        .map_err(|e| ConfigError::invalid("retry", e.to_string()))?;
        let attempts = |own: Option<u32>, key: &str| -> Result<u32, InvalidSetting> {
            let n = own.or(r.max_attempts).unwrap_or(p.max_attempts);
            if n == 0 {
                return Err(ConfigError::invalid(
                    format!("retry.{key}"),
                    "must be at least 1",
                ));
            }
            Ok(n)
        };
        if let Some(bad) = r
            .retryable_statuses
            .iter()
            .find(|&&s| !(s == 408 || s == 409 || s == 425 || s == 429 || (500..600).contains(&s)))
        {
            return Err(ConfigError::invalid(
                "retry.retryable_statuses",
                format!(
                    "{bad} cannot be retried: only 408, 409, 425, 429 and 5xx describe a failure \
                     another attempt could avoid"
                ),
            ));
        }
        let statuses = crate::StatusSet::from_codes(&r.retryable_statuses);
        let policy = |n: u32| RetryPolicy {
            max_attempts: n,
            backoff,
            max_retry_after: Duration::from_millis(r.max_retry_after_ms),
            retryable_statuses: statuses,
        };
        let retry = [
            policy(attempts(r.chat_attempts, "chat_attempts")?),
            policy(attempts(r.completions_attempts, "completions_attempts")?),
            policy(attempts(r.embeddings_attempts, "embeddings_attempts")?),
        ];
        if !(r.budget_ratio >= 0.0 && r.budget_ratio.is_finite()) {
            return Err(ConfigError::invalid(
                "retry.budget_ratio",
                "must be a number >= 0",
            ));
        }
        if r.budget_window_ms == 0 {
            return Err(ConfigError::invalid(
                "retry.budget_window_ms",
                "must be greater than 0",
            ));
        }
        if !(0.0..=1.0).contains(&b.failure_ratio) {
            return Err(ConfigError::invalid(
                "breaker.failure_ratio",
                "must be between 0 and 1",
            ));
        }
        let nonzero = |v: Option<usize>| v.filter(|n| *n > 0);
        Ok(Self {
            connect: ms(t.connect_ms.unwrap_or(p.connect_ms)),
            base: [
                op_base(Operation::Chat),
                op_base(Operation::Completions),
                op_base(Operation::Embeddings),
                op_base(Operation::Models),
                op_base(Operation::Health),
            ],
            per_model: t.per_model.clone(),
            retry,
            budget: (
                r.budget_ratio,
                r.budget_min_per_sec,
                Duration::from_millis(r.budget_window_ms),
            ),
            breaker: BreakerConfig {
                consecutive_failures: b.consecutive_failures,
                failure_ratio: b.failure_ratio,
                window: Duration::from_millis(b.window_ms.max(1)),
                min_requests: b.min_requests,
                cooldown: Duration::from_millis(b.cooldown_ms.unwrap_or(p.breaker_cooldown_ms)),
            },
            max_concurrent: match a.max_concurrent {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(p.max_concurrent),
            },
            per_backend_max_concurrent: nonzero(a.per_backend_max_concurrent),
            queue_size: a.queue_size.unwrap_or(p.queue_size),
            queue_timeout: Duration::from_millis(a.queue_timeout_ms.unwrap_or(p.queue_timeout_ms)),
            headroom: a.headroom.unwrap_or(DEFAULT_HEADROOM),
        })
    }

    /// Deadlines for one request: operation, then model (public id first, then engine id),
    /// then the caller's cap, which may only lower them.
    pub fn timeouts(
        &self,
        op: Operation,
        public: &str,
        engine: &str,
        cap: Option<Duration>,
    ) -> Timeouts {
        let mut t = self.base[index(op)];
        if let Some(o) = self
            .per_model
            .get(public)
            .or_else(|| self.per_model.get(engine))
        {
            o.apply(&mut t);
        }
        if let Some(cap) = cap {
            t.total = Some(t.total.map_or(cap, |x| x.min(cap)));
            t.first_byte = t.first_byte.map(|x| x.min(cap));
        }
        t
    }

    pub fn retry(&self, op: Operation) -> &RetryPolicy {
        match op {
            Operation::Completions => &self.retry[1],
            Operation::Embeddings => &self.retry[2],
            _ => &self.retry[0],
        }
    }
}
