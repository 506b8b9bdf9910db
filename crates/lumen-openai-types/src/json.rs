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

/// A request body forwarded byte for byte, but for `model`, which routing resolves (an alias
/// becomes the engine's id). Where [`JsonRequest`] is re-serialised (its members reordered,
/// whitespace dropped), this keeps the client's exact bytes, so an engine that serves the
/// client's API itself (Anthropic's `/v1/messages` on vLLM) gets what the client sent; only the
/// `model` string is spliced, and only when routing changed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonBody {
    /// The model to send; starts as the body's own.
    pub model: String,
    body: bytes::Bytes,
    /// The body's `model` value as it came (quotes included), by byte range; `None` when the
    /// body has no `model`.
    at: Option<(usize, usize)>,
    /// The body's own model, to tell whether `model` changed.
    original: String,
}

#[derive(Deserialize)]
struct ModelAt<'a> {
    #[serde(borrow, default)]
    model: Option<&'a serde_json::value::RawValue>,
}

impl JsonBody {
    /// Reads where the body's top-level `model` is. The body must be a JSON object; a `model`
    /// that is not a string (or `null`) is refused.
    pub fn parse(body: bytes::Bytes) -> Result<Self, serde_json::Error> {
        let found: ModelAt<'_> = serde_json::from_slice(&body)?;
        let (model, at) = match found.model {
            None => (String::new(), None),
            Some(raw) => {
                let text = raw.get();
                let model = if text == "null" {
                    String::new()
                } else {
                    serde_json::from_str::<String>(text)?
                };
                // The raw value borrows from `body`: its offset is where it lies in it.
                let start = (text.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
                let end = start.wrapping_add(text.len());
                let inside = body.get(start..end) == Some(text.as_bytes());
                (model, inside.then_some((start, end)))
            }
        };
        Ok(Self {
            original: model.clone(),
            model,
            body,
            at,
        })
    }

    /// The body as the client sent it.
    pub fn original(&self) -> &bytes::Bytes {
        &self.body
    }

    /// The body to send: the client's bytes when `model` is unchanged, else the same bytes
    /// with the new model in place of the old (or, when it had none, first in the object).
    pub fn to_bytes(&self) -> bytes::Bytes {
        if self.model == self.original && (self.at.is_some() || self.model.is_empty()) {
            return self.body.clone();
        }
        // A string always encodes.
        let model = serde_json::to_vec(&self.model).unwrap_or_default();
        let mut out = Vec::with_capacity(self.body.len() + model.len() + 10);
        match self.at {
            Some((start, end)) => {
                out.extend_from_slice(&self.body[..start]);
                out.extend_from_slice(&model);
                out.extend_from_slice(&self.body[end..]);
            }
            None => {
                let open = self.body.iter().position(|b| *b == b'{').unwrap_or(0);
                let rest = &self.body[open + 1..];
                let empty = rest.trim_ascii_start().starts_with(b"}");
                out.extend_from_slice(&self.body[..=open]);
                out.extend_from_slice(b"\"model\":");
                out.extend_from_slice(&model);
                if !empty {
                    out.push(b',');
                }
                out.extend_from_slice(rest);
            }
        }
        out.into()
    }
}

impl crate::HasModel for JsonBody {
    fn model(&self) -> &str {
        &self.model
    }
    fn model_mut(&mut self) -> &mut String {
        &mut self.model
    }
}

#[cfg(test)]
mod tests;
