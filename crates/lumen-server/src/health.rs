//! The reports behind `/health/inference` and `/ready`, built from the core's health-check
//! history (`lumen_gateway::HealthBook`), its breakers and its routing table.

use std::time::{SystemTime, UNIX_EPOCH};

pub use lumen_gateway::CheckState;
use lumen_resilience::BreakerState;
use serde::Serialize;

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
    /// Per-model breakers on this backend (models that have been called), so one failing
    /// model shows without taking the backend out.
    pub models: Vec<ModelBreakerReport>,
    /// The engine's own load report and the load routing reads from it; present while the
    /// engines' signals are scraped (`routing.signals`).
    pub engine: Option<EngineSignals>,
}

/// One backend's engine signals in the deep health report.
#[derive(Debug, Serialize)]
pub struct EngineSignals {
    /// The engine's last report: its running batch, its queue, its KV-cache use (0–1).
    pub running: Option<u32>,
    pub waiting: Option<u32>,
    pub kv_cache_usage: Option<f64>,
    pub report_age_ms: Option<u64>,
    /// The report is recent enough to route on; otherwise Lumen uses its own in-flight count.
    pub fresh: bool,
    /// What routing reads now: requests at the engine and those of them queued — the report
    /// corrected by Lumen's own requests since it was taken, or Lumen's in-flight count.
    pub load_requests: f64,
    pub load_queue: f64,
    /// The batch size the engine queued at (its limit), once it has queued.
    pub batch_capacity: Option<u32>,
    pub scrape_failures: u32,
    pub last_scrape_error: Option<String>,
}

/// The engine signals of one backend, when they are scraped.
fn engine_signals<B>(
    slot: &lumen_governance::Slot<B>,
    now_ms: u64,
    stale_ms: u64,
) -> EngineSignals {
    let snap = slot.engine().snapshot();
    let load = slot.load(now_ms, stale_ms);
    let (failures, error) = slot.engine().failures();
    EngineSignals {
        running: snap.map(|s| s.running),
        waiting: snap.map(|s| s.waiting),
        kv_cache_usage: snap.and_then(|s| s.kv_usage),
        report_age_ms: snap.map(|s| now_ms.saturating_sub(s.at_ms)),
        fresh: load.fresh,
        load_requests: load.occupancy,
        load_queue: load.queue,
        batch_capacity: snap.and_then(|s| s.capacity),
        scrape_failures: failures,
        last_scrape_error: error,
    }
}

/// One model's breaker on one backend.
#[derive(Debug, Serialize)]
pub struct ModelBreakerReport {
    pub model: String,
    pub breaker: &'static str,
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

/// The deep report: every backend's state and every exposed model's.
pub fn inference_report(core: &lumen_gateway::Gateway) -> InferenceReport {
    {
        let router = core.router();
        let now = SystemTime::now();
        let cfg = router.config();
        let scraped = router.scrapes_signals();
        let now_ms = core.now_ms();
        let backends: Vec<BackendReport> = router
            .slots()
            .iter()
            .map(|slot| {
                let t = core.health_book().get(&slot.name);
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
                    models: slot
                        .backend
                        .models
                        .states()
                        .into_iter()
                        .map(|(model, b)| ModelBreakerReport {
                            model,
                            breaker: b.as_str(),
                        })
                        .collect(),
                    engine: scraped.then(|| engine_signals(slot, now_ms, cfg.signals.stale_ms)),
                }
            })
            .collect();
        // With active checks off, a backend in rotation (breaker closed) counts as healthy:
        // the passive signal is all there is.
        let checks_on = core.settings().health.enabled;
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
                let slots = router.backends_for(&m.id);
                let engine = router.engine_for(&m.id).unwrap_or_else(|| m.id.clone());
                let names: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
                let ok = slots
                    .iter()
                    .filter(|s| healthy(&s.name) && s.backend.models.allows(&engine))
                    .count();
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
}

/// Readiness: the required models (or, with none configured, at least one model) can be
/// routed to a backend that passed its checks.
pub fn ready_report(core: &lumen_gateway::Gateway) -> ReadyReport {
    {
        let report = inference_report(core);
        let required = core.settings().health.required_models.clone();
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
