//! The routing core as a Rust API: route a request, call the backend under deadlines.
//!
//! This is what an embedder uses without HTTP (`gateway.chat(req, &cx).await`), and what the
//! HTTP layer in [`crate::http`] calls after parsing.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use lumen_backend::{Backend, BackendError, RequestContext, SharedBackend};
use lumen_governance::{BackendEntry, GovernanceError, Route, Router, RoutingTable};
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, CompletionChunk,
    CompletionRequest, CompletionResponse, EmbeddingRequest, EmbeddingResponse, Model, ModelList,
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

/// A streamed answer that has passed the first-chunk gate.
pub type GatewayStream<T> = Guarded<T>;

/// Lumen's routing core. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) router: Router<SharedBackend>,
    pub(crate) timeouts: Timeouts,
    pub(crate) max_body_bytes: usize,
    pub(crate) discovery_interval: Duration,
    pub(crate) discovery_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
}

/// Builds a [`Gateway`] from parts, for embedders that do not use [`LumenConfig`].
pub struct GatewayBuilder {
    backends: Vec<BackendEntry<SharedBackend>>,
    default_model: Option<String>,
    timeouts: Timeouts,
    max_body_bytes: usize,
    discovery_interval: Duration,
    discovery_timeout: Duration,
    shutdown_grace: Duration,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        let cfg = LumenConfig::default();
        Self {
            backends: Vec::new(),
            default_model: None,
            timeouts: cfg.timeouts.to_timeouts(),
            max_body_bytes: cfg.server.max_body_bytes,
            discovery_interval: Duration::from_millis(cfg.routing.discovery_interval_ms),
            discovery_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_millis(cfg.server.shutdown_grace_ms),
        }
    }
}

impl GatewayBuilder {
    /// Adds a backend. `models: None` means "discover them from the engine".
    pub fn backend(
        self,
        name: impl Into<String>,
        backend: impl Backend,
        models: Option<Vec<String>>,
    ) -> Self {
        self.shared_backend(name, Arc::new(backend), models)
    }

    pub fn shared_backend(
        mut self,
        name: impl Into<String>,
        backend: SharedBackend,
        models: Option<Vec<String>>,
    ) -> Self {
        self.backends.push(BackendEntry {
            name: name.into(),
            backend,
            fixed_models: models.is_some(),
            models: models
                .unwrap_or_default()
                .into_iter()
                .map(Model::new)
                .collect(),
        });
        self
    }

    pub fn default_model(mut self, model: Option<String>) -> Self {
        self.default_model = model;
        self
    }

    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
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

    pub fn build(self) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                router: Router::new(RoutingTable::new(self.backends), self.default_model),
                timeouts: self.timeouts,
                max_body_bytes: self.max_body_bytes,
                discovery_interval: self.discovery_interval,
                discovery_timeout: self.discovery_timeout,
                shutdown_grace: self.shutdown_grace,
            }),
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
            .default_model(cfg.routing.default_model.clone())
            .timeouts(cfg.timeouts.to_timeouts())
            .max_body_bytes(cfg.server.max_body_bytes)
            .discovery_interval(Duration::from_millis(cfg.routing.discovery_interval_ms))
            .shutdown_grace(Duration::from_millis(cfg.server.shutdown_grace_ms));
        for (i, bc) in cfg.backends.iter().enumerate() {
            let name = cfg.backend_name(i);
            let mut vc = lumen_backend_vllm::VllmConfig::new(name.clone(), bc.url.clone());
            vc.api_key = bc.api_key.as_ref().map(|s| s.expose().to_owned());
            if cfg.timeouts.connect_ms > 0 {
                vc.connect_timeout = Duration::from_millis(cfg.timeouts.connect_ms);
            }
            let backend = lumen_backend_vllm::VllmBackend::new(vc)
                .map_err(|e| ConfigError::invalid(format!("backends[{i}].url"), e.to_string()))?;
            b = b.backend(name, backend, bc.models.clone());
        }
        Ok(b.build())
    }

    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    pub fn shutdown_grace(&self) -> Duration {
        self.inner.shutdown_grace
    }

    /// Resolves the model (filling in the default) and picks a backend.
    fn route(&self, model: &mut String) -> Result<Route<SharedBackend>, GovernanceError> {
        let route = self.inner.router.route(model)?;
        model.clone_from(&route.model);
        Ok(route)
    }

    pub async fn chat(
        &self,
        mut req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<ChatCompletionResponse, GatewayError> {
        let route = self.route(&mut req.model)?;
        let call = route.backend.chat(req, cx);
        Ok(lumen_resilience::unary(call, &self.inner.timeouts).await?)
    }

    /// Returns once the first chunk has arrived (the commit point); errors before it are
    /// returned as `Err`, errors after it arrive in the stream.
    pub async fn chat_stream(
        &self,
        mut req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<GatewayStream<ChatCompletionChunk>, GatewayError> {
        let route = self.route(&mut req.model)?;
        let open = route.backend.chat_stream(req, cx);
        Ok(lumen_resilience::open_stream(open, &self.inner.timeouts).await?)
    }

    pub async fn completions(
        &self,
        mut req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<CompletionResponse, GatewayError> {
        let route = self.route(&mut req.model)?;
        let call = route.backend.completions(req, cx);
        Ok(lumen_resilience::unary(call, &self.inner.timeouts).await?)
    }

    pub async fn completions_stream(
        &self,
        mut req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<GatewayStream<CompletionChunk>, GatewayError> {
        let route = self.route(&mut req.model)?;
        let open = route.backend.completions_stream(req, cx);
        Ok(lumen_resilience::open_stream(open, &self.inner.timeouts).await?)
    }

    pub async fn embeddings(
        &self,
        mut req: EmbeddingRequest,
        cx: &RequestContext,
    ) -> Result<EmbeddingResponse, GatewayError> {
        let route = self.route(&mut req.model)?;
        let call = route.backend.embeddings(req, cx);
        Ok(lumen_resilience::unary(call, &self.inner.timeouts).await?)
    }

    /// Every model a caller can route to, with the engines' metadata.
    pub fn models(&self) -> ModelList {
        ModelList::new(self.inner.router.table().models().cloned().collect())
    }

    pub fn model(&self, id: &str) -> Option<Model> {
        self.inner.router.table().model(id).cloned()
    }

    /// Asks every backend without a fixed model list for its models, concurrently, and swaps
    /// the routing table. A backend that fails keeps its previous list (so a blip does not
    /// unroute a model) and is retried on the next round.
    pub async fn discover(&self) {
        let table = self.inner.router.table();
        let probes = table
            .backends()
            .iter()
            .filter(|b| !b.fixed_models)
            .map(|b| {
                let backend = b.backend.clone();
                let name = b.name.clone();
                let limit = self.inner.discovery_timeout;
                async move {
                    let cx = RequestContext::new(format!("discovery-{}", uuid::Uuid::now_v7()));
                    let result = match timeout(limit, backend.models(&cx)).await {
                        Ok(r) => r,
                        Err(_) => Err(BackendError::Timeout {
                            kind: lumen_backend::TimeoutKind::Total,
                        }),
                    };
                    (name, result)
                }
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
        let mut tick = tokio::time::interval(self.inner.discovery_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; callers already discovered once
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => self.discover().await,
            }
        }
    }
}
