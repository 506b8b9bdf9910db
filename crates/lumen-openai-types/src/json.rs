//! Engine endpoints that Lumen routes by `model` without reading their shape: vLLM's
//! `/tokenize`, `/detokenize` and rerank (`/v1/rerank`; `/rerank` and `/v2/rerank` for Jina and
//! Cohere clients). Everything but `model` (and, in the answer, `usage`) stays the JSON the
//! client or engine sent.

use serde::{Deserialize, Serialize};

use crate::raw::deserialize_object;
use crate::stream::Usage;
use crate::{Extra, RawExtra};

/// A request forwarded as it came, but for `model`, which routing resolves (an alias becomes
/// the engine's id).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JsonRequest {
    pub model: String,
    #[serde(flatten)]
    pub extra: RawExtra,
}

deserialize_object!(JsonRequest, "a JSON object", {
    model: String = null_default,
});

/// An engine's answer to a [`JsonRequest`]: `model` and `usage` are read when present
/// (rerank reports both; the tokenizer endpoints neither), the rest is kept as sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonAnswer {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Extra,
}
