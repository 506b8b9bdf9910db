//! A whole chat completion as a `message`.

use lumen_openai_types::ChatCompletionResponse;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    ReplyContext, ReplyError, THINKING_SIGNATURE, message_id, stop_reason, usage_from_chat,
};
use crate::{MessagesResponse, ResponseBlock, ids};

#[derive(Deserialize)]
pub(crate) struct ToolCall {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) function: Option<Function>,
}

#[derive(Deserialize)]
pub(crate) struct Function {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) arguments: Option<String>,
}

/// The id a call gets when the engine sent none: deterministic, so a retried translation
/// agrees with itself.
pub(crate) fn fallback_call_id(index: usize) -> String {
    format!("call_{index}")
}

/// A tool call's `arguments` as the `input` object: empty means `{}` (engines send `""` for a
/// call without parameters); anything but an object is refused.
pub(crate) fn tool_input(name: &str, arguments: &str) -> Result<Box<RawValue>, ReplyError> {
    let trimmed = arguments.trim();
    let text = if trimmed.is_empty() { "{}" } else { trimmed };
    let raw: Box<RawValue> = serde_json::from_str(text).map_err(|e| ReplyError::ToolArguments {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    if !raw.get().starts_with('{') {
        return Err(ReplyError::ToolArguments {
            name: name.to_owned(),
            reason: "not an object".to_owned(),
        });
    }
    Ok(raw)
}

/// Translates a non-streamed answer. Only the first choice is read (the request never asks for
/// more). Blocks come in Anthropic's order: thinking, text, tool calls.
pub fn reply_from_chat(
    resp: &ChatCompletionResponse,
    ctx: &ReplyContext,
) -> Result<MessagesResponse, ReplyError> {
    let choice = resp
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or(resp.choices.first())
        .ok_or(ReplyError::NoChoice)?;
    let msg = &choice.message;
    let mut content = Vec::new();
    let reasoning = msg
        .extra
        .get_as::<String>("reasoning_content")
        .or_else(|| msg.extra.get_as::<String>("reasoning"))
        .filter(|r| !r.is_empty());
    if let Some(thinking) = reasoning {
        content.push(ResponseBlock::Thinking {
            thinking,
            signature: THINKING_SIGNATURE.to_owned(),
        });
    }
    if let Some(text) = msg
        .content
        .as_ref()
        .map(|c| c.text())
        .filter(|t| !t.is_empty())
    {
        content.push(ResponseBlock::Text { text });
    }
    let calls: Vec<ToolCall> = match msg.extra.get("tool_calls") {
        None => Vec::new(),
        Some(raw) if raw.get() == "null" => Vec::new(),
        Some(raw) => {
            serde_json::from_str(raw.get()).map_err(|e| ReplyError::ToolCalls(e.to_string()))?
        }
    };
    let called_tools = !calls.is_empty();
    for (i, call) in calls.into_iter().enumerate() {
        let f = call.function.unwrap_or(Function {
            name: None,
            arguments: None,
        });
        let name = f.name.unwrap_or_default();
        if name.is_empty() {
            return Err(ReplyError::ToolCalls(format!(
                "call {i} has no function name"
            )));
        }
        let input = tool_input(&name, f.arguments.as_deref().unwrap_or(""))?;
        let engine_id = call
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| fallback_call_id(i));
        content.push(ResponseBlock::ToolUse {
            id: ids::to_anthropic(&engine_id),
            name,
            input,
        });
    }
    let matched = choice.extra.get_as::<String>("stop_reason");
    let (stop, stop_sequence) = stop_reason(
        choice.finish_reason.as_deref(),
        matched.as_deref(),
        called_tools,
        ctx,
    );
    let model = if ctx.model.is_empty() {
        resp.model.clone()
    } else {
        ctx.model.clone()
    };
    let mut out = MessagesResponse::empty(
        message_id(&resp.id),
        model,
        usage_from_chat(resp.usage.as_ref()),
    );
    out.content = content;
    out.stop_reason = Some(stop);
    out.stop_sequence = stop_sequence;
    Ok(out)
}
