//! An OpenAI-compatible HTTP backend: vLLM first, and anything else that speaks the same API
//! (SGLang, llama.cpp `llama-server`, TGI, Ollama).
//!
//! One connection pool per backend, injected rather than global so each backend has its own pool
//! and timeouts: plain-`http` engines through the in-task HTTP/1.1 client in `h1` (keep-alive,
//! `TCP_NODELAY`, no per-connection task), `https` engines through a pooled `hyper-util` client
//! with rustls. Engine failures become
//! typed [`BackendError`]s that know whether a retry is allowed. Stream chunks are parsed (to catch
//! in-band errors and garbage) but forwarded as the engine's original bytes.
//!
//! # Layout
//! - [`VllmConfig`] / [`VllmBackend`]: construction and the [`Backend`] implementation.
//! - `dialect`: [`Dialect`], and the translation of llama.cpp's tokenizer endpoints to vLLM's
//!   shapes.
//! - `h1`: the in-task HTTP/1.1 client for plain-`http` engines.
//! - `stream`: SSE body to [`ChunkStream`] adapter.
//!
//! # Must not depend on
//! governance, resilience or the server: it is a leaf that only knows engines.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::GaiResolver;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use lumen_backend::{
    Backend, BackendError, ChunkStream, Continuation, Health, RawAnswer, RequestContext,
    TimeoutKind,
};
use lumen_openai_types::multipart::FormRequest;
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, CompletionChunk,
    CompletionRequest, CompletionResponse, EmbeddingRequest, EmbeddingResponse, ErrorObject,
    Forwardable, JsonAnswer, JsonBody, JsonRequest, ModelList, Reply,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod dialect;
mod h1;
mod stream;
mod tls;

pub use tls::roots as ca_roots;

pub use dialect::Dialect;

/// Bodies of the fuzz targets over this crate (`fuzz/`), as plain functions that a normal test
/// replays over the corpora without a fuzzer.
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz {
    /// `h1_response`: the HTTP/1.1 client's response parsing (see `h1/fuzz.rs`).
    pub fn h1_response(data: &[u8]) {
        crate::h1::fuzz::h1_response(data);
    }
}

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
    /// Idle pooled connections are closed after this long, by a background reaper (and at once
    /// when the engine has closed them), so a burst leaves no descriptors behind.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Cap on a non-streamed response body, so a broken engine cannot exhaust memory. Over it
    /// the call fails with [`BackendError::ResponseTooLarge`].
    pub max_response_bytes: usize,
    /// How this engine continues another engine's partial answer (vLLM and SGLang:
    /// `continue_final_message`). Only models with stream continuation on use it.
    pub continuation: Continuation,
    /// Which engine's tokenizer endpoints these are: llama.cpp's are translated to vLLM's
    /// shapes (`dialect`).
    pub dialect: Dialect,
    /// Send the request's priority class (`RequestContext::fairness`) as vLLM's `priority`
    /// (lower first), for engines started with `--scheduling-policy priority`.
    pub send_priority: bool,
    /// The engine serves Anthropic's `/v1/messages` itself (vLLM, SGLang and llama.cpp do):
    /// Messages requests are forwarded to it unchanged rather than translated to chat.
    pub native_messages: bool,
    /// The engine serves OpenAI's `/v1/responses` itself and keeps its responses: Responses
    /// requests are forwarded to it unchanged, and the stored responses' calls go to it. Off
    /// by default (see [`lumen_backend::Backend::native_responses`]).
    pub native_responses: bool,
    /// `https`: connect to this address rather than resolving the URL's host, which TLS still
    /// checks the certificate against (DNS discovery's backends: one address of a name).
    pub connect_to: Option<std::net::SocketAddr>,
    /// `https`: trust only the CAs in this PEM file (an internal CA), not the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
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
            max_response_bytes: 64 * 1024 * 1024,
            continuation: Continuation::ContinueFinalMessage,
            dialect: Dialect::Vllm,
            send_priority: false,
            native_messages: true,
            native_responses: false,
            connect_to: None,
            ca_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VllmConfigError {
    /// The URL itself is not repeated: it may hold credentials (userinfo, `?api_key=`), and
    /// this message reaches logs and `lumen config check`. The caller knows which URL it gave.
    #[error("backend {name}: invalid base URL: {reason}")]
    BadUrl { name: String, reason: String },
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
    transport: Transport,
    max_response_bytes: usize,
    continuation: Continuation,
    dialect: Dialect,
    send_priority: bool,
    native_messages: bool,
    native_responses: bool,
    /// llama.cpp: context lengths read from `/props`, for `/tokenize`'s `max_model_len`.
    contexts: dialect::ContextLengths,
}

enum Transport {
    /// `http://`: the in-task client.
    Plain(Arc<h1::Pool>),
    /// `https://`: hyper-util with rustls.
    Tls(Client<tls::HttpsConnector, Full<Bytes>>),
}

/// An engine's answer: status, `Retry-After`, and the body still to be read.
/// A request body to send.
enum Payload<'a> {
    Json(Vec<u8>),
    /// A JSON body as pieces sharing the client's bytes (a request forwarded as it came, what
    /// Lumen changed spliced in): written piece by piece, never joined on plain HTTP.
    Pieces(Vec<Bytes>),
    /// A client's form, sent with its own content type (boundary included).
    Form(&'a FormRequest),
}

struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    /// See [`h1::Head::content_type`]: kept only when neither JSON nor SSE.
    content_type: Option<Box<str>>,
    body: UpBody,
}

/// A response body from either transport.
pub(crate) enum UpBody {
    Plain(h1::Body),
    Tls(Incoming),
    /// Handed off (see [`UpBody::release`]).
    Released,
}

impl UpBody {
    /// The next piece of data; `None` at the end. Trailers are skipped.
    pub(crate) fn poll_data(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, lumen_backend::BoxError>>> {
        use std::task::Poll;
        match self {
            Self::Plain(b) => b.poll_data(cx).map(|o| o.map(|r| r.map_err(Into::into))),
            Self::Tls(b) => loop {
                match std::task::ready!(std::pin::Pin::new(&mut *b).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Poll::Ready(Some(Ok(data)));
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                    None => return Poll::Ready(None),
                }
            },
            Self::Released => Poll::Ready(None),
        }
    }

    /// Called when a stream has ended cleanly (`[DONE]`) but the HTTP body may not have: the
    /// chunked terminator usually follows the last event. Reading it lets the connection be
    /// reused (else every stream would pay for a new connection). If it is not here yet, a
    /// small task waits for it, for at most a second, so the caller never does.
    pub(crate) fn release(&mut self, cx: &mut std::task::Context<'_>) {
        let Self::Plain(body) = self else {
            return;
        };
        loop {
            match body.poll_data(cx) {
                std::task::Poll::Ready(None) => return,
                std::task::Poll::Ready(Some(Ok(_))) => {}
                std::task::Poll::Ready(Some(Err(_))) => return,
                std::task::Poll::Pending => break,
            }
        }
        if let Self::Plain(mut body) = std::mem::replace(self, Self::Released) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let drain = async {
                        while let Some(Ok(_)) = std::future::poll_fn(|cx| body.poll_data(cx)).await
                        {
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                });
            }
        }
    }

    async fn collect(self, max: usize) -> Result<Bytes, CollectError> {
        match self {
            Self::Plain(b) => b.collect(max).await,
            Self::Tls(b) => {
                // A declared length over the cap is refused before reading.
                if b.size_hint().lower() > max as u64 {
                    return Err(CollectError::TooLarge);
                }
                Limited::new(b, max)
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .map_err(|e| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            CollectError::TooLarge
                        } else {
                            CollectError::Broken(e)
                        }
                    })
            }
            Self::Released => Ok(Bytes::new()),
        }
    }
}

/// Why a whole body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    /// Over the backend's `max_response_bytes`.
    #[error("response body over the size cap")]
    TooLarge,
    /// The body broke off after the response started (bad chunk framing, connection closed
    /// early): the engine was reached, but its answer is incomplete.
    #[error("{0}")]
    Broken(lumen_backend::BoxError),
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
        let uri: Uri = base.parse().map_err(|_| VllmConfigError::BadUrl {
            name: cfg.name.clone(),
            reason: "not a URL".to_owned(),
        })?;
        let transport = if uri.scheme_str() == Some("http") {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            // `[::1]` in a URL is `::1` to connect to.
            let host = uri.host().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            Transport::Plain(h1::Pool::new(h1::PoolConfig {
                backend: cfg.name.clone(),
                host,
                port: uri.port_u16().unwrap_or(80),
                authority,
                prefix: uri.path().trim_end_matches('/').to_owned(),
                authorization: cfg.api_key.as_ref().map(|k| format!("Bearer {k}")),
                connect_timeout: cfg.connect_timeout,
                idle_timeout: cfg.pool_idle_timeout,
                max_idle: cfg.pool_max_idle_per_host,
            }))
        } else {
            let resolver = match cfg.connect_to {
                Some(addr) => tls::Resolver::Fixed(addr),
                None => tls::Resolver::System(GaiResolver::new()),
            };
            let mut http = HttpConnector::new_with_resolver(resolver);
            http.set_nodelay(true);
            http.set_keepalive(Some(Duration::from_secs(60)));
            http.set_connect_timeout(Some(cfg.connect_timeout));
            http.enforce_http(false);
            Transport::Tls(
                Client::builder(TokioExecutor::new())
                    // Without a timer hyper-util never closes idle connections on its own:
                    // they would wait for the next request, as in the plain pool.
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(cfg.pool_idle_timeout)
                    .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
                    .build(tls::connector(http, &cfg.name, cfg.ca_file.as_deref())?),
            )
        };
        Ok(Self {
            inner: Arc::new(Inner {
                name: cfg.name,
                base,
                auth,
                transport,
                max_response_bytes: cfg.max_response_bytes,
                continuation: cfg.continuation,
                send_priority: cfg.send_priority,
                native_messages: cfg.native_messages,
                native_responses: cfg.native_responses,
                dialect: cfg.dialect,
                contexts: dialect::ContextLengths::default(),
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
    ) -> Result<Answer, BackendError> {
        self.send_payload(method, path, body.map(Payload::Json), cx)
            .await
    }

    async fn send_payload(
        &self,
        method: Method,
        path: &str,
        body: Option<Payload<'_>>,
        cx: &RequestContext,
    ) -> Result<Answer, BackendError> {
        let client = match &self.inner.transport {
            Transport::Plain(pool) => {
                let (head, body) = match &body {
                    None => pool.request(method.as_str(), path, None, cx).await?,
                    Some(Payload::Json(b)) => {
                        pool.request(method.as_str(), path, Some(b), cx).await?
                    }
                    Some(Payload::Pieces(p)) => {
                        pool.request_parts(path, "application/json", p, cx).await?
                    }
                    Some(Payload::Form(f)) => {
                        pool.request_parts(path, f.content_type(), &f.segments(), cx)
                            .await?
                    }
                };
                return Ok(Answer {
                    status: StatusCode::from_u16(head.status).map_err(|_| {
                        BackendError::Protocol {
                            backend: self.inner.name.clone(),
                            message: format!("invalid HTTP status {}", head.status),
                        }
                    })?,
                    retry_after: head.retry_after,
                    content_type: head.content_type,
                    body: UpBody::Plain(body),
                });
            }
            Transport::Tls(client) => client,
        };
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
        for (name, value) in &cx.headers {
            builder = builder.header(*name, value.as_str());
        }
        let body = match body {
            Some(Payload::Json(b)) => {
                builder =
                    builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Full::new(Bytes::from(b))
            }
            // One body for hyper's `Full`: pieces are joined (one copy; the plain-HTTP client
            // writes them as they are).
            Some(Payload::Pieces(p)) => {
                builder =
                    builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                match p.as_slice() {
                    [one] => Full::new(one.clone()),
                    parts => Full::new(Bytes::from(parts.concat())),
                }
            }
            // One body for hyper's `Full`: a form whose model was spliced is joined (one copy;
            // the plain-HTTP client writes the pieces instead).
            Some(Payload::Form(f)) => {
                builder = builder.header(CONTENT_TYPE, f.content_type());
                match f.segments().as_slice() {
                    [one] => Full::new(one.clone()),
                    parts => Full::new(Bytes::from(parts.concat())),
                }
            }
            None => Full::new(Bytes::new()),
        };
        let req = builder.body(body).map_err(|e| BackendError::Protocol {
            backend: self.inner.name.clone(),
            message: format!("could not build request: {e}"),
        })?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| self.classify_send_error(e))?;
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.starts_with("application/json") && !t.starts_with("text/event-stream"))
            .map(Box::from);
        Ok(Answer {
            status: resp.status(),
            retry_after,
            content_type,
            body: UpBody::Tls(resp.into_body()),
        })
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

    async fn read_body(&self, resp: Answer) -> Result<Bytes, BackendError> {
        let backend = self.inner.name.clone();
        match resp.body.collect(self.inner.max_response_bytes).await {
            Ok(b) => Ok(b),
            Err(CollectError::TooLarge) => Err(BackendError::ResponseTooLarge {
                backend,
                limit: self.inner.max_response_bytes,
            }),
            // Not "could not be reached": the engine answered, then its body broke off.
            Err(CollectError::Broken(e)) => Err(BackendError::Protocol {
                backend,
                message: format!("the response body broke off: {e}"),
            }),
        }
    }

    /// Turns a non-success response into [`BackendError::Upstream`], keeping the engine's message.
    async fn upstream_error(&self, resp: Answer) -> BackendError {
        let (status, retry_after) = (resp.status, resp.retry_after);
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
        if !resp.status.is_success() {
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
        let bytes = self.call_bytes(Method::POST, path, Some(req), cx).await?;
        self.reply(bytes)
    }

    /// The body of a successful answer, whole (up to the size cap); an error status becomes
    /// [`BackendError::Upstream`].
    async fn call_bytes<Req: Serialize>(
        &self,
        method: Method,
        path: &str,
        req: Option<&Req>,
        cx: &RequestContext,
    ) -> Result<Bytes, BackendError> {
        let body = req.map(|r| self.encode(r)).transpose()?;
        let resp = self.send(method, path, body, cx).await?;
        if !resp.status.is_success() {
            return Err(self.upstream_error(resp).await);
        }
        self.read_body(resp).await
    }

    /// An answer's bytes as a [`Reply`]: a JSON object without an in-band error.
    fn reply<T>(&self, bytes: Bytes) -> Result<Reply<T>, BackendError> {
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

    /// POSTs `body` and reads the whole answer as a [`Reply`].
    async fn reply_to<T>(
        &self,
        path: &str,
        body: Payload<'_>,
        cx: &RequestContext,
    ) -> Result<Reply<T>, BackendError> {
        let resp = self.send_ok(path, body, cx).await?;
        let bytes = self.read_body(resp).await?;
        self.reply(bytes)
    }

    /// POSTs `body` and relays the answer's events.
    async fn stream_of<T>(
        &self,
        path: &str,
        body: Payload<'_>,
        cx: &RequestContext,
    ) -> Result<ChunkStream<T>, BackendError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let resp = self.send_ok(path, body, cx).await?;
        Ok(Box::pin(stream::SseChunks::<T>::new(
            resp.body,
            self.inner.name.clone(),
        )))
    }

    /// A body forwarded as the client sent it (model spliced), streamed or not; the answer is
    /// the engine's. A stream ends at its API's last event (`message_stop`), not `[DONE]`.
    async fn send_body(
        &self,
        path: &str,
        req: &JsonBody,
        cx: &RequestContext,
    ) -> Result<Answer, BackendError> {
        self.send_ok(path, Payload::Pieces(vec![req.to_bytes()]), cx)
            .await
    }

    /// POSTs `body`; an error status becomes [`BackendError::Upstream`].
    async fn send_ok(
        &self,
        path: &str,
        body: Payload<'_>,
        cx: &RequestContext,
    ) -> Result<Answer, BackendError> {
        let resp = self
            .send_payload(Method::POST, path, Some(body), cx)
            .await?;
        if !resp.status.is_success() {
            return Err(self.upstream_error(resp).await);
        }
        Ok(resp)
    }

    /// A chat, completions or embeddings request's body: the client's bytes with Lumen's
    /// changes spliced in when the request was read from a body and changed only that way,
    /// else the request serialised (a continuation's rewritten prompt, a request built in
    /// code). Taken by value so the request is freed before the engine call.
    fn body_of<R: Forwardable>(&self, req: R) -> Result<Payload<'static>, BackendError> {
        Ok(match req.forwarded() {
            Some(pieces) => Payload::Pieces(pieces),
            None => Payload::Json(self.encode(&req)?),
        })
    }

    /// vLLM's `/tokenize` on llama.cpp (`dialect`): the chat form rendered by `/apply-template`
    /// first, then `/tokenize` with `content`, and the answer in vLLM's shape with the context
    /// length from `/props`. Tokenizer calls run no model, so the extra calls cost the engine
    /// next to nothing.
    async fn llamacpp_tokenize(
        &self,
        req: &JsonRequest,
        plan: &dialect::Tokenize,
        cx: &RequestContext,
    ) -> Result<Reply<JsonAnswer>, BackendError> {
        let rendered = if plan.chat {
            let template = dialect::template_request(req);
            let answer = self
                .call_bytes(Method::POST, "/apply-template", Some(&template), cx)
                .await
                .map_err(dialect::no_template)?;
            Some(self.translated(dialect::template_prompt(&answer))?)
        } else {
            None
        };
        let body = dialect::tokenize_request(req, plan, rendered.as_deref());
        let answer = self
            .call_bytes(Method::POST, "/tokenize", Some(&self.translated(body)?), cx)
            .await?;
        let max_model_len = self.context_length(&req.model, cx).await;
        let vllm = dialect::tokenize_answer(&answer, max_model_len, plan.token_strs);
        self.reply(Bytes::from(self.translated(vllm)?))
    }

    /// A llama.cpp model's per-slot context, from `/props` once a minute at most. A failure
    /// only leaves `max_model_len` unknown: the tokens are the answer.
    async fn context_length(&self, model: &str, cx: &RequestContext) -> Option<u32> {
        if let Some(known) = self.inner.contexts.get(model) {
            return known;
        }
        let path = dialect::props_path(model);
        let props = self.call_bytes::<()>(Method::GET, &path, None, cx).await;
        let n = props.ok().and_then(|p| dialect::props_context(&p));
        self.inner.contexts.put(model, n);
        n
    }

    /// A translation's result; a failure means the engine's answer was not what its dialect
    /// promises.
    fn translated<T>(&self, r: Result<T, String>) -> Result<T, BackendError> {
        r.map_err(|message| BackendError::Protocol {
            backend: self.inner.name.clone(),
            message,
        })
    }

    /// vLLM's `priority` for a generation request, when this engine schedules by priority:
    /// the request's class, replacing any `priority` the caller wrote (a caller's `-100` would
    /// otherwise jump every interactive request, whatever its key's `max_priority`), and none
    /// at all when the request has no class. An engine that does not schedule by priority
    /// gets the caller's field as any other unknown field.
    fn prioritise(&self, extra: &mut lumen_openai_types::RawExtra, cx: &RequestContext) {
        if !self.inner.send_priority {
            return;
        }
        match cx.fairness.as_ref() {
            Some(f) => {
                let _ = extra.insert("priority", &f.rank);
            }
            None => {
                extra.remove("priority");
            }
        }
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
        self.prioritise(&mut req.extra, cx);
        let body = self.body_of(req)?;
        self.reply_to("/v1/chat/completions", body, cx).await
    }

    async fn chat_stream(
        &self,
        mut req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<ChunkStream<ChatCompletionChunk>, BackendError> {
        req.stream = Some(true);
        self.prioritise(&mut req.extra, cx);
        if cx.continuing && self.inner.continuation == Continuation::ContinueFinalMessage {
            // vLLM's (and SGLang's, llama.cpp's) way to extend a final assistant message;
            // both or neither: vLLM refuses `continue_final_message` with a generation prompt.
            let _ = req.extra.insert("continue_final_message", &true);
            let _ = req.extra.insert("add_generation_prompt", &false);
        }
        let body = self.body_of(req)?;
        self.stream_of("/v1/chat/completions", body, cx).await
    }

    async fn completions(
        &self,
        mut req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<Reply<CompletionResponse>, BackendError> {
        req.stream = None;
        self.prioritise(&mut req.extra, cx);
        let body = self.body_of(req)?;
        self.reply_to("/v1/completions", body, cx).await
    }

    async fn completions_stream(
        &self,
        mut req: CompletionRequest,
        cx: &RequestContext,
    ) -> Result<ChunkStream<CompletionChunk>, BackendError> {
        req.stream = Some(true);
        self.prioritise(&mut req.extra, cx);
        let body = self.body_of(req)?;
        self.stream_of("/v1/completions", body, cx).await
    }

    async fn embeddings(
        &self,
        req: EmbeddingRequest,
        cx: &RequestContext,
    ) -> Result<Reply<EmbeddingResponse>, BackendError> {
        let body = self.body_of(req)?;
        self.reply_to("/v1/embeddings", body, cx).await
    }

    async fn call(
        &self,
        path: &'static str,
        req: JsonRequest,
        cx: &RequestContext,
    ) -> Result<Reply<JsonAnswer>, BackendError> {
        match dialect::plan(self.inner.dialect, path, &req) {
            dialect::JsonCall::Forward => self.call_reply(path, &req, cx).await,
            dialect::JsonCall::LlamacppTokenize(plan) => {
                self.llamacpp_tokenize(&req, &plan, cx).await
            }
            dialect::JsonCall::LlamacppDetokenize => {
                let answer = self.call_bytes(Method::POST, "/detokenize", Some(&req), cx);
                let vllm = dialect::detokenize_answer(&answer.await?);
                self.reply(Bytes::from(self.translated(vllm)?))
            }
        }
    }

    async fn models(&self, cx: &RequestContext) -> Result<ModelList, BackendError> {
        self.call_json::<(), _>(Method::GET, "/v1/models", None, cx)
            .await
    }

    fn continuation(&self) -> Continuation {
        self.inner.continuation
    }

    fn native_messages(&self) -> bool {
        self.inner.native_messages
    }

    async fn call_body(
        &self,
        path: &'static str,
        req: JsonBody,
        cx: &RequestContext,
    ) -> Result<Reply<JsonAnswer>, BackendError> {
        self.reply_to(path, Payload::Pieces(vec![req.to_bytes()]), cx)
            .await
    }

    async fn call_stream(
        &self,
        path: &'static str,
        req: JsonBody,
        cx: &RequestContext,
    ) -> Result<ChunkStream<JsonAnswer>, BackendError> {
        let resp = self.send_body(path, &req, cx).await?;
        let end = if path == "/v1/responses" {
            stream::LastEvent::ResponseDone
        } else {
            stream::LastEvent::MessageStop
        };
        Ok(Box::pin(
            stream::SseChunks::<JsonAnswer>::new(resp.body, self.inner.name.clone()).until(end),
        ))
    }

    /// vLLM's `/v1/audio/transcriptions` and `/v1/audio/translations`: the client's form,
    /// byte for byte (model spliced), and the answer with the engine's content type.
    async fn call_form(
        &self,
        path: &'static str,
        req: FormRequest,
        cx: &RequestContext,
    ) -> Result<RawAnswer, BackendError> {
        // The server took it from a header value; an embedder's must be one too.
        if req.content_type().bytes().any(|b| b.is_ascii_control()) {
            return Err(BackendError::Protocol {
                backend: self.inner.name.clone(),
                message: "the form's content type is not a valid header value".to_owned(),
            });
        }
        let resp = self
            .send_payload(Method::POST, path, Some(Payload::Form(&req)), cx)
            .await?;
        if !resp.status.is_success() {
            return Err(self.upstream_error(resp).await);
        }
        let content_type = resp.content_type.clone();
        let body = self.read_body(resp).await?;
        Ok(RawAnswer {
            content_type: content_type.map_or_else(|| "application/json".to_owned(), String::from),
            body,
        })
    }

    fn native_responses(&self) -> bool {
        self.inner.native_responses
    }

    async fn call_at(
        &self,
        method: lumen_backend::EngineMethod,
        path: String,
        cx: &RequestContext,
    ) -> Result<Reply<JsonAnswer>, BackendError> {
        let method = match method {
            lumen_backend::EngineMethod::Get => Method::GET,
            lumen_backend::EngineMethod::Post => Method::POST,
            lumen_backend::EngineMethod::Delete => Method::DELETE,
        };
        let bytes = self.call_bytes::<()>(method, &path, None, cx).await?;
        self.reply(bytes)
    }

    /// `GET /metrics`: vLLM's, SGLang's (`--enable-metrics`) and llama.cpp's (`--metrics`)
    /// Prometheus text, for routing on the engine's queue and KV cache. Capped well below
    /// answers: an engine's exposition is tens of kilobytes.
    async fn metrics(&self, cx: &RequestContext) -> Result<Option<String>, BackendError> {
        const MAX_METRICS_BYTES: usize = 4 * 1024 * 1024;
        let resp = self.send(Method::GET, "/metrics", None, cx).await?;
        if !resp.status.is_success() {
            return Err(self.upstream_error(resp).await);
        }
        let backend = || self.inner.name.clone();
        match resp.body.collect(MAX_METRICS_BYTES).await {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(CollectError::TooLarge) => Err(BackendError::ResponseTooLarge {
                backend: backend(),
                limit: MAX_METRICS_BYTES,
            }),
            Err(CollectError::Broken(e)) => Err(BackendError::Protocol {
                backend: backend(),
                message: format!("the metrics body broke off: {e}"),
            }),
        }
    }

    async fn health(&self) -> Health {
        let cx = RequestContext::default();
        match self.send(Method::GET, "/health", None, &cx).await {
            // Read the (small) body so the connection can be reused by the next probe.
            Ok(resp) if resp.status == StatusCode::OK => {
                let _ = resp.body.collect(64 * 1024).await;
                Health::Healthy
            }
            Ok(resp) => Health::Unhealthy {
                reason: format!("/health returned HTTP {}", resp.status.as_u16()),
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
