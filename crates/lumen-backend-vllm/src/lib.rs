//! An OpenAI-compatible HTTP backend: vLLM first, and anything else that speaks the same API
//! (SGLang, llama.cpp `llama-server`, TGI, Ollama).
//!
//! One pooled `hyper-util` client per backend (keep-alive, `TCP_NODELAY`, https through rustls),
//! injected rather than global so each backend has its own pool and timeouts. Engine failures become
//! typed [`BackendError`]s that know whether a retry is allowed. Stream chunks are parsed (to catch
//! in-band errors and garbage) but forwarded as the engine's original bytes.
//!
//! # Layout
//! - [`VllmConfig`] / [`VllmBackend`]: construction and the [`Backend`] implementation.
//! - `stream`: SSE body to [`ChunkStream`] adapter.
//!
//! # Must not depend on
//! governance, resilience or the server: it is a leaf that only knows engines.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lumen_backend::{Backend, BackendError, ChunkStream, Health, RequestContext, TimeoutKind};
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, CompletionChunk,
    CompletionRequest, CompletionResponse, EmbeddingRequest, EmbeddingResponse, ErrorObject,
    ModelList, Reply,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod stream;

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How to reach one engine.
#[derive(Clone)]
pub struct VllmConfig {
    /// Used in errors and logs.
    pub name: String,
    /// `http://host:port`, with or without a trailing `/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer ...` to engines started with `--api-key`.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Cap on a non-streamed response body, so a broken engine cannot exhaust memory.
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for VllmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VllmConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl VllmConfig {
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            connect_timeout: Duration::from_secs(3),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            max_response_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VllmConfigError {
    #[error("backend {name}: invalid base URL {url:?}: {reason}")]
    BadUrl {
        name: String,
        url: String,
        reason: String,
    },
    #[error("backend {name}: the API key contains characters not allowed in an HTTP header")]
    BadApiKey { name: String },
    #[error("backend {name}: TLS setup failed: {reason}")]
    Tls { name: String, reason: String },
}

/// An engine reached over HTTP. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct VllmBackend {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// `scheme://authority` plus any path prefix, without a trailing slash or `/v1`.
    base: String,
    auth: Option<HeaderValue>,
    client: Client<HttpsConnector, Full<Bytes>>,
    max_response_bytes: usize,
}

impl std::fmt::Debug for VllmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VllmBackend")
            .field("name", &self.inner.name)
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl VllmBackend {
    pub fn new(cfg: VllmConfig) -> Result<Self, VllmConfigError> {
        let base = normalize_base(&cfg.name, &cfg.base_url)?;
        let auth = cfg
            .api_key
            .as_deref()
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    VllmConfigError::BadApiKey {
                        name: cfg.name.clone(),
                    }
                })?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.enforce_http(false);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .build(https_connector(http, &cfg.name)?);
        Ok(Self {
            inner: Arc::new(Inner {
                name: cfg.name,
                base,
                auth,
                client,
                max_response_bytes: cfg.max_response_bytes,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The normalised base URL requests are sent to (no trailing `/v1`).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        cx: &RequestContext,
    ) -> Result<Response<Incoming>, BackendError> {
        let uri = format!("{}{}", self.inner.base, path);
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(auth) = &self.inner.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if !cx.request_id.is_empty() {
            builder = builder.header("x-request-id", cx.request_id.as_str());
        }
        if let Some(tp) = &cx.traceparent {
            builder = builder.header("traceparent", tp.as_str());
        }
        let body = match body {
            Some(b) => {
                builder =
                    builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let req = builder.body(body).map_err(|e| BackendError::Protocol {
            backend: self.inner.name.clone(),
            message: format!("could not build request: {e}"),
        })?;
        self.inner
            .client
            .request(req)
            .await
            .map_err(|e| self.classify_send_error(e))
    }

    fn classify_send_error(&self, e: hyper_util::client::legacy::Error) -> BackendError {
        let backend = self.inner.name.clone();
        if e.is_connect() {
            if caused_by_timeout(&e) {
                return BackendError::Timeout {
                    kind: TimeoutKind::Connect,
                };
            }
            return BackendError::Connect {
                backend,
                source: Box::new(e),
            };
        }
        BackendError::Transport {
            backend,
            source: Box::new(e),
        }
    }

    async fn read_body(&self, resp: Response<Incoming>) -> Result<Bytes, BackendError> {
        Limited::new(resp.into_body(), self.inner.max_response_bytes)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| BackendError::Transport {
                backend: self.inner.name.clone(),
                source: e,
            })
    }

    /// Turns a non-success response into [`BackendError::Upstream`], keeping the engine's message.
    async fn upstream_error(&self, resp: Response<Incoming>) -> BackendError {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = self.read_body(resp).await.unwrap_or_default();
        let error = ErrorObject::from_upstream(&body).unwrap_or_else(|| {
            ErrorObject::new(
                format!(
                    "upstream returned HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
                "",
            )
        });
        BackendError::Upstream {
            backend: self.inner.name.clone(),
            status: status.as_u16(),
            error: Box::new(error),
            retry_after,
        }
    }

    async fn call_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        req: Option<&Req>,
        cx: &RequestContext,
    ) -> Result<Resp, BackendError> {
        let body = req.map(|r| self.encode(r)).transpose()?;
        let resp = self.send(method, path, body, cx).await?;
        if !resp.status().is_success() {
            return Err(self.upstream_error(resp).await);
        }
        let bytes = self.read_body(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Protocol {
            backend: self.inner.name.clone(),
            message: format!("response is not a valid OpenAI object: {e}"),
        })
    }

    /// A non-streamed answer kept as the engine's bytes: peeked at (valid JSON object, usage,
    /// in-band error), not parsed into a typed value, so it is forwarded without re-serialising.
    async fn call_reply<Req: Serialize, T>(
        &self,
        path: &str,
        req: &Req,
        cx: &RequestContext,
    ) -> Result<Reply<T>, BackendError> {
        let body = self.encode(req)?;
        let resp = self.send(Method::POST, path, Some(body), cx).await?;
        if !resp.status().is_success() {
            return Err(self.upstream_error(resp).await);
        }
        let bytes = self.read_body(resp).await?;
        let reply = Reply::from_raw(bytes).map_err(|e| BackendError::Protocol {
            backend: self.inner.name.clone(),
            message: format!("response is not a valid OpenAI object: {e}"),
        })?;
        if let Some(e) = reply.upstream_error() {
            return Err(BackendError::Protocol {
                backend: self.inner.name.clone(),
                message: format!("engine answered 200 with an error: {}", e.message),
            });
        }
        Ok(reply)
    }

    async fn call_stream<Req: Serialize, T>(
        &self,
        path: &str,
        req: &Req,
        cx: &RequestContext,
    ) -> Result<ChunkStream<T>, BackendError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let body = self.encode(req)?;
        let resp = self.send(Method::POST, path, Some(body), cx).await?;
        if !resp.status().is_success() {
            return Err(self.upstream_error(resp).await);
        }
        Ok(Box::pin(stream::SseChunks::<T>::new(
            resp.into_body(),
            self.inner.name.clone(),
        )))
    }

    fn encode<Req: Serialize>(&self, req: &Req) -> Result<Vec<u8>, BackendError> {
        serde_json::to_vec(req).map_err(|e| BackendError::Protocol {
            backend: self.inner.name.clone(),
            message: format!("could not encode request: {e}"),
        })
    }
}

impl Backend for VllmBackend {
    async fn chat(
        &self,
        mut req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<Reply<ChatCompletionResponse>, BackendError> {
        req.stream = None;
        self.call_reply("/v1/chat/completions", &req, cx).await
    }

    async fn chat_stream(
        &self,
        mut req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<ChunkStream<ChatCompletionChunk>, BackendError> {
        req.stream = Some(true);
        self.call_stream("/v1/chat/completions", &req, cx).await
    }

    async fn completions(
        &self,
        mut req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<Reply<CompletionResponse>, BackendError> {
        req.stream = None;
        self.call_reply("/v1/completions", &req, cx).await
    }

    async fn completions_stream(
        &self,
        mut req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<ChunkStream<CompletionChunk>, BackendError> {
        req.stream = Some(true);
        self.call_stream("/v1/completions", &req, cx).await
    }

    async fn embeddings(
        &self,
        req: EmbeddingRequest,
        cx: &RequestContext,
    ) -> Result<Reply<EmbeddingResponse>, BackendError> {
        self.call_reply("/v1/embeddings", &req, cx).await
    }

    async fn models(&self, cx: &RequestContext) -> Result<ModelList, BackendError> {
        self.call_json::<(), _>(Method::GET, "/v1/models", None, cx)
            .await
    }

    async fn health(&self) -> Health {
        let cx = RequestContext::default();
        match self.send(Method::GET, "/health", None, &cx).await {
            Ok(resp) if resp.status() == StatusCode::OK => Health::Healthy,
            Ok(resp) => Health::Unhealthy {
                reason: format!("/health returned HTTP {}", resp.status().as_u16()),
            },
            Err(e) => Health::Unhealthy {
                reason: e.to_string(),
            },
        }
    }
}

fn normalize_base(name: &str, url: &str) -> Result<String, VllmConfigError> {
    let bad = |reason: &str| VllmConfigError::BadUrl {
        name: name.to_owned(),
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    if uri.authority().is_none() {
        return Err(bad("a host is required"));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not allowed"));
    }
    let trimmed = url.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    Ok(trimmed.to_owned())
}

/// https through rustls with the ring provider (named explicitly so another provider linked into
/// the same binary cannot make the choice ambiguous). System roots first, since self-hosted engines
/// often sit behind an internal CA; the bundled web PKI roots when the system has none.
fn https_connector(http: HttpConnector, name: &str) -> Result<HttpsConnector, VllmConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
        .or_else(|_| {
            hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider)
        })
        .map_err(|e| VllmConfigError::Tls {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}

fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err.to_string().contains("timed out") {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests;
