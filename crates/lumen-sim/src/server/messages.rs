//! Anthropic's Messages API, served natively as vLLM's and llama.cpp's servers do: the same
//! deterministic answer as chat, framed as a `message` or as its stream of events
//! (`message_start` with the prompt's tokens, `content_block_start`, `ping`, one
//! `content_block_delta` per chunk of tokens, `content_block_stop`, `message_delta` with the stop
//! reason and both counts, `message_stop`), members in Anthropic's order. Errors take
//! Anthropic's shape; a model [`crate::MessagesApi`] leaves out gets the 404 of a missing route.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Body, ChatMessage, Generation, admit, chat_prompt, content_text, json, json_str, parse, start,
    tokenizer_delay,
};
use crate::config::Faults;
use crate::{State, text};

/// The end of a stream.
pub(super) const MESSAGE_STOP: &[u8] =
    b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// The `error_after` fault: a failure mid-stream, as Anthropic reports one.
pub(super) const INJECTED_ERROR: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"injected engine failure\"}}\n\n";

#[derive(Deserialize)]
struct ModelOnly {
    #[serde(default)]
    model: Option<String>,
}

/// Whether the model the body names is served here (an unreadable body is, so the handler
/// explains what is wrong with it).
pub(super) fn served(state: &State, body: &[u8]) -> bool {
    let model = serde_json::from_slice::<ModelOnly>(body)
        .ok()
        .and_then(|m| m.model);
    state.cfg.messages_api.serves(
        model.as_deref(),
        state.cfg.models.first().map(String::as_str),
    )
}

fn stop_reason(g: &Generation) -> &'static str {
    if g.finish == "length" {
        "max_tokens"
    } else {
        "end_turn"
    }
}

fn id(g: &Generation) -> String {
    format!("msg_sim-{}", g.id)
}

/// A whole answer.
pub(super) fn full_response(g: &Generation) -> String {
    let mut out = String::with_capacity(256);
    let _ = write!(
        out,
        r#"{{"id":"{}","type":"message","role":"assistant","model":{},"content":[{{"type":"text","text":{}}}],"stop_reason":"{}","stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":{}}}}}"#,
        id(g),
        json_str(&g.model),
        json_str(&g.text(0, g.n)),
        stop_reason(g),
        g.prompt_tokens,
        g.n
    );
    out
}

fn event(out: &mut String, name: &str, data: &str) {
    let _ = write!(out, "event: {name}\ndata: {data}\n\n");
}

/// Tokens `from..to` as a `content_block_delta`, or (`None`) the opening events.
pub(super) fn frame(g: &Generation, span: Option<(u32, u32)>) -> Bytes {
    let mut out = String::with_capacity(256);
    match span {
        None => {
            let start = format!(
                r#"{{"type":"message_start","message":{{"id":"{}","type":"message","role":"assistant","model":{},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":0}}}}}}"#,
                id(g),
                json_str(&g.model),
                g.prompt_tokens
            );
            event(&mut out, "message_start", &start);
            event(
                &mut out,
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            );
            event(&mut out, "ping", r#"{"type":"ping"}"#);
        }
        Some((from, to)) => {
            let delta = format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                json_str(&g.text(from, to))
            );
            event(&mut out, "content_block_delta", &delta);
        }
    }
    Bytes::from(out)
}

/// `content_block_stop` and `message_delta` (the stop reason and both counts, as vLLM's server
/// repeats the input count there).
pub(super) fn end_frames(g: &Generation) -> Bytes {
    let mut out = String::with_capacity(256);
    event(
        &mut out,
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    );
    let delta = format!(
        r#"{{"type":"message_delta","delta":{{"stop_reason":"{}","stop_sequence":null}},"usage":{{"input_tokens":{},"output_tokens":{}}}}}"#,
        stop_reason(g),
        g.prompt_tokens,
        g.completion_tokens()
    );
    event(&mut out, "message_delta", &delta);
    Bytes::from(out)
}

/// An error answer in Anthropic's shape, its message taken from the simulator's vLLM-shaped
/// body (either shape) so every refusal reads the same on both APIs.
pub(super) async fn anthropic_errors(resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    if status.is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("message"))
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let body = format!(
        r#"{{"type":"error","error":{{"type":"{kind}","message":{}}}}}"#,
        json_str(&message)
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, super::full(body))
}

#[derive(Deserialize)]
struct CountTokensRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system: Option<serde_json::Value>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    tools: Option<Box<RawValue>>,
    #[serde(default)]
    sim: Option<Faults>,
}

/// `count_tokens`: the prompt through the simulator's chat template (the system prompt first,
/// then the tools, as `/tokenize` renders messages), counted by its tokenizer.
pub(super) async fn count_tokens(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: CountTokensRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, _model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let Some(messages) = req.messages else {
        return super::field_required("messages", &faults);
    };
    let _running = start(&state, &faults, tokenizer_delay(&faults)).await;
    let mut prompt = String::new();
    if let Some(system) = &req.system {
        prompt.push_str("system: ");
        prompt.push_str(&content_text(system));
        prompt.push('\n');
    }
    if let Some(tools) = &req.tools {
        prompt.push_str("tools: ");
        prompt.push_str(tools.get());
        prompt.push('\n');
    }
    prompt.push_str(&chat_prompt(&messages, true));
    json(
        StatusCode::OK,
        format!(r#"{{"input_tokens":{}}}"#, text::count_tokens(&prompt)),
    )
}
