//! The `message` object a `/v1/messages` call answers with (and `message_start` carries), and
//! `count_tokens`' answer. Members are written in the order Anthropic writes them, so a
//! translated answer reads like a native one byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A whole answer. Serialise-only: Lumen writes these when translating; a native answer is
/// forwarded as the engine's bytes and only peeked at ([`crate::usage`]).
#[derive(Debug, Clone, Serialize)]
pub struct MessagesResponse {
    /// `msg_...`
    pub id: String,
    #[serde(rename = "type")]
    pub kind: MessageTag,
    pub role: AssistantTag,
    pub model: String,
    pub content: Vec<ResponseBlock>,
    pub stop_reason: Option<StopReason>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

impl MessagesResponse {
    /// An answer with no content yet (as `message_start` carries it).
    pub fn empty(id: String, model: String, usage: Usage) -> Self {
        Self {
            id,
            kind: MessageTag::Message,
            role: AssistantTag::Assistant,
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The constant `"message"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageTag {
    Message,
}

/// The constant `"assistant"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssistantTag {
    Assistant,
}

/// A block of an answer.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBlock {
    Text {
        text: String,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    ToolUse {
        /// `toolu_...` ([`crate::ids`]).
        id: String,
        name: String,
        /// A JSON object.
        input: Box<RawValue>,
    },
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    PauseTurn,
    Refusal,
}

/// Token counts. Anthropic's `input_tokens` excludes the tokens read from or written to the
/// prompt cache: the prompt is `input_tokens + cache_read_input_tokens +
/// cache_creation_input_tokens`. The cache members are written only when known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: u64,
}

impl Usage {
    /// From an OpenAI-style count: `prompt` tokens of which `cached` came from the cache.
    pub fn from_openai(prompt: u64, cached: Option<u64>, completion: u64) -> Self {
        let cached = cached.map(|c| c.min(prompt));
        Self {
            input_tokens: prompt - cached.unwrap_or(0),
            cache_creation_input_tokens: None,
            cache_read_input_tokens: cached,
            output_tokens: completion,
        }
    }

    /// Every prompt token, cached or not: what limits and quotas charge.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
    }
}

/// `POST /v1/messages/count_tokens`' answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountTokensResponse {
    pub input_tokens: u64,
}
