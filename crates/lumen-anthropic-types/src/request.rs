//! The body of `POST /v1/messages` and `POST /v1/messages/count_tokens`.
//!
//! Parsing is tolerant where the real API is: unknown members of blocks, tools and messages are
//! skipped (clients send `cache_control`, `citations` and newer fields everywhere), unknown
//! top-level members are kept as the client's JSON ([`MessagesRequest::extra`]) so engine extras
//! such as `chat_template_kwargs` reach a translated engine, and block types this crate does not
//! model parse as [`ContentBlock::Other`] so a translation can refuse them by name instead of the
//! parser failing with a generic error. Nothing goes through serde's `untagged`/`flatten`
//! buffering: opaque parts (a tool's `input` and `input_schema`) stay raw JSON, so a body costs a
//! small multiple of its own size whatever its shape.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::RequestError;

mod blocks;
mod validate;

pub use blocks::{ContentBlock, ImageSource, ResultBlock, ToolResultContent};

/// Most tools one request may declare. Claude Code with many MCP servers sends a few hundred;
/// a list this long is a mistake or an attack, and every tool costs the engine prompt tokens.
pub const MAX_TOOLS: usize = 1024;
/// Most stop sequences one request may set (each costs the engine a check per token).
pub const MAX_STOP_SEQUENCES: usize = 64;
/// Most unknown top-level members kept (forwarded to a translated engine as extras).
pub const MAX_EXTRA_FIELDS: usize = 64;

/// A Messages request. `max_tokens` is required by `/v1/messages` and absent from
/// `count_tokens`; [`MessagesRequest::parse`] and [`MessagesRequest::parse_count_tokens`] check
/// the rules of each.
#[derive(Debug, Clone, Default)]
pub struct MessagesRequest {
    /// Empty when the client left it out (governance may fill in a default).
    pub model: String,
    pub messages: Vec<Message>,
    pub system: Option<System>,
    pub max_tokens: Option<u32>,
    pub stop_sequences: Vec<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub stream: bool,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub thinking: Option<Thinking>,
    /// `metadata.user_id`, the only member of `metadata`.
    pub user_id: Option<String>,
    /// Top-level members not typed here, in arrival order, as the client's JSON.
    pub extra: Vec<(String, Box<RawValue>)>,
}

impl MessagesRequest {
    /// Parses and validates a `/v1/messages` body.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let req = Self::parse_shape(body)?;
        req.validate(true)?;
        Ok(req)
    }

    /// Parses and validates a `/v1/messages/count_tokens` body (no `max_tokens`, no `stream`).
    pub fn parse_count_tokens(body: &[u8]) -> Result<Self, RequestError> {
        let req = Self::parse_shape(body)?;
        req.validate(false)?;
        Ok(req)
    }

    /// The JSON shape only, with the path of the first mistake. Shares `lumen-openai-types`'
    /// parser, so nesting deeper than its limit is refused before anything is built.
    fn parse_shape(body: &[u8]) -> Result<Self, RequestError> {
        lumen_openai_types::request::parse::<Self>(body).map_err(|e| RequestError::Json {
            message: e.message,
            field: e.param,
        })
    }

    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The raw JSON of an unknown top-level member.
    pub fn extra(&self, key: &str) -> Option<&RawValue> {
        self.extra
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &**v)
    }
}

impl<'de> Deserialize<'de> for MessagesRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = MessagesRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Messages request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessagesRequest, A::Error> {
        let mut r = MessagesRequest::default();
        let mut messages = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "model" => r.model = map.next_value::<Option<String>>()?.unwrap_or_default(),
                "messages" => messages = Some(map.next_value::<Vec<Message>>()?),
                "system" => r.system = map.next_value()?,
                "max_tokens" => r.max_tokens = map.next_value()?,
                "stop_sequences" => {
                    r.stop_sequences = map.next_value::<Option<Vec<String>>>()?.unwrap_or_default()
                }
                "temperature" => r.temperature = map.next_value()?,
                "top_p" => r.top_p = map.next_value()?,
                "top_k" => r.top_k = map.next_value()?,
                "stream" => r.stream = map.next_value::<Option<bool>>()?.unwrap_or(false),
                "tools" => r.tools = map.next_value::<Option<Vec<Tool>>>()?.unwrap_or_default(),
                "tool_choice" => r.tool_choice = map.next_value()?,
                "thinking" => r.thinking = map.next_value()?,
                "metadata" => {
                    r.user_id = map
                        .next_value::<Option<Metadata>>()?
                        .and_then(|m| m.user_id)
                }
                // Prompt caching is Anthropic's; engines cache prefixes on their own.
                "cache_control" => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    let value = map.next_value::<Box<RawValue>>()?;
                    if r.extra.len() == MAX_EXTRA_FIELDS {
                        return Err(de::Error::custom(format_args!(
                            "more than {MAX_EXTRA_FIELDS} unknown top-level fields"
                        )));
                    }
                    r.extra.push((key.into_owned(), value));
                }
            }
        }
        r.messages = messages.ok_or_else(|| de::Error::missing_field("messages"))?;
        Ok(r)
    }
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

/// Who said a message. `system` is not in Anthropic's API but clients send it (and vLLM
/// accepts it): it joins the system prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: MessageContent,
}

/// A message's content: a string, or an array of blocks.
#[derive(Debug, Clone)]
pub enum MessageContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrSeq::<ContentBlock>::new(
            "a string or an array of content blocks",
        ))
        .map(|v| match v {
            Either::Text(t) => Self::Text(t),
            Either::Seq(b) => Self::Blocks(b),
        })
    }
}

/// The top-level `system` prompt: a string, or text blocks.
#[derive(Debug, Clone)]
pub enum System {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl<'de> Deserialize<'de> for System {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrSeq::<ContentBlock>::new(
            "a string or an array of text blocks",
        ))
        .map(|v| match v {
            Either::Text(t) => Self::Text(t),
            Either::Seq(b) => Self::Blocks(b),
        })
    }
}

/// A tool the model may call. Client tools have an `input_schema` and no `type` (or
/// `"custom"`); Anthropic's server tools (`web_search_20250305`, `bash_20250124`, ...) have a
/// versioned `type` and run on Anthropic's side.
#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Box<RawValue>>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto {
        disable_parallel_tool_use: bool,
    },
    Any {
        disable_parallel_tool_use: bool,
    },
    Tool {
        name: String,
        disable_parallel_tool_use: bool,
    },
    None,
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Flat {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            disable_parallel_tool_use: Option<bool>,
        }
        let f = Flat::deserialize(d)?;
        let parallel_off = f.disable_parallel_tool_use.unwrap_or(false);
        Ok(match f.kind.as_str() {
            "auto" => Self::Auto {
                disable_parallel_tool_use: parallel_off,
            },
            "any" => Self::Any {
                disable_parallel_tool_use: parallel_off,
            },
            "tool" => Self::Tool {
                name: f.name.ok_or_else(|| de::Error::missing_field("name"))?,
                disable_parallel_tool_use: parallel_off,
            },
            "none" => Self::None,
            other => {
                return Err(de::Error::unknown_variant(
                    other,
                    &["auto", "any", "tool", "none"],
                ));
            }
        })
    }
}

/// Extended thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    Enabled {
        budget_tokens: u32,
    },
    Disabled,
    /// The model decides how much to think (newer API).
    Adaptive,
}

impl<'de> Deserialize<'de> for Thinking {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Flat {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            budget_tokens: Option<u32>,
        }
        let f = Flat::deserialize(d)?;
        Ok(match f.kind.as_str() {
            "enabled" => Self::Enabled {
                budget_tokens: f
                    .budget_tokens
                    .ok_or_else(|| de::Error::missing_field("budget_tokens"))?,
            },
            "disabled" => Self::Disabled,
            "adaptive" => Self::Adaptive,
            other => {
                return Err(de::Error::unknown_variant(
                    other,
                    &["enabled", "disabled", "adaptive"],
                ));
            }
        })
    }
}

/// A string or an array of `T`, without serde's `untagged` buffering.
pub(crate) enum Either<T> {
    Text(String),
    Seq(Vec<T>),
}

pub(crate) struct StringOrSeq<T> {
    expecting: &'static str,
    _t: std::marker::PhantomData<T>,
}

impl<T> StringOrSeq<T> {
    pub(crate) fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            _t: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for StringOrSeq<T> {
    type Value = Either<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Either<T>, E> {
        Ok(Either::Text(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Either<T>, E> {
        Ok(Either::Text(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Either<T>, A::Error> {
        // No `size_hint` preallocation: a client's claim is not a reason to allocate.
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Either::Seq(out))
    }
}

#[cfg(test)]
mod tests;
