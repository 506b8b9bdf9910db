//! Simulator settings and fault injection.

use std::time::Duration;

use serde::Deserialize;

/// How the simulated engine behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Served model ids; the first is used when a request names none.
    pub models: Vec<String>,
    /// Delay before the first token (and before a non-streamed answer).
    pub ttft: Duration,
    /// Delay between stream tokens.
    pub itl: Duration,
    /// Tokens generated when the request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// End every answer after at most this many tokens with `finish_reason: stop`, as a model
    /// that has said what it had to (`None`: answers run to `max_tokens`). Clients that treat
    /// an answer cut at `max_tokens` as an error (Claude Code) need it.
    pub answer_tokens: Option<u32>,
    /// Reported as vLLM's `max_model_len`; larger `max_tokens` is refused with 400.
    pub max_model_len: u32,
    pub embedding_dim: usize,
    /// Require `Authorization: Bearer <key>`, like `vllm serve --api-key`.
    pub api_key: Option<String>,
    /// How many received requests to keep for [`crate::Simulator::records`]; 0 keeps none.
    pub record: usize,
    pub faults: Faults,
    /// The vLLM-like engine model ([`crate::engine`]); `None` (the default) answers after the
    /// fixed delays above, at the least cost per request.
    pub engine: Option<crate::EngineConfig>,
    /// Which engine to imitate where engines differ.
    pub flavor: Flavor,
    /// Which models serve Anthropic's Messages API natively (as vLLM, SGLang and llama.cpp
    /// do); the others answer its routes 404, like an engine without them (TGI, Ollama), so a
    /// gateway's translation to chat completions can be tested against the same simulator.
    pub messages_api: MessagesApi,
    /// Serve OpenAI's Responses API natively, keeping its responses (as vLLM with
    /// `VLLM_ENABLE_RESPONSES_API_STORE`): `POST /v1/responses` with `previous_response_id`,
    /// `GET`/`DELETE /v1/responses/{id}`, `input_items`, `cancel`. Off: those routes answer
    /// 404, as on an engine without them.
    pub responses_api: bool,
    /// Also answer SGLang's `GET /get_load` (running and waiting requests, tokens held and
    /// queued), which SGLang's router polls for its `power_of_two` policy. Off by default:
    /// vLLM has no such route, and a router in front of vLLM must see vLLM's 404.
    pub sglang_get_load: bool,
}

/// Where `POST /v1/messages` and `POST /v1/messages/count_tokens` are served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MessagesApi {
    /// For every model.
    #[default]
    All,
    /// For no model: the routes do not exist (404 before the body is read).
    None,
    /// For every model but these: a request naming one gets the 404 of a missing route.
    Except(Vec<String>),
}

impl MessagesApi {
    /// Whether a request for `model` is served (`None`: the default model).
    pub fn serves(&self, model: Option<&str>, default: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Except(off) => {
                let model = model.filter(|m| !m.is_empty()).or(default).unwrap_or("");
                !off.iter().any(|m| m == model)
            }
        }
    }
}

/// The engine the simulator imitates where real engines behave differently. Everything else
/// (the OpenAI endpoints, faults) is the same in every flavour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flavor {
    /// vLLM (and SGLang): a final assistant message is continued with
    /// `continue_final_message: true` (which forbids `add_generation_prompt`), and
    /// `stream_options.continuous_usage_stats` puts `usage` in every chunk. `/tokenize` takes
    /// `prompt` or `messages` and answers `count`, `max_model_len`, `tokens`; `/detokenize`
    /// answers `prompt`.
    #[default]
    Vllm,
    /// llama.cpp's `llama-server`: a final assistant message is continued (a prefill), but
    /// unless the request sets `continue_final_message: true` the answer starts by repeating
    /// that message's text (the first content chunk carries it, with the first new token), as
    /// `llama-server` was seen to do; `continuous_usage_stats` is not supported. `/tokenize`
    /// reads only `content` (`{"tokens": [...]}`, an empty list without it), `/detokenize`
    /// answers `content`, and it serves `/apply-template` and `GET /props`.
    LlamaCpp,
}

impl std::str::FromStr for Flavor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vllm" => Ok(Self::Vllm),
            "llamacpp" | "llama.cpp" => Ok(Self::LlamaCpp),
            other => Err(format!(
                "unknown flavor {other:?} (expected vllm or llamacpp)"
            )),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            models: vec!["sim-model".to_owned()],
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            default_max_tokens: 16,
            answer_tokens: None,
            max_model_len: 8192,
            embedding_dim: 8,
            api_key: None,
            record: 0,
            faults: Faults::default(),
            flavor: Flavor::default(),
            engine: None,
            messages_api: MessagesApi::default(),
            responses_api: true,
            sglang_get_load: false,
        }
    }
}

/// Faults, applied globally or per request (the `"sim"` object in a request body).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Always answer with this HTTP status and an error body instead of generating.
    pub status: Option<u16>,
    /// Probability in [0, 1] of answering `fail_status`; deterministic sequence.
    pub error_rate: f64,
    /// Fail this many requests with `fail_status`, then behave.
    pub fail_next: u32,
    /// Status for `error_rate` and `fail_next` (503 when unset; 429 and 503 carry Retry-After).
    pub fail_status: Option<u16>,
    /// Send the error in vLLM's older flat shape (`{"object":"error",...}`).
    pub flat_error: bool,
    /// Accept the request and never answer.
    pub hang: bool,
    /// Override the time to first token, in milliseconds.
    pub ttft_ms: Option<u64>,
    /// Override the inter-token latency, in milliseconds.
    pub itl_ms: Option<u64>,
    /// Stream this many tokens, then drop the connection without `[DONE]`.
    pub drop_after: Option<u32>,
    /// Stream this many tokens, then send an event that is not JSON.
    pub garbage_after: Option<u32>,
    /// Stream this many tokens, then send vLLM's in-band `data: {"error": ...}` and `[DONE]`.
    pub error_after: Option<u32>,
    /// Status code of `GET /health` (200 when unset).
    pub health_status: Option<u16>,
    /// Stream the whole answer (finish reason and usage) but end the body without
    /// `data: [DONE]`, as some engines do.
    pub no_done: bool,
    /// Stream this many tokens, then go quiet with the connection open.
    pub stall_after: Option<u32>,
    /// `Retry-After` seconds on a 429 or 503 (1 when unset; 0 sends none).
    pub retry_after: Option<u64>,
    /// Refuse with 400 a chat request whose last message is the assistant's (a prefill, or
    /// `continue_final_message`), as a model whose template does not allow it does.
    pub reject_prefill: bool,
    /// Stream this many tokens per chunk (SGLang's `stream_interval`, speculative decoding)
    /// instead of one; `usage` still counts tokens.
    pub tokens_per_chunk: Option<u32>,
}

impl Faults {
    /// Per-request faults override the global ones field by field.
    pub(crate) fn merged(&self, req: &Faults) -> Faults {
        Faults {
            status: req.status.or(self.status),
            fail_status: req.fail_status.or(self.fail_status),
            error_rate: if req.error_rate > 0.0 {
                req.error_rate
            } else {
                self.error_rate
            },
            fail_next: 0,
            flat_error: req.flat_error || self.flat_error,
            hang: req.hang || self.hang,
            ttft_ms: req.ttft_ms.or(self.ttft_ms),
            itl_ms: req.itl_ms.or(self.itl_ms),
            drop_after: req.drop_after.or(self.drop_after),
            garbage_after: req.garbage_after.or(self.garbage_after),
            error_after: req.error_after.or(self.error_after),
            health_status: self.health_status,
            no_done: req.no_done || self.no_done,
            stall_after: req.stall_after.or(self.stall_after),
            retry_after: req.retry_after.or(self.retry_after),
            reject_prefill: req.reject_prefill || self.reject_prefill,
            tokens_per_chunk: req.tokens_per_chunk.or(self.tokens_per_chunk),
        }
    }

    pub(crate) fn is_quiet(&self) -> bool {
        *self == Faults::default()
    }
}
