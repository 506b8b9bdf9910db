//! The seam between Lumen's core and an inference engine.
//!
//! [`Backend`] is what an engine adapter implements (Lumen ships `lumen-backend-vllm`; an embedder
//! can write their own). It is generic and zero-cost inside a crate; [`DynBackend`] boxes it once
//! so the server can hold any mix of backends as [`SharedBackend`].
//!
//! # Layout
//! - [`Backend`], [`DynBackend`], [`SharedBackend`]: the trait, its object-safe twin, the handle.
//! - [`BackendError`]: every way an engine call fails, with [`BackendError::is_retryable`].
//! - [`RequestContext`]: per-request data a backend may forward (the request id).
//!
//! # Must not depend on
//! hyper, governance, resilience or any concrete backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::future::BoxFuture;
use lumen_openai_types::multipart::FormRequest;
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Chunk, CompletionChunk,
    CompletionRequest, CompletionResponse, EmbeddingRequest, EmbeddingResponse, ErrorObject,
    JsonAnswer, JsonBody, JsonRequest, ModelList, Reply,
};

mod error;

pub use error::{BackendError, BoxError, TimeoutKind};

/// A stream of parsed engine events; it ends after the engine's `[DONE]`.
///
/// Dropping it must abort the engine request, so that a client that goes away stops generation.
pub type ChunkStream<T> = Pin<Box<dyn Stream<Item = Result<Chunk<T>, BackendError>> + Send>>;

/// What the gateway knows about a request that a backend may need.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Correlates the gateway's logs with the engine's; forwarded as `x-request-id`.
    pub request_id: String,
    /// The caller's `x-session-id`, used for session affinity (falls back to the `user` field).
    pub session_id: Option<String>,
    /// The caller's own deadline (`x-lumen-timeout-ms`); it can only shorten the configured ones.
    pub timeout: Option<std::time::Duration>,
    /// W3C `traceparent` to send upstream (the caller's trace, with Lumen as the parent span).
    pub traceparent: Option<String>,
    /// The public models the caller may be served by (its key's list); `None` means any. The
    /// gateway's fallbacks skip the others.
    pub models: Option<std::sync::Arc<[String]>>,
    /// Asked before a fallback moves the request to another model: the caller's limits in
    /// that model's scope. `None`: nothing to charge (no key, or an embedder without limits).
    pub admission: Option<Arc<dyn ModelAdmission>>,
    /// This call finishes another engine's broken answer (mid-stream continuation): the
    /// request's final assistant message is that partial answer, and a backend adds what its
    /// engine needs to extend it rather than answer it (see [`Continuation`]). Engine fields
    /// are the backend's business, not the core's.
    pub continuing: bool,
    /// Whose request this is in the gateway's admission queue, when the engines are saturated:
    /// requests of one flow (an API key) are served fairly against other flows', by weight,
    /// and by priority class first. `None`: one shared flow (first come, first served).
    pub fairness: Option<Fairness>,
    /// Client headers passed on to the engine as they came: Anthropic's `anthropic-version`
    /// and `anthropic-beta` to an engine that serves `/v1/messages` itself. Names are
    /// lowercase; values are ones an HTTP header may hold (the server took them from one).
    pub headers: Vec<(&'static str, String)>,
}

/// A request's place in the fair admission queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fairness {
    /// The flow: the key's name (never a string a client chose).
    pub flow: String,
    /// Its share against other flows (at least 1).
    pub weight: u32,
    /// Priority class rank: 0 interactive, 1 standard, 2 batch (vLLM's lower-first order).
    pub rank: u8,
}

/// The caller's admission to a model it was not admitted for at the door. A fallback (or a
/// context fallback, or a continuation on a fallback) moves a request to another model; the
/// key's per-model limits must hold there too, or a key suspended on a model reaches it by
/// asking for a broken one. The gateway asks before each move; `false` skips that model.
pub trait ModelAdmission: Send + Sync {
    /// Checks and charges the caller's limits for `model`; `false` when they refuse it.
    fn admit<'a>(&'a self, model: &'a str) -> BoxFuture<'a, bool>;
}

impl std::fmt::Debug for dyn ModelAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelAdmission")
    }
}

impl RequestContext {
    /// Whether the caller may be served by `model` (see [`models`](Self::models)).
    pub fn allows(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|list| list.iter().any(|m| m == model))
    }

    pub fn new(request_id: impl Into<String>) -> Self {
        Self {
            request_id: request_id.into(),
            session_id: None,
            timeout: None,
            traceparent: None,
            models: None,
            admission: None,
            continuing: false,
            fairness: None,
            headers: Vec::new(),
        }
    }
}

/// How an engine can be asked to continue an answer it did not start (mid-stream continuation):
/// the request carries the text so far as a final, partial assistant message (for completions,
/// appended to the prompt) and the engine must extend it rather than answer it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuation {
    /// This backend cannot continue another engine's answer; it is never asked to.
    #[default]
    None,
    /// vLLM's and SGLang's `continue_final_message: true` with `add_generation_prompt: false`.
    /// The backend adds those fields itself when `RequestContext::continuing` is set (the
    /// core sends only the messages with the partial answer last): `lumen-backend-vllm` does,
    /// and an embedder's backend that declares this must too.
    ContinueFinalMessage,
    /// A final assistant message the chat template leaves open (llama.cpp's `llama-server`).
    Prefill,
}

/// Result of a cheap liveness probe (never a generation: probes must not bill tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy { reason: String },
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }
}

/// An inference engine that speaks (or is adapted to) the OpenAI API.
///
/// Methods return `impl Future + Send` rather than using `async_trait`, so implementations stay
/// unboxed until [`DynBackend`] boxes them at the seam. Implementors may write `async fn`.
pub trait Backend: Send + Sync + 'static {
    fn chat(
        &self,
        req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<Reply<ChatCompletionResponse>, BackendError>> + Send;

    /// Resolves once the engine has accepted the request (response headers received); the
    /// stream then yields chunks as they arrive.
    fn chat_stream(
        &self,
        req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<ChunkStream<ChatCompletionChunk>, BackendError>> + Send;

    fn completions(
        &self,
        req: CompletionRequest,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<Reply<CompletionResponse>, BackendError>> + Send;

    fn completions_stream(
        &self,
        req: CompletionRequest,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<ChunkStream<CompletionChunk>, BackendError>> + Send;

    fn embeddings(
        &self,
        req: EmbeddingRequest,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<Reply<EmbeddingResponse>, BackendError>> + Send;

    /// The models this engine serves, with whatever metadata it reports.
    fn models(
        &self,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<ModelList, BackendError>> + Send;

    fn health(&self) -> impl Future<Output = Health> + Send;

    /// Whether and how this engine continues a partial answer (see [`Continuation`]). The
    /// default is none: a backend opts in only when its engine is known to honour it.
    fn continuation(&self) -> Continuation {
        Continuation::None
    }

    /// The engine's own metrics in Prometheus text (`GET /metrics`), read in the background
    /// for routing on the engines' queues and KV-cache use. `Ok(None)` means this backend has
    /// none to offer (the default): Lumen then balances on its own in-flight counts.
    fn metrics(
        &self,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<Option<String>, BackendError>> + Send {
        let _ = cx;
        std::future::ready(Ok(None))
    }

    /// Any other JSON endpoint of the engine that is routed by `model`: vLLM's `/tokenize`,
    /// `/detokenize` and `/v1/rerank`. `path` is the engine's path; `req` is the client's JSON
    /// with the engine's model id. The default answers 404, which is not retried, so a backend
    /// that serves only the typed endpoints needs nothing here.
    fn call(
        &self,
        path: &'static str,
        req: JsonRequest,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<Reply<JsonAnswer>, BackendError>> + Send {
        let _ = (req, cx);
        std::future::ready(Err(not_served(path)))
    }

    /// Whether the engine serves Anthropic's `POST /v1/messages` itself (vLLM, SGLang,
    /// llama.cpp). Such a backend gets the client's body unchanged through
    /// [`call_body`](Self::call_body) and [`call_stream`](Self::call_stream); the others get the
    /// request translated to a chat completion. The default is no: a backend opts in only when
    /// its engine is known to serve it.
    fn native_messages(&self) -> bool {
        false
    }

    /// Another API's endpoint that the engine serves as is (`/v1/messages`), not streamed:
    /// `req` is the client's body with the engine's model id spliced in. The answer keeps the
    /// engine's bytes. The default answers 404, as [`call`](Self::call) does.
    fn call_body(
        &self,
        path: &'static str,
        req: JsonBody,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<Reply<JsonAnswer>, BackendError>> + Send {
        let _ = (req, cx);
        std::future::ready(Err(not_served(path)))
    }

    /// The same, streamed: one chunk per SSE event, whose [`Chunk::raw`] is the event's `data:`
    /// JSON as the engine sent it (an Anthropic or Responses event names itself in its `type`).
    /// The stream ends after the API's last event (`message_stop`; for `/v1/responses`,
    /// `response.completed`, `response.incomplete` or `response.failed`); an in-band Anthropic
    /// `error` event ends it with [`BackendError::StreamInterrupted`]. Resolves once the engine
    /// has accepted the request.
    fn call_stream(
        &self,
        path: &'static str,
        req: JsonBody,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<ChunkStream<JsonAnswer>, BackendError>> + Send {
        let _ = (req, cx);
        std::future::ready(Err(not_served(path)))
    }

    /// A `multipart/form-data` endpoint routed by the form's `model` (OpenAI's
    /// `/v1/audio/transcriptions` and `/v1/audio/translations`): `req` is the client's body,
    /// sent byte for byte with its content type (boundary included), but for the `model` value,
    /// which is the engine's id. The answer keeps the engine's bytes and content type: JSON, or
    /// text for the `text`, `srt` and `vtt` formats. The default answers 404, as
    /// [`call`](Self::call) does.
    fn call_form(
        &self,
        path: &'static str,
        req: FormRequest,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<RawAnswer, BackendError>> + Send {
        let _ = (req, cx);
        std::future::ready(Err(not_served(path)))
    }

    /// Whether the engine serves OpenAI's `POST /v1/responses` itself and keeps what it
    /// answers (`GET`/`DELETE /v1/responses/{id}`, `previous_response_id`). Such a backend
    /// gets the client's body through [`call_body`](Self::call_body) and
    /// [`call_stream`](Self::call_stream), and the stored responses' calls through
    /// [`call_at`](Self::call_at). The default is no, for every engine: vLLM keeps responses
    /// only when started with `VLLM_ENABLE_RESPONSES_API_STORE`, llama.cpp never does, and
    /// the gateway's translation with its own store works on every engine.
    fn native_responses(&self) -> bool {
        false
    }

    /// A bodiless call to an engine path that names a thing the engine keeps
    /// (`GET /v1/responses/{id}`, `DELETE`, `.../cancel`, `.../input_items?...`): `path`
    /// includes the query, and the gateway builds it only from ids it checked. The answer
    /// keeps the engine's bytes; an error status is [`BackendError::Upstream`]. The default
    /// answers 404.
    fn call_at(
        &self,
        method: EngineMethod,
        path: String,
        cx: &RequestContext,
    ) -> impl Future<Output = Result<Reply<JsonAnswer>, BackendError>> + Send {
        let _ = (method, cx);
        std::future::ready(Err(not_served(&path)))
    }
}

/// An engine's successful answer as it came: its content type and bytes (see
/// [`Backend::call_form`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    /// The engine's `content-type`; `application/json` when it sent none.
    pub content_type: String,
    pub body: bytes::Bytes,
}

/// The method of an engine call that is not a generation ([`Backend::call_at`]): the core
/// names it without depending on an HTTP crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMethod {
    Get,
    Post,
    Delete,
}

impl EngineMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }
}

/// What an engine endpoint a backend does not serve answers: a 404, which is not retried.
fn not_served(path: &str) -> BackendError {
    BackendError::Upstream {
        backend: String::new(),
        status: 404,
        error: Box::new(ErrorObject::new(
            format!("This backend does not serve {path}."),
            "invalid_request_error",
        )),
        retry_after: None,
    }
}

/// Object-safe mirror of [`Backend`]; implemented for every `Backend`.
pub trait DynBackend: Send + Sync + 'static {
    fn chat<'a>(
        &'a self,
        req: ChatCompletionRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<ChatCompletionResponse>, BackendError>>;
    fn chat_stream<'a>(
        &'a self,
        req: ChatCompletionRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<ChunkStream<ChatCompletionChunk>, BackendError>>;
    fn completions<'a>(
        &'a self,
        req: CompletionRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<CompletionResponse>, BackendError>>;
    fn completions_stream<'a>(
        &'a self,
        req: CompletionRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<ChunkStream<CompletionChunk>, BackendError>>;
    fn embeddings<'a>(
        &'a self,
        req: EmbeddingRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<EmbeddingResponse>, BackendError>>;
    fn models<'a>(
        &'a self,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<ModelList, BackendError>>;
    fn health(&self) -> BoxFuture<'_, Health>;
    fn continuation(&self) -> Continuation;
    fn metrics<'a>(
        &'a self,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>>;
    fn call<'a>(
        &'a self,
        path: &'static str,
        req: JsonRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<JsonAnswer>, BackendError>>;
    fn native_messages(&self) -> bool;
    fn call_body<'a>(
        &'a self,
        path: &'static str,
        req: JsonBody,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<JsonAnswer>, BackendError>>;
    fn call_stream<'a>(
        &'a self,
        path: &'static str,
        req: JsonBody,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<ChunkStream<JsonAnswer>, BackendError>>;
    fn call_form<'a>(
        &'a self,
        path: &'static str,
        req: FormRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<RawAnswer, BackendError>>;
    fn native_responses(&self) -> bool;
    fn call_at<'a>(
        &'a self,
        method: EngineMethod,
        path: String,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<JsonAnswer>, BackendError>>;
}

/// The handle the gateway stores: any backend, boxed once.
pub type SharedBackend = Arc<dyn DynBackend>;

// === impl DynBackend for B ===

impl<B: Backend> DynBackend for B {
    fn chat<'a>(
        &'a self,
        req: ChatCompletionRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<ChatCompletionResponse>, BackendError>> {
        Box::pin(Backend::chat(self, req, cx))
    }
    fn chat_stream<'a>(
        &'a self,
        req: ChatCompletionRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<ChunkStream<ChatCompletionChunk>, BackendError>> {
        Box::pin(Backend::chat_stream(self, req, cx))
    }
    fn completions<'a>(
        &'a self,
        req: CompletionRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<CompletionResponse>, BackendError>> {
        Box::pin(Backend::completions(self, req, cx))
    }
    fn completions_stream<'a>(
        &'a self,
        req: CompletionRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<ChunkStream<CompletionChunk>, BackendError>> {
        Box::pin(Backend::completions_stream(self, req, cx))
    }
    fn embeddings<'a>(
        &'a self,
        req: EmbeddingRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<EmbeddingResponse>, BackendError>> {
        Box::pin(Backend::embeddings(self, req, cx))
    }
    fn models<'a>(
        &'a self,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<ModelList, BackendError>> {
        Box::pin(Backend::models(self, cx))
    }
    fn health(&self) -> BoxFuture<'_, Health> {
        Box::pin(Backend::health(self))
    }
    fn continuation(&self) -> Continuation {
        Backend::continuation(self)
    }
    fn metrics<'a>(
        &'a self,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>> {
        Box::pin(Backend::metrics(self, cx))
    }
    fn call<'a>(
        &'a self,
        path: &'static str,
        req: JsonRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<JsonAnswer>, BackendError>> {
        Box::pin(Backend::call(self, path, req, cx))
    }
    fn native_messages(&self) -> bool {
        Backend::native_messages(self)
    }
    fn call_body<'a>(
        &'a self,
        path: &'static str,
        req: JsonBody,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<JsonAnswer>, BackendError>> {
        Box::pin(Backend::call_body(self, path, req, cx))
    }
    fn call_stream<'a>(
        &'a self,
        path: &'static str,
        req: JsonBody,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<ChunkStream<JsonAnswer>, BackendError>> {
        Box::pin(Backend::call_stream(self, path, req, cx))
    }
    fn call_form<'a>(
        &'a self,
        path: &'static str,
        req: FormRequest,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<RawAnswer, BackendError>> {
        Box::pin(Backend::call_form(self, path, req, cx))
    }
    fn native_responses(&self) -> bool {
        Backend::native_responses(self)
    }
    fn call_at<'a>(
        &'a self,
        method: EngineMethod,
        path: String,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Reply<JsonAnswer>, BackendError>> {
        Box::pin(Backend::call_at(self, method, path, cx))
    }
}

/// Compile-time proof that the seam stays object safe.
fn _object_safe(_: &dyn DynBackend) {}

#[cfg(test)]
mod tests;
