//! `POST /v1/completions` (the legacy text completion API, still served by every engine).

use serde::{Deserialize, Serialize};

use crate::Extra;
use crate::request::RequestError;
use crate::stream::{StreamOptions, Usage};
use crate::util::null_as_default;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    #[serde(default, deserialize_with = "null_as_default")]
    pub model: String,
    pub prompt: Prompt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl CompletionRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn validate(&self) -> Result<(), RequestError> {
        if self.prompt.is_empty() {
            return Err(RequestError::invalid(
                "'prompt' must not be empty.",
                "prompt",
            ));
        }
        crate::request::check_common(self.n, self.temperature, self.top_p)
    }
}

/// A prompt (or an embeddings `input`): text, texts, token ids, or batches of token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

impl Default for Prompt {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl Prompt {
    /// True when there is nothing to send (an empty list; an empty string is a valid prompt).
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Text(_) => false,
            Self::Texts(v) => v.is_empty(),
            Self::Tokens(v) => v.is_empty(),
            Self::TokenBatches(v) => v.is_empty() || v.iter().any(Vec::is_empty),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default = "object_text_completion")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Extra,
}

pub(crate) fn object_text_completion() -> String {
    "text_completion".to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// `logprobs`, `stop_reason`, `prompt_logprobs`, ...
    #[serde(flatten)]
    pub extra: Extra,
}

/// Streamed completions reuse the response shape, one choice fragment per event.
pub type CompletionChunk = CompletionResponse;
