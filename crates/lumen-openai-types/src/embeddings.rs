//! `POST /v1/embeddings`.

use serde::{Deserialize, Serialize};

use crate::completions::Prompt;
use crate::raw::deserialize_object;
use crate::request::RequestError;
use crate::util::null_as_default;
use crate::{Extra, RawExtra};

/// An embeddings request. `input` (token arrays are legitimate and can be long) and unknown
/// fields stay the client's JSON, and a request read from a body keeps it ([`Self::source`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EmbeddingRequest {
    pub model: String,
    /// Same shapes as a completion prompt.
    pub input: Prompt,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: RawExtra,
    /// The client's bytes, when the request was read from a body with
    /// [`crate::request::parse_shared`]: the engine is sent them (with what Lumen changed
    /// spliced in) rather than a re-serialisation ([`crate::Forwardable::forwarded`]). Not
    /// part of the request's value: ignored by `==` and never serialised.
    #[serde(skip)]
    pub source: Option<crate::source::Source>,
}

deserialize_object!(EmbeddingRequest, "an embeddings request object", {
    model: String = null_default,
    input: Prompt = required,
    encoding_format: Option<String> = default,
    dimensions: Option<u32> = default,
    user: Option<String> = default,
}, skip: [source]);

impl EmbeddingRequest {
    pub fn validate(&self) -> Result<(), RequestError> {
        self.input.check("input")?;
        match self.encoding_format.as_deref() {
            None | Some("float") | Some("base64") => Ok(()),
            Some(other) => Err(RequestError::invalid(
                format!("'{other}' is not one of ['float', 'base64'] - 'encoding_format'"),
                "encoding_format",
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    #[serde(default = "object_list")]
    pub object: String,
    #[serde(default)]
    pub data: Vec<Embedding>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub usage: EmbeddingUsage,
    #[serde(flatten)]
    pub extra: Extra,
}

pub(crate) fn object_list() -> String {
    "list".to_owned()
}

/// One vector. Not flattened: vectors are large and `flatten` would buffer them twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    #[serde(default = "object_embedding", deserialize_with = "null_as_default")]
    pub object: String,
    #[serde(default)]
    pub index: u32,
    pub embedding: EmbeddingVector,
}

fn object_embedding() -> String {
    "embedding".to_owned()
}

/// Floats for `encoding_format: "float"`, a base64 string of little-endian f32 for `"base64"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}
