//! The operations the pipeline serves, as descriptors. Each says where it lives (paths, the
//! name traces and metrics use), how to read its request (the model, the completion budget for
//! the token estimate, validation), whether it streams, what of it is cached, and which core
//! call serves it. One pipeline ([`Gateway::serve`]) runs every operation: resolve the model
//! once → authorize → admit against limits → cache → attempts → settle on the real usage.
//! Adding a JSON endpoint is one operation here and one backend call.

use futures::future::BoxFuture;
use lumen_backend::RequestContext;
use lumen_openai_types::continuation::StreamPiece;
use lumen_openai_types::multipart::FormRequest;
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, CompletionChunk,
    CompletionRequest, CompletionResponse, EmbeddingRequest, EmbeddingResponse, Forwardable,
    HasModel, HasUsage, JsonAnswer, JsonRequest, RawExtra, RequestError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::answered::Answered;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::messages::MessagesCall;
use crate::responses::ResponsesCall;
use crate::stream::GatewayStream;
use lumen_anthropic_types::NativeEvent;
use lumen_openai_types::responses::NativeResponse;

/// How a request meets the response cache.
pub enum Caching {
    /// Cached when deterministic (temperature 0 or a seed) unless the model is widened.
    IfDeterministic {
        temperature: Option<f64>,
        seed: Option<i64>,
    },
    /// Always cacheable (embeddings, tokenizer calls).
    Always,
    /// Never cached: audio (an upload's answer is not worth keeping by its bytes) and the
    /// configured extra paths (Lumen cannot know whether they are deterministic).
    Never,
}

/// One operation of the API.
pub trait Operation: 'static {
    type Request: DeserializeOwned + HasModel + Send + 'static;
    type Answer: Serialize + HasModel + HasUsage + DeserializeOwned + Default + Send + 'static;
    /// The stream chunk; operations that never stream name any chunk type (`not_streamed`).
    type Chunk: Serialize
        + HasModel
        + HasUsage
        + StreamPiece
        + DeserializeOwned
        + Default
        + Send
        + 'static;

    /// The operation's part of the cache key: distinct wherever the answer's shape can differ
    /// (each rerank path has its own), so one shape is never served for another.
    const NAME: &'static str;

    /// The HTTP path (method `POST`) the operation is served at; the server's route table is
    /// read from these.
    const PATH: &'static str;

    /// The `model` field, resolved in place to the public id that was authorized.
    fn model(r: &mut Self::Request) -> &mut String {
        r.model_mut()
    }

    /// What the JSON types alone cannot check; `max_n` bounds the number of choices.
    fn validate(r: &Self::Request, max_n: u32) -> Result<(), RequestError>;

    /// A body as the pipeline reads it: parsed (the failing field named), then validated.
    fn read(body: &[u8], max_n: u32) -> Result<Self::Request, RequestError> {
        let r = lumen_openai_types::request::parse(body)?;
        Self::validate(&r, max_n)?;
        Ok(r)
    }

    /// [`read`](Self::read) from the body as received: an operation whose request keeps the
    /// client's bytes (chat, completions, embeddings: [`read_forwardable`]) shares them, so
    /// the engine is sent them rather than a re-serialisation.
    fn read_shared(body: &bytes::Bytes, max_n: u32) -> Result<Self::Request, RequestError> {
        Self::read(body, max_n)
    }

    /// Completion tokens to reserve per answer (`None`: the configured default).
    fn completion_budget(_r: &Self::Request) -> Option<u32> {
        Some(0)
    }

    /// How many answers the completion budget is spent on: every choice (`n`, `best_of`) of
    /// every prompt. The reservation is the budget times this, so `n: 128` cannot be admitted
    /// on the price of one answer.
    fn choices(_r: &Self::Request) -> u64 {
        1
    }

    /// Whether the call is charged tokens (TPM, quotas). Tokenizer calls run no model: they
    /// count as requests only.
    const BILLS_TOKENS: bool = true;

    /// The largest body this operation reads (413 beyond), from `server.max_body_bytes`
    /// (`all`) and `server.max_tokenizer_body_bytes` (`unbilled`). An operation charged no
    /// tokens gets the smaller cap: a key limited only by tokens could otherwise send the
    /// largest bodies Lumen reads, for nothing but a request each.
    fn max_body_bytes(all: usize, unbilled: usize) -> usize {
        if Self::BILLS_TOKENS {
            all
        } else {
            unbilled.min(all)
        }
    }

    fn streams(_r: &Self::Request) -> bool {
        false
    }

    fn caching(r: &Self::Request) -> Caching;

    /// The request as cached: everything that can change the answer, nothing that cannot.
    fn canonical(r: &Self::Request) -> Option<Vec<u8>>;

    fn call<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>>;

    /// Only called when [`streams`](Self::streams) is true.
    fn stream<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>>;
}

/// `n` and vLLM's `best_of` (read from the unknown fields, where it stays) are both bounded by
/// `max_n`: each is that many sequences generated, so each multiplies what a request costs.
fn check_n(n: Option<u32>, extra: &RawExtra, max: u32) -> Result<(), RequestError> {
    if let Some(n) = n.filter(|n| *n > max) {
        return Err(RequestError::invalid(
            format!("{n} is greater than the maximum of {max} - 'n'"),
            "n",
        ));
    }
    match best_of(extra) {
        Err(()) => Err(RequestError::invalid(
            format!("Invalid value for 'best_of': expected an integer from 1 to {max}."),
            "best_of",
        )),
        Ok(Some(b)) if b == 0 || b > u64::from(max) => Err(RequestError::invalid(
            format!("Invalid value for 'best_of': expected an integer from 1 to {max}."),
            "best_of",
        )),
        Ok(_) => Ok(()),
    }
}

/// `best_of` when present (`null` counts as absent); `Err` when it is not a whole number.
fn best_of(extra: &RawExtra) -> Result<Option<u64>, ()> {
    match extra.get("best_of") {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str::<u64>(raw.get())
            .map(Some)
            .map_err(|_| ()),
    }
}

/// Sequences the engine generates per prompt: `n`, or `best_of` when larger (vLLM generates
/// `best_of` and returns the best `n`). Validated first, so both are within `max_n`.
fn sequences(n: Option<u32>, extra: &RawExtra) -> u64 {
    let n = u64::from(n.unwrap_or(1).max(1));
    n.max(best_of(extra).ok().flatten().unwrap_or(1))
}

/// [`Operation::read_shared`] of a request that keeps the client's bytes
/// ([`lumen_openai_types::request::parse_shared`]).
fn read_forwardable<O>(body: &bytes::Bytes, max_n: u32) -> Result<O::Request, RequestError>
where
    O: Operation,
    O::Request: Forwardable,
{
    let r = lumen_openai_types::request::parse_shared(body)?;
    O::validate(&r, max_n)?;
    Ok(r)
}

fn not_streamed<'a, T: Send + 'static>() -> BoxFuture<'a, Result<GatewayStream<T>, GatewayError>> {
    Box::pin(std::future::ready(Err(GatewayError::Backend(
        lumen_backend::BackendError::Unavailable {
            reason: "this endpoint does not stream".to_owned(),
            retry_after: None,
        },
    ))))
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Copy)]
pub struct Chat;

impl Operation for Chat {
    type Request = ChatCompletionRequest;
    type Answer = ChatCompletionResponse;
    type Chunk = ChatCompletionChunk;
    const NAME: &'static str = "chat";
    const PATH: &'static str = "/v1/chat/completions";

    fn validate(r: &Self::Request, max_n: u32) -> Result<(), RequestError> {
        r.validate()?;
        check_n(r.n, &r.extra, max_n)
    }

    fn read_shared(body: &bytes::Bytes, max_n: u32) -> Result<Self::Request, RequestError> {
        read_forwardable::<Self>(body, max_n)
    }

    fn completion_budget(r: &Self::Request) -> Option<u32> {
        r.max_completion_tokens.or(r.max_tokens)
    }

    fn choices(r: &Self::Request) -> u64 {
        sequences(r.n, &r.extra)
    }

    fn streams(r: &Self::Request) -> bool {
        r.is_stream()
    }

    fn caching(r: &Self::Request) -> Caching {
        Caching::IfDeterministic {
            temperature: r.temperature,
            seed: r.seed,
        }
    }

    fn canonical(r: &Self::Request) -> Option<Vec<u8>> {
        canonical_chat(r)
    }

    fn call<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>> {
        Box::pin(core.chat_answered(r, cx))
    }

    fn stream<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>> {
        Box::pin(core.chat_stream(r, cx))
    }
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Copy)]
pub struct Completions;

impl Operation for Completions {
    type Request = CompletionRequest;
    type Answer = CompletionResponse;
    type Chunk = CompletionChunk;
    const NAME: &'static str = "completions";
    const PATH: &'static str = "/v1/completions";

    fn validate(r: &Self::Request, max_n: u32) -> Result<(), RequestError> {
        r.validate()?;
        check_n(r.n, &r.extra, max_n)
    }

    fn read_shared(body: &bytes::Bytes, max_n: u32) -> Result<Self::Request, RequestError> {
        read_forwardable::<Self>(body, max_n)
    }

    fn completion_budget(r: &Self::Request) -> Option<u32> {
        r.max_tokens
    }

    /// Every prompt of a batch is answered `n` (or `best_of`) times.
    fn choices(r: &Self::Request) -> u64 {
        r.prompt.count().saturating_mul(sequences(r.n, &r.extra))
    }

    fn streams(r: &Self::Request) -> bool {
        r.is_stream()
    }

    fn caching(r: &Self::Request) -> Caching {
        Caching::IfDeterministic {
            temperature: r.temperature,
            seed: r.seed,
        }
    }

    fn canonical(r: &Self::Request) -> Option<Vec<u8>> {
        canonical_completion(r)
    }

    fn call<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>> {
        Box::pin(core.completions_answered(r, cx))
    }

    fn stream<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>> {
        Box::pin(core.completions_stream(r, cx))
    }
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Copy)]
pub struct Embeddings;

impl Operation for Embeddings {
    type Request = EmbeddingRequest;
    type Answer = EmbeddingResponse;
    type Chunk = CompletionChunk;
    const NAME: &'static str = "embeddings";
    const PATH: &'static str = "/v1/embeddings";

    fn validate(r: &Self::Request, _max_n: u32) -> Result<(), RequestError> {
        r.validate()
    }

    fn read_shared(body: &bytes::Bytes, max_n: u32) -> Result<Self::Request, RequestError> {
        read_forwardable::<Self>(body, max_n)
    }

    fn caching(_r: &Self::Request) -> Caching {
        Caching::Always
    }

    fn canonical(r: &Self::Request) -> Option<Vec<u8>> {
        let mut c = r.clone();
        c.user = None;
        serde_json::to_vec(&c).ok()
    }

    fn call<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>> {
        Box::pin(core.embeddings_answered(r, cx))
    }

    fn stream<'a>(
        _core: &'a Gateway,
        _r: Self::Request,
        _cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>> {
        not_streamed()
    }
}

/// `POST /v1/messages`: Anthropic's Messages API. Each attempt forwards the client's body to
/// an engine that serves the API itself, or translates it to a chat completion for one that
/// does not ([`crate::messages`]); the answer is a `message`, the stream Anthropic's events,
/// billed by their `message_start` and `message_delta` usage on both paths.
#[derive(Debug, Clone, Copy)]
pub struct Messages;

impl Operation for Messages {
    type Request = MessagesCall;
    type Answer = NativeEvent;
    type Chunk = NativeEvent;
    const NAME: &'static str = "messages";
    const PATH: &'static str = "/v1/messages";

    /// The translation is what routing and the limits read; it must be a valid chat request.
    fn validate(r: &Self::Request, max_n: u32) -> Result<(), RequestError> {
        Chat::validate(&r.chat, max_n)
    }

    fn completion_budget(r: &Self::Request) -> Option<u32> {
        Chat::completion_budget(&r.chat)
    }

    fn streams(r: &Self::Request) -> bool {
        r.stream
    }

    fn caching(r: &Self::Request) -> Caching {
        Chat::caching(&r.chat)
    }

    /// The translation holds everything that can change the answer, in one canonical form.
    fn canonical(r: &Self::Request) -> Option<Vec<u8>> {
        canonical_chat(&r.chat)
    }

    fn call<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>> {
        Box::pin(core.messages_answered(r, cx))
    }

    fn stream<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>> {
        Box::pin(core.messages_stream(r, cx))
    }
}

/// `POST /v1/responses` on engines that serve OpenAI's Responses API themselves: the client's
/// body forwarded ([`crate::responses`]), the engine's answer or events relayed, billed by
/// their Responses usage. Never cached: the engine keeps each response under its own id, and
/// a cached copy would name a response no engine holds for this request.
#[derive(Debug, Clone, Copy)]
pub struct NativeResponses;

impl Operation for NativeResponses {
    type Request = ResponsesCall;
    type Answer = NativeResponse;
    type Chunk = NativeResponse;
    const NAME: &'static str = "responses";
    const PATH: &'static str = "/v1/responses";

    /// The engine checks the body; the gateway read what it needs when parsing.
    fn validate(_r: &Self::Request, _max_n: u32) -> Result<(), RequestError> {
        Ok(())
    }

    fn completion_budget(r: &Self::Request) -> Option<u32> {
        r.max_output_tokens
    }

    fn streams(r: &Self::Request) -> bool {
        r.stream
    }

    fn caching(_r: &Self::Request) -> Caching {
        Caching::IfDeterministic {
            temperature: None,
            seed: None,
        }
    }

    fn canonical(_r: &Self::Request) -> Option<Vec<u8>> {
        None
    }

    fn call<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>> {
        Box::pin(core.responses_answered(r, cx))
    }

    fn stream<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>> {
        Box::pin(core.responses_stream(r, cx))
    }
}

/// A [`JsonRequest`] member that must be present, as OpenAI names a missing one.
fn require(r: &JsonRequest, field: &str) -> Result<(), RequestError> {
    if r.extra.contains_key(field) {
        Ok(())
    } else {
        Err(RequestError {
            message: format!("Missing required parameter: '{field}'."),
            param: Some(field.to_owned()),
            code: Some("missing_required_parameter"),
        })
    }
}

macro_rules! json_endpoint {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $path:literal, bills = $bills:literal, validate = $validate:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;

        impl Operation for $ty {
            type Request = JsonRequest;
            type Answer = JsonAnswer;
            type Chunk = CompletionChunk;
            const NAME: &'static str = $name;
            const PATH: &'static str = $path;
            const BILLS_TOKENS: bool = $bills;

            fn validate(r: &Self::Request, _max_n: u32) -> Result<(), RequestError> {
                let check: fn(&JsonRequest) -> Result<(), RequestError> = $validate;
                check(r)
            }

            /// Deterministic: the same request gives the same answer.
            fn caching(_r: &Self::Request) -> Caching {
                Caching::Always
            }

            fn canonical(r: &Self::Request) -> Option<Vec<u8>> {
                serde_json::to_vec(r).ok()
            }

            fn call<'a>(
                core: &'a Gateway,
                r: Self::Request,
                cx: &'a RequestContext,
            ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>> {
                Box::pin(core.call_answered($path, r, cx))
            }

            fn stream<'a>(
                _core: &'a Gateway,
                _r: Self::Request,
                _cx: &'a RequestContext,
            ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>> {
                not_streamed()
            }
        }
    };
}

json_endpoint!(
    /// `POST /tokenize` (vLLM): a `prompt`, or chat `messages`, to token ids. Lumen speaks vLLM's
    /// shape whatever the engine (a llama.cpp backend's is translated in lumen-backend-vllm), so
    /// llama.cpp's own `content` is refused with a pointer to `prompt`.
    Tokenize, "tokenize", "/tokenize", bills = false,
    validate = |r| {
        if r.extra.contains_key("messages") || r.extra.contains_key("prompt") {
            Ok(())
        } else if r.extra.contains_key("content") {
            Err(RequestError {
                message: "Missing required parameter: 'prompt'. /tokenize takes vLLM's body \
                          ('prompt', or chat 'messages'), whichever engine serves the model; \
                          llama.cpp's 'content' is not accepted."
                    .to_owned(),
                param: Some("prompt".to_owned()),
                code: Some("missing_required_parameter"),
            })
        } else {
            require(r, "prompt")
        }
    }
);

json_endpoint!(
    /// `POST /detokenize` (vLLM): token ids to text.
    Detokenize, "detokenize", "/detokenize", bills = false,
    validate = |r| require(r, "tokens")
);

json_endpoint!(
    /// `POST /v1/rerank` (vLLM, Jina's shape): documents ordered by relevance to a query.
    /// Billed by the engine's `usage.total_tokens`.
    Rerank, "rerank", "/v1/rerank", bills = true,
    validate = validate_rerank
);

json_endpoint!(
    /// `POST /rerank`: vLLM's first rerank path. Each rerank path goes to the same path on the
    /// engine, so an engine that answers each path in its own API's shape keeps doing so.
    RerankBare, "rerank /rerank", "/rerank", bills = true,
    validate = validate_rerank
);

json_endpoint!(
    /// `POST /v2/rerank`: Cohere's v2 API, for Cohere clients.
    RerankV2, "rerank /v2/rerank", "/v2/rerank", bills = true,
    validate = validate_rerank
);

json_endpoint!(
    /// `POST /v1/score` (vLLM): a relevance score per (`text_1`, `text_2`) pair, from a
    /// cross-encoder or an embedding model. Billed by the engine's `usage.total_tokens`; the
    /// engine checks the body's fields.
    Score, "score", "/v1/score", bills = true,
    validate = |_| Ok(())
);

json_endpoint!(
    /// `POST /score`: vLLM's first score path, kept as its own shape on the engine.
    ScoreBare, "score /score", "/score", bills = true,
    validate = |_| Ok(())
);

json_endpoint!(
    /// `POST /classify` (vLLM): a label and class probabilities per `input`.
    Classify, "classify", "/classify", bills = true,
    validate = |r| require(r, "input")
);

json_endpoint!(
    /// `POST /pooling` (vLLM): the pooled hidden states per `input` (or chat `messages`).
    Pooling, "pooling", "/pooling", bills = true,
    validate = |r| {
        if r.extra.contains_key("messages") {
            Ok(())
        } else {
            require(r, "input")
        }
    }
);

/// Which rerank descriptor serves a path ([`Rerank`], [`RerankBare`], [`RerankV2`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerankPath {
    V1,
    Bare,
    V2,
}

impl RerankPath {
    /// The descriptor of a rerank path; `/v1/rerank` for any other.
    pub fn of(path: &str) -> Self {
        match path {
            "/rerank" => Self::Bare,
            "/v2/rerank" => Self::V2,
            _ => Self::V1,
        }
    }
}

fn validate_rerank(r: &JsonRequest) -> Result<(), RequestError> {
    require(r, "query")?;
    require(r, "documents")?;
    match r.extra.get_as::<Vec<serde::de::IgnoredAny>>("documents") {
        Some(d) if !d.is_empty() => Ok(()),
        _ => Err(RequestError::invalid(
            "'documents' must be a non-empty array.",
            "documents",
        )),
    }
}

/// The request as cached: everything that can change the answer, nothing that cannot
/// (`stream`, `stream_options`, `user`). Serialised from borrowed parts (no copy of the request);
/// unknown fields are sorted by key when there are a few, so equal requests give equal bytes
/// whatever the field order (a body of thousands of unknown keys keeps its order: sorting it
/// would cost far more than the body).
fn canonical_chat(r: &ChatCompletionRequest) -> Option<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct Canonical<'a> {
        model: &'a str,
        messages: &'a lumen_openai_types::Messages,
        max_tokens: Option<u32>,
        max_completion_tokens: Option<u32>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        n: Option<u32>,
        seed: Option<i64>,
        extra: SortedExtra<'a>,
    }
    serde_json::to_vec(&Canonical {
        model: &r.model,
        messages: &r.messages,
        max_tokens: r.max_tokens,
        max_completion_tokens: r.max_completion_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        n: r.n,
        seed: r.seed,
        extra: SortedExtra(&r.extra),
    })
    .ok()
}

fn canonical_completion(r: &CompletionRequest) -> Option<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct Canonical<'a> {
        model: &'a str,
        prompt: &'a lumen_openai_types::Prompt,
        max_tokens: Option<u32>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        n: Option<u32>,
        seed: Option<i64>,
        extra: SortedExtra<'a>,
    }
    serde_json::to_vec(&Canonical {
        model: &r.model,
        prompt: &r.prompt,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        n: r.n,
        seed: r.seed,
        extra: SortedExtra(&r.extra),
    })
    .ok()
}

/// Unknown fields for the cache key: sorted by key when there are at most this many.
const SORTED_EXTRA: usize = 64;

struct SortedExtra<'a>(&'a lumen_openai_types::RawExtra);

impl serde::Serialize for SortedExtra<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut entries: Vec<_> = self.0.entries().take(SORTED_EXTRA + 1).collect();
        if entries.len() > SORTED_EXTRA {
            return self.0.serialize(s);
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(&k, v)?;
        }
        map.end()
    }
}

/// A form Lumen routes (the audio endpoints): the client's `multipart/form-data` body, read by
/// the server's scanner as it arrived. It is never deserialised: `Operation` asks for
/// `Deserialize` of every request, and a form is not JSON, so that refuses.
#[derive(Debug, Clone)]
pub struct FormCall(pub FormRequest);

impl HasModel for FormCall {
    fn model(&self) -> &str {
        &self.0.model
    }
    fn model_mut(&mut self) -> &mut String {
        &mut self.0.model
    }
}

impl<'de> serde::Deserialize<'de> for FormCall {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "a multipart form is read by the form scanner, not as JSON",
        ))
    }
}

macro_rules! form_endpoint {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $path:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;

        impl Operation for $ty {
            type Request = FormCall;
            type Answer = JsonAnswer;
            type Chunk = CompletionChunk;
            const NAME: &'static str = $name;
            const PATH: &'static str = $path;

            /// The server refuses `stream=true` before the pipeline (see `docs/audio.md`).
            fn validate(_r: &Self::Request, _max_n: u32) -> Result<(), RequestError> {
                Ok(())
            }

            /// The engine reports seconds of audio, not tokens: nothing is reserved ahead.
            fn completion_budget(_r: &Self::Request) -> Option<u32> {
                Some(0)
            }

            fn caching(_r: &Self::Request) -> Caching {
                Caching::Never
            }

            fn canonical(_r: &Self::Request) -> Option<Vec<u8>> {
                None
            }

            fn call<'a>(
                core: &'a Gateway,
                r: Self::Request,
                cx: &'a RequestContext,
            ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>> {
                Box::pin(core.form_answered($path, r.0, cx))
            }

            fn stream<'a>(
                _core: &'a Gateway,
                _r: Self::Request,
                _cx: &'a RequestContext,
            ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>> {
                not_streamed()
            }
        }
    };
}

form_endpoint!(
    /// `POST /v1/audio/transcriptions` (vLLM, OpenAI): speech to text in its language.
    Transcriptions, "transcriptions", "/v1/audio/transcriptions"
);

form_endpoint!(
    /// `POST /v1/audio/translations` (vLLM, OpenAI): speech to English text.
    Translations, "translations", "/v1/audio/translations"
);

/// A request to one of the configured extra JSON paths (`server.extra_json_paths`): the path
/// (from configuration only, interned once by the server) and the client's JSON.
#[derive(Debug, Clone)]
pub struct ExtraCall {
    pub path: &'static str,
    pub json: JsonRequest,
}

impl HasModel for ExtraCall {
    fn model(&self) -> &str {
        &self.json.model
    }
    fn model_mut(&mut self) -> &mut String {
        &mut self.json.model
    }
}

impl<'de> serde::Deserialize<'de> for ExtraCall {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "an extra path's request is built by the server with its path",
        ))
    }
}

/// `POST` on a configured extra path (an engine's own endpoint, `server.extra_json_paths`):
/// routed by the body's `model` to the same path on the engine, never streamed, never cached
/// (Lumen cannot know the endpoint is deterministic), billed by the answer's `usage` when it
/// has one. One descriptor serves every configured path: the path travels in the request,
/// so `PATH` is only the route table's placeholder.
#[derive(Debug, Clone, Copy)]
pub struct ExtraJson;

impl Operation for ExtraJson {
    type Request = ExtraCall;
    type Answer = JsonAnswer;
    type Chunk = CompletionChunk;
    const NAME: &'static str = "extra";
    const PATH: &'static str = "";

    fn validate(r: &Self::Request, _max_n: u32) -> Result<(), RequestError> {
        // Only an absent, `false` or `null` stream: an engine's validation may read `1` or
        // `"true"` as true too, and then stream to a path Lumen reads as one answer.
        match r.json.extra.get("stream").map(|v| v.get()) {
            None | Some("false" | "null") => Ok(()),
            Some(_) => Err(RequestError::invalid(
                format!(
                    "'stream' must be false or absent on {}: Lumen forwards configured extra \
                     paths as whole answers.",
                    r.path
                ),
                "stream",
            )),
        }
    }

    fn caching(_r: &Self::Request) -> Caching {
        Caching::Never
    }

    fn canonical(_r: &Self::Request) -> Option<Vec<u8>> {
        None
    }

    fn call<'a>(
        core: &'a Gateway,
        r: Self::Request,
        cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Answered<Self::Answer>, GatewayError>> {
        Box::pin(core.call_answered(r.path, r.json, cx))
    }

    fn stream<'a>(
        _core: &'a Gateway,
        _r: Self::Request,
        _cx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GatewayStream<Self::Chunk>, GatewayError>> {
        not_streamed()
    }
}
