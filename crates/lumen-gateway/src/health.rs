//! Background health checking: per-backend check history with thresholds and a startup
//! grace, and the probes. The reports built from it (`/health/inference`, `/ready`) belong to
//! the server.
//!
//! Probes bill no tokens unless a backend is configured with `probe = "generate"`. One failed
//! probe never ejects a backend (thresholds), an engine that fails while still loading weights
//! during the startup grace period is "loading", not ejected, and the circuit breakers add the
//! passive signal from real traffic.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use lumen_backend::{Health, RequestContext};
use lumen_openai_types::{ChatCompletionRequest, ChatMessage};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::upstream::{Probe, Upstream};

/// `[health]`: the background checker behind `/health/inference` and `/ready`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Run the background checker (passive signals from traffic apply either way).
    pub enabled: bool,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Successes in a row that bring an ejected backend back.
    pub healthy_threshold: u32,
    /// Failures in a row that eject a backend (one failed probe never does, unless this is 1).
    pub unhealthy_threshold: u32,
    /// After start, a failing backend is "loading" (weights), not ejected, for this long.
    pub startup_grace_ms: u64,
    /// Models `/ready` requires to be routable; empty means "at least one model".
    pub required_models: Vec<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 5_000,
            timeout_ms: 2_000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            startup_grace_ms: 300_000,
            required_models: Vec::new(),
        }
    }
}

/// What the active checks concluded about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Not probed yet: in rotation (the breaker protects it).
    Unknown,
    /// Failing during the startup grace period: out of rotation, not counted as a failure.
    Loading,
    /// The last probe succeeded.
    Healthy,
    /// Probes failing, fewer than the threshold in a row: still in rotation.
    Failing,
    /// Failed the threshold in a row: out of rotation until enough successes.
    Ejected,
}

impl CheckState {
    pub fn in_rotation(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy | Self::Failing)
    }
}

/// One backend's check history, as the reports show it.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub state: CheckState,
    pub ok_streak: u32,
    pub fail_streak: u32,
    pub last_check: Option<SystemTime>,
    pub latency: Option<Duration>,
    pub last_error: Option<String>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            state: CheckState::Unknown,
            ok_streak: 0,
            fail_streak: 0,
            last_check: None,
            latency: None,
            last_error: None,
        }
    }
}

/// Per-backend check results, keyed by backend name so they survive reloads.
pub struct HealthBook {
    started: Instant,
    trackers: Mutex<HashMap<String, Tracker>>,
}

impl HealthBook {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            trackers: Mutex::new(HashMap::new()),
        }
    }

    pub fn record(
        &self,
        cfg: &HealthConfig,
        name: &str,
        ok: Result<(), String>,
        latency: Duration,
    ) -> CheckState {
        let mut all = self.trackers.lock().unwrap_or_else(PoisonError::into_inner);
        let t = all.entry(name.to_owned()).or_default();
        t.last_check = Some(SystemTime::now());
        t.latency = Some(latency);
        let in_grace = self.started.elapsed() < Duration::from_millis(cfg.startup_grace_ms);
        match ok {
            Ok(()) => {
                t.ok_streak += 1;
                t.fail_streak = 0;
                t.last_error = None;
                t.state = match t.state {
                    CheckState::Ejected if t.ok_streak < cfg.healthy_threshold => {
                        CheckState::Ejected
                    }
                    _ => CheckState::Healthy,
                };
            }
            Err(e) => {
                t.fail_streak += 1;
                t.ok_streak = 0;
                t.last_error = Some(e);
                t.state = match t.state {
                    CheckState::Unknown | CheckState::Loading if in_grace => CheckState::Loading,
                    CheckState::Ejected => CheckState::Ejected,
                    _ if t.fail_streak >= cfg.unhealthy_threshold => CheckState::Ejected,
                    CheckState::Loading => CheckState::Loading,
                    _ => CheckState::Failing,
                };
            }
        }
        t.state
    }

    pub fn get(&self, name: &str) -> Tracker {
        self.trackers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

impl Default for HealthBook {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) async fn probe(
    up: &Upstream,
    kind: Probe,
    model: Option<String>,
    limit: Duration,
    cx: RequestContext,
) -> Result<(), String> {
    let run = async {
        match kind {
            Probe::Health => match up.backend.health().await {
                Health::Healthy => Ok(()),
                Health::Unhealthy { reason } => Err(reason),
            },
            Probe::Models => up
                .backend
                .models(&cx)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Probe::Generate => {
                let req = ChatCompletionRequest {
                    model: model.unwrap_or_default(),
                    messages: vec![ChatMessage::new("user", "ping")].into(),
                    max_tokens: Some(1),
                    ..Default::default()
                };
                up.backend
                    .chat(req, &cx)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    };
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| Err(format!("probe timed out after {} ms", limit.as_millis())))
}
