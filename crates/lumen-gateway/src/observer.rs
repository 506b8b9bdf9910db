//! What the core reports about each request, as events. The server's Prometheus metrics and
//! access log are two observers; an embedder passes its own, or none. The core keeps no
//! registry of its own, so metrics are written in one place per observer, not from six files.
//!
//! Events are delivered synchronously in the task that serves the request (so an observer may
//! use a task-local to build a per-request record); an observer must not block.

use std::time::Duration;

use lumen_backend::{BackendError, TimeoutKind};

/// One thing that happened while serving a request (or in the background).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The pipeline resolved the request's `model` (blank, `auto`, an alias) to this public
    /// id and the caller may use it; a fallback may still serve another (`AttemptStarted`).
    Resolved { model: &'a str },
    /// Waited this long for a gateway admission slot.
    Queued { waited: Duration },
    /// Refused before any engine was asked: `queue_full`, `queue_timeout`,
    /// `no_healthy_backend`.
    Rejected { reason: &'static str },
    /// An attempt was routed. `passthrough` marks a model name the caller chose (never use it
    /// as a metric label then).
    AttemptStarted {
        attempt: u32,
        model: &'a str,
        passthrough: bool,
        backend: &'a str,
    },
    /// Waited this long for a per-backend slot.
    BackendQueued { waited: Duration },
    /// An attempt's engine call ended; `error` is `None` when it succeeded (for a stream: it
    /// committed, its first chunk arrived).
    AttemptFinished {
        backend: &'a str,
        elapsed: Duration,
        error: Option<&'a BackendError>,
    },
    /// A deadline fired (before or after commit).
    Timeout { kind: TimeoutKind },
    /// A failed attempt will be retried after `delay`.
    Retrying {
        backend: &'a str,
        reason: &'static str,
        delay: Duration,
    },
    /// A retryable failure was not retried: the retry budget is spent.
    RetryBudgetExhausted { backend: &'a str },
    /// A committed stream ended (or was dropped); `tokens` is (input, output) when the engine
    /// reported usage, `error` the kind of the failure that ended it.
    StreamEnded {
        model: &'a str,
        backend: &'a str,
        tokens: Option<(u64, u64)>,
        error: Option<&'static str>,
    },
    /// The request moved to another model: `from`'s pool could not serve it (`reason`: the
    /// last failure's kind, `no_healthy_backend`, `queue_timeout`), or the engine said it is
    /// too long for `from`'s context (`context_length_exceeded`).
    Fallback {
        from: &'a str,
        to: &'a str,
        reason: &'static str,
    },
    /// A stream that failed after commit (`reason`: the failure's kind) was continued on
    /// another engine, `to`; `None` when none could continue it (the caller then gets the
    /// failure in-band). `model` is the public model serving afterwards.
    Continued {
        model: &'a str,
        passthrough: bool,
        from: &'a str,
        to: Option<&'a str>,
        reason: &'static str,
    },
    /// A background health probe finished.
    HealthChecked { backend: &'a str, ok: bool },
    /// A shared-state store (keys, limits, cache) failed in operation `op` (`auth`, `limits`,
    /// `settle`, `renew`, `cache_get`, `cache_put`, ...); the request went on or was refused
    /// as `fail_closed` says.
    StoreFailed { op: &'static str },
    /// The key's limits or quotas refused a request (or a fallback model).
    RateLimited { reason: &'static str },
    /// The response cache answered a lookup (`hit`, `miss`) or was refreshed (`refresh`).
    Cache { result: &'static str },
    /// A request of the key named `key` (a name from the configuration or the admin API) was
    /// counted in its usage: what `/admin/usage/history` adds up.
    Accounted {
        key: &'a str,
        counts: &'a lumen_governance::accounting::Counts,
    },
}

/// Receives [`Event`]s; match on the ones you need and ignore the rest.
pub trait Observer: Send + Sync + 'static {
    fn event(&self, event: &Event<'_>);
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn event(&self, _: &Event<'_>) {}
}
