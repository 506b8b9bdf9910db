//! llama.cpp's `llama-server` where its API differs from vLLM's (flavour `llamacpp`): the
//! tokenizer endpoints, `/apply-template` and `GET /props`, in the shapes of llama.cpp's
//! `tools/server` handlers:
//! - `/tokenize` reads `content` only (a string, or an array of strings and token ids),
//!   `add_special` (default false) and `with_pieces`; it answers `{"tokens": [...]}`, ids or
//!   `{"id", "piece"}` objects (a piece that is not UTF-8 is an array of its bytes). A body
//!   without `content`, such as vLLM's `prompt` or `messages`, gets an empty list and 200.
//! - `/detokenize` answers `{"content": ...}`, special tokens written out; no `tokens`, empty
//!   text. An id outside the vocabulary is a 500, as llama.cpp's `at()` throws.
//! - `/apply-template` renders `messages` through the chat template: `{"prompt": ...}`.
//! - `GET /props` reports the per-slot context as `default_generation_settings.n_ctx`.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Body, ChatMessage, admit, chat_prompt, json as json_response, parse, start, tokenizer_delay,
};
use crate::config::Faults;
use crate::{State, text};

#[derive(Deserialize)]
struct TokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    add_special: Option<bool>,
    #[serde(default)]
    with_pieces: Option<bool>,
    #[serde(default)]
    sim: Option<Faults>,
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
struct ApplyTemplateRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    add_generation_prompt: Option<bool>,
    #[serde(default)]
    sim: Option<Faults>,
}

/// llama.cpp's error body (`format_error_response`): `{"error": {"code", "message", "type"}}`.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({"error": {"code": status.as_u16(), "message": message, "type": kind}});
    json_response(status, body.to_string())
}

pub(super) async fn tokenize(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: TokenizeRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, _model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let _running = start(&state, &faults, tokenizer_delay(&faults)).await;
    let mut ids = Vec::new();
    if let Some(content) = &req.content {
        if req.add_special.unwrap_or(false) {
            ids.push(text::BOS);
        }
        match content {
            Value::String(s) => text::encode(s, |id| ids.push(id)),
            // `tokenize_mixed`: strings are tokenized, numbers are ids already.
            Value::Array(parts) => {
                for part in parts {
                    match part {
                        Value::String(s) => text::encode(s, |id| ids.push(id)),
                        Value::Number(n) => {
                            if let Some(id) = n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                                ids.push(id);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "[json.exception.type_error.302] type must be string",
                );
            }
        }
    }
    let tokens: Vec<Value> = if req.with_pieces.unwrap_or(false) {
        ids.iter()
            .map(|&id| {
                let bytes = text::piece(id).unwrap_or_default();
                let piece = match String::from_utf8(bytes) {
                    Ok(s) => Value::from(s),
                    Err(e) => Value::from(e.into_bytes()),
                };
                json!({"id": id, "piece": piece})
            })
            .collect()
    } else {
        ids.into_iter().map(Value::from).collect()
    };
    json_response(StatusCode::OK, json!({ "tokens": tokens }).to_string())
}

pub(super) async fn detokenize(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: DetokenizeRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, _model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let _running = start(&state, &faults, tokenizer_delay(&faults)).await;
    let mut bytes = Vec::new();
    for id in req.tokens.unwrap_or_default() {
        match text::piece(id) {
            Some(p) => bytes.extend_from_slice(&p),
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "vector::_M_range_check: __n >= this->size()",
                );
            }
        }
    }
    let content = String::from_utf8_lossy(&bytes);
    json_response(StatusCode::OK, json!({ "content": content }).to_string())
}

pub(super) async fn apply_template(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: ApplyTemplateRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, _model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let Some(messages) = req.messages else {
        return error(StatusCode::BAD_REQUEST, "'messages' is required");
    };
    let _running = start(&state, &faults, tokenizer_delay(&faults)).await;
    let prompt = chat_prompt(&messages, req.add_generation_prompt.unwrap_or(true));
    json_response(StatusCode::OK, json!({ "prompt": prompt }).to_string())
}

/// `GET /props`: what a client reads the context length from (`n_ctx` per slot).
pub(super) fn props(state: &State) -> Response<Body> {
    let model = state.cfg.models.first().map_or("", String::as_str);
    let body = json!({
        "default_generation_settings": {"n_ctx": state.cfg.max_model_len, "params": {}},
        "total_slots": 1,
        "model_alias": model,
        "model_path": format!("/models/{model}.gguf"),
        "build_info": "lumen-sim",
    });
    json_response(StatusCode::OK, body.to_string())
}
