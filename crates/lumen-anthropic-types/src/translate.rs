//! Messages ⇄ OpenAI chat completions, for engines that do not serve `/v1/messages`.
//!
//! Pure functions over `lumen-openai-types`' chat types: [`to_chat`] turns a request into a chat
//! request and the [`ReplyContext`] its answer needs; [`reply_from_chat`] turns a whole answer
//! back; [`StreamTranslator`] turns a chat stream into Anthropic events one chunk at a time.
//! [`error_from_chat`] turns an engine's error body into Anthropic's shape. Nothing here does
//! I/O. What a chat completion cannot express is refused with a [`crate::RequestError::Unsupported`]
//! naming the field, never dropped.

use lumen_openai_types::ChatCompletionRequest;

use crate::{ErrorBody, ErrorType, StopReason, Usage};

mod reply;
mod request;
mod stream;

pub use reply::reply_from_chat;
pub use request::{REFUSED_FIELDS, count_tokens_to_chat, to_chat};
pub use stream::StreamTranslator;

/// The signature given to thinking blocks an engine produced. Anthropic signs its own thinking
/// so it can verify it when sent back; a self-hosted engine has nothing to sign with, and
/// clients only echo the value, which the translation ignores on the way in.
pub const THINKING_SIGNATURE: &str = "lumen-unsigned";

/// How the engine behind a translated model is asked to think.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ThinkingStyle {
    /// `reasoning_effort` (`low` below 4k tokens of budget, `medium` below 16k, else `high`):
    /// the OpenAI parameter Ollama and most OpenAI-compatible servers read.
    #[default]
    ReasoningEffort,
    /// `chat_template_kwargs.enable_thinking` and vLLM's `thinking_token_budget`: for engines
    /// whose chat template switches thinking (Qwen3, DeepSeek, GLM on vLLM or SGLang).
    TemplateKwargs,
    /// The engine cannot think on request: `thinking.type: enabled` is refused.
    Refuse,
}

/// Per-backend settings of the translation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    pub thinking: ThinkingStyle,
    /// The largest thinking budget the engine accepts; a client's larger budget is clamped to
    /// it (and always to `max_tokens - 1`).
    pub max_thinking_budget: Option<u32>,
    /// Ask for vLLM's `stream_options.continuous_usage_stats`, so `message_start` carries the
    /// prompt's token count as Anthropic's does (engines without it report it only at the end).
    pub continuous_usage: bool,
}

/// A translated request and what translating its answer needs.
#[derive(Debug, Clone)]
pub struct Translated {
    pub request: ChatCompletionRequest,
    pub reply: ReplyContext,
}

/// What an answer's translation needs from the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyContext {
    /// The model name the client asked for, shown in the answer (empty: the engine's).
    pub model: String,
    /// The client's stop sequences: an engine that says which one matched (vLLM's
    /// `stop_reason`) gets `stop_reason: stop_sequence` with it.
    pub stop_sequences: Vec<String>,
}

/// The engine's answer cannot be expressed in Anthropic's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the engine's answer has no choices")]
    NoChoice,
    #[error("the engine's tool calls are malformed: {0}")]
    ToolCalls(String),
    #[error("the engine's arguments for tool {name:?} are not a JSON object: {reason}")]
    ToolArguments { name: String, reason: String },
    #[error("the engine's stream sent more than {0} tool calls")]
    TooManyToolCalls(usize),
    #[error("the engine's stream went back to tool call {0} after another block began")]
    InterleavedToolCall(u32),
    #[error("the engine ended the answer without a finish reason")]
    Unfinished,
}

impl ReplyError {
    /// A bad answer from upstream: 502, `api_error`.
    pub fn status(&self) -> u16 {
        502
    }

    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(ErrorType::ApiError, self.to_string())
    }
}

/// An engine's error answer (any of the shapes `lumen-openai-types` recognises) in Anthropic's
/// shape, typed by the status it came with.
pub fn error_from_chat(status: u16, body: &[u8]) -> ErrorBody {
    let message = lumen_openai_types::ErrorObject::from_upstream(body)
        .map(|e| e.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the engine answered with status {status}"));
    ErrorBody::for_status(status, message)
}

/// `msg_` and the engine's id without its `chatcmpl-` prefix (deterministic, so an answer and
/// its retry-free translation always agree).
pub(crate) fn message_id(engine_id: &str) -> String {
    let core = engine_id.strip_prefix("chatcmpl-").unwrap_or(engine_id);
    if core.is_empty() {
        return "msg_lumen".to_owned();
    }
    format!("msg_{core}")
}

/// Why the model stopped, from the chat `finish_reason`, vLLM's `stop_reason` (the matched stop
/// string) and whether the answer called tools.
pub(crate) fn stop_reason(
    finish: Option<&str>,
    matched: Option<&str>,
    called_tools: bool,
    ctx: &ReplyContext,
) -> (StopReason, Option<String>) {
    match finish {
        Some("length") => (StopReason::MaxTokens, None),
        Some("tool_calls" | "function_call") => (StopReason::ToolUse, None),
        Some("content_filter") => (StopReason::Refusal, None),
        // Some engines (older llama.cpp, Ollama) say `stop` after tool calls.
        _ if called_tools => (StopReason::ToolUse, None),
        _ => match matched.filter(|m| ctx.stop_sequences.iter().any(|s| s == m)) {
            Some(m) => (StopReason::StopSequence, Some(m.to_owned())),
            None => (StopReason::EndTurn, None),
        },
    }
}

/// Anthropic usage from a chat `usage` (cached prompt tokens become cache reads).
pub(crate) fn usage_from_chat(u: Option<&lumen_openai_types::Usage>) -> Usage {
    let Some(u) = u else {
        return Usage::default();
    };
    let cached = u
        .extra
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(serde_json::Value::as_u64);
    Usage::from_openai(u.prompt_tokens, cached, u.completion_tokens)
}

#[cfg(test)]
mod tests;
