//! The routing core as a Rust API: route a request, call the backend under deadlines, and show
//! the caller the model name they asked for.
//!
//! This is what an embedder uses without HTTP (`gateway.chat(req, &cx).await`), and what the
//! HTTP layer in [`crate::http`] calls after parsing.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::Stream;
use futures::future::join_all;
use lumen_backend::{Backend, BackendError, RequestContext, SharedBackend};
use lumen_governance::{
    BackendSpec, GovernanceConfig, GovernanceError, Lease, Route, RouteRequest, Router,
};
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Chunk, CompletionChunk,
    CompletionRequest, CompletionResponse, EmbeddingRequest, EmbeddingResponse, HasModel, Model,
    ModelList, Prompt,
};
use lumen_resilience::{Guarded, Timeouts};
use tokio::time::timeout;

use crate::config::{ConfigError, LumenConfig};

/// Why the gateway could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl GatewayError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Governance(_) => false,
            Self::Backend(b) => b.is_retryable(),
        }
    }
}

/// Settings that a reload may change; read once per request.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) timeouts: Timeouts,
    pub(crate) max_body_bytes: usize,
    pub(crate) discovery_interval: Duration,
    pub(crate) discovery_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
}

/// Lumen's routing core. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) router: Router<SharedBackend>,
    pub(crate) settings: ArcSwap<Settings>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

/// Builds a [`Gateway`] from parts, for embedders that do not use [`LumenConfig`].
pub struct GatewayBuilder {
    backends: Vec<BackendSpec<SharedBackend>>,
    governance: GovernanceConfig,
    settings: Settings,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        let cfg = LumenConfig::default();
        Self {
            backends: Vec::new(),
            governance: GovernanceConfig::default(),
            settings: settings_from(&cfg),
        }
    }
}

fn settings_from(cfg: &LumenConfig) -> Settings {
    Settings {
        timeouts: cfg.timeouts.to_timeouts(),
        max_body_bytes: cfg.server.max_body_bytes,
        discovery_interval: Duration::from_millis(cfg.routing.discovery_interval_ms),
        discovery_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_millis(cfg.server.shutdown_grace_ms),
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
        self.backends.push(BackendSpec {
            key: name.clone(),
            name,
            backend,
            weight,
            models,
        });
        self
    }

    /// Model governance: allowlist, default, aliases, `auto`, passthrough, balancing.
    pub fn governance(mut self, cfg: GovernanceConfig) -> Self {
        self.settings.discovery_interval = Duration::from_millis(cfg.discovery_interval_ms);
        self.governance = cfg;
        self
    }

    pub fn default_model(mut self, model: Option<String>) -> Self {
        self.governance.default_model = model;
        self
    }

    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.settings.timeouts = timeouts;
        self
    }

    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_body_bytes = bytes;
        self
    }

    pub fn discovery_interval(mut self, every: Duration) -> Self {
        self.settings.discovery_interval = every;
        self
    }

    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings.shutdown_grace = grace;
        self
    }

    pub fn build(self) -> Result<Gateway, ConfigError> {
        let router = Router::new(self.governance, self.backends)
            .map_err(|e| ConfigError::invalid(e.key, e.reason))?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                router,
                settings: ArcSwap::from_pointee(self.settings),
                reloads_ok: AtomicU64::new(0),
                reloads_failed: AtomicU64::new(0),
            }),
        })
    }
}

/// One OpenAI-compatible HTTP backend per configured engine.
fn backend_specs(cfg: &LumenConfig) -> Result<Vec<BackendSpec<SharedBackend>>, ConfigError> {
    cfg.backends
        .iter()
        .enumerate()
        .map(|(i, bc)| {
            let name = cfg.backend_name(i);
            let mut vc = lumen_backend_vllm::VllmConfig::new(name.clone(), bc.url.clone());
            vc.api_key = bc.api_key.as_ref().map(|s| s.expose().to_owned());
            if cfg.timeouts.connect_ms > 0 {
                vc.connect_timeout = Duration::from_millis(cfg.timeouts.connect_ms);
            }
            let backend = lumen_backend_vllm::VllmBackend::new(vc)
                .map_err(|e| ConfigError::invalid(format!("backends[{i}].url"), e.to_string()))?;
            // What makes two configs "the same backend" for reload: same target and credentials.
            let key = format!(
                "{}|{:?}|{}|{:x}",
                bc.url,
                bc.kind,
                cfg.timeouts.connect_ms,
                bc.api_key.as_ref().map_or(0, |k| fingerprint(k.expose()))
            );
            Ok(BackendSpec {
                name,
                backend: Arc::new(backend) as SharedBackend,
                weight: bc.weight,
                models: bc.models.clone(),
                key,
            })
        })
        .collect()
}

/// A non-reversible fingerprint, so a key change is noticed without keeping the key around twice.
fn fingerprint(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The default wiring: one OpenAI-compatible HTTP backend per configured engine.
    pub fn from_config(cfg: &LumenConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut b = Self::builder().governance(cfg.routing.clone());
        b.backends = backend_specs(cfg)?;
        b.settings = settings_from(cfg);
        b.build()
    }

    /// Hot reload: validate `cfg`, then swap routing, backends and deadlines atomically.
    /// Requests in flight finish on what they started with; unchanged backends keep their
    /// connection pools, in-flight counts and discovered models. On error nothing changes.
    pub fn reload(&self, cfg: &LumenConfig) -> Result<(), ConfigError> {
        let result = cfg.validate().and_then(|()| {
            let specs = backend_specs(cfg)?;
            self.inner
                .router
                .reconfigure(cfg.routing.clone(), specs)
                .map_err(|e| ConfigError::invalid(e.key, e.reason))
        });
        match &result {
            Ok(()) => {
                self.inner.settings.store(Arc::new(settings_from(cfg)));
                self.inner.reloads_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.inner.reloads_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
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
                self.inner.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// (successful, rejected) reloads since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.inner.reloads_ok.load(Ordering::Relaxed),
            self.inner.reloads_failed.load(Ordering::Relaxed),
        )
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

    /// The router, for health checks and breakers that mark backends unavailable.
    pub fn router(&self) -> &Router<SharedBackend> {
        &self.inner.router
    }

    fn route(
        &self,
        model: &mut String,
        session: Option<&str>,
        prefix: Option<&[u8]>,
    ) -> Result<Route<SharedBackend>, GovernanceError> {
        let route = self.inner.router.route(&RouteRequest {
            model,
            session,
            prefix,
            exclude: &[],
        })?;
        model.clone_from(&route.engine_model);
        Ok(route)
    }

    pub async fn chat(
        &self,
        mut req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<ChatCompletionResponse, GatewayError> {
        let prefix = chat_prefix(&req);
        let session = cx.session_id.as_deref().or(req.user.as_deref());
        let route = self.route(&mut req.model, session, Some(&prefix))?;
        let call = route.lease.backend.chat(req, cx);
        let resp = lumen_resilience::unary(call, &self.settings().timeouts).await?;
        Ok(show_public(resp, &route))
    }

    /// Returns once the first chunk has arrived (the commit point); errors before it are
    /// returned as `Err`, errors after it arrive in the stream.
    pub async fn chat_stream(
        &self,
        mut req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<GatewayStream<ChatCompletionChunk>, GatewayError> {
        let prefix = chat_prefix(&req);
        let session = cx.session_id.as_deref().or(req.user.as_deref());
        let route = self.route(&mut req.model, session, Some(&prefix))?;
        let open = route.lease.backend.chat_stream(req, cx);
        let inner = lumen_resilience::open_stream(open, &self.settings().timeouts).await?;
        Ok(GatewayStream::new(inner, route))
    }

    pub async fn completions(
        &self,
        mut req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<CompletionResponse, GatewayError> {
        let prefix = prompt_prefix(&req.prompt);
        let session = cx.session_id.as_deref().or(req.user.as_deref());
        let route = self.route(&mut req.model, session, Some(&prefix))?;
        let call = route.lease.backend.completions(req, cx);
        let resp = lumen_resilience::unary(call, &self.settings().timeouts).await?;
        Ok(show_public(resp, &route))
    }

    pub async fn completions_stream(
        &self,
        mut req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<GatewayStream<CompletionChunk>, GatewayError> {
        let prefix = prompt_prefix(&req.prompt);
        let session = cx.session_id.as_deref().or(req.user.as_deref());
        let route = self.route(&mut req.model, session, Some(&prefix))?;
        let open = route.lease.backend.completions_stream(req, cx);
        let inner = lumen_resilience::open_stream(open, &self.settings().timeouts).await?;
        Ok(GatewayStream::new(inner, route))
    }

    pub async fn embeddings(
        &self,
        mut req: EmbeddingRequest,
        cx: &RequestContext,
    ) -> Result<EmbeddingResponse, GatewayError> {
        let session = cx.session_id.as_deref().or(req.user.as_deref());
        let route = self.route(&mut req.model, session, None)?;
        let call = route.lease.backend.embeddings(req, cx);
        let resp = lumen_resilience::unary(call, &self.settings().timeouts).await?;
        Ok(show_public(resp, &route))
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
        let limit = self.settings().discovery_timeout;
        let probes = self
            .inner
            .router
            .discoverable()
            .into_iter()
            .map(|slot| async move {
                let cx = RequestContext::new(format!("discovery-{}", uuid::Uuid::now_v7()));
                let result = match timeout(limit, slot.backend.models(&cx)).await {
                    Ok(r) => r,
                    Err(_) => Err(BackendError::Timeout {
                        kind: lumen_backend::TimeoutKind::Total,
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
    pub async fn run_discovery(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let every = self.settings().discovery_interval;
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => self.discover().await,
            }
        }
    }
}

/// Shows the public id (an alias, or the model `auto` chose) instead of the engine's id.
fn show_public<T: HasModel>(mut resp: T, route: &Route<SharedBackend>) -> T {
    if route.rewrites_model() {
        route.public_model.clone_into(resp.model_mut());
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
        if let Some(c) = &m.content {
            out.extend_from_slice(c.text().as_bytes());
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

/// A committed stream: holds its backend's in-flight lease until the stream ends or is
/// dropped, and shows the public model id in every chunk when it differs from the engine's.
pub struct GatewayStream<T> {
    inner: Guarded<T>,
    rewrite: Option<String>,
    _lease: Lease<SharedBackend>,
}

impl<T> GatewayStream<T> {
    fn new(inner: Guarded<T>, route: Route<SharedBackend>) -> Self {
        Self {
            inner,
            rewrite: route.rewrites_model().then(|| route.public_model.clone()),
            _lease: route.lease,
        }
    }
}

impl<T: HasModel> Stream for GatewayStream<T> {
    type Item = Result<Chunk<T>, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => {
                if let Some(public) = &this.rewrite {
                    public.clone_into(chunk.get_mut().model_mut());
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}
