//! The routing and retry core: resolve the model, admit, route, call under deadlines, retry
//! before the commit point, and show the caller the model name they asked for.
//!
//! This is what an embedder uses without HTTP (`gateway.chat(req, &cx).await`), and what the
//! server calls after parsing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, join_all};
use lumen_anthropic_types::NativeEvent;
use lumen_backend::{
    Backend, BackendError, ChunkStream, Continuation, EngineMethod, RequestContext, SharedBackend,
    TimeoutKind,
};
use lumen_governance::{
    BackendSpec, GovernanceConfig, GovernanceError, InvalidConfig, PromptKey, Route, RouteRequest,
    Router,
};
use lumen_openai_types::responses::NativeResponse;
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, CompletionChunk,
    CompletionRequest, CompletionResponse, EmbeddingRequest, EmbeddingResponse, HasModel,
    JsonAnswer, JsonRequest, Model, ModelList, Prompt, Reply, continuation::StreamPiece,
    multipart::FormRequest,
};
use lumen_resilience::config::{
    AdmissionConfig, BreakerSettings, InvalidSetting, Operation, Profile, Resolved, RetryConfig,
    TimeoutsConfig,
};
use lumen_resilience::{
    Admission, AdmissionError, CircuitBreaker, Class, FairAdmission, Guarded, RetryBudget, Ticket,
    Timeouts,
};
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout};

use crate::answered::Answered;
use crate::decide::{self, Left, Next, Unroutable};
use crate::engine_events::EngineEvents;
use crate::error::GatewayError;
use crate::health::{HealthBook, HealthConfig, probe};
use crate::messages::{
    MESSAGES_PATH, MessagesCall, TranslatedEvents, native_answer, native_events, translated_answer,
};
use crate::observer::{Event, NoopObserver, Observer};
use crate::policy::{PolicySettings, PolicyStep, PolicyStores};
use crate::responses::{Need, RESPONSES_PATH, ResponsesCall};
use crate::stream::{
    Avoid, Blocked, Candidate, Continue, GatewayStream, Open, Partial, Resume, Resuming, Success,
    UsageAsk, ask_usage, avoided, blocked,
};
use crate::text::Text;
use crate::upstream::{AttemptBreakers, ModelBreakers, Probe, Upstream, route_missing};
use crate::{prompt, signals};
use lumen_governance::keys::ApiKey;

/// The core's settings that a reload may change; read once per request.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Timeouts, retries, breaker and admission, resolved against the profile.
    pub resolved: Resolved,
    /// Background refresh of engines' model lists.
    pub discovery_interval: Duration,
    /// Longest wait for one engine's model list when the `models` timeouts set none.
    pub discovery_timeout: Duration,
    pub health: HealthConfig,
}

/// Why a configuration cannot be used by the core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidCore {
    #[error(transparent)]
    Routing(#[from] InvalidConfig),
    #[error(transparent)]
    Resilience(#[from] InvalidSetting),
}

impl InvalidCore {
    /// The setting at fault, for messages that name it.
    pub fn key(&self) -> &str {
        match self {
            Self::Routing(e) => &e.key,
            Self::Resilience(e) => &e.key,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Routing(e) => &e.reason,
            Self::Resilience(e) => &e.reason,
        }
    }
}

/// Lumen's routing core. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    router: Router<Upstream>,
    settings: ArcSwap<Settings>,
    /// The global cap and its queue: fair between keys (`RequestContext::fairness`).
    admission: FairAdmission,
    budget: ArcSwap<RetryBudget>,
    jitter: AtomicU64,
    observer: Arc<dyn Observer>,
    health: HealthBook,
    /// Wakes the discovery loop early: a backend came (back) into rotation.
    rediscover: tokio::sync::Notify,
    /// The router's clock: engine reports and the cache-aware index are stamped with
    /// milliseconds since this (tokio time, so tests pause it).
    epoch: Instant,
    /// Wakes requests held while their pool is saturated: new engine reports arrived.
    signals_updated: tokio::sync::Notify,
    /// Requests held while their pool is saturated (part of the admission queue).
    held: AtomicUsize,
    /// Keys, limits and the cache: the policy step of [`Gateway::serve`].
    policy: PolicyStep,
}

/// Builds a [`Gateway`] from parts.
pub struct GatewayBuilder {
    backends: Vec<(BackendSpec<SharedBackend>, Probe)>,
    governance: GovernanceConfig,
    profile: Profile,
    timeouts: TimeoutsConfig,
    retry: RetryConfig,
    breaker: BreakerSettings,
    admission: AdmissionConfig,
    discovery_interval: Duration,
    health: HealthConfig,
    observer: Arc<dyn Observer>,
    policy: Option<(PolicyStores, PolicySettings)>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        let governance = GovernanceConfig::default();
        Self {
            backends: Vec::new(),
            discovery_interval: Duration::from_millis(governance.discovery_interval_ms),
            governance,
            profile: Profile::default(),
            timeouts: TimeoutsConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerSettings::default(),
            admission: AdmissionConfig::default(),
            health: HealthConfig::default(),
            observer: Arc::new(NoopObserver),
            policy: None,
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
        self,
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
        self.backend_spec(spec, Probe::Health)
    }

    /// A backend with every setting: its identity key for reloads and its health probe.
    pub fn backend_spec(mut self, spec: BackendSpec<SharedBackend>, probe: Probe) -> Self {
        self.backends.push((spec, probe));
        self
    }

    /// Background health checking: interval, thresholds, startup grace, required models.
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

    pub fn discovery_interval(mut self, every: Duration) -> Self {
        self.discovery_interval = every;
        self
    }

    /// Who hears about attempts, retries, timeouts and streams (nobody by default).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Keys, limits and the cache ([`PolicyStep`]) on these stores. Without it the policy is open
    /// (no keys, no cache) on in-memory stores.
    pub fn policy(mut self, stores: PolicyStores, settings: PolicySettings) -> Self {
        self.policy = Some((stores, settings));
        self
    }

    pub fn build(self) -> Result<Gateway, InvalidCore> {
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
        let router = Router::new(self.governance, specs)?;
        let (stores, policy) = self.policy.unwrap_or_else(|| {
            let (stores, _) = PolicyStores::in_memory(&lumen_governance::CacheConfig::default());
            (stores, PolicySettings::default())
        });
        let policy = PolicyStep::new(stores, policy, self.observer.clone());
        Ok(Gateway {
            inner: Arc::new(Inner {
                router,
                admission: global_admission(&resolved),
                budget: ArcSwap::from_pointee(budget(&resolved)),
                settings: ArcSwap::from_pointee(Settings {
                    resolved,
                    discovery_interval: self.discovery_interval,
                    discovery_timeout: Duration::from_secs(5),
                    health: self.health,
                }),
                jitter: AtomicU64::new(0x5EED),
                observer: self.observer,
                health: HealthBook::new(),
                rediscover: tokio::sync::Notify::new(),
                epoch: Instant::now(),
                signals_updated: tokio::sync::Notify::new(),
                held: AtomicUsize::new(0),
                policy,
            }),
        })
    }
}

fn global_admission(r: &Resolved) -> FairAdmission {
    FairAdmission::new(r.max_concurrent, r.queue_size, r.queue_timeout).with_headroom(r.headroom)
}

fn budget(r: &Resolved) -> RetryBudget {
    let (ratio, floor, window) = r.budget;
    RetryBudget::new(ratio, floor, window)
}

/// Wraps a backend with its breaker and per-backend limit. Their settings are part of the slot
/// key, so changing them on reload gives the backend a fresh slot.
fn upstream(spec: BackendSpec<SharedBackend>, probe: Probe, r: &Resolved) -> BackendSpec<Upstream> {
    let messages_native = spec.backend.native_messages();
    BackendSpec {
        key: format!(
            "{}|{:?}|{:?}",
            spec.key, r.breaker, r.per_backend_max_concurrent
        ),
        weight: spec.weight,
        models: spec.models,
        backend: Upstream {
            name: spec.name.clone(),
            backend: spec.backend,
            breaker: Arc::new(CircuitBreaker::new(r.breaker.clone())),
            models: Arc::new(ModelBreakers::new(r.breaker.clone())),
            limit: Arc::new(Admission::new(
                r.per_backend_max_concurrent,
                usize::MAX,
                r.queue_timeout,
            )),
            probe,
            messages_native: Arc::new(std::sync::atomic::AtomicBool::new(messages_native)),
        },
        name: spec.name,
    }
}

/// The models a request may move to: its model's fallback chain, then (only on a context
/// length refusal, once) its larger-context models. Each is taken at most once, and only when
/// the caller may use it.
struct Fallbacks {
    chain: std::collections::VecDeque<String>,
    context: std::collections::VecDeque<String>,
    context_used: bool,
    /// The request moved to another model.
    moved: bool,
}

impl Fallbacks {
    fn new(cfg: &GovernanceConfig, model: &str) -> Self {
        let list = |m: &std::collections::BTreeMap<String, Vec<String>>| {
            m.get(model).cloned().unwrap_or_default().into()
        };
        Self {
            chain: list(&cfg.fallbacks),
            context: list(&cfg.context_fallbacks),
            context_used: false,
            moved: false,
        }
    }

    /// Whether a fallback the caller may use remains (checked before spending retry budget).
    fn any_for(&self, cx: &RequestContext) -> bool {
        self.chain.iter().any(|m| cx.allows(m))
    }

    /// The next model of the chain (or, with `context`, of the larger-context list) that the
    /// caller may use and whose limits admit it (charged there before the move; one that
    /// refuses is skipped, and so are the models after it only if they refuse too).
    async fn next(&mut self, cx: &RequestContext, context: bool) -> Option<String> {
        loop {
            let list = if context {
                &mut self.context
            } else {
                &mut self.chain
            };
            let model = list.pop_front()?;
            if !cx.allows(&model) {
                continue;
            }
            match &cx.admission {
                Some(gate) if !gate.admit(&model).await => {
                    tracing::info!(to = %Text(&model), "fallback skipped: the caller's limits refuse that model");
                }
                _ => {
                    self.moved = true;
                    return Some(model);
                }
            }
        }
    }
}

/// What a stream keeps to continue itself: the request and how to open it again.
pub(crate) struct Resumer<Req, T> {
    pub(crate) gateway: Gateway,
    pub(crate) op: Operation,
    pub(crate) req: Req,
    pub(crate) cx: RequestContext,
    pub(crate) hints: Hints,
    pub(crate) start: Instant,
    pub(crate) open: Open<Req, T>,
}

impl<Req, T> Resume<T> for Resumer<Req, T>
where
    Req: Clone + HasModel + Continue + Send + Sync + 'static,
    T: Send + 'static,
{
    fn resume(self: Arc<Self>, partial: Partial) -> Resuming<T> {
        Box::pin(async move { self.gateway.continue_stream(&self, partial).await })
    }
}

/// An id for the core's own engine calls (discovery, health probes), unique per process.
pub(crate) fn internal_id(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{what}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Routing hints taken from the request before it is moved into the attempt loop.
#[derive(Clone)]
pub(crate) struct Hints {
    session: Option<String>,
    prefix: Option<Vec<u8>>,
    /// The prompt's blocks and keys, read only when a model may be routed `cache_aware`.
    prompt: Option<PromptKey>,
}

impl Hints {
    /// The session key is `x-session-id`, else the request's `user`.
    fn new(cx: &RequestContext, user: Option<&String>, prefix: Option<Vec<u8>>) -> Self {
        Self {
            session: cx.session_id.clone().or_else(|| user.cloned()),
            prefix,
            prompt: None,
        }
    }

    fn with_prompt(mut self, prompt: Option<PromptKey>) -> Self {
        self.prompt = prompt;
        self
    }
}

/// Where an attempt loop starts: a new request, or the continuation of a broken stream.
pub(crate) struct Plan<'a> {
    pub(crate) op: Operation,
    pub(crate) cx: &'a RequestContext,
    pub(crate) hints: &'a Hints,
    /// When the request was admitted: its total deadline counts from here.
    pub(crate) start: Instant,
    /// (Backend, engine model) pairs this request must not ask again, even when no other is
    /// left: the ones whose stream broke, for a continuation.
    pub(crate) avoid: Vec<Avoid>,
    /// Finishing another engine's answer: only backends that can continue one are asked, and
    /// one that refuses (a 4xx) is skipped rather than reported.
    pub(crate) continuing: bool,
    /// Which backends may serve at all (the Responses API's native engines, or the one that
    /// holds the response continued).
    pub(crate) need: Need<'a>,
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// Swaps routing, backends and the core's settings atomically (hot reload). Requests in
    /// flight finish on what they started with; unchanged backends keep their connection
    /// pools, in-flight counts, breakers and discovered models. On error nothing changes.
    pub fn reload(
        &self,
        governance: GovernanceConfig,
        backends: Vec<(BackendSpec<SharedBackend>, Probe)>,
        settings: Settings,
    ) -> Result<(), InvalidCore> {
        let resolved = &settings.resolved;
        let specs = backends
            .into_iter()
            .map(|(s, probe)| upstream(s, probe, resolved))
            .collect();
        self.inner.router.reconfigure(governance, specs)?;
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
            self.inner.admission.reconfigure(
                resolved.max_concurrent,
                resolved.queue_size,
                resolved.queue_timeout,
            );
        }
        self.inner.admission.set_headroom(resolved.headroom);
        if old.resolved.budget != resolved.budget {
            self.inner.budget.store(Arc::new(budget(resolved)));
        }
        self.inner.settings.store(Arc::new(settings));
        Ok(())
    }

    /// The settings in force right now.
    pub fn settings(&self) -> Arc<Settings> {
        self.inner.settings.load_full()
    }

    /// The router, for health checks and tests that inspect or mark backends.
    pub fn router(&self) -> &Router<Upstream> {
        &self.inner.router
    }

    /// Per-backend health-check history.
    pub fn health_book(&self) -> &HealthBook {
        &self.inner.health
    }

    /// Requests waiting in the admission queue right now: for a global slot, or held
    /// because every engine of their pool is saturated.
    pub fn queued(&self) -> usize {
        self.inner.admission.queued() + self.inner.held.load(Ordering::Relaxed)
    }

    /// Milliseconds on the router's clock (engine reports and the cache-aware index).
    pub fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The prompt key `cache_aware` routes by (and whose length `load_aware` weighs), read
    /// only when some model may use either and some pool has a choice to make (a deployment
    /// with one engine a model pays nothing for the default policy).
    fn routing_prompt(&self, read: impl FnOnce(usize) -> PromptKey) -> Option<PromptKey> {
        use lumen_governance::Policy;
        let router = &self.inner.router;
        let cfg = router.config();
        ((cfg.uses(Policy::CacheAware) || cfg.uses(Policy::LoadAware)) && router.has_choice())
            .then(|| read(cfg.prefix_bytes))
    }

    /// Holds a request while every engine of its model's pool reports a queue of at least
    /// `routing.signals.saturation_queue` (see `Router::saturated`): in Lumen's admission
    /// queue — it takes a place there (429 `queue_full` when none is left) and waits at most
    /// until the queue timeout counted from its admission (503 `queue_timeout`, with
    /// `Retry-After`) — rather than in one engine's queue. It is let go as soon as a fresh
    /// report or Lumen's own finished requests show room; what it then sends counts at once
    /// in the estimate, so a release lets through about as many as there is room for.
    async fn hold_while_saturated(
        &self,
        model: &str,
        start: Instant,
        res: &Resolved,
    ) -> Result<(), AdmissionError> {
        let router = &self.inner.router;
        let usable = |u: &Upstream, m: &str| u.allows(m);
        if !router.saturated(model, self.now_ms(), &usable) {
            return Ok(());
        }
        let retry_after = Duration::from_secs(1);
        let queued = self.inner.admission.queued();
        let reserved = self
            .inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h + queued < res.queue_size).then_some(h + 1)
            });
        if reserved.is_err() {
            self.emit(&Event::Rejected {
                reason: "queue_full",
            });
            return Err(AdmissionError::QueueFull { retry_after });
        }
        let _place = HeldPlace(&self.inner.held);
        let held_at = Instant::now();
        let deadline = start + res.queue_timeout;
        // Lumen's own requests finishing also make room; look again this often.
        let tick = Duration::from_millis((router.config().signals.interval_ms / 4).clamp(5, 100));
        loop {
            let updated = self.inner.signals_updated.notified();
            if !router.saturated(model, self.now_ms(), &usable) {
                self.emit(&Event::Queued {
                    waited: held_at.elapsed(),
                });
                return Ok(());
            }
            tokio::select! {
                _ = updated => {}
                _ = tokio::time::sleep(tick) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.emit(&Event::Rejected {
                        reason: "queue_timeout",
                    });
                    return Err(AdmissionError::QueueTimeout { retry_after });
                }
            }
        }
    }

    /// Retries refused by the retry budget since start (or since its settings last changed).
    pub fn retries_refused(&self) -> u64 {
        self.inner.budget.load().refused()
    }

    /// Keys, limits and the cache.
    pub fn policy(&self) -> &PolicyStep {
        &self.inner.policy
    }

    /// The engine id a key's `per_model` limits are looked up by, when the key limits the
    /// engine model behind the public id `model` (an alias was used); `None`: the public id. So
    /// a per-model limit holds whichever way the call reached the model: by name, an alias,
    /// `auto`, a blank `model` or a fallback.
    pub fn limit_scope(&self, key: &ApiKey, model: &str) -> Option<String> {
        if key.per_model.is_empty() || key.per_model.contains_key(model) {
            return None;
        }
        self.inner
            .router
            .engine_for(model)
            .filter(|engine| key.per_model.contains_key(engine))
    }

    pub(crate) fn emit(&self, event: &Event<'_>) {
        self.inner.observer.event(event);
    }

    /// Resolves a request's `model` once (blank, `auto`, alias, passthrough) for a caller who
    /// may use only the models `allowed` accepts; see `Router::resolve`. Callers authorize on
    /// the result and route exactly it.
    pub fn resolve(
        &self,
        model: &str,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Result<String, GatewayError> {
        self.inner
            .router
            .resolve(model, allowed, &|u: &Upstream, m: &str| u.allows(m))
            .inspect_err(|e| {
                if matches!(e, GovernanceError::NoHealthyBackend { .. }) {
                    self.emit(&Event::Rejected {
                        reason: "no_healthy_backend",
                    });
                }
            })
            .map_err(GatewayError::from)
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

    /// Prefers backends whose breakers (the backend's and the model's on it) allow traffic
    /// and that have a free slot (and, for a continuation, can continue an answer); if every
    /// candidate is saturated, takes one whose breakers
    /// allow traffic and queues on it.
    fn pick(
        &self,
        rr: &RouteRequest<'_>,
        silent: &[Arc<CircuitBreaker>],
        avoid: &[Avoid],
        continuing: bool,
        need: Need<'_>,
    ) -> Result<Route<Upstream>, GovernanceError> {
        let router = &self.inner.router;
        let answers = |u: &Upstream, m: &str| {
            !silent.iter().any(|b| Arc::ptr_eq(b, &u.breaker))
                && !avoided(avoid, u, m)
                && (!continuing || u.backend.continuation() != Continuation::None)
                && need.admits(u)
        };
        match router.route_filtered(rr, &|u: &Upstream, m: &str| {
            answers(u, m) && u.allows(m) && u.limit.available() > 0
        }) {
            Err(GovernanceError::NoHealthyBackend { .. }) => {
                router.route_filtered(rr, &|u: &Upstream, m: &str| answers(u, m) && u.allows(m))
            }
            other => other,
        }
    }

    /// Why no backend of `model` could take a continuation: the pool as it stands, so the log
    /// never blames health when the healthy backends were ruled out for this stream.
    fn why_not_continued(&self, model: &str, avoid: &[Avoid]) -> Blocked {
        let router = &self.inner.router;
        let engine = router.engine_for(model).unwrap_or_else(|| model.to_owned());
        let pool: Vec<Candidate> = router
            .backends_for(model)
            .iter()
            .map(|s| Candidate {
                healthy: s.is_available() && s.backend.allows(&engine),
                continues: s.backend.backend.continuation() != Continuation::None,
                avoided: avoided(avoid, &s.backend, &engine),
            })
            .collect();
        blocked(&pool)
    }

    /// Admits a request, then runs the attempt loop for it. The admission permit rides with
    /// the answer (for a stream, until it ends).
    async fn attempts<Req, T, F, Fut>(
        &self,
        op: Operation,
        req: Req,
        cx: &RequestContext,
        hints: &Hints,
        need: Need<'_>,
        call: F,
    ) -> Result<Success<T>, GatewayError>
    where
        Req: Clone + HasModel,
        F: Fn(Upstream, Req, Timeouts) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let queued_at = Instant::now();
        let ticket = match &cx.fairness {
            Some(f) => Ticket::new(&f.flow)
                .weight(f.weight.max(1))
                .class(Class::from_rank(f.rank)),
            None => Ticket::new(""),
        };
        let global = self
            .inner
            .admission
            .acquire(ticket)
            .await
            .inspect_err(|e| {
                let reason = match e {
                    AdmissionError::QueueFull { .. } => "queue_full",
                    AdmissionError::QueueTimeout { .. } => "queue_timeout",
                };
                self.emit(&Event::Rejected { reason });
            })?;
        self.emit(&Event::Queued {
            waited: queued_at.elapsed(),
        });
        self.inner.budget.load().deposit();
        let plan = Plan {
            op,
            cx,
            hints,
            start: Instant::now(),
            avoid: Vec::new(),
            continuing: false,
            need,
        };
        let mut served = self.attempt_loop(plan, req, call).await?;
        served.global = Some(global);
        Ok(served)
    }

    /// The attempt loop shared by every operation. Per attempt: routes (avoiding backends
    /// already tried), takes the backend's slot, calls under the deadlines left, records the
    /// outcome in the backend's breakers, and retries only what is retryable, after the
    /// backoff, within the retry budget and the total deadline; then the model's fallbacks.
    /// For streams `call` returns at the commit point, so nothing is retried after the first
    /// chunk: a broken stream comes back here only as a continuation (`plan.continuing`).
    async fn attempt_loop<Req, T, F, Fut>(
        &self,
        plan: Plan<'_>,
        req: Req,
        call: F,
    ) -> Result<Success<T>, GatewayError>
    where
        Req: Clone + HasModel,
        F: Fn(Upstream, Req, Timeouts) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let Plan {
            op,
            cx,
            hints,
            start,
            mut avoid,
            continuing,
            need,
        } = plan;
        let mut tried: Vec<u64> = Vec::new();
        let settings = self.settings();
        let res = &settings.resolved;
        let budget = self.inner.budget.load_full();
        let mut requested = req.model().to_owned();
        let mut fallbacks = Fallbacks::new(&self.inner.router.config(), &requested);
        let policy = res.retry(op);
        // Backends that stayed silent until the first-byte deadline: never asked again by this
        // request, so a silent engine costs the caller one deadline, not one per attempt.
        let mut silent: Vec<Arc<CircuitBreaker>> = Vec::new();
        let mut last_err: Option<GatewayError> = None;
        let mut attempt: u32 = 0;
        // Attempts on the current model: the retry policy's count restarts on a fallback.
        let mut model_attempt: u32 = 0;
        loop {
            if !continuing {
                self.hold_while_saturated(&requested, start, res).await?;
            }
            let picked = self.pick(
                &RouteRequest {
                    model: &requested,
                    session: hints.session.as_deref(),
                    prefix: hints.prefix.as_deref(),
                    exclude: &tried,
                    prompt: hints.prompt.as_ref(),
                    now_ms: self.now_ms(),
                },
                &silent,
                &avoid,
                continuing,
                need,
            );
            let mut route = match picked {
                Ok(route) => route,
                Err(e) => {
                    // The pool cannot serve: every backend is out, or (on a fallback) the model
                    // has no backend at all. Move on to the next fallback the caller may use.
                    let unroutable = decide::when_unroutable(
                        matches!(e, GovernanceError::NoHealthyBackend { .. }),
                        matches!(
                            e,
                            GovernanceError::ModelNotFound { .. }
                                | GovernanceError::ModelNotReady { .. }
                        ),
                        last_err.is_some(),
                    );
                    if unroutable == Unroutable::TryFallback
                        && self
                            .fall_back(&mut fallbacks, &mut requested, cx, "no_healthy_backend")
                            .await
                    {
                        (tried, silent, model_attempt) = (Vec::new(), Vec::new(), 0);
                        continue;
                    }
                    if unroutable == Unroutable::TryFallback {
                        // Nothing left to try after a failed attempt: the caller learns why the
                        // attempts failed, not that the pool ran dry because of them.
                        if let Some(last) = last_err.take() {
                            return Err(last);
                        }
                        // A continuation with no engine able to take it is not a refused
                        // request: the stream reports its own failure.
                        if !continuing {
                            self.emit(&Event::Rejected {
                                reason: "no_healthy_backend",
                            });
                        }
                    }
                    return Err(e.into());
                }
            };
            attempt += 1;
            model_attempt += 1;
            self.emit(&Event::AttemptStarted {
                attempt,
                model: &route.public_model,
                passthrough: route.passthrough,
                backend: &route.lease.name,
            });
            let up = route.lease.backend.clone();
            let waiting = Instant::now();
            let slot = match up
                .limit
                .acquire_within(res.queue_timeout.saturating_sub(start.elapsed()))
                .await
            {
                Ok(slot) => slot,
                Err(e) => {
                    self.emit(&Event::Rejected {
                        reason: "queue_timeout",
                    });
                    drop(route);
                    if self
                        .fall_back(&mut fallbacks, &mut requested, cx, "queue_timeout")
                        .await
                    {
                        (tried, silent, model_attempt) = (Vec::new(), Vec::new(), 0);
                        last_err = Some(e.into());
                        continue;
                    }
                    return Err(e.into());
                }
            };
            self.emit(&Event::BackendQueued {
                waited: waiting.elapsed(),
            });
            let breakers = AttemptBreakers::new(&up, &route.engine_model, route.passthrough);
            breakers.on_pick();
            tried.push(route.lease.id);
            let full = res.timeouts(op, &route.public_model, &route.engine_model, cx.timeout);
            let mut timeouts = full;
            if let Some(total) = full.total {
                let left = total.saturating_sub(start.elapsed());
                if left.is_zero() {
                    self.emit(&Event::Timeout {
                        kind: TimeoutKind::Total,
                    });
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
            // The engine has answered (a stream's first chunk, or the whole answer) or
            // failed: either way this prompt is no longer queued for prefill there.
            route.lease.prefilled();
            self.emit(&Event::AttemptFinished {
                backend: &route.lease.name,
                elapsed: called.elapsed(),
                error: result.as_ref().err(),
            });
            let err = match result {
                Ok(value) => {
                    breakers.on_success();
                    if attempt > 1 {
                        tracing::info!(attempt, backend = %route.lease.name, "succeeded after retry");
                    }
                    return Ok(Success {
                        value,
                        route,
                        breakers,
                        global: None,
                        slot,
                        admitted: start,
                        fell_back: fallbacks.moved,
                    });
                }
                Err(e) => e,
            };
            if let BackendError::Timeout { kind } = &err {
                self.emit(&Event::Timeout { kind: *kind });
                if *kind == TimeoutKind::FirstByte {
                    silent.push(up.breaker.clone());
                }
            }
            breakers.on_error(&err);
            let left = Left {
                model_attempt,
                elapsed: start.elapsed(),
                total: full.total,
                context_used: fallbacks.context_used,
                fallback_left: fallbacks.any_for(cx),
                continuing,
            };
            let next = decide::after_failure(policy, &err, left, || self.unit());
            if next.spends_budget() && !budget.try_withdraw() {
                if let Next::Retry { .. } = next {
                    self.emit(&Event::RetryBudgetExhausted {
                        backend: &route.lease.name,
                    });
                    tracing::warn!(backend = %route.lease.name, error = %Text(&err.to_string()), "retry budget exhausted; not retrying");
                }
                return Err(err.into());
            }
            match next {
                // The caller never sees that refusal: a failed continuation reports the
                // stream's own failure.
                Next::Skip => {
                    tracing::info!(backend = %route.lease.name, error = %Text(&err.to_string()), "engine refused to continue the answer");
                    avoid.push((up.breaker.clone(), route.engine_model.clone()));
                    drop((route, slot));
                }
                Next::ContextFallback => {
                    drop((route, slot));
                    fallbacks.context_used = true;
                    let Some(next) = fallbacks.next(cx, true).await else {
                        return Err(err.into());
                    };
                    self.switch(&mut requested, next, "context_length_exceeded");
                    (tried, silent, model_attempt) = (Vec::new(), Vec::new(), 0);
                }
                Next::Fallback => {
                    drop((route, slot));
                    if !self
                        .fall_back(&mut fallbacks, &mut requested, cx, err.kind())
                        .await
                    {
                        return Err(err.into());
                    }
                    (tried, silent, model_attempt) = (Vec::new(), Vec::new(), 0);
                }
                Next::Retry { delay } => {
                    self.emit(&Event::Retrying {
                        backend: &route.lease.name,
                        reason: err.kind(),
                        delay,
                    });
                    tracing::warn!(
                        attempt,
                        backend = %route.lease.name,
                        error = %Text(&err.to_string()),
                        delay_ms = delay.as_millis() as u64,
                        "attempt failed; retrying"
                    );
                    drop((route, slot));
                    tokio::time::sleep(delay).await;
                }
                Next::GiveUp(_) => return Err(err.into()),
            }
            last_err = Some(err.into());
        }
    }

    /// Moves the request to the next fallback the caller may use; false when there is none.
    async fn fall_back(
        &self,
        fallbacks: &mut Fallbacks,
        requested: &mut String,
        cx: &RequestContext,
        reason: &'static str,
    ) -> bool {
        match fallbacks.next(cx, false).await {
            Some(next) => {
                self.switch(requested, next, reason);
                true
            }
            None => false,
        }
    }

    fn switch(&self, requested: &mut String, next: String, reason: &'static str) {
        self.emit(&Event::Fallback {
            from: requested,
            to: &next,
            reason,
        });
        tracing::info!(from = %Text(requested), to = %Text(&next), reason, "falling back to another model");
        *requested = next;
    }

    /// One non-streamed operation: the attempt loop, then the public model id in the answer.
    async fn unary_op<Req, T, F, Fut>(
        &self,
        op: Operation,
        req: Req,
        cx: &RequestContext,
        hints: Hints,
        call: F,
    ) -> Result<Answered<T>, GatewayError>
    where
        Req: Clone + HasModel,
        T: HasModel + DeserializeOwned + Default,
        F: Fn(Upstream, Req, Timeouts) -> Fut,
        Fut: Future<Output = Result<Reply<T>, BackendError>>,
    {
        let served = self.attempts(op, req, cx, &hints, Need::Any, call).await?;
        Ok(Answered {
            fell_back: served.fell_back.then(|| served.route.public_model.clone()),
            backend: served.route.lease.name.clone(),
            reply: show_public(served.value, &served.route),
            content_type: None,
        })
    }

    /// One streamed operation: asks the engine for usage, runs the attempt loop up to the
    /// commit point, and wraps the committed stream. When the served model has stream
    /// continuation on, the stream keeps what it needs to finish a broken answer elsewhere.
    async fn stream_op<Req, T>(
        &self,
        op: Operation,
        mut req: Req,
        stream_options: fn(&mut Req) -> &mut Option<lumen_openai_types::StreamOptions>,
        cx: &RequestContext,
        hints: Hints,
        open: Open<Req, T>,
    ) -> Result<GatewayStream<T>, GatewayError>
    where
        Req: Clone + HasModel + Continue + Send + Sync + 'static,
        T: StreamPiece + HasModel + DeserializeOwned + Default + Send + 'static,
    {
        let config = self.inner.router.config();
        let engine = self.inner.router.engine_for(req.model());
        let continues = config.continues_streams(req.model(), engine.as_deref().unwrap_or(""));
        let usage = ask_usage(stream_options(&mut req), continues);
        // The request is kept for a continuation only where one may be wanted.
        let kept = config.continues_any_stream().then(|| req.clone());
        let served = self
            .attempts(op, req, cx, &hints, Need::Any, |up, r, t| {
                open(up, r, cx, t)
            })
            .await?;
        let route = &served.route;
        let resume = kept
            .filter(|_| {
                self.inner
                    .router
                    .config()
                    .continues_streams(&route.public_model, &route.engine_model)
            })
            .map(|req| Resumer {
                gateway: self.clone(),
                op,
                req,
                cx: cx.clone(),
                hints,
                start: served.admitted,
                open,
            });
        Ok(GatewayStream::new(
            served,
            usage,
            self.inner.observer.clone(),
            resume.map(|r| Arc::new(r) as Arc<dyn Resume<T>>),
        ))
    }

    /// Finishes a broken stream's answer: the attempt loop again, over the backends that can
    /// continue an answer and have not served this request, then the model's fallbacks.
    pub(crate) async fn continue_stream<Req, T>(
        &self,
        resumer: &Resumer<Req, T>,
        partial: Partial,
    ) -> Option<Success<Guarded<T>>>
    where
        Req: Clone + HasModel + Continue,
    {
        let Some(mut req) = resumer.req.with_partial_answer(&partial.text, partial.sent) else {
            tracing::info!(
                "this request cannot be continued (several choices, a prefilled answer, token ids, or no tokens left)"
            );
            return None;
        };
        partial.model.clone_into(req.model_mut());
        if !self.inner.budget.load().try_withdraw() {
            self.emit(&Event::RetryBudgetExhausted {
                backend: &partial.from,
            });
            return None;
        }
        // The backend adds what its engine needs to extend the answer (`continuing`).
        let cx = &RequestContext {
            continuing: true,
            ..resumer.cx.clone()
        };
        let open = resumer.open;
        let plan = Plan {
            op: resumer.op,
            cx,
            hints: &resumer.hints,
            start: resumer.start,
            avoid: partial.avoid.clone(),
            continuing: true,
            need: Need::Any,
        };
        let call = |up: Upstream, r: Req, t: Timeouts| open(up, r, cx, t);
        match self.attempt_loop(plan, req, call).await {
            Ok(served) => Some(served),
            Err(GatewayError::Governance(GovernanceError::NoHealthyBackend { model })) => {
                let reason = self.why_not_continued(&model, &partial.avoid);
                tracing::warn!(
                    model = %Text(&model),
                    reason = reason.as_str(),
                    "no engine could continue the stream: {}",
                    reason.explain()
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %Text(&e.to_string()), "no engine could continue the stream");
                None
            }
        }
    }

    pub async fn chat(
        &self,
        req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<Reply<ChatCompletionResponse>, GatewayError> {
        Ok(self.chat_answered(req, cx).await?.reply)
    }

    pub(crate) async fn chat_answered(
        &self,
        req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<Answered<ChatCompletionResponse>, GatewayError> {
        let hints = Hints::new(cx, req.user.as_ref(), Some(chat_prefix(&req)))
            .with_prompt(self.routing_prompt(|key| prompt::chat(&req, cx, key)));
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
        let hints = Hints::new(cx, req.user.as_ref(), Some(chat_prefix(&req)))
            .with_prompt(self.routing_prompt(|key| prompt::chat(&req, cx, key)));
        // Boxed: four layers of futures carry the request until the first token, each with
        // its own copy of it (several hundred bytes) when it is held by value (issue 24).
        self.stream_op(
            Operation::Chat,
            Box::new(req),
            |r| &mut r.stream_options,
            cx,
            hints,
            open_chat,
        )
        .await
    }

    pub async fn completions(
        &self,
        req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<Reply<CompletionResponse>, GatewayError> {
        Ok(self.completions_answered(req, cx).await?.reply)
    }

    pub(crate) async fn completions_answered(
        &self,
        req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<Answered<CompletionResponse>, GatewayError> {
        let hints = Hints::new(cx, req.user.as_ref(), Some(prompt_prefix(&req.prompt)))
            .with_prompt(self.routing_prompt(|key| {
                prompt::completion(&req.prompt, &req.extra, req.user.as_ref(), cx, key)
            }));
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
        let hints = Hints::new(cx, req.user.as_ref(), Some(prompt_prefix(&req.prompt)))
            .with_prompt(self.routing_prompt(|key| {
                prompt::completion(&req.prompt, &req.extra, req.user.as_ref(), cx, key)
            }));
        // Boxed: four layers of futures carry the request until the first token, each with
        // its own copy of it (several hundred bytes) when it is held by value (issue 24).
        self.stream_op(
            Operation::Completions,
            Box::new(req),
            |r| &mut r.stream_options,
            cx,
            hints,
            open_completions,
        )
        .await
    }

    pub async fn embeddings(
        &self,
        req: EmbeddingRequest,
        cx: &RequestContext,
    ) -> Result<Reply<EmbeddingResponse>, GatewayError> {
        Ok(self.embeddings_answered(req, cx).await?.reply)
    }

    pub(crate) async fn embeddings_answered(
        &self,
        req: EmbeddingRequest,
        cx: &RequestContext,
    ) -> Result<Answered<EmbeddingResponse>, GatewayError> {
        let hints = Hints::new(cx, req.user.as_ref(), None);
        self.unary_op(Operation::Embeddings, req, cx, hints, |up, r, t| async move {
            lumen_resilience::unary(up.backend.embeddings(r, cx), &t).await
        })
        .await
    }

    /// Any other engine endpoint routed by `model` (vLLM's `/tokenize`, `/detokenize`,
    /// `/v1/rerank`): the same attempt loop, deadlines and retries as embeddings (they are
    /// non-generative too). The answer keeps the engine's bytes; when the caller used an alias,
    /// a `model` the answer names is shown as the alias.
    pub async fn call(
        &self,
        path: &'static str,
        req: JsonRequest,
        cx: &RequestContext,
    ) -> Result<Reply<JsonAnswer>, GatewayError> {
        Ok(self.call_answered(path, req, cx).await?.reply)
    }

    pub(crate) async fn call_answered(
        &self,
        path: &'static str,
        req: JsonRequest,
        cx: &RequestContext,
    ) -> Result<Answered<JsonAnswer>, GatewayError> {
        let hints = Hints::new(cx, None, None);
        let served = self
            .attempts(
                Operation::Embeddings,
                req,
                cx,
                &hints,
                Need::Any,
                |up, r, t| async move {
                    lumen_resilience::unary(up.backend.call(path, r, cx), &t).await
                },
            )
            .await?;
        let mut reply = served.value;
        if served.route.rewrites_model() && !reply.get().model.is_empty() {
            served
                .route
                .public_model
                .clone_into(&mut reply.get_mut().model);
        }
        Ok(Answered {
            reply,
            fell_back: served.fell_back.then(|| served.route.public_model.clone()),
            content_type: None,
            backend: served.route.lease.name.clone(),
        })
    }

    /// A `multipart/form-data` endpoint (the audio ones), through the same attempt loop as
    /// the JSON endpoints: each attempt sends the form with the engine's model id spliced in
    /// (the body itself is shared, never copied). A JSON answer is peeked for `usage` like any
    /// other; a text one (`text`, `srt`, `vtt`) is passed on unread. Chat's deadlines apply:
    /// transcribing a long recording takes as long as a long completion.
    pub(crate) async fn form_answered(
        &self,
        path: &'static str,
        req: FormRequest,
        cx: &RequestContext,
    ) -> Result<Answered<JsonAnswer>, GatewayError> {
        let hints = Hints::new(cx, None, None);
        let served = self
            .attempts(
                Operation::Chat,
                req,
                cx,
                &hints,
                Need::Any,
                |up, r, t| async move {
                    let backend = up.backend.clone();
                    let answer =
                        lumen_resilience::unary(backend.call_form(path, r, cx), &t).await?;
                    let json = answer
                        .content_type
                        .split(';')
                        .next()
                        .is_some_and(|e| e.trim().eq_ignore_ascii_case("application/json"));
                    if !json {
                        return Ok((Reply::opaque(answer.body), Some(answer.content_type.into())));
                    }
                    let reply =
                        Reply::from_raw(answer.body).map_err(|e| BackendError::Protocol {
                            backend: up.name.clone(),
                            message: format!("response is not a valid OpenAI object: {e}"),
                        })?;
                    Ok((reply, None))
                },
            )
            .await?;
        let (reply, content_type) = served.value;
        Ok(Answered {
            reply,
            fell_back: served.fell_back.then(|| served.route.public_model.clone()),
            content_type,
            backend: served.route.lease.name.clone(),
        })
    }

    /// Anthropic's Messages API, not streamed: each attempt asks its engine natively when the
    /// backend serves `/v1/messages`, else as a translated chat completion; either way the
    /// answer is a `message` (the engine's bytes on the native path).
    pub async fn messages(
        &self,
        req: MessagesCall,
        cx: &RequestContext,
    ) -> Result<Reply<NativeEvent>, GatewayError> {
        Ok(self.messages_answered(req, cx).await?.reply)
    }

    pub(crate) async fn messages_answered(
        &self,
        req: MessagesCall,
        cx: &RequestContext,
    ) -> Result<Answered<NativeEvent>, GatewayError> {
        let hints = Hints::new(cx, req.chat.user.as_ref(), Some(chat_prefix(&req.chat)))
            .with_prompt(self.routing_prompt(|key| prompt::chat(&req.chat, cx, key)));
        self.unary_op(Operation::Chat, req, cx, hints, |up, r, t| async move {
            lumen_resilience::unary(answer_messages(up, r, cx), &t).await
        })
        .await
    }

    /// Anthropic's Messages API, streamed: the same choice per attempt, and one stream of
    /// Anthropic events whichever engine serves. Returns at the commit point. Not continued
    /// on another engine after it (an Anthropic answer cannot be sent back as a prefill).
    pub async fn messages_stream(
        &self,
        mut req: MessagesCall,
        cx: &RequestContext,
    ) -> Result<GatewayStream<NativeEvent>, GatewayError> {
        let hints = Hints::new(cx, req.chat.user.as_ref(), Some(chat_prefix(&req.chat)))
            .with_prompt(self.routing_prompt(|key| prompt::chat(&req.chat, cx, key)));
        // A translated attempt asks for the usage chunk (the translation turns it into
        // `message_delta`'s usage; nothing needs stripping, the chat chunks never reach the
        // caller). Where the route continues streams its engines are known to report usage on
        // every chunk (vLLM's `continuous_usage_stats`), and that is asked too: `message_start`
        // then carries the engine's prompt count, and a client that leaves early is billed it
        // rather than the body-size estimate. Other engines may refuse the unknown option.
        req.chat.stream = Some(true);
        let running = {
            let engine = self.inner.router.engine_for(req.model());
            self.inner
                .router
                .config()
                .continues_streams(req.model(), engine.as_deref().unwrap_or(""))
        };
        let _ = ask_usage(&mut req.chat.stream_options, running);
        let served = self
            .attempts(Operation::Chat, req, cx, &hints, Need::Any, |up, r, t| {
                open_messages(up, r, cx, t)
            })
            .await?;
        Ok(GatewayStream::new(
            served,
            UsageAsk::default(),
            self.inner.observer.clone(),
            None,
        ))
    }

    /// OpenAI's Responses API on engines that serve it, not streamed: the client's body (its
    /// model spliced) to a backend that serves `/v1/responses` (only the pinned one when the
    /// request continues a response there), and the engine's `response` object back as it
    /// sent it, the model shown as the caller named it.
    pub async fn responses(
        &self,
        req: ResponsesCall,
        cx: &RequestContext,
    ) -> Result<Reply<NativeResponse>, GatewayError> {
        Ok(self.responses_answered(req, cx).await?.reply)
    }

    pub(crate) async fn responses_answered(
        &self,
        req: ResponsesCall,
        cx: &RequestContext,
    ) -> Result<Answered<NativeResponse>, GatewayError> {
        let hints = Hints::new(cx, None, None);
        let pin = req.pin.clone();
        let call = |up: Upstream, r: ResponsesCall, t: Timeouts| async move {
            let name = up.name.clone();
            let reply = up.backend.call_body(RESPONSES_PATH, r.body, cx);
            crate::responses::native_answer(lumen_resilience::unary(reply, &t).await?, &name)
        };
        let need = Need::responses(pin.as_deref());
        let served = self
            .attempts(Operation::Chat, req, cx, &hints, need, call)
            .await?;
        Ok(Answered {
            fell_back: served.fell_back.then(|| served.route.public_model.clone()),
            backend: served.route.lease.name.clone(),
            reply: show_public(served.value, &served.route),
            content_type: None,
        })
    }

    /// OpenAI's Responses API on engines that serve it, streamed: the engine's events as it
    /// sent them, `sequence_number` and all. Returns at the commit point; never continued on
    /// another engine after it (the engine keeps the response it began).
    pub async fn responses_stream(
        &self,
        req: ResponsesCall,
        cx: &RequestContext,
    ) -> Result<GatewayStream<NativeResponse>, GatewayError> {
        let hints = Hints::new(cx, None, None);
        let pin = req.pin.clone();
        let need = Need::responses(pin.as_deref());
        let served = self
            .attempts(Operation::Chat, req, cx, &hints, need, |up, r, t| {
                open_responses(up, r, cx, t)
            })
            .await?;
        Ok(GatewayStream::new(
            served,
            UsageAsk::default(),
            self.inner.observer.clone(),
            None,
        ))
    }

    /// A bodiless call on the engine path of something a backend keeps (a stored response's
    /// `GET`, `DELETE`, `cancel`, `input_items`), on that backend by name, under the
    /// configured deadlines. [`GatewayError::BackendGone`] when no backend of that name is
    /// configured or discovered any more.
    pub async fn call_backend_at(
        &self,
        backend: &str,
        method: EngineMethod,
        path: String,
        cx: &RequestContext,
    ) -> Result<Reply<JsonAnswer>, GatewayError> {
        let Some(slot) = self
            .inner
            .router
            .slots()
            .into_iter()
            .find(|s| s.name == backend)
        else {
            return Err(GatewayError::BackendGone {
                backend: backend.to_owned(),
            });
        };
        let settings = self.settings();
        let t = settings
            .resolved
            .timeouts(Operation::Embeddings, "", "", cx.timeout);
        let up = &slot.backend;
        Ok(lumen_resilience::unary(up.backend.call_at(method, path, cx), &t).await?)
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
                let cx = RequestContext::new(internal_id("discovery"));
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
                let cx = RequestContext::new(internal_id("health"));
                let result = probe(&slot.backend, slot.backend.probe, model, limit, cx).await;
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
                self.emit(&Event::HealthChecked {
                    backend: &slot.name,
                    ok,
                });
            }
        });
        join_all(probes).await;
    }

    /// One round of engine-signal scrapes: every backend's `/metrics`, concurrently, under
    /// `routing.signals.timeout_ms`; then held requests look again.
    pub async fn scrape_signals(&self) {
        let cfg = self.inner.router.config();
        let limit = Duration::from_millis(cfg.signals.timeout_ms);
        signals::scrape(&self.inner.router, limit, &|| self.now_ms()).await;
        self.inner.signals_updated.notify_waiters();
    }

    /// Scrapes the engines' signals on `routing.signals.interval_ms` until `shutdown`, while
    /// the configuration wants them (a reload can turn them on or off).
    pub async fn run_signals(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let cfg = self.inner.router.config();
            if self.inner.router.scrapes_signals() {
                self.scrape_signals().await;
            }
            let every = Duration::from_millis(cfg.signals.interval_ms);
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Probes on the configured interval until `shutdown`; the first round runs at once.
    pub async fn run_health_checks(&self, shutdown: impl Future<Output = ()>) {
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
}

fn open_chat<'a>(
    up: Upstream,
    req: Box<ChatCompletionRequest>,
    cx: &'a RequestContext,
    t: Timeouts,
) -> BoxFuture<'a, Result<Guarded<ChatCompletionChunk>, BackendError>> {
    Box::pin(
        async move { lumen_resilience::open_stream(up.backend.chat_stream(*req, cx), &t).await },
    )
}

fn open_completions<'a>(
    up: Upstream,
    req: Box<CompletionRequest>,
    cx: &'a RequestContext,
    t: Timeouts,
) -> BoxFuture<'a, Result<Guarded<CompletionChunk>, BackendError>> {
    Box::pin(async move {
        lumen_resilience::open_stream(up.backend.completions_stream(*req, cx), &t).await
    })
}

/// One Messages answer from one backend: natively, or translated to chat and back.
async fn answer_messages(
    up: Upstream,
    req: MessagesCall,
    cx: &RequestContext,
) -> Result<Reply<NativeEvent>, BackendError> {
    let name = up.name.clone();
    let mut lacks_route = false;
    if up.messages_native() {
        match up
            .backend
            .call_body(MESSAGES_PATH, req.body.clone(), cx)
            .await
        {
            Err(e) if route_missing(&e) => lacks_route = true,
            reply => return native_answer(reply?, &name),
        }
    }
    let chat = req.chat_for_attempt();
    let cx = &without_headers(cx);
    let reply = up.backend.chat(chat, cx).await?;
    if lacks_route {
        up.lacks_native_messages();
    }
    translated_answer(reply, &req.reply, &name)
}

/// Opens one Messages stream on one backend: the engine's own events, or its chat stream
/// translated as it is read.
fn open_messages<'a>(
    up: Upstream,
    req: MessagesCall,
    cx: &'a RequestContext,
    t: Timeouts,
) -> BoxFuture<'a, Result<Guarded<NativeEvent>, BackendError>> {
    Box::pin(async move {
        let name = up.name.clone();
        let open = async {
            let mut lacks_route = false;
            if up.messages_native() {
                match up
                    .backend
                    .call_stream(MESSAGES_PATH, req.body.clone(), cx)
                    .await
                {
                    Err(e) if route_missing(&e) => lacks_route = true,
                    events => {
                        return Ok(
                            Box::pin(native_events(events?, name)) as ChunkStream<NativeEvent>
                        );
                    }
                }
            }
            let chat = req.chat_for_attempt();
            let cx = without_headers(cx);
            let chunks = up.backend.chat_stream(chat, &cx).await?;
            if lacks_route {
                up.lacks_native_messages();
            }
            Ok(Box::pin(TranslatedEvents::new(chunks, req.reply, name))
                as ChunkStream<NativeEvent>)
        };
        lumen_resilience::open_stream(open, &t).await
    })
}

/// Opens one Responses stream on a backend that serves the API: the engine's own events.
fn open_responses<'a>(
    up: Upstream,
    req: ResponsesCall,
    cx: &'a RequestContext,
    t: Timeouts,
) -> BoxFuture<'a, Result<Guarded<NativeResponse>, BackendError>> {
    Box::pin(async move {
        let name = up.name.clone();
        let open = async {
            let events = up.backend.call_stream(RESPONSES_PATH, req.body, cx).await?;
            Ok(
                Box::pin(EngineEvents::new(events, name, NativeResponse::event))
                    as ChunkStream<NativeResponse>,
            )
        };
        lumen_resilience::open_stream(open, &t).await
    })
}

/// The request's context without the client headers meant for an engine that serves the
/// client's API itself: a translated request is a chat completion.
fn without_headers(cx: &RequestContext) -> RequestContext {
    RequestContext {
        headers: Vec::new(),
        ..cx.clone()
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

/// A place among the requests held while their pool is saturated, given back on drop (the
/// client may leave while held).
struct HeldPlace<'a>(&'a AtomicUsize);

impl Drop for HeldPlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// At most this much leading prompt content is read for prefix affinity: more than any
/// sensible `routing.prefix_bytes`, and reading it never copies a huge prompt.
const MAX_PREFIX: usize = 64 * 1024;

/// The prompt's leading content for prefix affinity: the leading system messages and the first
/// message after them. Later turns of the same conversation share it, so they land on the
/// engine whose KV cache already holds the conversation. (The router truncates it.) Read from
/// the request's JSON one message at a time, borrowed, without parsing the rest.
fn chat_prefix(req: &ChatCompletionRequest) -> Vec<u8> {
    let mut out = Vec::new();
    for m in req.messages.views() {
        out.extend_from_slice(m.role.as_bytes());
        out.push(b':');
        m.text_into(&mut out, MAX_PREFIX);
        out.push(b'\n');
        if out.len() >= MAX_PREFIX || (m.role != "system" && m.role != "developer") {
            break;
        }
    }
    out
}

fn prompt_prefix(prompt: &Prompt) -> Vec<u8> {
    prompt.leading_bytes(MAX_PREFIX)
}

#[cfg(test)]
mod signals_tests;
#[cfg(test)]
mod tests;
