//! A backend as the router holds it: the engine client plus its own breaker and concurrency
//! limit, which therefore survive reloads along with the router's slot.

use std::sync::Arc;

use lumen_backend::SharedBackend;
use lumen_resilience::{Admission, CircuitBreaker};
use serde::Deserialize;

#[derive(Clone)]
pub struct Upstream {
    pub backend: SharedBackend,
    pub breaker: Arc<CircuitBreaker>,
    /// Per-backend cap with its FIFO queue (unlimited unless configured).
    pub limit: Arc<Admission>,
    /// How the background health checker probes it.
    pub probe: Probe,
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
