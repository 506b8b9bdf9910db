//! `lumen-sim`: an OpenAI-compatible inference engine simulator.
//!
//! It is three things at once: the newcomer's demo backend, the test double every integration
//! test talks to over real TCP, and the baseline that Lumen's overhead is measured against (so it
//! is written to be cheap per request). It serves configurable models with deterministic text,
//! honours `max_tokens`, `n`, time to first token, inter-token latency,
//! `stream_options.include_usage` and vLLM's `continuous_usage_stats`, answers embeddings, `/health`, `/v1/models` and a `/metrics`
//! page with vLLM's metric names, injects faults on demand, and records what it received.
//!
//! # Endpoints
//! - `POST /v1/chat/completions`, `POST /v1/completions` (streamed or not), `POST /v1/embeddings`.
//! - `POST /rerank`, `/v1/rerank`, `/v2/rerank`: vLLM's (Jina- and Cohere-compatible) rerank,
//!   scored by the fraction of the query's words found in each document.
//! - `POST /tokenize` (a `prompt` or chat `messages`) and `POST /detokenize`, with vLLM's shapes and
//!   a small reversible vocabulary: the simulator's own words plus a token per byte, so
//!   detokenizing a tokenization gives the text back. Its counts are not the `usage.prompt_tokens`
//!   of completions, which stay a free estimate from the prompt's byte length.
//! - `POST /v1/messages` (streamed or not) and `POST /v1/messages/count_tokens`: Anthropic's
//!   Messages API as vLLM's and llama.cpp's servers serve it (`message_start` carrying the
//!   prompt's tokens, the output's in `message_delta`, errors in Anthropic's shape), for the
//!   models [`SimConfig::messages_api`] says; other models get the 404 of a missing route.
//! - `GET /health`, `GET /v1/models` (with `max_model_len`), `GET /metrics`.
//! - In llama.cpp flavour ([`Flavor::LlamaCpp`]) the tokenizer endpoints take llama-server's
//!   shapes instead (`/tokenize` reads `content` and answers `{"tokens"}`, `/detokenize` answers
//!   `{"content"}`), and `POST /apply-template` and `GET /props` are served too.
//!
//! Every POST honours the `"sim"` faults below (the tokenizer endpoints run no model, so only an
//! explicit `ttft_ms` delays them) and is recorded.
//!
//! # Faults
//! Globally through [`Faults`] (flags of the binary, or [`Simulator::set_faults`] in tests), per
//! model ([`Simulator::set_model_faults`]), or per request through a `"sim"` object in the JSON
//! body, which Lumen forwards like any unknown field: `{"sim": {"status": 503, "hang": true,
//! "ttft_ms": 500, "itl_ms": 5, "drop_after": 3, "garbage_after": 2, "error_after": 2,
//! "stall_after": 4, "retry_after": 2, "reject_prefill": true, "flat_error": true,
//! "tokens_per_chunk": 3}}`.
//!
//! # Continuation
//! A chat request whose last message is the assistant's is continued from that text (as
//! llama.cpp does with a prefill, and vLLM with `continue_final_message`, whose rule against
//! also setting `add_generation_prompt` is enforced); a completion prompt that ends with the
//! simulator's own answer is continued from there. So an answer cut on one simulator and
//! finished on another reads exactly like one uninterrupted answer. In llama.cpp's flavour
//! ([`Flavor::LlamaCpp`]) a final assistant message not marked `continue_final_message: true`
//! is continued too, but its text comes back first, as `llama-server` sends it.
//!
//! # Engine model
//! Off by default. With [`SimConfig::engine`] set, chat and completion requests go through a
//! vLLM-like performance model ([`engine`]): continuous batching, a paged KV cache with prefix
//! caching, a queue, and `/metrics` that report them; `usage` then counts the prompt's real
//! tokens and carries `prompt_tokens_details.cached_tokens`, and the `ttft_ms`/`itl_ms`
//! faults no longer apply (time comes from the model).
//!
//! # Layout
//! - `config`: [`SimConfig`], [`Faults`], [`Flavor`].
//! - `engine`: the optional engine model.
//! - `server`: the accept loop and request handlers; `server/llamacpp.rs` the llama.cpp-flavour
//!   ones, `server/messages.rs` Anthropic's Messages API.
//! - `text`: deterministic tokens, the tokenizer, rerank scores, embeddings and base64.

mod config;
pub mod engine;
mod server;
mod stored;
mod text;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use config::{Faults, Flavor, MessagesApi, SimConfig};
pub use engine::EngineConfig;
pub use server::serve;

/// The simulator's answer of `n` tokens, as every chat or completion that is not a
/// continuation gets it: a client replaying a conversation can put it back as the assistant's
/// turn, and the engine model's prefix cache then holds it.
pub fn answer(n: u32) -> String {
    text::answer(n)
}

/// One request as the simulator received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-cased header names with their values.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` for GET or a non-JSON body).
    pub body: serde_json::Value,
    /// When it arrived (tokio's clock, so paused-time tests can see when each attempt came).
    pub at: tokio::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running simulator's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) state: Arc<State>,
}

pub(crate) struct State {
    pub(crate) cfg: SimConfig,
    pub(crate) faults: Mutex<Faults>,
    /// Faults for one model only, applied over the global ones.
    pub(crate) model_faults: Mutex<std::collections::BTreeMap<String, Faults>>,
    pub(crate) running: AtomicUsize,
    pub(crate) requests: AtomicU64,
    pub(crate) generation_requests: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) generation_tokens: AtomicU64,
    pub(crate) success: AtomicU64,
    pub(crate) records: Mutex<VecDeque<Recorded>>,
    /// The engine model, when [`SimConfig::engine`] is set.
    pub(crate) engine: Option<engine::Engine>,
    /// Responses kept for the Responses API.
    pub(crate) responses: stored::StoredResponses,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let faults = cfg.faults.clone();
        let engine = cfg
            .engine
            .clone()
            .map(|e| engine::Engine::new(e, cfg.max_model_len));
        Self {
            state: Arc::new(State {
                cfg,
                faults: Mutex::new(faults),
                model_faults: Mutex::new(std::collections::BTreeMap::new()),
                running: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                generation_requests: AtomicU64::new(0),
                prompt_tokens: AtomicU64::new(0),
                generation_tokens: AtomicU64::new(0),
                success: AtomicU64::new(0),
                records: Mutex::new(VecDeque::new()),
                engine,
                responses: stored::StoredResponses::default(),
            }),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.cfg
    }

    /// How many responses the Responses API keeps now.
    pub fn stored_responses(&self) -> usize {
        self.state.responses.len()
    }

    /// Replaces the global faults (takes effect for the next request).
    pub fn set_faults(&self, faults: Faults) {
        *self
            .state
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Faults for requests naming `model` only (over the global ones; a request's own `"sim"`
    /// object still wins). `Faults::default()` clears them.
    pub fn set_model_faults(&self, model: &str, faults: Faults) {
        let mut all = self
            .state
            .model_faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if faults.is_quiet() {
            all.remove(model);
        } else {
            all.insert(model.to_owned(), faults);
        }
    }

    /// Requests currently being processed, including streams still sending. Drops to zero as
    /// soon as clients go away, which is how tests prove that cancellation reaches the engine.
    pub fn running(&self) -> usize {
        self.state.running.load(Ordering::SeqCst)
    }

    /// Every request received, of any kind.
    pub fn request_count(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests that reach the model: chat, completion, embedding and rerank. Health and model
    /// probes and `/tokenize`/`/detokenize` are excluded, as they never occupy the engine
    /// ([`Simulator::request_count`] and [`Simulator::records`] still see them).
    pub fn generation_count(&self) -> u64 {
        self.state.generation_requests.load(Ordering::SeqCst)
    }

    /// What was received, oldest first (bounded by [`SimConfig::record`]).
    pub fn records(&self) -> Vec<Recorded> {
        self.state
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// The engine model's queue, cache and counters (`None` when it is off).
    pub fn engine_report(&self) -> Option<engine::Report> {
        self.state.engine.as_ref().map(engine::Engine::report)
    }

    pub fn clear_records(&self) {
        self.state
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Binds `127.0.0.1:0`, serves in the background, and returns the address: the one-liner tests use.
/// An engine model that cannot work ([`EngineConfig::validate`]) is refused as `InvalidInput`.
pub async fn spawn(cfg: SimConfig) -> std::io::Result<(std::net::SocketAddr, Simulator)> {
    if let Some(e) = &cfg.engine {
        e.validate(cfg.max_model_len)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sim = Simulator::new(cfg);
    let served = sim.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, served, std::future::pending()).await {
            tracing::error!(error = %e, "simulator stopped");
        }
    });
    Ok((addr, sim))
}

#[cfg(test)]
mod tests;
