//! Retries: how long to wait, whether to retry at all, and a budget against retry storms.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lumen_backend::BackendError;
use tokio::time::Instant;

/// Wait between attempts. Linear is the default: predictable, and it keeps the added latency
/// of a retry small on a fleet where another engine is usually healthy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// `base + step × (attempt - 1)`, capped at `max`.
    Linear {
        base: Duration,
        step: Duration,
        max: Duration,
    },
    /// `base × 2^(attempt - 1)`, capped at `max`; with `jitter`, a uniform draw from
    /// `[0, that]` ("full jitter") so synchronized clients spread out.
    Exponential {
        base: Duration,
        max: Duration,
        jitter: bool,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid backoff: {0}")]
pub struct InvalidBackoff(&'static str);

impl Backoff {
    pub fn linear(base: Duration, step: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if max < base {
            return Err(InvalidBackoff("max must be at least base"));
        }
        Ok(Self::Linear { base, step, max })
    }

    pub fn exponential(
        base: Duration,
        max: Duration,
        jitter: bool,
    ) -> Result<Self, InvalidBackoff> {
        if max < base {
            return Err(InvalidBackoff("max must be at least base"));
        }
        if base.is_zero() {
            return Err(InvalidBackoff("base must be greater than zero"));
        }
        Ok(Self::Exponential { base, max, jitter })
    }

    /// The wait before retry number `retry` (1 for the first retry). `unit` is a uniform draw
    /// in [0, 1), injected so tests are deterministic.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let n = retry.max(1) - 1;
        match *self {
            Self::Linear { base, step, max } => (base + step.saturating_mul(n)).min(max),
            Self::Exponential { base, max, jitter } => {
                let d = base
                    .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
                    .min(max);
                if jitter {
                    d.mul_f64(unit.clamp(0.0, 1.0))
                } else {
                    d
                }
            }
        }
    }
}

/// Whether and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// An engine's `Retry-After` longer than this is not waited out: the error goes to the
    /// client (with the header) instead.
    pub max_retry_after: Duration,
    /// Engine HTTP statuses worth another attempt ([`DEFAULT_RETRYABLE_STATUSES`] by default).
    pub retryable_statuses: StatusSet,
}

/// A set of HTTP status codes (100–599), copied cheaply with the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSet([u64; 10]);

impl StatusSet {
    pub const fn empty() -> Self {
        Self([0; 10])
    }

    /// Codes outside 0–639 are ignored (they cannot be HTTP statuses).
    pub fn from_codes(codes: &[u16]) -> Self {
        let mut set = Self::empty();
        for &c in codes {
            let c = usize::from(c);
            if c < 640 {
                set.0[c / 64] |= 1 << (c % 64);
            }
        }
        set
    }

    pub fn contains(&self, code: u16) -> bool {
        let c = usize::from(code);
        c < 640 && self.0[c / 64] & (1 << (c % 64)) != 0
    }
}

/// The statuses retried unless configured otherwise: rate limited, and the engine's own
/// failures (a one-off 500 included; 529 is "overloaded" from Anthropic-style upstreams and
/// some proxies, the 503 of their dialect).
pub const DEFAULT_RETRYABLE_STATUSES: [u16; 6] = [429, 500, 502, 503, 504, 529];

impl Default for StatusSet {
    fn default() -> Self {
        Self::from_codes(&DEFAULT_RETRYABLE_STATUSES)
    }
}

impl RetryPolicy {
    /// Whether this failure is worth another attempt under this policy: an engine status in
    /// the configured set, or any other failure the error itself calls retryable.
    pub fn retries(&self, e: &BackendError) -> bool {
        match e {
            BackendError::Upstream { status, .. } => self.retryable_statuses.contains(*status),
            other => other.is_retryable(),
        }
    }

    /// The wait before the next attempt after failed attempt `attempt`, or `None` when the
    /// attempts are used up or the engine asked for a longer pause than we will wait.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let backoff = self.backoff.delay(attempt, unit);
        match retry_after {
            Some(ra) if ra > self.max_retry_after => None,
            Some(ra) => Some(backoff.max(ra)),
            None => Some(backoff),
        }
    }
}

/// Caps retries at a share of recent requests, plus a small floor, so that when a whole pool
/// fails retries cannot multiply the load (tower's `TpsBudget` idea, with time buckets).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    bucket: Duration,
    buckets: usize,
    state: Mutex<VecDeque<Bucket>>,
    refused: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    /// `ratio` retries per request over `window`, plus `min_per_sec` retries per second.
    pub fn new(ratio: f64, min_per_sec: u32, window: Duration) -> Self {
        let buckets = 10;
        Self {
            ratio: ratio.max(0.0),
            min_per_sec,
            bucket: (window / buckets as u32).max(Duration::from_millis(1)),
            buckets,
            state: Mutex::new(VecDeque::with_capacity(buckets + 1)),
            refused: AtomicU64::new(0),
        }
    }

    fn with_current<R>(&self, f: impl FnOnce(&mut Bucket, u64, u64) -> R) -> R {
        let now = Instant::now();
        let mut q = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let horizon = self.bucket * self.buckets as u32;
        while q
            .front()
            .is_some_and(|b| now.duration_since(b.start) >= horizon)
        {
            q.pop_front();
        }
        if q.back()
            .is_none_or(|b| now.duration_since(b.start) >= self.bucket)
        {
            q.push_back(Bucket {
                start: now,
                requests: 0,
                retries: 0,
            });
        }
        let (requests, retries) = q
            .iter()
            .fold((0, 0), |(a, b), x| (a + x.requests, b + x.retries));
        let current = q.back_mut();
        match current {
            Some(c) => f(c, requests, retries),
            None => f(
                &mut Bucket {
                    start: now,
                    requests: 0,
                    retries: 0,
                },
                requests,
                retries,
            ),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.with_current(|b, _, _| b.requests += 1);
    }

    /// Takes one retry from the budget; false means "do not retry".
    pub fn try_withdraw(&self) -> bool {
        let window_secs = (self.bucket * self.buckets as u32).as_secs_f64();
        let ok = self.with_current(|b, requests, retries| {
            let allowed = self.min_per_sec as f64 * window_secs + self.ratio * requests as f64;
            if (retries as f64) < allowed {
                b.retries += 1;
                true
            } else {
                false
            }
        });
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Retries refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
