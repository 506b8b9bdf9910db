//! Background health checking and the reports behind `/health/inference` and `/ready`.
//!
//! Probes bill no tokens unless a backend is configured with `probe = "generate"`. One failed
//! probe never ejects a backend (thresholds), an engine that fails while still loading weights
//! during the startup grace period is "loading", not ejected, and the circuit breakers add the
//! passive signal from real traffic.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use lumen_backend::{Health, RequestContext};
use lumen_openai_types::{ChatCompletionRequest, ChatMessage};
use lumen_resilience::BreakerState;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{HealthConfig, Probe};
use crate::gateway::{Gateway, Upstream};

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
    fn in_rotation(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy | Self::Failing)
    }
}

#[derive(Debug, Clone)]
struct Tracker {
    state: CheckState,
    ok_streak: u32,
    fail_streak: u32,
    last_check: Option<SystemTime>,
    latency: Option<Duration>,
    last_error: Option<String>,
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
pub(crate) struct HealthBook {
    started: Instant,
    trackers: Mutex<HashMap<String, Tracker>>,
}

impl HealthBook {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            trackers: Mutex::new(HashMap::new()),
        }
    }

    fn record(
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

    fn get(&self, name: &str) -> Tracker {
        self.trackers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

/// One backend in the deep health report.
#[derive(Debug, Serialize)]
pub struct BackendReport {
    pub name: String,
    /// healthy, failing, ejected, loading, unknown — or breaker_open when traffic tripped it.
    pub state: String,
    pub check: CheckState,
    pub breaker: &'static str,
    pub in_rotation: bool,
    pub in_flight: usize,
    pub consecutive_failures: u32,
    pub last_check_unix_ms: Option<u64>,
    pub last_check_age_ms: Option<u64>,
    pub latency_ms: Option<f64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub id: String,
    pub status: &'static str,
    pub healthy_backends: usize,
    pub backends: Vec<String>,
}

/// `/health/inference`.
#[derive(Debug, Serialize)]
pub struct InferenceReport {
    pub status: &'static str,
    pub models: Vec<ModelReport>,
    pub backends: Vec<BackendReport>,
}

/// `/ready`.
#[derive(Debug, Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub missing: Vec<String>,
}

async fn probe(
    up: &Upstream,
    kind: Probe,
    model: Option<String>,
    limit: Duration,
) -> Result<(), String> {
    let cx = RequestContext::new(format!("health-{}", uuid::Uuid::now_v7()));
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
                    messages: vec![ChatMessage::new("user", "ping")],
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

impl Gateway {
    /// Runs one round of probes against every backend, concurrently, and updates rotation.
    pub async fn check_health(&self) {
        let cfg = self.settings().health.clone();
        let limit = Duration::from_millis(cfg.timeout_ms);
        let router = self.router();
        let probes = router.slots().into_iter().map(|slot| {
            let model = router.slot_models(&slot.name).into_iter().next();
            let cfg = &cfg;
            async move {
                let start = Instant::now();
                let result = probe(&slot.backend, slot.backend.probe, model, limit).await;
                let latency = start.elapsed();
                let ok = result.is_ok();
                let state = self.inner.health.record(cfg, &slot.name, result, latency);
                let was = slot.is_available();
                slot.set_available(state.in_rotation());
                if state.in_rotation() && (!was || !slot.has_discovered()) {
                    // Back in rotation, or up but its models unknown: discover now rather than
                    // at the next interval, so its models stop answering 503.
                    self.inner.rediscover.notify_one();
                }
                self.inner
                    .metrics
                    .health_checks
                    .get_or_create(&crate::metrics::BackendResult {
                        backend: slot.name.clone(),
                        result: if ok { "ok" } else { "failed" }.to_owned(),
                    })
                    .inc();
            }
        });
        join_all(probes).await;
    }

    /// Probes on the configured interval until `shutdown`; the first round runs at once.
    pub async fn run_health_checks(&self, shutdown: impl std::future::Future<Output = ()>) {
        if !self.settings().health.enabled {
            return;
        }
        tokio::pin!(shutdown);
        loop {
            self.check_health().await;
            let every = Duration::from_millis(self.settings().health.interval_ms);
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// The deep report: every backend's state and every exposed model's.
    pub fn inference_report(&self) -> InferenceReport {
        let router = self.router();
        let now = SystemTime::now();
        let backends: Vec<BackendReport> = router
            .slots()
            .iter()
            .map(|slot| {
                let t = self.inner.health.get(&slot.name);
                let breaker = slot.backend.breaker.state();
                let state = match (breaker, t.state) {
                    (BreakerState::Open | BreakerState::HalfOpen, _) => "breaker_open",
                    (_, CheckState::Healthy) => "healthy",
                    (_, CheckState::Failing) => "failing",
                    (_, CheckState::Ejected) => "ejected",
                    (_, CheckState::Loading) => "loading",
                    (_, CheckState::Unknown) => "unknown",
                };
                BackendReport {
                    name: slot.name.clone(),
                    state: state.to_owned(),
                    check: t.state,
                    breaker: breaker.as_str(),
                    in_rotation: slot.is_available() && slot.backend.breaker.allows(),
                    in_flight: slot.in_flight(),
                    consecutive_failures: t.fail_streak,
                    last_check_unix_ms: t
                        .last_check
                        .and_then(|c| c.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64),
                    last_check_age_ms: t
                        .last_check
                        .and_then(|c| now.duration_since(c).ok())
                        .map(|d| d.as_millis() as u64),
                    latency_ms: t.latency.map(|l| l.as_secs_f64() * 1e3),
                    last_error: t.last_error,
                }
            })
            .collect();
        // With active checks off, a backend in rotation (breaker closed) counts as healthy:
        // the passive signal is all there is.
        let checks_on = self.settings().health.enabled;
        let healthy = |name: &str| {
            backends.iter().any(|b| {
                b.name == name
                    && b.in_rotation
                    && match b.check {
                        CheckState::Healthy | CheckState::Failing => true,
                        CheckState::Unknown => !checks_on,
                        CheckState::Loading | CheckState::Ejected => false,
                    }
            })
        };
        let models: Vec<ModelReport> = router
            .models()
            .into_iter()
            .filter(|m| m.id != lumen_governance::AUTO)
            .map(|m| {
                let names: Vec<String> = router
                    .backends_for(&m.id)
                    .iter()
                    .map(|s| s.name.clone())
                    .collect();
                let ok = names.iter().filter(|n| healthy(n)).count();
                ModelReport {
                    id: m.id,
                    status: if ok > 0 { "healthy" } else { "unhealthy" },
                    healthy_backends: ok,
                    backends: names,
                }
            })
            .collect();
        let all_ok = !models.is_empty() && models.iter().all(|m| m.healthy_backends > 0);
        InferenceReport {
            status: if all_ok { "healthy" } else { "unhealthy" },
            models,
            backends,
        }
    }

    /// Readiness: the required models (or, with none configured, at least one model) can be
    /// routed to a backend that passed its checks.
    pub fn ready_report(&self) -> ReadyReport {
        let report = self.inference_report();
        let required = self.settings().health.required_models.clone();
        let routable = |id: &str| {
            report
                .models
                .iter()
                .any(|m| m.id == id && m.healthy_backends > 0)
        };
        let missing: Vec<String> = if required.is_empty() {
            if report.models.iter().any(|m| m.healthy_backends > 0) {
                Vec::new()
            } else {
                vec!["(any model)".to_owned()]
            }
        } else {
            required.into_iter().filter(|m| !routable(m)).collect()
        };
        ReadyReport {
            ready: missing.is_empty(),
            missing,
        }
    }
}
