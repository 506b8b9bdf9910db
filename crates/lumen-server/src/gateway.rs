//! The routing core as a Rust API: admit, route, call under deadlines, retry before commit,
//! and show the caller the model name they asked for.
//!
//! This is what an embedder uses without HTTP (`gateway.chat(req, &cx).await`), and what the
//! HTTP layer in [`crate::http`] calls after parsing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::Stream;
use futures::future::join_all;
use lumen_backend::{Backend, BackendError, RequestContext, SharedBackend, TimeoutKind};
use lumen_governance::{
    BackendSpec, GovernanceConfig, GovernanceError, Route, RouteRequest, Router,
};
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Chunk, CompletionChunk,
    CompletionRequest, CompletionResponse, EmbeddingRequest, EmbeddingResponse, HasModel, HasUsage,
    Model, ModelList, Prompt, Reply,
};
use lumen_resilience::{
    Admission, AdmissionError, CircuitBreaker, Guarded, Permit, RetryBudget, Timeouts,
};
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout};

use crate::access;
use crate::config::{
    AdmissionConfig, AuthConfig, BreakerSettings, CacheConfig, ConfigError, HealthConfig,
    LimitsConfig, LumenConfig, Operation, Probe, Profile, RedisConfig, Resolved, RetryConfig,
    TimeoutsConfig,
};
use crate::health::HealthBook;
use crate::metrics::{BackendLabel, BackendReason, KindLabel, Metrics, ReasonLabel, ResultLabel};
use crate::shared::{SharedSettings, Stores};
use lumen_resilience::BreakerState;

/// Why the gateway could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
}

/// A backend as the router holds it: the engine client plus its own breaker and concurrency
/// limit, which therefore survive reloads along with the router's slot.
#[derive(Clone)]
pub struct Upstream {
    pub backend: SharedBackend,
    pub breaker: Arc<CircuitBreaker>,
    /// Per-backend cap with its FIFO queue (unlimited unless configured).
    pub limit: Arc<Admission>,
    /// How the background health checker probes it.
    pub probe: Probe,
}

/// Settings that a reload may change; read once per request.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) resolved: Resolved,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) max_n: u32,
    pub(crate) discovery_interval: Duration,
    pub(crate) discovery_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) health: HealthConfig,
    pub(crate) shared: Arc<SharedSettings>,
}

/// Lumen's routing core. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) router: Router<Upstream>,
    pub(crate) settings: ArcSwap<Settings>,
    admission: ArcSwap<Admission>,
    budget: ArcSwap<RetryBudget>,
    jitter: AtomicU64,
    pub(crate) metrics: Metrics,
    pub(crate) health: HealthBook,
    pub(crate) stores: Stores,
    /// Set when the shutdown grace has run out: open SSE bodies end with an error event.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// Wakes the discovery loop early: a backend came (back) into rotation.
    pub(crate) rediscover: tokio::sync::Notify,
}

/// Builds a [`Gateway`] from parts, for embedders that do not use [`LumenConfig`].
pub struct GatewayBuilder {
    backends: Vec<(BackendSpec<SharedBackend>, Probe)>,
    governance: GovernanceConfig,
    profile: Profile,
    timeouts: TimeoutsConfig,
    retry: RetryConfig,
    breaker: BreakerSettings,
    admission: AdmissionConfig,
    max_body_bytes: usize,
    body_read_timeout: Duration,
    max_n: u32,
    discovery_interval: Duration,
    shutdown_grace: Duration,
    health: HealthConfig,
    auth: AuthConfig,
    limits: LimitsConfig,
    cache: CacheConfig,
    redis: RedisConfig,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        let cfg = LumenConfig::default();
        Self {
            backends: Vec::new(),
            governance: GovernanceConfig::default(),
            profile: cfg.profile,
            timeouts: cfg.timeouts,
            retry: cfg.retry,
            breaker: cfg.breaker,
            admission: cfg.admission,
            max_body_bytes: cfg.server.max_body_bytes,
            body_read_timeout: Duration::from_millis(cfg.server.body_read_timeout_ms),
            max_n: cfg.server.max_n,
            discovery_interval: Duration::from_millis(cfg.routing.discovery_interval_ms),
            shutdown_grace: Duration::from_millis(cfg.server.shutdown_grace_ms),
            health: cfg.health,
            auth: cfg.auth,
            limits: cfg.limits,
            cache: cfg.cache,
            redis: cfg.redis,
        }
    }
}

impl GatewayBuilder {
    /// Adds a backend with weight 1. `models: None` means "discover them from the engine".
    pub fn backend(
        self,
        name: impl Into<String>,
        backend: impl Backend,
        models: Option<Vec<String>>,
    ) -> Self {
        self.shared_backend(name, Arc::new(backend), 1, models)
    }

    pub fn shared_backend(
        mut self,
        name: impl Into<String>,
        backend: SharedBackend,
        weight: u32,
        models: Option<Vec<String>>,
    ) -> Self {
        let name = name.into();
        let spec = BackendSpec {
            key: name.clone(),
            name,
            backend,
            weight,
            models,
        };
        self.backends.push((spec, Probe::Health));
        self
    }

    /// Background health checking: interval, thresholds, startup grace, required models.
    /// API keys (off by default).
    pub fn auth(mut self, a: AuthConfig) -> Self {
        self.auth = a;
        self
    }

    pub fn limits(mut self, l: LimitsConfig) -> Self {
        self.limits = l;
        self
    }

    /// The exact-match response cache (off by default).
    pub fn cache(mut self, c: CacheConfig) -> Self {
        self.cache = c;
        self
    }

    /// Shared state on Redis; without a URL everything stays in memory. Needs a Tokio runtime
    /// at [`build`](Self::build) time.
    pub fn redis(mut self, r: RedisConfig) -> Self {
        self.redis = r;
        self
    }

    pub fn health(mut self, h: HealthConfig) -> Self {
        self.health = h;
        self
    }

    /// Model governance: allowlist, default, aliases, `auto`, passthrough, balancing.
    pub fn governance(mut self, cfg: GovernanceConfig) -> Self {
        self.discovery_interval = Duration::from_millis(cfg.discovery_interval_ms);
        self.governance = cfg;
        self
    }

    pub fn default_model(mut self, model: Option<String>) -> Self {
        self.governance.default_model = model;
        self
    }

    /// The tuning preset every unset resilience setting comes from.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Deadlines for chat, completions and embeddings (overriding the profile; `None`
    /// disables one).
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        let ms = |d: Option<Duration>| Some(d.map_or(0, |d| d.as_millis() as u64));
        self.timeouts.first_byte_ms = ms(t.first_byte);
        self.timeouts.idle_ms = ms(t.idle);
        self.timeouts.total_ms = ms(t.total);
        self
    }

    pub fn timeouts_config(mut self, t: TimeoutsConfig) -> Self {
        self.timeouts = t;
        self
    }

    pub fn retry(mut self, r: RetryConfig) -> Self {
        self.retry = r;
        self
    }

    pub fn breaker(mut self, b: BreakerSettings) -> Self {
        self.breaker = b;
        self
    }

    pub fn admission(mut self, a: AdmissionConfig) -> Self {
        self.admission = a;
        self
    }

    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Longest time to receive a request body after its headers (408 beyond it).
    pub fn body_read_timeout(mut self, limit: Duration) -> Self {
        self.body_read_timeout = limit;
        self
    }

    /// Largest `n` accepted (400 above it).
    pub fn max_n(mut self, n: u32) -> Self {
        self.max_n = n;
        self
    }

    pub fn discovery_interval(mut self, every: Duration) -> Self {
        self.discovery_interval = every;
        self
    }

    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    pub fn build(self) -> Result<Gateway, ConfigError> {
        let resolved = Resolved::new(
            self.profile,
            &self.timeouts,
            &self.retry,
            &self.breaker,
            &self.admission,
        )?;
        let specs = self
            .backends
            .into_iter()
            .map(|(s, probe)| upstream(s, probe, &resolved))
            .collect();
        let router = Router::new(self.governance, specs)
            .map_err(|e| ConfigError::invalid(e.key, e.reason))?;
        let shared = SharedSettings::new(&self.auth, &self.limits, &self.cache, &self.redis)?;
        let stores = Stores::new(&self.redis, &self.cache)?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                router,
                admission: ArcSwap::from_pointee(global_admission(&resolved)),
                budget: ArcSwap::from_pointee(budget(&resolved)),
                settings: ArcSwap::from_pointee(Settings {
                    resolved,
                    max_body_bytes: self.max_body_bytes,
                    body_read_timeout: self.body_read_timeout,
                    max_n: self.max_n,
                    discovery_interval: self.discovery_interval,
                    discovery_timeout: Duration::from_secs(5),
                    shutdown_grace: self.shutdown_grace,
                    health: self.health,
                    shared: Arc::new(shared),
                }),
                jitter: AtomicU64::new(0x5EED),
                metrics: Metrics::new(),
                health: HealthBook::new(),
                stores,
                closing: tokio::sync::watch::Sender::new(false),
                rediscover: tokio::sync::Notify::new(),
            }),
        })
    }
}

fn global_admission(r: &Resolved) -> Admission {
    Admission::new(r.max_concurrent, r.queue_size, r.queue_timeout)
}

fn budget(r: &Resolved) -> RetryBudget {
    let (ratio, floor, window) = r.budget;
    RetryBudget::new(ratio, floor, window)
}

/// Wraps a backend with its breaker and per-backend limit. Their settings are part of the slot
/// key, so changing them on reload gives the backend a fresh slot.
fn upstream(spec: BackendSpec<SharedBackend>, probe: Probe, r: &Resolved) -> BackendSpec<Upstream> {
    BackendSpec {
        key: format!(
            "{}|{:?}|{:?}",
            spec.key, r.breaker, r.per_backend_max_concurrent
        ),
        name: spec.name,
        weight: spec.weight,
        models: spec.models,
        backend: Upstream {
            backend: spec.backend,
            breaker: Arc::new(CircuitBreaker::new(r.breaker.clone())),
            limit: Arc::new(Admission::new(
                r.per_backend_max_concurrent,
                usize::MAX,
                r.queue_timeout,
            )),
            probe,
        },
    }
}

/// One OpenAI-compatible HTTP backend per configured engine.
fn backend_specs(
    cfg: &LumenConfig,
) -> Result<Vec<(BackendSpec<SharedBackend>, Probe)>, ConfigError> {
    let resolved = cfg.resolved()?;
    cfg.backends
        .iter()
        .enumerate()
        .map(|(i, bc)| {
            let name = cfg.backend_name(i);
            let mut vc = lumen_backend_vllm::VllmConfig::new(name.clone(), bc.url.clone());
            vc.api_key = bc.api_key.as_ref().map(|s| s.expose().to_owned());
            if let Some(connect) = resolved.connect {
                vc.connect_timeout = connect;
            }
            let backend = lumen_backend_vllm::VllmBackend::new(vc)
                .map_err(|e| ConfigError::invalid(format!("backends[{i}].url"), e.to_string()))?;
            // What makes two configs "the same backend" for reload: target and credentials.
            let key = format!(
                "{}|{:?}|{:?}|{:x}",
                bc.url,
                bc.kind,
                resolved.connect,
                bc.api_key.as_ref().map_or(0, |k| fingerprint(k.expose()))
            );
            let spec = BackendSpec {
                name,
                backend: Arc::new(backend) as SharedBackend,
                weight: bc.weight,
                models: bc.models.clone(),
                key,
            };
            Ok((spec, bc.probe.unwrap_or(bc.kind.default_probe())))
        })
        .collect()
}

/// A non-reversible fingerprint, so a key change is noticed without keeping the key twice.
fn fingerprint(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A successful attempt, with what must live as long as the response.
struct Served<T> {
    value: T,
    route: Route<Upstream>,
    permits: [Permit; 2],
}

/// Routing hints taken from the request before it is moved into the attempt loop.
struct Hints {
    session: Option<String>,
    prefix: Option<Vec<u8>>,
}

impl Hints {
    /// The session key is `x-session-id`, else the request's `user`.
    fn new(cx: &RequestContext, user: Option<&String>, prefix: Option<Vec<u8>>) -> Self {
        Self {
            session: cx.session_id.clone().or_else(|| user.cloned()),
            prefix,
        }
    }
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The default wiring: one OpenAI-compatible HTTP backend per configured engine.
    pub fn from_config(cfg: &LumenConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut b = Self::builder()
            .governance(cfg.routing.clone())
            .profile(cfg.profile)
            .timeouts_config(cfg.timeouts.clone())
            .retry(cfg.retry.clone())
            .breaker(cfg.breaker.clone())
            .admission(cfg.admission.clone())
            .max_body_bytes(cfg.server.max_body_bytes)
            .body_read_timeout(Duration::from_millis(cfg.server.body_read_timeout_ms))
            .max_n(cfg.server.max_n)
            .shutdown_grace(Duration::from_millis(cfg.server.shutdown_grace_ms))
            .health(cfg.health.clone())
            .auth(cfg.auth.clone())
            .limits(cfg.limits.clone())
            .cache(cfg.cache.clone())
            .redis(cfg.redis.clone());
        b.backends = backend_specs(cfg)?;
        b.build()
    }

    /// Hot reload: validate `cfg`, then swap routing, backends, deadlines, retry and admission
    /// settings atomically. Requests in flight finish on what they started with; unchanged
    /// backends keep their connection pools, in-flight counts, breakers and discovered models.
    /// On error nothing changes.
    pub fn reload(&self, cfg: &LumenConfig) -> Result<(), ConfigError> {
        let result = cfg.validate().and_then(|()| {
            let resolved = cfg.resolved()?;
            let specs = backend_specs(cfg)?
                .into_iter()
                .map(|(s, probe)| upstream(s, probe, &resolved))
                .collect();
            self.inner
                .router
                .reconfigure(cfg.routing.clone(), specs)
                .map_err(|e| ConfigError::invalid(e.key, e.reason))?;
            let shared = SharedSettings::new(&cfg.auth, &cfg.limits, &cfg.cache, &cfg.redis)?;
            Ok((resolved, shared))
        });
        match result {
            Ok((resolved, shared)) => {
                let old = self.settings();
                if (
                    old.resolved.max_concurrent,
                    old.resolved.queue_size,
                    old.resolved.queue_timeout,
                ) != (
                    resolved.max_concurrent,
                    resolved.queue_size,
                    resolved.queue_timeout,
                ) {
                    self.inner
                        .admission
                        .store(Arc::new(global_admission(&resolved)));
                }
                if old.resolved.budget != resolved.budget {
                    self.inner.budget.store(Arc::new(budget(&resolved)));
                }
                self.inner.settings.store(Arc::new(Settings {
                    resolved,
                    max_body_bytes: cfg.server.max_body_bytes,
                    body_read_timeout: Duration::from_millis(cfg.server.body_read_timeout_ms),
                    max_n: cfg.server.max_n,
                    discovery_interval: Duration::from_millis(cfg.routing.discovery_interval_ms),
                    discovery_timeout: old.discovery_timeout,
                    shutdown_grace: Duration::from_millis(cfg.server.shutdown_grace_ms),
                    health: cfg.health.clone(),
                    shared: Arc::new(shared),
                }));
                self.reload_counter("ok").inc();
                Ok(())
            }
            Err(e) => {
                self.reload_counter("rejected").inc();
                Err(e)
            }
        }
    }

    fn reload_counter(&self, result: &str) -> prometheus_client::metrics::counter::Counter {
        self.inner
            .metrics
            .reloads
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .clone()
    }

    /// Reads the configuration again (file, environment, flags) and [`reload`](Self::reload)s
    /// it. A file that does not parse counts as a rejected reload, like one that does not
    /// validate.
    pub fn reload_from(
        &self,
        path: Option<&std::path::Path>,
        overrides: &crate::config::Overrides,
    ) -> Result<(), ConfigError> {
        match crate::config::load(path, overrides) {
            Ok(cfg) => self.reload(&cfg),
            Err(e) => {
                self.reload_counter("rejected").inc();
                Err(e)
            }
        }
    }

    /// (successful, rejected) reloads since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reload_counter("ok").get(),
            self.reload_counter("rejected").get(),
        )
    }

    /// The Prometheus text exposition, with live gauges (in flight, breakers, queue) refreshed.
    pub fn render_metrics(&self) -> String {
        let m = &self.inner.metrics;
        for slot in self.router().slots() {
            let label = BackendLabel {
                backend: slot.name.clone(),
            };
            m.in_flight
                .get_or_create(&label)
                .set(slot.in_flight() as i64);
            let state = slot.backend.breaker.state();
            m.breaker.get_or_create(&label).set(match state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            });
            let up = slot.is_available() && slot.backend.breaker.allows();
            m.healthy.get_or_create(&label).set(i64::from(up));
        }
        m.queue_depth.set(self.queued() as i64);
        m.render()
    }

    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.inner.settings.load_full()
    }

    pub fn max_body_bytes(&self) -> usize {
        self.inner.settings.load().max_body_bytes
    }

    pub fn shutdown_grace(&self) -> Duration {
        self.inner.settings.load().shutdown_grace
    }

    /// Ends every open SSE stream served by this gateway's HTTP surface: each gets one in-band
    /// error event (503 `server_shutting_down`) and `data: [DONE]`, then its body ends cleanly,
    /// so a client can tell a cut answer from a finished one. `serve` calls it when the
    /// shutdown grace runs out; it cannot be undone.
    pub fn end_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// The router, for health checks and tests that inspect or mark backends.
    pub fn router(&self) -> &Router<Upstream> {
        &self.inner.router
    }

    /// Requests waiting for a global admission slot right now.
    pub fn queued(&self) -> usize {
        self.inner.admission.load().queued()
    }

    /// Retries refused by the retry budget since start (or since its settings last changed).
    pub fn retries_refused(&self) -> u64 {
        self.inner.budget.load().refused()
    }

    /// A uniform draw in [0, 1) for backoff jitter.
    fn unit(&self) -> f64 {
        let n = self
            .inner
            .jitter
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let mut z = n;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Prefers backends whose breaker allows traffic and that have a free slot; if every
    /// candidate is saturated, takes one whose breaker allows traffic and queues on it.
    fn pick(&self, rr: &RouteRequest<'_>) -> Result<Route<Upstream>, GovernanceError> {
        let router = &self.inner.router;
        match router.route_filtered(rr, &|u: &Upstream| {
            u.breaker.allows() && u.limit.available() > 0
        }) {
            Err(GovernanceError::NoHealthyBackend { .. }) => {
                router.route_filtered(rr, &|u: &Upstream| u.breaker.allows())
            }
            other => other,
        }
    }

    /// The attempt loop shared by every operation. Admits the request, then per attempt: routes
    /// (avoiding backends already tried), takes the backend's slot, calls under the deadlines
    /// left, records the outcome in the backend's breaker, and retries only what is retryable,
    /// after the backoff, within the retry budget and the total deadline. For streams `call`
    /// returns at the commit point, so nothing is ever retried after the first chunk.
    async fn attempts<Req, T, F, Fut>(
        &self,
        op: Operation,
        req: Req,
        cx: &RequestContext,
        hints: Hints,
        call: F,
    ) -> Result<Served<T>, GatewayError>
    where
        Req: Clone + HasModel,
        F: Fn(Upstream, Req, Timeouts) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let settings = self.settings();
        let res = &settings.resolved;
        let m = &self.inner.metrics;
        let admission = self.inner.admission.load_full();
        let queued_at = Instant::now();
        let global = admission.acquire().await.inspect_err(|e| {
            let reason = match e {
                AdmissionError::QueueFull { .. } => "queue_full",
                AdmissionError::QueueTimeout { .. } => "queue_timeout",
            };
            self.reject(reason);
        })?;
        let queued = queued_at.elapsed();
        Metrics::observe(&m.queue_wait, queued);
        access::note(|a| a.waited += queued);
        let budget = self.inner.budget.load_full();
        budget.deposit();
        let start = Instant::now();
        let requested = req.model().to_owned();
        let policy = res.retry(op);
        let mut tried: Vec<u64> = Vec::new();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let route = self
                .pick(&RouteRequest {
                    model: &requested,
                    session: hints.session.as_deref(),
                    prefix: hints.prefix.as_deref(),
                    exclude: &tried,
                })
                .inspect_err(|e| {
                    if matches!(e, GovernanceError::NoHealthyBackend { .. }) {
                        self.reject("no_healthy_backend");
                    }
                })?;
            access::note(|a| {
                a.model = Some(route.public_model.clone());
                a.passthrough = route.passthrough;
                a.backend = Some(route.lease.name.clone());
                a.attempts = attempt;
            });
            let up = route.lease.backend.clone();
            let waiting = Instant::now();
            let slot = up
                .limit
                .acquire_within(res.queue_timeout.saturating_sub(start.elapsed()))
                .await
                .inspect_err(|_| self.reject("queue_timeout"))?;
            let waited = waiting.elapsed();
            access::note(|a| a.waited += waited);
            up.breaker.on_pick();
            tried.push(route.lease.id);
            let full = res.timeouts(op, &route.public_model, &route.engine_model, cx.timeout);
            let mut timeouts = full;
            if let Some(total) = full.total {
                let left = total.saturating_sub(start.elapsed());
                if left.is_zero() {
                    self.count_timeout(TimeoutKind::Total);
                    return Err(BackendError::Timeout {
                        kind: TimeoutKind::Total,
                    }
                    .into());
                }
                timeouts.total = Some(left);
            }
            let mut r = req.clone();
            route.engine_model.clone_into(r.model_mut());
            let called = Instant::now();
            let result = call(up.clone(), r, timeouts).await;
            let upstream = called.elapsed();
            access::note(|a| a.upstream += upstream);
            let err = match result {
                Ok(value) => {
                    up.breaker.on_success();
                    if attempt > 1 {
                        tracing::info!(attempt, backend = %route.lease.name, "succeeded after retry");
                    }
                    return Ok(Served {
                        value,
                        route,
                        permits: [global, slot],
                    });
                }
                Err(e) => e,
            };
            let reason = BackendReason {
                backend: route.lease.name.clone(),
                reason: err.kind().to_owned(),
            };
            m.attempt_errors.get_or_create(&reason).inc();
            if let BackendError::Timeout { kind } = &err {
                self.count_timeout(*kind);
            }
            if err.is_backend_fault() {
                up.breaker.on_failure();
            } else if !err.is_retryable() {
                // The engine answered (a client error): it is healthy.
                up.breaker.on_success();
            }
            let delay = err
                .is_retryable()
                .then(|| policy.next_delay(attempt, err.retry_after(), self.unit()))
                .flatten();
            let Some(delay) = delay else {
                return Err(err.into());
            };
            if full.total.is_some_and(|t| start.elapsed() + delay >= t) {
                return Err(err.into());
            }
            if !budget.try_withdraw() {
                m.retry_budget_exhausted.inc();
                tracing::warn!(backend = %route.lease.name, error = %crate::access::Text(&err.to_string()), "retry budget exhausted; not retrying");
                return Err(err.into());
            }
            m.retries.get_or_create(&reason).inc();
            tracing::warn!(
                attempt,
                backend = %route.lease.name,
                error = %crate::access::Text(&err.to_string()),
                delay_ms = delay.as_millis() as u64,
                "attempt failed; retrying"
            );
            drop((route, slot));
            tokio::time::sleep(delay).await;
            access::note(|a| a.waited += delay);
        }
    }

    pub(crate) fn reject(&self, reason: &str) {
        self.inner
            .metrics
            .rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub(crate) fn count_timeout(&self, kind: TimeoutKind) {
        self.inner
            .metrics
            .timeouts
            .get_or_create(&KindLabel {
                kind: kind.as_str().to_owned(),
            })
            .inc();
    }

    /// One non-streamed operation: the attempt loop, then the public model id in the answer.
    async fn unary_op<Req, T, F, Fut>(
        &self,
        op: Operation,
        req: Req,
        cx: &RequestContext,
        hints: Hints,
        call: F,
    ) -> Result<Reply<T>, GatewayError>
    where
        Req: Clone + HasModel,
        T: HasModel + DeserializeOwned + Default,
        F: Fn(Upstream, Req, Timeouts) -> Fut,
        Fut: Future<Output = Result<Reply<T>, BackendError>>,
    {
        let served = self.attempts(op, req, cx, hints, call).await?;
        Ok(show_public(served.value, &served.route))
    }

    /// One streamed operation: asks the engine for usage, runs the attempt loop up to the
    /// commit point, and wraps the committed stream.
    async fn stream_op<Req, T, F, Fut>(
        &self,
        op: Operation,
        mut req: Req,
        stream_options: fn(&mut Req) -> &mut Option<lumen_openai_types::StreamOptions>,
        cx: &RequestContext,
        hints: Hints,
        call: F,
    ) -> Result<GatewayStream<T>, GatewayError>
    where
        Req: Clone + HasModel,
        F: Fn(Upstream, Req, Timeouts) -> Fut,
        Fut: Future<Output = Result<Guarded<T>, BackendError>>,
    {
        let strip = force_usage(stream_options(&mut req));
        let served = self.attempts(op, req, cx, hints, call).await?;
        Ok(GatewayStream::new(served, strip, self))
    }

    pub async fn chat(
        &self,
        req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<Reply<ChatCompletionResponse>, GatewayError> {
        let hints = Hints::new(cx, req.user.as_ref(), Some(chat_prefix(&req)));
        self.unary_op(Operation::Chat, req, cx, hints, |up, r, t| async move {
            lumen_resilience::unary(up.backend.chat(r, cx), &t).await
        })
        .await
    }

    /// Returns once the first chunk has arrived (the commit point); errors before it are
    /// returned as `Err` (after any retries), errors after it arrive in the stream.
    pub async fn chat_stream(
        &self,
        req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<GatewayStream<ChatCompletionChunk>, GatewayError> {
        let hints = Hints::new(cx, req.user.as_ref(), Some(chat_prefix(&req)));
        self.stream_op(
            Operation::Chat,
            req,
            |r| &mut r.stream_options,
            cx,
            hints,
            |up, r, t| async move {
                lumen_resilience::open_stream(up.backend.chat_stream(r, cx), &t).await
            },
        )
        .await
    }

    pub async fn completions(
        &self,
        req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<Reply<CompletionResponse>, GatewayError> {
        let hints = Hints::new(cx, req.user.as_ref(), Some(prompt_prefix(&req.prompt)));
        self.unary_op(Operation::Completions, req, cx, hints, |up, r, t| async move {
            lumen_resilience::unary(up.backend.completions(r, cx), &t).await
        })
        .await
    }

    pub async fn completions_stream(
        &self,
        req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<GatewayStream<CompletionChunk>, GatewayError> {
        let hints = Hints::new(cx, req.user.as_ref(), Some(prompt_prefix(&req.prompt)));
        self.stream_op(
            Operation::Completions,
            req,
            |r| &mut r.stream_options,
            cx,
            hints,
            |up, r, t| async move {
                lumen_resilience::open_stream(up.backend.completions_stream(r, cx), &t).await
            },
        )
        .await
    }

    pub async fn embeddings(
        &self,
        req: EmbeddingRequest,
        cx: &RequestContext,
    ) -> Result<Reply<EmbeddingResponse>, GatewayError> {
        let hints = Hints::new(cx, req.user.as_ref(), None);
        self.unary_op(Operation::Embeddings, req, cx, hints, |up, r, t| async move {
            lumen_resilience::unary(up.backend.embeddings(r, cx), &t).await
        })
        .await
    }

    /// Exactly the models a caller can route to, with the engines' metadata.
    pub fn models(&self) -> ModelList {
        ModelList::new(self.inner.router.models())
    }

    pub fn model(&self, id: &str) -> Option<Model> {
        self.inner.router.model(id)
    }

    /// Asks every backend whose models are not fixed for its models, concurrently, and swaps
    /// the routing table. A backend that fails keeps its previous list (so a blip does not
    /// unroute a model) and is asked again next round.
    pub async fn discover(&self) {
        let settings = self.settings();
        let limit = settings
            .resolved
            .timeouts(Operation::Models, "", "", None)
            .total
            .unwrap_or(settings.discovery_timeout);
        let probes = self
            .inner
            .router
            .discoverable()
            .into_iter()
            .map(|slot| async move {
                let cx = RequestContext::new(format!("discovery-{}", uuid::Uuid::now_v7()));
                let result = match timeout(limit, slot.backend.backend.models(&cx)).await {
                    Ok(r) => r,
                    Err(_) => Err(BackendError::Timeout {
                        kind: TimeoutKind::Total,
                    }),
                };
                (slot.name.clone(), result)
            });
        for (name, result) in join_all(probes).await {
            match result {
                Ok(list) => {
                    tracing::debug!(backend = %name, models = list.data.len(), "discovered models");
                    self.inner.router.set_discovered(&name, list.data);
                }
                Err(e) => tracing::warn!(backend = %name, error = %e, "model discovery failed"),
            }
        }
    }

    /// Re-runs [`discover`](Self::discover) on the configured interval until `shutdown`.
    /// While a backend has never answered (its engine was down at start), it is asked again
    /// sooner, from 1 s doubling up to the interval, and at once when the health checker sees a
    /// backend come into rotation: its models should be routable as soon as it serves them.
    pub async fn run_discovery(&self, shutdown: impl Future<Output = ()>) {
        const FIRST_RETRY: Duration = Duration::from_secs(1);
        tokio::pin!(shutdown);
        let mut retry = FIRST_RETRY;
        loop {
            let every = self.settings().discovery_interval;
            let pending = self
                .inner
                .router
                .discoverable()
                .iter()
                .any(|s| !s.has_discovered());
            let wait = if pending { retry.min(every) } else { every };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.rediscover.notified() => {}
            }
            self.discover().await;
            retry = if pending {
                retry.saturating_mul(2)
            } else {
                FIRST_RETRY
            };
        }
    }
}

/// Shows the public id (an alias, or the model `auto` chose) instead of the engine's id.
/// Only an answer whose model id differs is edited (and so re-serialised); the rest keep the
/// engine's bytes.
fn show_public<T: HasModel + DeserializeOwned + Default>(
    mut resp: Reply<T>,
    route: &Route<Upstream>,
) -> Reply<T> {
    if route.rewrites_model() {
        route.public_model.clone_into(resp.get_mut().model_mut());
    }
    resp
}

/// The prompt's leading content for prefix affinity: the leading system messages and the first
/// message after them. Later turns of the same conversation share it, so they land on the
/// engine whose KV cache already holds the conversation. (The router truncates it.)
fn chat_prefix(req: &ChatCompletionRequest) -> Vec<u8> {
    let mut out = Vec::new();
    for m in &req.messages {
        out.extend_from_slice(m.role.as_bytes());
        out.push(b':');
        match &m.content {
            // Borrowed: `text()` would copy the whole message on every request.
            Some(lumen_openai_types::MessageContent::Text(t)) => {
                out.extend_from_slice(t.as_bytes())
            }
            Some(c) => out.extend_from_slice(c.text().as_bytes()),
            None => {}
        }
        out.push(b'\n');
        if m.role != "system" && m.role != "developer" {
            break;
        }
    }
    out
}

fn prompt_prefix(prompt: &Prompt) -> Vec<u8> {
    match prompt {
        Prompt::Text(s) => s.as_bytes().to_vec(),
        Prompt::Texts(v) => v.first().map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
        Prompt::Tokens(t) => t.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Prompt::TokenBatches(b) => b
            .first()
            .map(|t| t.iter().flat_map(|x| x.to_le_bytes()).collect())
            .unwrap_or_default(),
    }
}

/// A committed stream. Holds its backend lease and admission permits until the stream ends or
/// is dropped, reports a mid-stream engine failure to the backend's breaker, shows the public
/// model id in every chunk when it differs from the engine's, and keeps the token usage: Lumen
/// always asks the engine for it and drops the usage-only chunk when the client did not ask.
pub struct GatewayStream<T> {
    inner: Guarded<T>,
    rewrite: Option<String>,
    strip_usage: bool,
    tokens: Option<(u64, u64)>,
    route: Route<Upstream>,
    gateway: Gateway,
    _permits: [Permit; 2],
}

impl<T> GatewayStream<T> {
    fn new(served: Served<Guarded<T>>, strip_usage: bool, gateway: &Gateway) -> Self {
        Self {
            inner: served.value,
            rewrite: served
                .route
                .rewrites_model()
                .then(|| served.route.public_model.clone()),
            strip_usage,
            tokens: None,
            route: served.route,
            gateway: gateway.clone(),
            _permits: served.permits,
        }
    }

    /// (input, output) tokens, once the engine's usage chunk has passed.
    pub fn tokens(&self) -> Option<(u64, u64)> {
        self.tokens
    }

    /// The public model id this stream answers as.
    pub fn model(&self) -> &str {
        &self.route.public_model
    }
}

impl<T: HasModel + HasUsage + serde::de::DeserializeOwned + Default> Stream for GatewayStream<T> {
    type Item = Result<Chunk<T>, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            return match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(mut chunk))) => {
                    if let Some(t) = chunk.tokens() {
                        this.tokens = Some(t);
                    }
                    if this.strip_usage && chunk.is_usage_only() {
                        continue;
                    }
                    if let Some(public) = &this.rewrite {
                        public.clone_into(chunk.get_mut().model_mut());
                    }
                    Poll::Ready(Some(Ok(chunk)))
                }
                Poll::Ready(Some(Err(e))) => {
                    if e.is_backend_fault() {
                        this.route.lease.backend.breaker.on_failure();
                    }
                    if let BackendError::Timeout { kind } = &e {
                        this.gateway.count_timeout(*kind);
                    }
                    Poll::Ready(Some(Err(e)))
                }
                other => other,
            };
        }
    }
}

/// Asks the engine for usage on every stream (so tokens are always counted) and reports
/// whether the caller did not ask, in which case the usage chunk is stripped.
fn force_usage(opts: &mut Option<lumen_openai_types::StreamOptions>) -> bool {
    let wanted = opts.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    if !wanted {
        opts.get_or_insert_with(Default::default).include_usage = Some(true);
    }
    !wanted
}
