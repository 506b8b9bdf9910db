//! The simulator's HTTP surface: an accept loop and one handler per route.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;

use crate::config::{Faults, Flavor, MessagesApi};
use crate::engine::Pace;
use crate::text;
use crate::{Recorded, Simulator, State};

mod audio;
mod llamacpp;
mod messages;
mod pooling;
mod render;
mod responses;
mod sglang;

type Body = BoxBody<Bytes, io::Error>;

/// Serves until `shutdown` resolves. The caller owns the socket (tests bind port 0).
pub async fn serve(
    listener: TcpListener,
    sim: Simulator,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    // Whether accepting has been failing since the last success: warned once per episode, so
    // a process out of descriptors (the demo shares Lumen's) does not log a line every 10 ms.
    let mut failing = false;
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    failing = false;
                    conn
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    if !failing {
                        tracing::warn!(error = %e, "simulator out of descriptors; accepting again in 10 ms steps");
                    }
                    failing = true;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = sim.state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Counts a request as running until dropped, so cancellation shows in [`Simulator::running`].
struct Running(Arc<State>);

impl Running {
    fn new(state: &Arc<State>) -> Self {
        state.running.fetch_add(1, Ordering::SeqCst);
        Self(state.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Deserialize)]
struct SimRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    /// Choices to generate (each the same deterministic answer).
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOpts>,
    #[serde(default)]
    sim: Option<Faults>,
    #[serde(default, borrow)]
    messages: Option<&'a RawValue>,
    #[serde(default, borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tools: Option<&'a RawValue>,
    /// Anthropic's system prompt (Messages only).
    #[serde(default, borrow)]
    system: Option<&'a RawValue>,
    #[serde(default)]
    input: Option<serde_json::Value>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    continue_final_message: Option<bool>,
    #[serde(default)]
    add_generation_prompt: Option<bool>,
}

#[derive(Deserialize, Default)]
struct StreamOpts {
    #[serde(default)]
    include_usage: Option<bool>,
    /// vLLM's: `usage` (so far) in every chunk, not only at the end.
    #[serde(default)]
    continuous_usage_stats: Option<bool>,
}

/// What a request path asks for.
#[derive(Clone, Copy)]
enum Route {
    Generate(Kind),
    Rerank,
    /// vLLM's `/score`, `/classify`, `/pooling`.
    Pooling(pooling::Pooling),
    Tokenize,
    Detokenize,
    /// vLLM's `POST /v1/chat/completions/render`: the prompt's token ids, no model run.
    Render,
    /// llama.cpp only: chat messages through the template, as text.
    ApplyTemplate,
    /// Anthropic's `/v1/messages/count_tokens`.
    CountTokens,
    /// vLLM's `/v1/audio/transcriptions` (`false`) and `/v1/audio/translations` (`true`).
    Audio(bool),
    /// `/v1/sim/echo`: an engine-specific JSON path.
    Echo,
    /// OpenAI's `POST /v1/responses`.
    Responses,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
    Embedding,
    /// Anthropic's Messages API.
    Messages,
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = &state.cfg.api_key {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|v| v == key);
        if !ok {
            return Ok(json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"Unauthorized"}"#.into(),
            ));
        }
    }
    let route = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => return Ok(health(&state, &req)),
        (&Method::GET, "/v1/models") => {
            record(&state, &req, Bytes::new());
            return Ok(models(&state));
        }
        (&Method::GET, "/metrics") => return Ok(metrics(&state)),
        (&Method::GET, "/get_load") if state.cfg.sglang_get_load => {
            record(&state, &req, Bytes::new());
            return Ok(sglang::get_load(&state));
        }
        (&Method::POST, "/v1/responses") if state.cfg.responses_api => Route::Responses,
        (_, path) if state.cfg.responses_api && path.starts_with("/v1/responses/") => {
            record(&state, &req, Bytes::new());
            return Ok(responses::stored(&state, req.method(), path)
                .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "Not Found", false)));
        }
        (&Method::POST, "/v1/chat/completions") => Route::Generate(Kind::Chat),
        (&Method::POST, "/v1/completions") => Route::Generate(Kind::Completion),
        (&Method::POST, "/v1/embeddings") => Route::Generate(Kind::Embedding),
        (&Method::POST, "/v1/messages") if state.cfg.messages_api != MessagesApi::None => {
            Route::Generate(Kind::Messages)
        }
        (&Method::POST, "/v1/messages/count_tokens")
            if state.cfg.messages_api != MessagesApi::None =>
        {
            Route::CountTokens
        }
        // vLLM serves all three; Jina's clients use /v1, Cohere's v2 API /v2.
        (&Method::POST, "/rerank" | "/v1/rerank" | "/v2/rerank") => Route::Rerank,
        (&Method::POST, "/score" | "/v1/score") => Route::Pooling(pooling::Pooling::Score),
        (&Method::POST, "/classify") => Route::Pooling(pooling::Pooling::Classify),
        (&Method::POST, "/pooling") => Route::Pooling(pooling::Pooling::Pool),
        (&Method::POST, "/tokenize") => Route::Tokenize,
        (&Method::POST, "/v1/chat/completions/render") if state.cfg.flavor == Flavor::Vllm => {
            Route::Render
        }
        (&Method::POST, "/v1/audio/transcriptions") => Route::Audio(false),
        (&Method::POST, "/v1/audio/translations") => Route::Audio(true),
        (&Method::POST, "/v1/sim/echo") => Route::Echo,
        (&Method::POST, "/detokenize") => Route::Detokenize,
        (&Method::POST, "/apply-template") if state.cfg.flavor == Flavor::LlamaCpp => {
            Route::ApplyTemplate
        }
        (&Method::GET, "/props") if state.cfg.flavor == Flavor::LlamaCpp => {
            record(&state, &req, Bytes::new());
            return Ok(llamacpp::props(&state));
        }
        _ => return Ok(error(StatusCode::NOT_FOUND, "Not Found", false)),
    };
    // Rerank runs the model like an embedding does; the tokenizer endpoints never reach it.
    if !matches!(
        route,
        Route::Tokenize
            | Route::Detokenize
            | Route::Render
            | Route::ApplyTemplate
            | Route::CountTokens
    ) {
        state.generation_requests.fetch_add(1, Ordering::Relaxed);
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "could not read body", false)),
    };
    let parts = Request::from_parts(parts, ());
    if state.cfg.record > 0 {
        record(&state, &parts, body.clone());
    }
    let parts = parts.into_parts().0;
    if matches!(route, Route::Generate(Kind::Messages) | Route::CountTokens) {
        if !messages::served(&state, &body) {
            return Ok(error(StatusCode::NOT_FOUND, "Not Found", false));
        }
        let resp = match route {
            Route::CountTokens => messages::count_tokens(state, &body).await,
            _ => generate(state, Kind::Messages, &body).await,
        };
        return Ok(messages::anthropic_errors(resp).await);
    }
    Ok(match route {
        Route::Generate(kind) => generate(state, kind, &body).await,
        Route::Rerank => rerank(state, &body).await,
        Route::Pooling(what) => pooling::answer(state, what, &body).await,
        Route::Tokenize => match state.cfg.flavor {
            Flavor::Vllm => tokenize(state, &body).await,
            Flavor::LlamaCpp => llamacpp::tokenize(state, &body).await,
        },
        Route::Detokenize => match state.cfg.flavor {
            Flavor::Vllm => detokenize(state, &body).await,
            Flavor::LlamaCpp => llamacpp::detokenize(state, &body).await,
        },
        Route::ApplyTemplate => llamacpp::apply_template(state, &body).await,
        Route::Render => render::chat(state, &body).await,
        Route::Audio(translate) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            audio::transcribe(&state, content_type, &body, translate)
        }
        Route::Echo => audio::echo(&state, &body),
        Route::Responses => responses::create(state, &body).await,
        // Answered above.
        Route::CountTokens => error(StatusCode::NOT_FOUND, "Not Found", false),
    })
}

fn record<B>(state: &State, req: &Request<B>, body: Bytes) {
    if state.cfg.record == 0 {
        return;
    }
    let rec = Recorded {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        at: tokio::time::Instant::now(),
    };
    let mut records = state.records.lock().unwrap_or_else(PoisonError::into_inner);
    if records.len() == state.cfg.record {
        records.pop_front();
    }
    records.push_back(rec);
}

async fn generate(state: Arc<State>, kind: Kind, body: &[u8]) -> Response<Body> {
    let req: SimRequest<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON: {e}"),
                false,
            );
        }
    };
    let (faults, model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(state.cfg.default_max_tokens);
    if max_tokens > state.cfg.max_model_len {
        let msg = format!(
            "This model's maximum context length is {} tokens. However, you requested {max_tokens} tokens.",
            state.cfg.max_model_len
        );
        return error(StatusCode::BAD_REQUEST, &msg, faults.flat_error);
    }
    let prompt_raw = match kind {
        Kind::Chat | Kind::Messages => req.messages,
        Kind::Completion => req.prompt,
        Kind::Embedding => None,
    };
    if kind != Kind::Embedding && prompt_raw.is_none() {
        let field = if matches!(kind, Kind::Chat | Kind::Messages) {
            "messages"
        } else {
            "prompt"
        };
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Field required: {field}"),
            faults.flat_error,
        );
    }
    // A final assistant message is an answer to continue (a prefill), from where it stops.
    let prefill = match (kind, req.messages) {
        (Kind::Chat | Kind::Messages, Some(m)) => match final_assistant(m) {
            Ok(p) => p,
            Err(msg) => return error(StatusCode::BAD_REQUEST, &msg, faults.flat_error),
        },
        _ => None,
    };
    let continues = req.continue_final_message == Some(true);
    let vllm = state.cfg.flavor == Flavor::Vllm;
    if vllm && continues && req.add_generation_prompt != Some(false) {
        let msg = "Cannot set both `continue_final_message` and `add_generation_prompt` to True.";
        return error(StatusCode::BAD_REQUEST, msg, faults.flat_error);
    }
    if vllm && continues && prefill.is_none() {
        let msg = "continue_final_message is set, but the last message is not the assistant's.";
        return error(StatusCode::BAD_REQUEST, msg, faults.flat_error);
    }
    if faults.reject_prefill && prefill.is_some() {
        let msg = "This model does not support assistant message prefill.";
        return error(StatusCode::BAD_REQUEST, msg, faults.flat_error);
    }
    let start = match (kind, &prefill, req.prompt) {
        (Kind::Chat | Kind::Messages, Some(text), _) => text::continued_from(text),
        (Kind::Completion, _, Some(p)) => serde_json::from_str::<&str>(p.get())
            .map(text::continued_from)
            .unwrap_or(0),
        _ => 0,
    };
    let _running = Running::new(&state);
    if faults.hang {
        std::future::pending::<()>().await;
    }
    let ttft = faults
        .ttft_ms
        .map(Duration::from_millis)
        .unwrap_or(state.cfg.ttft);
    let itl = faults
        .itl_ms
        .map(Duration::from_millis)
        .unwrap_or(state.cfg.itl);
    // With the engine model on, the request joins its queue; time comes from its steps.
    let (mut pace, prompt_tokens) = match &state.engine {
        Some(engine) if kind != Kind::Embedding => {
            let messages = req
                .messages
                .filter(|_| matches!(kind, Kind::Chat | Kind::Messages));
            let prompt = req.prompt.filter(|_| kind == Kind::Completion);
            match engine.admit(messages, req.tools, prompt, max_tokens, start) {
                Ok((ticket, n)) => (Pace::Engine(ticket), n),
                Err(msg) => return error(StatusCode::BAD_REQUEST, &msg, faults.flat_error),
            }
        }
        _ => (
            Pace::Fixed,
            text::estimate_tokens(
                prompt_raw.map_or(0, |r| r.get().len()) + req.system.map_or(0, |s| s.get().len()),
            ),
        ),
    };
    let mut g = Generation {
        id: state.requests.load(Ordering::Relaxed),
        created: now(),
        model,
        kind,
        start,
        n: answer_len(max_tokens, state.cfg.answer_tokens),
        // Anthropic has no `n`.
        choices: if kind == Kind::Messages {
            1
        } else {
            req.n.unwrap_or(1).max(1)
        },
        finish: if (req.max_tokens.is_some() || req.max_completion_tokens.is_some())
            && state.cfg.answer_tokens.is_none_or(|a| a >= max_tokens)
        {
            "length"
        } else {
            "stop"
        },
        prompt_tokens,
        cached_tokens: None,
        // llama.cpp's quirk: a prefill it was not told to continue comes back first.
        repeat: prefill.filter(|_| !vllm && !continues && kind != Kind::Messages),
        continuous: false,
    };
    if kind == Kind::Embedding {
        return embeddings(
            &state,
            &g,
            req.input.as_ref(),
            req.encoding_format.as_deref(),
        );
    }
    if req.stream.unwrap_or(false) {
        let opts = req.stream_options.unwrap_or_default();
        let usage = opts.include_usage.unwrap_or(false);
        // vLLM sends per-chunk usage only when the final usage is asked for too.
        g.continuous = vllm && usage && opts.continuous_usage_stats == Some(true);
        return stream(state.clone(), g, (pace, ttft, itl), usage, faults, _running);
    }
    pace.wait_all(ttft + itl * max_tokens.saturating_sub(1))
        .await;
    g.cached_tokens = pace.cached_tokens();
    state
        .prompt_tokens
        .fetch_add(g.prompt_tokens, Ordering::Relaxed);
    state
        .generation_tokens
        .fetch_add(g.completion_tokens(), Ordering::Relaxed);
    state.success.fetch_add(1, Ordering::Relaxed);
    json(StatusCode::OK, g.full_response())
}

/// The text of the last message when it is the assistant's; `Err` for messages that are not an
/// array of messages.
fn final_assistant(messages: &RawValue) -> Result<Option<String>, String> {
    // Most requests end with the user's turn: skip the parse when no assistant is named.
    if !messages.get().contains("assistant") {
        return Ok(None);
    }
    let all: Vec<ChatMessage> =
        serde_json::from_str(messages.get()).map_err(|e| format!("invalid messages: {e}"))?;
    Ok(all
        .into_iter()
        .last()
        .filter(|m| m.role == "assistant")
        .map(|m| content_text(&m.content)))
}

/// The checks every POST makes before its own: injected faults first (so a fault fires whatever
/// else is wrong with the request), then the model, which defaults to the first served one.
fn admit(
    state: &State,
    sim: Option<&Faults>,
    model: Option<&str>,
) -> Result<(Faults, String), Reject> {
    let faults = effective_faults(state, model, sim);
    if let Some(status) = injected_status(state, &faults) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(Reject::new(status, "injected fault".to_owned(), &faults));
    }
    let model = match model {
        None | Some("") => state.cfg.models.first().cloned().unwrap_or_default(),
        Some(m) if state.cfg.models.iter().any(|s| s == m) => m.to_owned(),
        Some(m) => {
            let msg = format!("The model `{m}` does not exist.");
            return Err(Reject::new(StatusCode::NOT_FOUND, msg, &faults));
        }
    };
    Ok((faults, model))
}

/// Marks the request running, hangs if asked, then waits `delay`. The caller keeps the guard
/// until it has answered.
async fn start(state: &Arc<State>, faults: &Faults, delay: Duration) -> Running {
    let running = Running::new(state);
    if faults.hang {
        std::future::pending::<()>().await;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    running
}

/// A refusal, made into vLLM's error body only when answered, which keeps the `Result`s that
/// carry it small.
struct Reject {
    status: StatusCode,
    message: String,
    flat: bool,
    retry_after: Option<u64>,
}

impl Reject {
    fn new(status: StatusCode, message: String, faults: &Faults) -> Self {
        Self {
            status,
            message,
            flat: faults.flat_error,
            retry_after: faults.retry_after,
        }
    }

    fn response(self) -> Response<Body> {
        error_with(self.status, &self.message, self.flat, self.retry_after)
    }
}

fn effective_faults(state: &State, model: Option<&str>, per_request: Option<&Faults>) -> Faults {
    let global = state.faults.lock().unwrap_or_else(PoisonError::into_inner);
    let by_model = state
        .model_faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let model = model.and_then(|m| by_model.get(m));
    let base = match model {
        Some(m) => global.merged(m),
        None => global.clone(),
    };
    match per_request {
        Some(r) => base.merged(r),
        None if base.is_quiet() => Faults::default(),
        None => base.merged(&Faults::default()),
    }
}

/// Decides whether this request fails outright, consuming one `fail_next` if set.
fn injected_status(state: &State, faults: &Faults) -> Option<u16> {
    {
        let mut global = state.faults.lock().unwrap_or_else(PoisonError::into_inner);
        if global.fail_next > 0 {
            global.fail_next -= 1;
            return Some(global.fail_status.unwrap_or(503));
        }
    }
    if faults.error_rate > 0.0 {
        let n = state.requests.load(Ordering::Relaxed);
        if text::unit_from_counter(n) < faults.error_rate {
            return Some(faults.fail_status.unwrap_or(503));
        }
    }
    faults.status
}

struct Generation {
    id: u64,
    created: u64,
    model: String,
    kind: Kind,
    /// Index of the first token: a continued answer picks up where its prefill stops.
    start: u32,
    /// Tokens per choice.
    n: u32,
    /// Choices (`n` in the request), each the same answer.
    choices: u32,
    finish: &'static str,
    prompt_tokens: u64,
    /// Text sent before the answer, in the first content chunk of each choice, without
    /// counting as generated (llama.cpp's repeated prefill, [`Flavor::LlamaCpp`]).
    repeat: Option<String>,
    /// `usage` so far in every stream chunk (vLLM's `continuous_usage_stats`).
    continuous: bool,
    /// Prompt tokens the engine model found in its prefix cache (only it knows).
    cached_tokens: Option<u64>,
}

impl Generation {
    fn head(&self, out: &mut String, object: &str) {
        let prefix = match self.kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
            Kind::Embedding => "embd",
            Kind::Messages => "msg",
        };
        let _ = write!(
            out,
            r#"{{"id":"{prefix}-sim-{}","object":"{object}","created":{},"model":{},"#,
            self.id,
            self.created,
            json_str(&self.model)
        );
    }

    /// Tokens generated over all choices.
    fn completion_tokens(&self) -> u64 {
        u64::from(self.n) * u64::from(self.choices)
    }

    fn usage(&self, out: &mut String, completion: u64) {
        let _ = write!(
            out,
            r#""usage":{{"prompt_tokens":{},"total_tokens":{},"completion_tokens":{completion}"#,
            self.prompt_tokens,
            self.prompt_tokens + completion,
        );
        // As vLLM with --enable-prompt-tokens-details.
        if let Some(cached) = self.cached_tokens {
            let _ = write!(
                out,
                r#","prompt_tokens_details":{{"cached_tokens":{cached}}}"#
            );
        }
        out.push('}');
    }

    /// The answer's text, with the repeated prefill in front when there is one.
    fn text(&self, from: u32, to: u32) -> String {
        let mut text = String::new();
        if from == 0 {
            text.push_str(self.repeat.as_deref().unwrap_or(""));
        }
        text.push_str(&text::answer_from(self.start + from, to - from));
        text
    }

    fn full_response(&self) -> String {
        if self.kind == Kind::Messages {
            return messages::full_response(self);
        }
        let mut out = String::with_capacity(512);
        let text = json_str(&self.text(0, self.n));
        let (object, body) = match self.kind {
            Kind::Chat => (
                "chat.completion",
                format!(r#""message":{{"role":"assistant","content":{text},"tool_calls":[]}}"#),
            ),
            _ => ("text_completion", format!(r#""text":{text}"#)),
        };
        self.head(&mut out, object);
        out.push_str(r#""choices":["#);
        for c in 0..self.choices {
            if c > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                r#"{{"index":{c},{body},"logprobs":null,"finish_reason":"{}","stop_reason":null}}"#,
                self.finish
            );
        }
        out.push_str("],");
        self.usage(&mut out, self.completion_tokens());
        out.push('}');
        out
    }

    /// One SSE frame of choice `c`: tokens `from..to` of its answer, or (`None`) chat's
    /// role-only opening chunk.
    fn token_frame(&self, c: u32, span: Option<(u32, u32)>) -> Bytes {
        if self.kind == Kind::Messages {
            return messages::frame(self, span);
        }
        let mut out = String::with_capacity(256);
        out.push_str("data: ");
        let finish = match span {
            Some((_, to)) if to == self.n => format!("\"{}\"", self.finish),
            _ => "null".to_owned(),
        };
        let text = span.map(|(from, to)| self.text(from, to));
        match self.kind {
            Kind::Chat => {
                self.head(&mut out, "chat.completion.chunk");
                let delta = match &text {
                    None => r#"{"role":"assistant","content":""}"#.to_owned(),
                    Some(t) => format!(r#"{{"content":{}}}"#, json_str(t)),
                };
                let _ = write!(
                    out,
                    r#""choices":[{{"index":{c},"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]"#
                );
            }
            _ => {
                self.head(&mut out, "text_completion");
                let _ = write!(
                    out,
                    r#""choices":[{{"index":{c},"text":{},"logprobs":null,"finish_reason":{finish},"stop_reason":null}}]"#,
                    json_str(text.as_deref().unwrap_or(""))
                );
            }
        }
        if self.continuous {
            // vLLM counts the tokens this choice generated so far.
            out.push(',');
            self.usage(&mut out, u64::from(span.map_or(0, |(_, to)| to)));
        }
        out.push_str("}\n\n");
        Bytes::from(out)
    }

    fn usage_frame(&self) -> Bytes {
        if self.kind == Kind::Messages {
            return messages::end_frames(self);
        }
        let mut out = String::from("data: ");
        let object = if self.kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        self.head(&mut out, object);
        out.push_str(r#""choices":[],"#);
        self.usage(&mut out, self.completion_tokens());
        out.push_str("}\n\n");
        Bytes::from(out)
    }
}

enum Step {
    /// The pause before the next token (for the engine model, until it produced one).
    Wait(Duration),
    Frame(Bytes),
    /// The usage chunk, written when reached: the engine model's cached tokens are known only
    /// once the request was scheduled.
    Usage,
    Fail,
    /// Never send another byte; the connection stays open.
    Stall,
}

/// What the stream does when it reaches token `i`: nothing, or one of the injected faults.
fn fault_at(faults: &Faults, kind: Kind, i: u32) -> Option<Step> {
    if faults.drop_after == Some(i) {
        return Some(Step::Fail);
    }
    if faults.stall_after == Some(i) {
        return Some(Step::Stall);
    }
    if faults.garbage_after == Some(i) {
        return Some(Step::Frame(Bytes::from_static(
            b"data: {this is not json\n\n",
        )));
    }
    faults.error_after.filter(|at| *at == i).map(|_| {
        if kind == Kind::Messages {
            return Step::Frame(Bytes::from_static(messages::INJECTED_ERROR));
        }
        Step::Frame(Bytes::from_static(
            b"data: {\"error\":{\"object\":\"error\",\"message\":\"injected engine failure\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\ndata: [DONE]\n\n",
        ))
    })
}

/// What a stream keeps while it is being sent.
struct Live {
    _running: Running,
    pace: Pace,
    g: Generation,
}

fn stream(
    state: Arc<State>,
    g: Generation,
    (pace, ttft, itl): (Pace, Duration, Duration),
    include_usage: bool,
    faults: Faults,
    running: Running,
) -> Response<Body> {
    let per_chunk = faults.tokens_per_chunk.unwrap_or(1).max(1);
    let mut steps = Vec::with_capacity((g.n / per_chunk + 2) as usize * (g.choices as usize + 1));
    steps.push(Step::Wait(ttft));
    if matches!(g.kind, Kind::Chat | Kind::Messages) {
        steps.extend((0..g.choices).map(|c| Step::Frame(g.token_frame(c, None))));
    }
    let mut ended_early = false;
    // Tokens are generated one at a time (one inter-token latency each) and sent in groups of
    // `per_chunk`, or sooner when a fault cuts the stream.
    let mut from = 0;
    for i in 0..=g.n {
        let fault = (i < g.n).then(|| fault_at(&faults, g.kind, i)).flatten();
        if i > from && (i - from == per_chunk || i == g.n || fault.is_some()) {
            for c in 0..g.choices {
                steps.push(Step::Frame(g.token_frame(c, Some((from, i)))));
            }
            from = i;
        }
        if let Some(fault) = fault {
            steps.push(fault);
            ended_early = true;
            break;
        }
        if i > 0 && i < g.n {
            steps.push(Step::Wait(itl));
        }
    }
    if !ended_early {
        // Anthropic's stream always ends with the usage (`message_delta`).
        if include_usage || g.kind == Kind::Messages {
            steps.push(Step::Usage);
        }
        if !faults.no_done {
            let done: &'static [u8] = if g.kind == Kind::Messages {
                messages::MESSAGE_STOP
            } else {
                b"data: [DONE]\n\n"
            };
            steps.push(Step::Frame(Bytes::from_static(done)));
        }
    }
    let tokens = g.completion_tokens();
    let prompt = g.prompt_tokens;
    let done_state = state.clone();
    let live = Live {
        _running: running,
        pace,
        g,
    };
    let frames = futures::stream::unfold(
        (steps.into_iter(), live),
        move |(mut steps, mut live)| async move {
            loop {
                match steps.next()? {
                    Step::Wait(d) => live.pace.wait(d).await,
                    Step::Frame(b) => return Some((Ok(Frame::data(b)), (steps, live))),
                    Step::Usage => {
                        live.g.cached_tokens = live.pace.cached_tokens();
                        let frame = Frame::data(live.g.usage_frame());
                        return Some((Ok(frame), (steps, live)));
                    }
                    Step::Stall => std::future::pending::<()>().await,
                    Step::Fail => {
                        // Let hyper flush the tokens already produced (it flushes when the
                        // body is pending); otherwise a zero-latency stream would be dropped
                        // before its first byte left, which is a different fault.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        let err = io::Error::new(io::ErrorKind::ConnectionAborted, "injected drop");
                        return Some((Err(err), (steps, live)));
                    }
                }
            }
        },
    )
    .chain(futures::stream::once(async move {
        // Counted only once the whole stream was sent, as vLLM counts finished requests.
        if !ended_early {
            done_state
                .prompt_tokens
                .fetch_add(prompt, Ordering::Relaxed);
            done_state
                .generation_tokens
                .fetch_add(tokens, Ordering::Relaxed);
            done_state.success.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Frame::data(Bytes::new()))
    }));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn embeddings(
    state: &State,
    g: &Generation,
    input: Option<&serde_json::Value>,
    format: Option<&str>,
) -> Response<Body> {
    let texts: Vec<String> = match input {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) if items.iter().all(|i| i.is_number()) => {
            vec![serde_json::Value::Array(items.clone()).to_string()]
        }
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        _ => return error(StatusCode::BAD_REQUEST, "Field required: input", false),
    };
    let mut out = String::with_capacity(256 + texts.len() * state.cfg.embedding_dim * 12);
    g.head(&mut out, "list");
    out.push_str(r#""data":["#);
    let mut prompt_tokens = 0;
    for (i, t) in texts.iter().enumerate() {
        prompt_tokens += text::estimate_tokens(t.len());
        if i > 0 {
            out.push(',');
        }
        let v = text::embedding(t, state.cfg.embedding_dim);
        let vector = if format == Some("base64") {
            json_str(&text::base64_f32(&v))
        } else {
            serde_json::to_string(&v).unwrap_or_default()
        };
        let _ = write!(
            out,
            r#"{{"index":{i},"object":"embedding","embedding":{vector}}}"#
        );
    }
    let _ = write!(
        out,
        r#"],"usage":{{"prompt_tokens":{prompt_tokens},"total_tokens":{prompt_tokens},"completion_tokens":0}}}}"#
    );
    state
        .prompt_tokens
        .fetch_add(prompt_tokens, Ordering::Relaxed);
    state.success.fetch_add(1, Ordering::Relaxed);
    json(StatusCode::OK, out)
}

/// vLLM's `/tokenize` body: the completion form (`prompt`) or the chat form (`messages`, which wins
/// when both are present).
#[derive(Deserialize)]
struct TokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    /// vLLM's defaults: true for a prompt, false for messages (the template carries them).
    #[serde(default)]
    add_special_tokens: Option<bool>,
    #[serde(default)]
    add_generation_prompt: Option<bool>,
    #[serde(default)]
    return_token_strs: Option<bool>,
    #[serde(default)]
    sim: Option<Faults>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    /// A string, an array of parts (their `text`s are joined), or null.
    #[serde(default)]
    content: serde_json::Value,
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    tokens: Option<Vec<u32>>,
    #[serde(default)]
    sim: Option<Faults>,
}

#[derive(Deserialize)]
struct RerankRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    documents: Option<Vec<Document>>,
    /// 0, negative or absent: every document (vLLM's rule).
    #[serde(default)]
    top_n: Option<i64>,
    /// Cohere's switch; vLLM always returns the documents, hence the default.
    #[serde(default)]
    return_documents: Option<bool>,
    #[serde(default)]
    sim: Option<Faults>,
}

/// A rerank document: a plain string or Cohere's `{"text": ...}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Text(String),
    Object { text: String },
}

impl Document {
    fn text(&self) -> &str {
        match self {
            Document::Text(t) | Document::Object { text: t } => t,
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Reject> {
    serde_json::from_slice(body).map_err(|e| Reject {
        status: StatusCode::BAD_REQUEST,
        message: format!("invalid JSON: {e}"),
        flat: false,
        retry_after: None,
    })
}

fn field_required(field: &str, faults: &Faults) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Field required: {field}"),
        faults.flat_error,
    )
}

/// The tokenizer endpoints run no model, so only an explicit `ttft_ms` fault delays them, not
/// the configured time to first token.
fn tokenizer_delay(faults: &Faults) -> Duration {
    faults.ttft_ms.map_or(Duration::ZERO, Duration::from_millis)
}

/// A message's text: a string, or the `text` of each part joined.
fn content_text(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text")?.as_str())
            .collect(),
        _ => String::new(),
    }
}

/// The simulator's chat template, one `role: content` line per message and `assistant: ` to
/// prompt an answer: plain text, so it tokenizes and detokenizes like any prompt.
fn chat_prompt(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&m.role);
        out.push_str(": ");
        out.push_str(&content_text(&m.content));
        out.push('\n');
    }
    if add_generation_prompt {
        out.push_str("assistant: ");
    }
    out
}

async fn tokenize(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: TokenizeRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, _model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let (prompt, special) = match (&req.messages, &req.prompt) {
        (Some(messages), _) => (
            Cow::Owned(chat_prompt(
                messages,
                req.add_generation_prompt.unwrap_or(true),
            )),
            req.add_special_tokens.unwrap_or(false),
        ),
        (None, Some(prompt)) => (
            Cow::Borrowed(prompt.as_str()),
            req.add_special_tokens.unwrap_or(true),
        ),
        (None, None) => return field_required("prompt", &faults),
    };
    let _running = start(&state, &faults, tokenizer_delay(&faults)).await;
    let mut ids = Vec::with_capacity(prompt.len() / 2 + 1);
    if special {
        ids.push(text::BOS);
    }
    text::encode(&prompt, |id| ids.push(id));
    let token_strs = if req.return_token_strs.unwrap_or(false) {
        let strs: Vec<String> = ids.iter().map(|&id| text::token_str(id)).collect();
        serde_json::to_string(&strs).unwrap_or_else(|_| "[]".to_owned())
    } else {
        "null".to_owned()
    };
    let tokens = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
    json(
        StatusCode::OK,
        format!(
            r#"{{"count":{},"max_model_len":{},"tokens":{tokens},"token_strs":{token_strs}}}"#,
            ids.len(),
            state.cfg.max_model_len
        ),
    )
}

async fn detokenize(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: DetokenizeRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, _model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let Some(tokens) = req.tokens else {
        return field_required("tokens", &faults);
    };
    let prompt = match text::decode(&tokens) {
        Ok(p) => p,
        Err(id) => {
            let msg = format!(
                "Token id {id} is out of vocabulary (size {}).",
                text::VOCAB_SIZE
            );
            return error(StatusCode::BAD_REQUEST, &msg, faults.flat_error);
        }
    };
    let _running = start(&state, &faults, tokenizer_delay(&faults)).await;
    json(
        StatusCode::OK,
        format!(r#"{{"prompt":{}}}"#, json_str(&prompt)),
    )
}

async fn rerank(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: RerankRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let Some(query) = req.query else {
        return field_required("query", &faults);
    };
    let Some(documents) = req.documents else {
        return field_required("documents", &faults);
    };
    if documents.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "documents must not be empty",
            faults.flat_error,
        );
    }
    let ttft = faults.ttft_ms.map_or(state.cfg.ttft, Duration::from_millis);
    let _running = start(&state, &faults, ttft).await;
    let query_words = text::words(&query);
    let mut scored: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| (i, text::relevance(&query_words, d.text())))
        .collect();
    // Stable, so equal scores keep document order.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    let keep = match req.top_n {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => scored.len(),
    };
    scored.truncate(keep);
    let total_tokens = text::count_tokens(&query)
        + documents
            .iter()
            .map(|d| text::count_tokens(d.text()))
            .sum::<u64>();
    let with_documents = req.return_documents.unwrap_or(true);
    let mut out = String::with_capacity(128 + scored.len() * 64);
    let _ = write!(
        out,
        r#"{{"id":"rerank-{}","model":{},"usage":{{"total_tokens":{total_tokens}}},"results":["#,
        state.requests.load(Ordering::Relaxed),
        json_str(&model)
    );
    for (n, (i, score)) in scored.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"{{"index":{i},"#);
        if with_documents {
            let text = documents.get(*i).map_or("", Document::text);
            let _ = write!(out, r#""document":{{"text":{}}},"#, json_str(text));
        }
        let score = serde_json::to_string(score).unwrap_or_else(|_| "0.0".to_owned());
        let _ = write!(out, r#""relevance_score":{score}}}"#);
    }
    out.push_str("]}");
    state
        .prompt_tokens
        .fetch_add(total_tokens, Ordering::Relaxed);
    state.success.fetch_add(1, Ordering::Relaxed);
    json(StatusCode::OK, out)
}

fn health<B>(state: &State, req: &Request<B>) -> Response<Body> {
    record(state, req, Bytes::new());
    let status = state
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .health_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp
}

fn models(state: &State) -> Response<Body> {
    let created = now();
    let data: Vec<String> = state
        .cfg
        .models
        .iter()
        .map(|m| {
            let id = json_str(m);
            format!(
                r#"{{"id":{id},"object":"model","created":{created},"owned_by":"vllm","root":{id},"parent":null,"max_model_len":{},"permission":[{{"id":"modelperm-sim","object":"model_permission","created":{created},"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}}]}}"#,
                state.cfg.max_model_len
            )
        })
        .collect();
    json(
        StatusCode::OK,
        format!(r#"{{"object":"list","data":[{}]}}"#, data.join(",")),
    )
}

fn metrics(state: &State) -> Response<Body> {
    // vLLM V1's label set: the served model and the engine core's index.
    let labels = format!(
        "model_name={},engine=\"0\"",
        json_str(state.cfg.models.first().map_or("", String::as_str))
    );
    let report = state.engine.as_ref().map(crate::engine::Engine::report);
    let (running, waiting) = match &report {
        Some(r) => (r.running as u64, r.waiting as u64),
        None => (state.running.load(Ordering::Relaxed) as u64, 0),
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {value}\n"
        );
    };
    metric(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        running,
    );
    metric(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        waiting,
    );
    metric(
        "vllm:prompt_tokens_total",
        "counter",
        "Number of prefill tokens processed.",
        state.prompt_tokens.load(Ordering::Relaxed),
    );
    metric(
        "vllm:generation_tokens_total",
        "counter",
        "Number of generation tokens processed.",
        state.generation_tokens.load(Ordering::Relaxed),
    );
    metric(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
        state.success.load(Ordering::Relaxed),
    );
    if let Some(report) = &report {
        crate::engine::render_metrics(&mut out, &labels, report);
    }
    let mut resp = Response::new(full(out));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// vLLM's error body: nested (current) or flat (older versions, and SGLang).
fn error(status: StatusCode, message: &str, flat: bool) -> Response<Body> {
    error_with(status, message, flat, None)
}

/// [`error`] with the `Retry-After` seconds of a 429 or 503 (1 when `None`; 0 sends none).
fn error_with(
    status: StatusCode,
    message: &str,
    flat: bool,
    retry_after: Option<u64>,
) -> Response<Body> {
    let kind = match status.as_u16() {
        400 => "BadRequestError",
        401 => "Unauthorized",
        404 => "NotFoundError",
        429 => "TooManyRequests",
        503 => "ServiceUnavailableError",
        _ => "InternalServerError",
    };
    let inner = format!(
        r#""message":{},"type":"{kind}","param":null,"code":{}"#,
        json_str(message),
        status.as_u16()
    );
    let body = if flat {
        format!(r#"{{"object":"error",{inner}}}"#)
    } else {
        format!(r#"{{"error":{{{inner}}}}}"#)
    };
    let mut resp = json(status, body);
    let seconds = retry_after.unwrap_or(1);
    if matches!(status.as_u16(), 429 | 503) && seconds > 0 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    resp
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn full(body: String) -> Body {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    full(String::new())
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tokens an answer has: `max_tokens`, or fewer when the simulator is set to end its answers
/// (`answer_tokens`, with `finish_reason: stop`) sooner, as a model that has said what it had to.
fn answer_len(max_tokens: u32, answer_tokens: Option<u32>) -> u32 {
    answer_tokens.map_or(max_tokens, |a| a.min(max_tokens))
}
