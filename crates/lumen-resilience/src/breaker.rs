//! A per-backend circuit breaker: closed → open (cooldown) → half-open (probe) → closed.
//!
//! Transitions are lazy and driven by the clock on each check, so no background task is needed
//! and a paused test clock controls them completely.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row (0 disables the breaker).
    pub consecutive_failures: u32,
    /// Also open when the failure ratio over `window` reaches this (0 disables), once at
    /// least `min_requests` were seen in the window.
    pub failure_ratio: f64,
    pub window: Duration,
    pub min_requests: u32,
    /// How long the backend stays out of rotation before a probe is allowed.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.0,
            window: Duration::from_secs(10),
            min_requests: 20,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Normal traffic.
    Closed,
    /// Out of rotation until the cooldown ends.
    Open,
    /// Cooldown over: one probe request may go; its outcome closes or re-opens the breaker.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        consecutive: u32,
        window_start: Instant,
        requests: u32,
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe_since`: when the current probe was sent. A probe whose outcome never arrives
    /// (the client went away) expires after one cooldown, so the breaker cannot stick.
    HalfOpen {
        probe_since: Option<Instant>,
    },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            inner: Mutex::new(Self::closed()),
        }
    }

    fn closed() -> Inner {
        Inner::Closed {
            consecutive: 0,
            window_start: Instant::now(),
            requests: 0,
            failures: 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Inner::Open { until } = *g {
            if Instant::now() >= until {
                *g = Inner::HalfOpen { probe_since: None };
            }
        }
        g
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// True when a request may be routed here: closed, or half-open with no probe in flight.
    /// Pure: it claims nothing (use [`on_pick`](Self::on_pick) once the backend is chosen).
    pub fn allows(&self) -> bool {
        match *self.lock() {
            Inner::Closed { .. } => true,
            Inner::Open { .. } => false,
            Inner::HalfOpen { probe_since } => {
                probe_since.is_none_or(|t| t.elapsed() >= self.cfg.cooldown)
            }
        }
    }

    /// Marks the probe in flight when half-open, so only one request tests a recovering backend.
    pub fn on_pick(&self) {
        if let Inner::HalfOpen { probe_since } = &mut *self.lock() {
            *probe_since = Some(Instant::now());
        }
    }

    pub fn on_success(&self) {
        let mut g = self.lock();
        match &mut *g {
            Inner::Closed {
                consecutive,
                requests,
                ..
            } => {
                *consecutive = 0;
                *requests += 1;
                self.roll_window(&mut g);
            }
            Inner::HalfOpen { .. } => *g = Self::closed(),
            Inner::Open { .. } => {}
        }
    }

    pub fn on_failure(&self) {
        if self.cfg.consecutive_failures == 0 && self.cfg.failure_ratio <= 0.0 {
            return;
        }
        let mut g = self.lock();
        let open = match &mut *g {
            Inner::Closed {
                consecutive,
                requests,
                failures,
                ..
            } => {
                *consecutive += 1;
                *requests += 1;
                *failures += 1;
                let by_count = self.cfg.consecutive_failures > 0
                    && *consecutive >= self.cfg.consecutive_failures;
                let by_ratio = self.cfg.failure_ratio > 0.0
                    && *requests >= self.cfg.min_requests
                    && f64::from(*failures) / f64::from(*requests) >= self.cfg.failure_ratio;
                by_count || by_ratio
            }
            Inner::HalfOpen { .. } => true,
            Inner::Open { .. } => false,
        };
        if open {
            *g = Inner::Open {
                until: Instant::now() + self.cfg.cooldown,
            };
        } else {
            self.roll_window(&mut g);
        }
    }

    /// Starts a fresh ratio window once the current one is over.
    fn roll_window(&self, g: &mut Inner) {
        if let Inner::Closed {
            window_start,
            requests,
            failures,
            ..
        } = g
        {
            if window_start.elapsed() >= self.cfg.window {
                *window_start = Instant::now();
                *requests = 0;
                *failures = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests;
