//! A Messages request as a chat completion request.
//!
//! The rules, each what real clients send and what peers' users reported broken:
//! - `system` (a string or text blocks) and every `role: system` message join, in order and
//!   separated by a newline, into one leading system message: many chat templates refuse a
//!   system message anywhere but first.
//! - user text and images become content parts (a lone text block a plain string, which every
//!   template takes); images as `image_url`, base64 ones as a `data:` URL.
//! - `tool_result` blocks become `tool` messages (`tool_call_id` mapped by [`crate::ids`]),
//!   placed before the rest of the user's turn as chat requires them right after the call; a
//!   result's images follow in a user message (tool messages carry text only); `is_error`
//!   prefixes the text with `Error: ` so the model still learns the call failed.
//! - assistant text, `thinking` (as `reasoning_content`, which reasoning templates read back)
//!   and `tool_use` (as `tool_calls`, the input as the arguments string) join in one message.
//!   `redacted_thinking` is Anthropic's encrypted reasoning: no other model can read it, so it
//!   is left out.
//! - tools become functions (`input_schema` → `parameters`), `tool_choice` auto/any/tool/none
//!   → `auto`/`required`/named/`none`, `disable_parallel_tool_use` → `parallel_tool_calls:
//!   false`; `stop_sequences` → `stop`; `metadata.user_id` → `user`; `top_k` as the engine
//!   extra it is; a stream asks for the final usage chunk.
//! - unknown top-level members are engine extras and passed on, except the Anthropic-only
//!   features in [`REFUSED_FIELDS`]; `cache_control` is accepted and ignored everywhere.
//! - refused with a 400 naming the field: documents, search results and other block types a
//!   chat message cannot hold, image sources other than base64 and URL, server tools.

use lumen_openai_types::{
    ChatCompletionRequest, ChatMessage, MessageContent as ChatContent, RawExtra, StreamOptions,
};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ReplyContext, ThinkingStyle, TranslateOptions, Translated};
use crate::request::{
    ContentBlock, ImageSource, Message, MessageContent, MessagesRequest, ResultBlock, Role, System,
    Thinking, ToolChoice, ToolResultContent,
};
use crate::{RequestError, ids};

/// Top-level members that name Anthropic-hosted features no engine has: refused when
/// translating (a native engine gets them and answers for itself).
pub const REFUSED_FIELDS: &[&str] = &["container", "mcp_servers", "output_format", "output_config"];

/// Top-level members accepted and ignored: Anthropic's account-level hints, and
/// `context_management`, the context edits (clear old thinking or tool results) Claude Code asks
/// for on every request with thinking on. They only trim what the model reads to save tokens;
/// without them the engine reads the whole history it was sent, and the answer is the same
/// kind of answer. Refusing it would refuse Claude Code's first request.
const IGNORED_FIELDS: &[&str] = &["service_tier", "inference_geo", "context_management"];

/// Translates a `/v1/messages` request.
pub fn to_chat(req: &MessagesRequest, opts: &TranslateOptions) -> Result<Translated, RequestError> {
    let mut out = ChatCompletionRequest {
        model: req.model.clone(),
        messages: messages(req)?.into(),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        user: req.user_id.clone(),
        ..ChatCompletionRequest::default()
    };
    if req.stream {
        out.stream = Some(true);
        let mut extra = RawExtra::new();
        if opts.continuous_usage {
            insert(&mut extra, "continuous_usage_stats", &true)?;
        }
        out.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            extra,
        });
    }
    let x = &mut out.extra;
    for (key, value) in &req.extra {
        if REFUSED_FIELDS.contains(&key.as_str()) {
            return Err(RequestError::unsupported(key.as_str(), format!("`{key}`")));
        }
        if !IGNORED_FIELDS.contains(&key.as_str()) {
            insert(x, key, value)?;
        }
    }
    if !req.stop_sequences.is_empty() {
        insert(x, "stop", &req.stop_sequences)?;
    }
    if let Some(k) = req.top_k {
        insert(x, "top_k", &k)?;
    }
    tools(req, x)?;
    thinking(req, opts, x)?;
    Ok(Translated {
        request: out,
        reply: ReplyContext {
            model: req.model.clone(),
            stop_sequences: req.stop_sequences.clone(),
        },
    })
}

/// Translates a `/v1/messages/count_tokens` request: the prompt as the engine would see it
/// (messages and tools), for its tokenizer. Nothing to generate, so no sampling fields.
pub fn count_tokens_to_chat(req: &MessagesRequest) -> Result<ChatCompletionRequest, RequestError> {
    let mut out = ChatCompletionRequest {
        model: req.model.clone(),
        messages: messages(req)?.into(),
        ..ChatCompletionRequest::default()
    };
    tools(req, &mut out.extra)?;
    Ok(out)
}

fn insert<T: Serialize + ?Sized>(x: &mut RawExtra, key: &str, v: &T) -> Result<(), RequestError> {
    x.insert(key, v)
        .map_err(|e| RequestError::invalid(key, e.to_string()))
}

fn messages(req: &MessagesRequest) -> Result<Vec<ChatMessage>, RequestError> {
    let mut system = String::new();
    match &req.system {
        None => {}
        Some(System::Text(t)) => push_line(&mut system, t),
        Some(System::Blocks(blocks)) => system_blocks(&mut system, blocks, "system")?,
    }
    let mut out = Vec::with_capacity(req.messages.len() + 1);
    for (i, m) in req.messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match m.role {
            Role::System => match &m.content {
                MessageContent::Text(t) => push_line(&mut system, t),
                MessageContent::Blocks(b) => {
                    system_blocks(&mut system, b, &format!("{at}.content"))?
                }
            },
            Role::User => user(&mut out, m, &at)?,
            Role::Assistant => out.push(assistant(m, &at)?),
        }
    }
    if !system.is_empty() {
        out.insert(0, ChatMessage::new("system", system));
    }
    Ok(out)
}

fn push_line(out: &mut String, text: &str) {
    if text.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(text);
}

fn system_blocks(out: &mut String, blocks: &[ContentBlock], at: &str) -> Result<(), RequestError> {
    for (j, b) in blocks.iter().enumerate() {
        match b {
            ContentBlock::Text { text } => push_line(out, text),
            other => {
                return Err(RequestError::unsupported(
                    format!("{at}[{j}]"),
                    format!("a {} block in the system prompt", kind(other)),
                ));
            }
        }
    }
    Ok(())
}

fn kind(b: &ContentBlock) -> &str {
    match b {
        ContentBlock::Text { .. } => "text",
        ContentBlock::Image { .. } => "image",
        ContentBlock::ToolUse { .. } => "tool_use",
        ContentBlock::ToolResult { .. } => "tool_result",
        ContentBlock::Thinking { .. } => "thinking",
        ContentBlock::RedactedThinking { .. } => "redacted_thinking",
        ContentBlock::Other { kind } => kind,
    }
}

fn image_part(source: &ImageSource, at: &str) -> Result<Value, RequestError> {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
        ImageSource::Other { kind } => {
            return Err(RequestError::unsupported(
                format!("{at}.source"),
                format!("an image source of type {kind:?}"),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Content parts as a message's content: one text part as a plain string.
fn content(parts: Vec<Value>) -> Result<ChatContent, RequestError> {
    if let [Value::Object(p)] = parts.as_slice()
        && let Some(Value::String(t)) = p.get("text")
    {
        return Ok(ChatContent::Text(t.clone()));
    }
    let raw = serde_json::value::to_raw_value(&parts)
        .map_err(|e| RequestError::invalid("messages", e.to_string()))?;
    Ok(ChatContent::Parts(raw))
}

fn user(out: &mut Vec<ChatMessage>, m: &Message, at: &str) -> Result<(), RequestError> {
    let blocks = match &m.content {
        MessageContent::Text(t) => {
            out.push(ChatMessage::new("user", t.as_str()));
            return Ok(());
        }
        MessageContent::Blocks(b) => b,
    };
    let mut parts = Vec::new();
    let mut result_images = Vec::new();
    let mut had_results = false;
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match b {
            ContentBlock::Text { text } => parts.push(json!({"type": "text", "text": text})),
            ContentBlock::Image { source } => parts.push(image_part(source, &at)?),
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                had_results = true;
                out.push(tool_message(
                    tool_use_id,
                    content,
                    *is_error,
                    &at,
                    &mut result_images,
                )?)
            }
            other => {
                return Err(RequestError::unsupported(
                    at,
                    format!("a {} block in a user message", kind(other)),
                ));
            }
        }
    }
    if !result_images.is_empty() {
        out.push(ChatMessage {
            role: "user".to_owned(),
            content: Some(content(result_images)?),
            ..ChatMessage::default()
        });
    }
    // A turn of only tool results needs no user message after them.
    if !parts.is_empty() || !had_results {
        let content = if parts.is_empty() {
            ChatContent::Text(String::new())
        } else {
            content(parts)?
        };
        out.push(ChatMessage {
            role: "user".to_owned(),
            content: Some(content),
            ..ChatMessage::default()
        });
    }
    Ok(())
}

fn tool_message(
    tool_use_id: &str,
    content: &ToolResultContent,
    is_error: bool,
    at: &str,
    images: &mut Vec<Value>,
) -> Result<ChatMessage, RequestError> {
    let mut text = String::new();
    if is_error {
        text.push_str("Error: ");
    }
    match content {
        ToolResultContent::Text(t) => text.push_str(t),
        ToolResultContent::Blocks(blocks) => {
            let mut first = true;
            for (k, b) in blocks.iter().enumerate() {
                match b {
                    ResultBlock::Text { text: t } => {
                        if !first {
                            text.push('\n');
                        }
                        text.push_str(t);
                        first = false;
                    }
                    ResultBlock::Image { source } => {
                        images.push(image_part(source, &format!("{at}.content[{k}]"))?)
                    }
                    ResultBlock::Other { kind } => {
                        return Err(RequestError::unsupported(
                            format!("{at}.content[{k}]"),
                            format!("a {kind} block in a tool result"),
                        ));
                    }
                }
            }
        }
    }
    let mut msg = ChatMessage::new("tool", text);
    insert(&mut msg.extra, "tool_call_id", &ids::to_engine(tool_use_id))?;
    Ok(msg)
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    /// The input object as JSON text, as chat's `arguments` are.
    arguments: &'a str,
}

fn assistant(m: &Message, at: &str) -> Result<ChatMessage, RequestError> {
    let blocks = match &m.content {
        MessageContent::Text(t) => return Ok(ChatMessage::new("assistant", t.as_str())),
        MessageContent::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b {
            ContentBlock::Text { text: t } => text.push_str(t),
            ContentBlock::Thinking { thinking, .. } => reasoning.push_str(thinking),
            ContentBlock::RedactedThinking { .. } => {}
            ContentBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id: ids::to_engine(id),
                kind: "function",
                function: FunctionCall {
                    name,
                    arguments: input.get(),
                },
            }),
            other => {
                return Err(RequestError::unsupported(
                    format!("{at}.content[{j}]"),
                    format!("a {} block in an assistant message", kind(other)),
                ));
            }
        }
    }
    let mut msg = ChatMessage {
        role: "assistant".to_owned(),
        // Chat's convention for a turn that only calls tools.
        content: (!text.is_empty() || calls.is_empty()).then_some(ChatContent::Text(text)),
        ..ChatMessage::default()
    };
    if !calls.is_empty() {
        insert(&mut msg.extra, "tool_calls", &calls)?;
    }
    if !reasoning.is_empty() {
        insert(&mut msg.extra, "reasoning_content", &reasoning)?;
    }
    Ok(msg)
}

#[derive(Serialize)]
struct Function<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDef<'a>,
}

#[derive(Serialize)]
struct FunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a RawValue,
}

fn tools(req: &MessagesRequest, x: &mut RawExtra) -> Result<(), RequestError> {
    let mut out = Vec::with_capacity(req.tools.len());
    for (i, t) in req.tools.iter().enumerate() {
        match t.kind.as_deref() {
            None | Some("custom") => {}
            Some(server) => {
                return Err(RequestError::unsupported(
                    format!("tools[{i}].type"),
                    format!("the server tool {server:?}"),
                ));
            }
        }
        // Validation made `input_schema` required for client tools.
        let Some(schema) = &t.input_schema else {
            return Err(RequestError::invalid(
                format!("tools[{i}].input_schema"),
                "Field required",
            ));
        };
        out.push(Function {
            kind: "function",
            function: FunctionDef {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: schema,
            },
        });
    }
    if !out.is_empty() {
        insert(x, "tools", &out)?;
    }
    let (choice, parallel_off) = match &req.tool_choice {
        None => return Ok(()),
        Some(ToolChoice::Auto {
            disable_parallel_tool_use,
        }) => (json!("auto"), *disable_parallel_tool_use),
        Some(ToolChoice::Any {
            disable_parallel_tool_use,
        }) => (json!("required"), *disable_parallel_tool_use),
        Some(ToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        }) => (
            json!({"type": "function", "function": {"name": name}}),
            *disable_parallel_tool_use,
        ),
        Some(ToolChoice::None) => (json!("none"), false),
    };
    // `tool_choice` without tools is meaningless to chat and refused by some engines.
    if !out.is_empty() {
        insert(x, "tool_choice", &choice)?;
        if parallel_off {
            insert(x, "parallel_tool_calls", &false)?;
        }
    }
    Ok(())
}

fn thinking(
    req: &MessagesRequest,
    opts: &TranslateOptions,
    x: &mut RawExtra,
) -> Result<(), RequestError> {
    let (on, budget) = match req.thinking {
        None => return Ok(()),
        Some(Thinking::Disabled) => (false, None),
        Some(Thinking::Adaptive) => (true, None),
        Some(Thinking::Enabled { budget_tokens }) => {
            let mut b = budget_tokens;
            if let Some(max) = opts.max_thinking_budget {
                b = b.min(max);
            }
            if let Some(max) = req.max_tokens {
                b = b.min(max.saturating_sub(1));
            }
            (true, Some(b))
        }
    };
    match opts.thinking {
        ThinkingStyle::Refuse if on => Err(RequestError::unsupported("thinking", "thinking")),
        ThinkingStyle::Refuse => Ok(()),
        ThinkingStyle::ReasoningEffort => {
            // Off means the engine's default, which for a reasoning model is to think: there
            // is no chat parameter that turns it off everywhere.
            if on {
                let effort = match budget {
                    Some(b) if b < 4096 => "low",
                    Some(b) if b < 16384 => "medium",
                    _ => "high",
                };
                insert(x, "reasoning_effort", effort)?;
            }
            Ok(())
        }
        ThinkingStyle::TemplateKwargs => {
            // A client's own `chat_template_kwargs` wins: it knows its template.
            if !x.contains_key("chat_template_kwargs") {
                insert(x, "chat_template_kwargs", &json!({"enable_thinking": on}))?;
            }
            if let Some(b) = budget {
                insert(x, "thinking_token_budget", &b)?;
            }
            Ok(())
        }
    }
}
