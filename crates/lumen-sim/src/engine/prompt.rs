//! The prompt as the engine sees it: chat messages rendered through a fixed template, then the
//! simulator's tokenizer.
//!
//! The template is deliberately plain and deterministic, in the order real chat templates use:
//! the leading system (or developer) messages, the tools, then every other message in order,
//! one `role: text` line each, and `assistant: ` to prompt the answer (left out when the last
//! message is the assistant's, which is continued instead). Without tools it renders exactly
//! what `/tokenize` renders for the same messages, so `/tokenize`'s count is the engine's
//! `usage.prompt_tokens`, as on vLLM. A completion's prompt gets a beginning-of-sequence token
//! first (vLLM adds special tokens to a prompt, and a chat template carries its own). Two
//! requests share a KV-cache prefix exactly as far as their renderings share leading tokens,
//! which is what a router has to predict.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::text;

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: serde_json::Value,
    #[serde(default)]
    tool_calls: Option<serde_json::Value>,
}

/// The chat template's text for `messages` (a JSON array) and `tools` (a JSON array, or
/// absent). `Err` says why the messages are not an array of messages.
pub fn render_chat(messages: &str, tools: Option<&str>) -> Result<String, String> {
    let all: Vec<Message> =
        serde_json::from_str(messages).map_err(|e| format!("invalid messages: {e}"))?;
    let tools = match tools {
        Some(t) => {
            let v: serde_json::Value =
                serde_json::from_str(t).map_err(|e| format!("invalid tools: {e}"))?;
            (!v.is_null()).then(|| v.to_string())
        }
        None => None,
    };
    let lead = all
        .iter()
        .take_while(|m| m.role == "system" || m.role == "developer")
        .count();
    let mut out = String::new();
    for m in &all[..lead] {
        line(&mut out, m);
    }
    if let Some(t) = tools {
        out.push_str("tools: ");
        out.push_str(&t);
        out.push('\n');
    }
    for m in &all[lead..] {
        line(&mut out, m);
    }
    if all.last().is_none_or(|m| m.role != "assistant") {
        out.push_str("assistant: ");
    }
    Ok(out)
}

fn line(out: &mut String, m: &Message) {
    out.push_str(&m.role);
    out.push_str(": ");
    match &m.content {
        serde_json::Value::String(s) => out.push_str(s),
        serde_json::Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                    out.push_str(t);
                }
            }
        }
        _ => {}
    }
    if let Some(calls) = &m.tool_calls {
        out.push(' ');
        out.push_str(&calls.to_string());
    }
    out.push('\n');
}

/// Token ids of a chat request's prompt: the rendered template.
pub fn chat_tokens(messages: &str, tools: Option<&str>) -> Result<Vec<u32>, String> {
    let text = render_chat(messages, tools)?;
    let mut ids = Vec::with_capacity(text.len() / 3 + 1);
    text::encode(&text, |id| ids.push(id));
    Ok(ids)
}

/// Token ids of a completion request's `prompt` (raw JSON): BOS and the string, or for any
/// other shape (a list of prompts or of token ids) its JSON text, which keeps the count honest
/// without modelling batches.
pub(crate) fn completion_tokens(prompt: &RawValue) -> Vec<u32> {
    match serde_json::from_str::<&str>(prompt.get()) {
        Ok(s) => with_bos(s),
        Err(_) => match serde_json::from_str::<String>(prompt.get()) {
            Ok(s) => with_bos(&s),
            Err(_) => with_bos(prompt.get()),
        },
    }
}

fn with_bos(text: &str) -> Vec<u32> {
    let mut ids = Vec::with_capacity(text.len() / 3 + 1);
    ids.push(text::BOS);
    text::encode(text, |id| ids.push(id));
    ids
}

/// The ids of the answer's tokens `start..start + n` (one id per generated word).
pub(crate) fn output_tokens(start: u32, n: u32) -> Vec<u32> {
    let mut ids = Vec::with_capacity(n as usize);
    for i in start..start.saturating_add(n) {
        text::encode(text::token(i), |id| ids.push(id));
    }
    ids
}
