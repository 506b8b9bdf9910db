//! A backend as the router holds it: the engine client plus its own breaker and concurrency
//! limit, which therefore survive reloads along with the router's slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lumen_backend::{BackendError, SharedBackend, TimeoutKind};
use lumen_resilience::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
use serde::Deserialize;

#[derive(Clone)]
pub struct Upstream {
    pub backend: SharedBackend,
    /// The backend's name, for the errors the core words about its answers.
    pub name: String,
    /// The whole engine: opened by failures that are clearly the engine's (it cannot be
    /// reached), and then no model is routed to it.
    pub breaker: Arc<CircuitBreaker>,
    /// One breaker per engine model on this backend: a model that fails (a broken adapter, a
    /// model that stalls) leaves the engine's other models in rotation.
    pub models: Arc<ModelBreakers>,
    /// Per-backend cap with its FIFO queue (unlimited unless configured).
    pub limit: Arc<Admission>,
    /// How the background health checker probes it.
    pub probe: Probe,
    /// Whether Messages requests go to the engine's own `/v1/messages`: the backend's
    /// [`native_messages`](lumen_backend::Backend::native_messages), until the engine shows it
    /// has no such route (a 404 there, then the same request served as a chat completion), so
    /// a backend whose kind promises an API its engine version lacks costs one extra send, once.
    pub messages_native: Arc<AtomicBool>,
}

/// How a backend is probed by the background health checker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// `GET /health`: free, the default.
    #[default]
    Health,
    /// `GET /v1/models`: free; for engines without `/health` (Ollama).
    Models,
    /// A one-token chat completion: proves inference works, and bills one token per probe.
    Generate,
}

impl Upstream {
    /// Whether this backend may take a request for `engine_model` now.
    pub fn allows(&self, engine_model: &str) -> bool {
        self.breaker.allows() && self.models.allows(engine_model)
    }

    /// Whether a Messages request goes to the engine as it is (see [`Self::messages_native`]).
    pub fn messages_native(&self) -> bool {
        self.messages_native.load(Ordering::Relaxed)
    }

    /// The engine answered 404 at `/v1/messages` and served the same request as a chat
    /// completion: it has no Messages route, so later requests are translated at once.
    pub(crate) fn lacks_native_messages(&self) {
        if self.messages_native.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                backend = %self.name,
                "the engine has no /v1/messages (404) but serves chat: Messages requests are \
                 translated from now on (set backends[].native_messages = false to say so)"
            );
        }
    }
}

/// Whether a failed native call says the engine lacks the route, so the same request may be
/// sent again translated: nothing ran (a 404 or 405 answers before any work).
pub(crate) fn route_missing(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Upstream {
            status: 404 | 405,
            ..
        }
    )
}

/// The breakers one attempt reports to: the backend's, and its model's (none for a
/// passthrough name, which never gets one).
pub(crate) struct AttemptBreakers {
    backend: Arc<CircuitBreaker>,
    model: Option<Arc<CircuitBreaker>>,
}

impl AttemptBreakers {
    pub(crate) fn new(up: &Upstream, engine_model: &str, passthrough: bool) -> Self {
        Self {
            backend: up.breaker.clone(),
            model: (!passthrough)
                .then(|| up.models.get_or_create(engine_model))
                .flatten(),
        }
    }

    pub(crate) fn on_pick(&self) {
        self.backend.on_pick();
        if let Some(m) = &self.model {
            m.on_pick();
        }
    }

    pub(crate) fn on_success(&self) {
        self.backend.on_success();
        if let Some(m) = &self.model {
            m.on_success();
        }
    }

    /// Records a failed call: an unreachable engine counts against the backend; any other
    /// engine fault against the model only (the engine answered, so the backend is marked
    /// reachable); a client error counts as success for both.
    pub(crate) fn on_error(&self, e: &BackendError) {
        if !e.is_backend_fault() {
            if !e.is_retryable() {
                self.on_success();
            }
            return;
        }
        match &self.model {
            Some(m) if !engine_down(e) => {
                m.on_failure();
                self.backend.on_success();
            }
            _ => self.backend.on_failure(),
        }
    }
}

/// Whether a failure says the engine as a whole is down (it cannot be reached), rather than
/// one model on it misbehaving.
pub(crate) fn engine_down(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Connect { .. }
            | BackendError::Timeout {
                kind: TimeoutKind::Connect
            }
    )
}

/// Breakers per engine model, created on first use. Bounded: model ids come from configuration
/// and discovery (passthrough names never get one), and past the bound a model shares the
/// backend's breaker.
pub struct ModelBreakers {
    cfg: BreakerConfig,
    map: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

const MAX_MODEL_BREAKERS: usize = 1_024;

impl ModelBreakers {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CircuitBreaker>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True unless this model's breaker is open (a model never seen is allowed).
    pub fn allows(&self, model: &str) -> bool {
        self.lock().get(model).is_none_or(|b| b.allows())
    }

    /// The model's breaker, created when first needed; `None` past the bound.
    pub fn get_or_create(&self, model: &str) -> Option<Arc<CircuitBreaker>> {
        let mut map = self.lock();
        if let Some(b) = map.get(model) {
            return Some(b.clone());
        }
        if map.len() >= MAX_MODEL_BREAKERS {
            return None;
        }
        let b = Arc::new(CircuitBreaker::new(self.cfg.clone()));
        map.insert(model.to_owned(), b.clone());
        Some(b)
    }

    /// Every model's breaker state, sorted by model, for reports and metrics.
    pub fn states(&self) -> Vec<(String, BreakerState)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .map(|(m, b)| (m.clone(), b.state()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
