//! vLLM's `POST /v1/chat/completions/render`: a chat request through the chat template and the
//! tokenizer, answered as the `GenerateRequest` vLLM's disaggregated front ends pass on
//! (`request_id`, `token_ids`, `features`, `sampling_params`, `model`, `stream`, ...), no model
//! run. vLLM's router asks for it before routing `cache_aware` on tokens, and falls back to
//! `/tokenize` on a 404: without the route every routed request would cost the engine two
//! calls instead of one. The ids are exactly the prompt the engine model schedules (tools
//! included), and the sampling parameters are reduced to `max_tokens`, defaulted as vLLM does
//! (the context left after the prompt).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Body, admit, error, json, json_str, parse, start, tokenizer_delay};
use crate::State;
use crate::config::Faults;

#[derive(Deserialize)]
struct RenderRequest<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, borrow)]
    messages: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tools: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    sim: Option<Faults>,
}

pub(super) async fn chat(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: RenderRequest<'_> = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let Some(messages) = req.messages else {
        return super::field_required("messages", &faults);
    };
    let ids = match crate::engine::chat_tokens(messages.get(), req.tools.map(RawValue::get)) {
        Ok(ids) => ids,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg, faults.flat_error),
    };
    let _running = start(&state, &faults, tokenizer_delay(&faults)).await;
    let left = (state.cfg.max_model_len as usize).saturating_sub(ids.len()) as u32;
    let max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(left);
    let tokens = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
    json(
        StatusCode::OK,
        format!(
            r#"{{"request_id":"chatcmpl-sim-render-{}","token_ids":{tokens},"features":null,"sampling_params":{{"max_tokens":{max_tokens}}},"model":{},"stream":{},"stream_options":null,"cache_salt":null,"priority":0,"kv_transfer_params":null}}"#,
            state.requests.load(Ordering::Relaxed),
            json_str(&model),
            req.stream.unwrap_or(false)
        ),
    )
}
