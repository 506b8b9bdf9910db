//! Types shared by streamed responses.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Extra;

/// `stream_options` on chat and completion requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Ask the engine for a final chunk that carries `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Token accounting, as every OpenAI-compatible engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// `prompt_tokens_details`, `completion_tokens_details` and engine extras.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One parsed stream event that remembers the bytes it came from.
///
/// The gateway must inspect every chunk (to spot errors, count tokens, rewrite model names) but
/// should not pay to re-serialise the ones it leaves alone. `Chunk` keeps the engine's original
/// `data:` payload until [`Chunk::get_mut`] is called; after that it is serialised fresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk<T> {
    value: T,
    raw: Option<Bytes>,
}

impl<T> Chunk<T> {
    /// A chunk built in process (for example by a custom backend); serialised when sent.
    pub fn new(value: T) -> Self {
        Self { value, raw: None }
    }

    /// Parses an engine's `data:` payload and keeps the bytes for pass-through.
    pub fn from_raw(raw: Bytes) -> Result<Self, serde_json::Error>
    where
        T: DeserializeOwned,
    {
        let value = serde_json::from_slice(&raw)?;
        Ok(Self {
            value,
            raw: Some(raw),
        })
    }

    pub fn get(&self) -> &T {
        &self.value
    }

    /// Mutable access; the original bytes are dropped because they no longer match.
    pub fn get_mut(&mut self) -> &mut T {
        self.raw = None;
        &mut self.value
    }

    pub fn into_inner(self) -> T {
        self.value
    }

    /// The original payload, if this chunk is still unchanged.
    pub fn raw(&self) -> Option<&Bytes> {
        self.raw.as_ref()
    }

    /// The JSON payload to send: the original bytes when unchanged, else a fresh serialisation.
    pub fn to_json(&self) -> Result<Bytes, serde_json::Error>
    where
        T: Serialize,
    {
        match &self.raw {
            Some(raw) => Ok(raw.clone()),
            None => serde_json::to_vec(&self.value).map(Bytes::from),
        }
    }
}

/// A request, response or chunk that names its model: requests are pointed at the engine's id,
/// responses show the caller's (an alias, or what `auto` chose).
pub trait HasModel {
    fn model(&self) -> &str;
    fn model_mut(&mut self) -> &mut String;
}

macro_rules! has_model {
    ($($t:ty),*) => {$(
        impl HasModel for $t {
            fn model(&self) -> &str {
                &self.model
            }
            fn model_mut(&mut self) -> &mut String {
                &mut self.model
            }
        }
    )*};
}

has_model!(
    crate::ChatCompletionResponse,
    crate::ChatCompletionChunk,
    crate::CompletionResponse,
    crate::EmbeddingResponse,
    crate::ChatCompletionRequest,
    crate::CompletionRequest,
    crate::EmbeddingRequest
);

/// A response or chunk that may carry token usage, so the gateway can count tokens.
pub trait HasUsage {
    /// (input, output) tokens, when reported.
    fn tokens(&self) -> Option<(u64, u64)>;

    /// True for the final usage-only chunk that `stream_options.include_usage` adds.
    fn is_usage_only(&self) -> bool {
        false
    }
}

impl HasUsage for crate::ChatCompletionResponse {
    fn tokens(&self) -> Option<(u64, u64)> {
        self.usage
            .as_ref()
            .map(|u| (u.prompt_tokens, u.completion_tokens))
    }
}

impl HasUsage for crate::ChatCompletionChunk {
    fn tokens(&self) -> Option<(u64, u64)> {
        self.usage
            .as_ref()
            .map(|u| (u.prompt_tokens, u.completion_tokens))
    }
    fn is_usage_only(&self) -> bool {
        self.choices.is_empty() && self.usage.is_some()
    }
}

/// Also the completion stream chunk type.
impl HasUsage for crate::CompletionResponse {
    fn tokens(&self) -> Option<(u64, u64)> {
        self.usage
            .as_ref()
            .map(|u| (u.prompt_tokens, u.completion_tokens))
    }
    fn is_usage_only(&self) -> bool {
        self.choices.is_empty() && self.usage.is_some()
    }
}

impl HasUsage for crate::EmbeddingResponse {
    fn tokens(&self) -> Option<(u64, u64)> {
        Some((self.usage.prompt_tokens, 0))
    }
}
