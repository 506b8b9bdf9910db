//! `POST /v1/completions` (the legacy text completion API, still served by every engine).

use std::fmt;

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::raw::{Elements, deserialize_object, same_json};
use crate::request::RequestError;
use crate::stream::{StreamOptions, Usage};
use crate::{Extra, RawExtra, RawJson};

/// A completion request. `prompt` and unknown fields stay the client's JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
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

deserialize_object!(CompletionRequest, "a completion request object", {
    model: String = null_default,
    prompt: Prompt = required,
    stream: Option<bool> = default,
    stream_options: Option<StreamOptions> = default,
    max_tokens: Option<u32> = default,
    temperature: Option<f64> = default,
    top_p: Option<f64> = default,
    n: Option<u32> = default,
    seed: Option<i64> = default,
    user: Option<String> = default,
}, skip: [source]);

impl CompletionRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn validate(&self) -> Result<(), RequestError> {
        self.prompt.check("prompt")?;
        crate::request::check_common(self.n, self.temperature, self.top_p)
    }
}

/// A prompt (or an embeddings `input`): text, texts, token ids, or batches of token ids.
///
/// A parsed request holds [`Prompt::Raw`]: the client's JSON (a slice of the body itself when
/// the request keeps it, [`crate::Source`]), checked for one of the four shapes by `validate`
/// but not expanded (a token array as `Vec<u32>` costs twice its JSON, a batch of one-token
/// arrays twelve times). The typed variants are for requests built in code.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
    /// As received: a JSON string or array.
    Raw(RawJson),
}

impl Default for Prompt {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl PartialEq for Prompt {
    fn eq(&self, other: &Self) -> bool {
        same_json(self, other)
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawJson::deserialize(d)?;
        match raw.kind() {
            b'"' | b'[' => Ok(Self::Raw(raw)),
            _ => Err(de::Error::custom(
                "invalid type: expected a string, an array of strings, an array of token ids \
                 or an array of token-id arrays",
            )),
        }
    }
}

/// What a raw prompt array holds, found in one pass without keeping it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Empty,
    Texts,
    Tokens,
    /// `true` when some batch is empty.
    Batches(bool),
    Mixed,
}

impl Prompt {
    /// The prompt as a slice of the client's body (`text`, the body's member); `None` when it
    /// is not UTF-8.
    pub(crate) fn shared(text: bytes::Bytes) -> Option<Self> {
        RawJson::shared(text).map(Self::Raw)
    }

    /// The body slice the prompt is, when it is one.
    pub(crate) fn shared_bytes(&self) -> Option<&bytes::Bytes> {
        match self {
            Self::Raw(r) => r.shared_bytes(),
            _ => None,
        }
    }

    /// True when there is nothing to send (an empty list; an empty string is a valid prompt).
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Text(_) => false,
            Self::Texts(v) => v.is_empty(),
            Self::Tokens(v) => v.is_empty(),
            Self::TokenBatches(v) => v.is_empty() || v.iter().any(Vec::is_empty),
            Self::Raw(r) => match shape(r) {
                Some(Shape::Empty | Shape::Batches(true)) => true,
                Some(_) | None => false,
            },
        }
    }

    /// How many prompts the request holds: each is answered separately (`n` times), so each
    /// is a completion budget to reserve. A token array is one prompt; an array of texts or
    /// of token arrays is one per element (counted in one pass, nothing kept).
    pub fn count(&self) -> u64 {
        match self {
            Self::Text(_) | Self::Tokens(_) => 1,
            Self::Texts(v) => v.len() as u64,
            Self::TokenBatches(v) => v.len() as u64,
            Self::Raw(r) => match shape(r) {
                Some(Shape::Texts) if r.kind() == b'"' => 1,
                Some(Shape::Texts | Shape::Batches(_)) => {
                    Elements::<IgnoredAny>::new(r.get()).count() as u64
                }
                _ => 1,
            },
        }
    }

    /// One of the four shapes and not empty; `field` names it in the error.
    pub(crate) fn check(&self, field: &str) -> Result<(), RequestError> {
        if let Self::Raw(r) = self {
            if matches!(shape(r), None | Some(Shape::Mixed)) {
                return Err(RequestError::invalid(
                    format!(
                        "Invalid value for '{field}': expected a string, an array of strings, \
                         an array of token ids or an array of token-id arrays."
                    ),
                    field,
                ));
            }
        }
        if self.is_empty() {
            return Err(RequestError::invalid(
                format!("'{field}' must not be empty."),
                field,
            ));
        }
        Ok(())
    }

    /// The leading content, at most `max` bytes: the text, the first text, or the first token
    /// ids as little-endian `u32`s. Read without expanding the rest (prefix routing hashes it).
    pub fn leading_bytes(&self, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let tokens = |out: &mut Vec<u8>, t: &[u32]| {
            for x in t {
                if out.len() + 4 > max {
                    break;
                }
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        let text =
            |out: &mut Vec<u8>, s: &str| out.extend_from_slice(&s.as_bytes()[..s.len().min(max)]);
        match self {
            Self::Text(s) => text(&mut out, s),
            Self::Texts(v) => text(&mut out, v.first().map_or("", String::as_str)),
            Self::Tokens(t) => tokens(&mut out, t),
            Self::TokenBatches(b) => tokens(&mut out, b.first().map_or(&[], Vec::as_slice)),
            Self::Raw(r) => match r.kind() {
                b'"' => {
                    if let Ok(s) = serde_json::from_str::<std::borrow::Cow<'_, str>>(r.get()) {
                        text(&mut out, &s);
                    }
                }
                _ => {
                    if let Some(Ok(first)) = Elements::<Leading<'_>>::new(r.get()).next() {
                        match first {
                            Leading::Text(s) => text(&mut out, &s),
                            Leading::Token => {
                                // A token array: read on until `max`.
                                for t in Elements::<u32>::new(r.get()).map_while(Result::ok) {
                                    if out.len() + 4 > max {
                                        break;
                                    }
                                    out.extend_from_slice(&t.to_le_bytes());
                                }
                            }
                            Leading::Batch => {
                                if let Some(Ok(b)) = Elements::<&RawValue>::new(r.get()).next() {
                                    for t in Elements::<u32>::new(b.get()).map_while(Result::ok) {
                                        if out.len() + 4 > max {
                                            break;
                                        }
                                        out.extend_from_slice(&t.to_le_bytes());
                                    }
                                }
                            }
                        }
                    }
                }
            },
        }
        out
    }
}

/// The first element of a raw prompt array.
enum Leading<'a> {
    Text(std::borrow::Cow<'a, str>),
    Token,
    Batch,
}

impl<'de> Deserialize<'de> for Leading<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Leading<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Leading<'de>, E> {
                Ok(Leading::Text(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Leading<'de>, E> {
                Ok(Leading::Text(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Leading<'de>, E> {
                u32::try_from(v)
                    .map(|_| Leading::Token)
                    .map_err(|_| E::custom("token id out of range"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leading<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Leading::Batch)
            }
        }
        d.deserialize_any(V)
    }
}

/// The shape of a raw prompt; `None` when it is not valid JSON of any prompt type.
fn shape(raw: &RawJson) -> Option<Shape> {
    if raw.kind() == b'"' {
        return Some(Shape::Texts);
    }
    serde_json::from_str::<ShapeOf>(raw.get()).ok().map(|s| s.0)
}

struct ShapeOf(Shape);

impl<'de> Deserialize<'de> for ShapeOf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// One element: its kind, and for a batch whether it is empty and all token ids.
        enum Item {
            Text,
            Token,
            Batch { empty: bool, tokens: bool },
            Other,
        }
        impl<'de> Deserialize<'de> for Item {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Item;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a prompt element")
                    }
                    fn visit_str<E>(self, _: &str) -> Result<Item, E> {
                        Ok(Item::Text)
                    }
                    fn visit_u64<E>(self, v: u64) -> Result<Item, E> {
                        Ok(if u32::try_from(v).is_ok() {
                            Item::Token
                        } else {
                            Item::Other
                        })
                    }
                    fn visit_i64<E>(self, v: i64) -> Result<Item, E> {
                        Ok(if u32::try_from(v).is_ok() {
                            Item::Token
                        } else {
                            Item::Other
                        })
                    }
                    fn visit_f64<E>(self, _: f64) -> Result<Item, E> {
                        Ok(Item::Other)
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<Item, E> {
                        Ok(Item::Other)
                    }
                    fn visit_unit<E>(self) -> Result<Item, E> {
                        Ok(Item::Other)
                    }
                    fn visit_map<A: de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Item, A::Error> {
                        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                        Ok(Item::Other)
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                        let (mut empty, mut tokens) = (true, true);
                        while let Some(i) = seq.next_element::<Item>()? {
                            empty = false;
                            tokens &= matches!(i, Item::Token);
                        }
                        Ok(Item::Batch { empty, tokens })
                    }
                }
                d.deserialize_any(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ShapeOf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a prompt array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ShapeOf, A::Error> {
                let mut shape = Shape::Empty;
                while let Some(item) = seq.next_element::<Item>()? {
                    shape = match (shape, item) {
                        (Shape::Empty | Shape::Texts, Item::Text) => Shape::Texts,
                        (Shape::Empty | Shape::Tokens, Item::Token) => Shape::Tokens,
                        (
                            Shape::Empty,
                            Item::Batch {
                                empty,
                                tokens: true,
                            },
                        ) => Shape::Batches(empty),
                        (
                            Shape::Batches(e),
                            Item::Batch {
                                empty,
                                tokens: true,
                            },
                        ) => Shape::Batches(e || empty),
                        _ => Shape::Mixed,
                    };
                }
                Ok(ShapeOf(shape))
            }
        }
        d.deserialize_seq(V)
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
