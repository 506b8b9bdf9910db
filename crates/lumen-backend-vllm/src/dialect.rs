//! Where an engine's API differs from vLLM's outside the OpenAI endpoints, and how Lumen
//! translates so that a client sees vLLM's shapes whichever engine serves it.
//!
//! Today that is llama.cpp's tokenizer surface (`llama-server`, `tools/server`):
//! - `/tokenize` reads `content` (not `prompt` or `messages`, which it ignores, answering an
//!   empty list with 200), `add_special` (default false; vLLM's `add_special_tokens` defaults
//!   to true for a prompt) and `with_pieces`; it answers `{"tokens": [...]}` only, where vLLM
//!   answers `{"count", "max_model_len", "tokens", "token_strs"}`.
//! - `/detokenize` takes the same `tokens` but answers `{"content"}` where vLLM answers
//!   `{"prompt"}`.
//! - It has no chat template on `/tokenize`; `/apply-template` renders `messages` with the
//!   model's own template, which is what its chat endpoint tokenizes (with BOS added, as the
//!   rendered text leaves it out). So vLLM's `messages` form is two engine calls on llama.cpp,
//!   and the count is what a chat completion with those messages costs on that engine.
//! - `max_model_len` is the per-slot context, `default_generation_settings.n_ctx` of
//!   `GET /props` (asked once a minute per model at most; `null` when the engine does not say).
//!
//! Everything here is pure: the backend asks [`plan`] what to do, then sends what these
//! functions build and turns the answers back with them.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lumen_backend::BackendError;
use lumen_openai_types::{ErrorObject, JsonRequest, RawExtra};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::time::Instant;

/// Which engine's dialect a backend speaks where engines differ (set from the backend's
/// `kind`). The OpenAI endpoints are the same in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// vLLM, and engines that copy its tokenizer endpoints (SGLang): forwarded as they are.
    #[default]
    Vllm,
    /// llama.cpp's `llama-server`: the tokenizer endpoints are translated.
    Llamacpp,
}

/// What to do with a call to one of the JSON endpoints routed by `model` (a decision as a
/// value, so it is tested without an engine).
#[derive(Debug, PartialEq)]
pub(crate) enum JsonCall {
    /// Send the request to the same path unchanged and relay the answer unchanged.
    Forward,
    /// llama.cpp `/tokenize`, the answer turned into vLLM's.
    LlamacppTokenize(Tokenize),
    /// llama.cpp `/detokenize`, the answer turned into vLLM's.
    LlamacppDetokenize,
}

/// A vLLM `/tokenize` request as llama.cpp will be asked it.
#[derive(Debug, PartialEq)]
pub(crate) struct Tokenize {
    /// `messages` came (vLLM's chat form, which wins over `prompt` as in vLLM): render them with
    /// `/apply-template` first.
    pub chat: bool,
    /// llama.cpp's `add_special`: the client's `add_special_tokens`, else true (vLLM's default
    /// for a prompt; for messages, what llama.cpp's chat path does with the rendered text).
    pub add_special: bool,
    /// `return_token_strs`, asked of llama.cpp as `with_pieces`.
    pub token_strs: bool,
}

/// How `path` is served by an engine of `dialect`.
pub(crate) fn plan(dialect: Dialect, path: &str, req: &JsonRequest) -> JsonCall {
    match (dialect, path) {
        (Dialect::Llamacpp, "/tokenize") => JsonCall::LlamacppTokenize(Tokenize {
            chat: req.extra.contains_key("messages"),
            add_special: req.extra.get_as("add_special_tokens").unwrap_or(true),
            token_strs: req.extra.get_as("return_token_strs").unwrap_or(false),
        }),
        (Dialect::Llamacpp, "/detokenize") => JsonCall::LlamacppDetokenize,
        _ => JsonCall::Forward,
    }
}

/// vLLM's tokenizer-only fields, which llama.cpp knows under other names or not at all.
const VLLM_TOKENIZE_FIELDS: [&str; 2] = ["add_special_tokens", "return_token_strs"];

/// The `/apply-template` request for a chat-form tokenize: the client's body (`model`,
/// `messages`, `add_generation_prompt`, `tools`, template arguments) without the tokenizer's
/// own fields.
pub(crate) fn template_request(req: &JsonRequest) -> JsonRequest {
    let mut out = req.clone();
    for field in VLLM_TOKENIZE_FIELDS.iter().chain(&["prompt"]) {
        out.extra.remove(field);
    }
    out
}

/// The rendered prompt of an `/apply-template` answer (`{"prompt": "..."}`), as raw JSON.
pub(crate) fn template_prompt(answer: &[u8]) -> Result<Box<RawValue>, String> {
    #[derive(Deserialize)]
    struct Rendered {
        prompt: Box<RawValue>,
    }
    serde_json::from_slice::<Rendered>(answer)
        .map(|r| r.prompt)
        .map_err(|e| format!("llama.cpp /apply-template answer has no prompt: {e}"))
}

/// The llama.cpp `/tokenize` request: `content` is the client's `prompt` or, for the chat form,
/// the rendered template. The prompt form keeps the client's other fields (Lumen forwards what
/// it does not read); the chat form's were for the template.
pub(crate) fn tokenize_request(
    req: &JsonRequest,
    plan: &Tokenize,
    rendered: Option<&RawValue>,
) -> Result<JsonRequest, String> {
    let mut out = match rendered {
        Some(_) => JsonRequest {
            model: req.model.clone(),
            extra: RawExtra::new(),
        },
        None => {
            let mut out = req.clone();
            for field in VLLM_TOKENIZE_FIELDS.iter().chain(&["prompt"]) {
                out.extra.remove(field);
            }
            out
        }
    };
    let content = match rendered {
        Some(r) => r,
        None => req
            .extra
            .get("prompt")
            .ok_or_else(|| "a tokenize request needs a prompt or messages".to_owned())?,
    };
    let err = |e: serde_json::Error| e.to_string();
    out.extra.insert("content", content).map_err(err)?;
    out.extra
        .insert("add_special", &plan.add_special)
        .map_err(err)?;
    out.extra
        .insert("with_pieces", &plan.token_strs)
        .map_err(err)?;
    Ok(out)
}

/// llama.cpp's `/tokenize` answer as vLLM's: `count`, `max_model_len`, `tokens` and
/// `token_strs` (`null` unless asked). A piece that is not UTF-8 on its own (part of a
/// character, which llama.cpp sends as an array of bytes) is written `<0xNN>` per byte, as
/// SentencePiece names byte tokens.
pub(crate) fn tokenize_answer(
    answer: &[u8],
    max_model_len: Option<u32>,
    token_strs: bool,
) -> Result<Vec<u8>, String> {
    #[derive(Serialize)]
    struct Vllm<'a> {
        count: usize,
        max_model_len: Option<u32>,
        tokens: &'a [i64],
        token_strs: Option<Vec<String>>,
    }
    let bad = |e: serde_json::Error| format!("llama.cpp /tokenize answer: {e}");
    let (tokens, strs) = if token_strs {
        #[derive(Deserialize)]
        struct Answer {
            tokens: Vec<WithPiece>,
        }
        #[derive(Deserialize)]
        struct WithPiece {
            id: i64,
            piece: Piece,
        }
        let a: Answer = serde_json::from_slice(answer).map_err(bad)?;
        let ids = a.tokens.iter().map(|t| t.id).collect();
        let strs = a.tokens.into_iter().map(|t| t.piece.into_text()).collect();
        (ids, Some(strs))
    } else {
        #[derive(Deserialize)]
        struct Answer {
            tokens: Vec<i64>,
        }
        (
            serde_json::from_slice::<Answer>(answer)
                .map_err(bad)?
                .tokens,
            None,
        )
    };
    serde_json::to_vec(&Vllm {
        count: tokens.len(),
        max_model_len,
        tokens: &tokens,
        token_strs: strs,
    })
    .map_err(|e| e.to_string())
}

/// A `with_pieces` piece: text, or the bytes of a piece that is not UTF-8 on its own.
#[derive(Deserialize)]
#[serde(untagged)]
enum Piece {
    Text(String),
    Bytes(Vec<u8>),
}

impl Piece {
    fn into_text(self) -> String {
        match self {
            Self::Text(t) => t,
            Self::Bytes(b) => b.iter().map(|b| format!("<0x{b:02X}>")).collect(),
        }
    }
}

/// llama.cpp's `/detokenize` answer (`{"content"}`) as vLLM's (`{"prompt"}`).
pub(crate) fn detokenize_answer(answer: &[u8]) -> Result<Vec<u8>, String> {
    #[derive(Deserialize)]
    struct Answer {
        content: String,
    }
    #[derive(Serialize)]
    struct Vllm {
        prompt: String,
    }
    let a: Answer =
        serde_json::from_slice(answer).map_err(|e| format!("llama.cpp /detokenize answer: {e}"))?;
    serde_json::to_vec(&Vllm { prompt: a.content }).map_err(|e| e.to_string())
}

/// A llama.cpp older than `/apply-template` answers 404 there: tell the client what to send
/// instead, as a 400 on `messages` (the engine works; the request cannot be served by it).
pub(crate) fn no_template(e: BackendError) -> BackendError {
    match e {
        BackendError::Upstream {
            backend,
            status: 404,
            ..
        } => BackendError::Upstream {
            backend,
            status: 400,
            error: Box::new(
                ErrorObject::new(
                    "This llama.cpp engine cannot apply its chat template for /tokenize (it has \
                     no /apply-template): send the text as 'prompt' instead of 'messages'.",
                    "invalid_request_error",
                )
                .with_param("messages"),
            ),
            retry_after: None,
        },
        other => other,
    }
}

/// `GET /props` for `model` (the router mode of `llama-server` picks the model by the query; a
/// single-model server ignores it).
pub(crate) fn props_path(model: &str) -> String {
    let mut out = String::from("/props");
    if !model.is_empty() {
        out.push_str("?model=");
        for b in model.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The per-slot context of a `GET /props` answer, when it reports one.
pub(crate) fn props_context(answer: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Props {
        default_generation_settings: Settings,
    }
    #[derive(Deserialize)]
    struct Settings {
        n_ctx: u32,
    }
    serde_json::from_slice::<Props>(answer)
        .ok()
        .map(|p| p.default_generation_settings.n_ctx)
        .filter(|&n| n > 0)
}

/// The context lengths an engine reported, per model, so `/tokenize` does not cost a `/props`
/// call each time. Entries go stale after [`ContextLengths::FRESH`] (an engine restarted with
/// another `-c` is seen within a minute); at most [`ContextLengths::MAX`] models are kept, so a
/// stream of passthrough model names cannot grow it.
#[derive(Default)]
pub(crate) struct ContextLengths {
    known: Mutex<Vec<(String, Option<u32>, Instant)>>,
}

impl ContextLengths {
    pub(crate) const FRESH: Duration = Duration::from_secs(60);
    pub(crate) const MAX: usize = 32;

    /// `Some(answer)` when `model`'s context length (or its absence) was learnt recently.
    pub(crate) fn get(&self, model: &str) -> Option<Option<u32>> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .iter()
            .find(|(m, _, at)| m == model && at.elapsed() < Self::FRESH)
            .map(|(_, n, _)| *n)
    }

    pub(crate) fn put(&self, model: &str, n: Option<u32>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        known.retain(|(m, _, at)| m != model && now.duration_since(*at) < Self::FRESH);
        if known.len() < Self::MAX {
            known.push((model.to_owned(), n, now));
        }
    }
}

#[cfg(test)]
mod tests;
