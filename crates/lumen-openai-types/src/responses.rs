//! `POST /v1/responses`: OpenAI's Responses API (Codex, the OpenAI Agents SDK), and its sans-IO
//! translation to and from chat completions for engines that do not serve it themselves.
//!
//! Nothing here stores anything: `store`, `previous_response_id`, retrieve and delete are the
//! gateway's. It hands [`to_chat`] the items of the earlier turns it kept, and keeps the
//! [`Response`] this module builds.
//!
//! # Layout
//! - this file: the request, its items and the response object.
//! - [`event`]: the typed stream events and their SSE framing.
//! - `to_chat`: request → [`ChatCompletionRequest`](crate::ChatCompletionRequest).
//! - `from_chat`: chat answer → [`Response`], and [`StreamTranslator`] for chat chunks.
//! - `items`: a page of a stored response's input (`/input_items`), with the ids its cursor needs.
//! - `usage`: token counts of a native answer or stream event, for billing.
//!
//! What cannot be translated (built-in tools, `background`, input files, ...) is refused with a
//! [`ResponsesError`] naming the field: an agent that silently loses a tool misbehaves in ways
//! nobody can debug.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::RawExtra;
use crate::raw::deserialize_object;

pub mod event;
mod from_chat;
mod items;
pub mod native;
mod to_chat;
mod usage;

pub use event::ResponseEvent;
pub use from_chat::{ReasoningStyle, StreamTranslator, response_from_chat};
pub use items::{ItemsQuery, ItemsQueryError, Order, input_items_page};
pub use native::NativeResponse;
pub use to_chat::{MAX_TOOLS, MAX_UNKNOWN_FIELDS, history_items, to_chat};
pub use usage::{usage_of_answer, usage_of_event};

/// A Responses request. Known fields are typed; unknown ones stay the client's JSON in `extra`
/// (engine extras such as `top_k` are forwarded to chat, as on `/v1/chat/completions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Input,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningConfig>,
    /// Kept as JSON: it is echoed on the response, never read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RawJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `disabled` (the default) or `auto`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: RawExtra,
}

deserialize_object!(ResponsesRequest, "a response request object", {
    model: String = null_default,
    input: Input = default,
    instructions: Option<String> = default,
    tools: Option<Vec<Tool>> = default,
    tool_choice: Option<ToolChoice> = default,
    max_output_tokens: Option<u32> = default,
    temperature: Option<f64> = default,
    top_p: Option<f64> = default,
    stream: Option<bool> = default,
    store: Option<bool> = default,
    previous_response_id: Option<String> = default,
    parallel_tool_calls: Option<bool> = default,
    text: Option<TextConfig> = default,
    reasoning: Option<ReasoningConfig> = default,
    metadata: Option<RawJson> = default,
    user: Option<String> = default,
    truncation: Option<String> = default,
    background: Option<bool> = default,
    include: Option<Vec<String>> = default,
});

impl ResponsesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

/// A JSON value kept as the client wrote it (schemas, metadata): forwarded, never read, and
/// compared by its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl RawJson {
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

/// `input`: a string (one user message) or an array of items.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

impl Default for Input {
    fn default() -> Self {
        Self::Items(Vec::new())
    }
}

impl Serialize for Input {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(t) => t.serialize(s),
            Self::Items(v) => v.serialize(s),
        }
    }
}

/// A value that is a string or (per type) an array or an object, read in one pass: no
/// `untagged` (which buffers the whole value first) and no re-parse of raw text (which would
/// lose the JSON path that [`crate::request::parse`] reports as `param`).
trait StringOr: From<String> + Sized {
    const EXPECTING: &'static str;

    fn from_seq<'de, A: SeqAccess<'de>>(_seq: A) -> Result<Self, A::Error> {
        Err(de::Error::invalid_type(
            de::Unexpected::Seq,
            &Self::EXPECTING,
        ))
    }

    fn from_map<'de, A: MapAccess<'de>>(_map: A) -> Result<Self, A::Error> {
        Err(de::Error::invalid_type(
            de::Unexpected::Map,
            &Self::EXPECTING,
        ))
    }
}

fn string_or<'de, D: Deserializer<'de>, T: StringOr>(d: D) -> Result<T, D::Error> {
    struct V<T>(PhantomData<T>);
    impl<'de, T: StringOr> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            Ok(T::from(s.to_owned()))
        }
        fn visit_string<E: de::Error>(self, s: String) -> Result<T, E> {
            Ok(T::from(s))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            T::from_seq(seq)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::from_map(map)
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// Every element of an array, with the element's index kept in error paths.
fn elements<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
    while let Some(v) = seq.next_element()? {
        out.push(v);
    }
    Ok(out)
}

impl From<String> for Input {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or(d)
    }
}

impl StringOr for Input {
    const EXPECTING: &'static str = "a string or an array of input items";
    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        elements(seq).map(Self::Items)
    }
}

/// One item of `input` (or of a stored conversation).
#[derive(Debug, Clone, PartialEq)]
pub enum InputItem {
    Message(InputMessage),
    FunctionCall(FunctionCall),
    FunctionCallOutput(FunctionCallOutput),
    /// A call of a `custom` tool (Codex's freeform `apply_patch`): its input is free text.
    CustomToolCall(CustomToolCall),
    /// A custom tool's result: the same shape as a function's.
    CustomToolCallOutput(FunctionCallOutput),
    /// A call of a client-executed `tool_search` (Codex's search over its deferred tools).
    ToolSearchCall(ToolSearchCall),
    /// The client's answer to a `tool_search_call`: the tools it loaded.
    ToolSearchOutput(ToolSearchOutput),
    Reasoning(Reasoning),
    /// Any other item type (`item_reference`, `web_search_call`, ...): parsed so the request is
    /// accepted up to translation, which refuses it naming its type.
    Other {
        kind: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `user`, `assistant`, `system` or `developer`.
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub name: String,
    /// The arguments as the model wrote them: a JSON text, not always valid JSON.
    pub arguments: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub name: String,
    /// The free text the model wrote for the tool (a patch, a command).
    pub input: String,
}

/// A `tool_search_call` item of a client-executed tool search. Only `execution: "client"`
/// items are parsed as this; a hosted search's are [`InputItem::Other`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSearchCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    /// The arguments as the model wrote them: a JSON object (`{"query": ...}`).
    pub arguments: RawJson,
    /// Always `client`.
    pub execution: &'static str,
}

/// A `tool_search_output` item: the tools the client loaded for the model, offered from then
/// on like the request's own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSearchOutput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub tools: Vec<Tool>,
    /// Always `client`.
    pub execution: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCallOutput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    /// A string, or content parts (text, images).
    pub output: Content,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reasoning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub summary: Vec<ReasoningPart>,
    /// The reasoning text itself (`reasoning_text` parts), as vLLM and gpt-oss emit it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ReasoningPart>,
    /// OpenAI's opaque reasoning; no engine Lumen translates for can read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `{"type":"summary_text","text":...}` or `{"type":"reasoning_text","text":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasoningPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

impl ReasoningPart {
    pub fn reasoning_text(text: impl Into<String>) -> Self {
        Self {
            kind: "reasoning_text".to_owned(),
            text: text.into(),
        }
    }

    pub fn summary_text(text: impl Into<String>) -> Self {
        Self {
            kind: "summary_text".to_owned(),
            text: text.into(),
        }
    }
}

/// Every field any item type has: read once, then sorted into an [`InputItem`], so one item
/// costs one pass and unknown members are skipped without being kept.
#[derive(Deserialize)]
#[serde(expecting = "an input item object")]
struct FlatItem {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<ContentOrReasoning>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// A string for a function call, a JSON object for a tool search call.
    #[serde(default)]
    arguments: Option<RawJson>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    execution: Option<String>,
    #[serde(default)]
    output: Option<Content>,
    #[serde(default)]
    summary: Option<Vec<ReasoningPart>>,
    #[serde(default)]
    encrypted_content: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// A message's content, or a reasoning item's `reasoning_text` parts: the same key holds both.
enum ContentOrReasoning {
    Content(Content),
    Reasoning(Vec<ReasoningPart>),
}

impl From<String> for ContentOrReasoning {
    fn from(s: String) -> Self {
        Self::Content(Content::Text(s))
    }
}

impl<'de> Deserialize<'de> for ContentOrReasoning {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or(d)
    }
}

impl StringOr for ContentOrReasoning {
    const EXPECTING: &'static str = "a string or an array of content parts";
    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        let parts: Vec<AnyPart> = elements(seq)?;
        if !parts.is_empty() && parts.iter().all(|p| matches!(p, AnyPart::Reasoning(_))) {
            return Ok(Self::Reasoning(
                parts
                    .into_iter()
                    .filter_map(|p| match p {
                        AnyPart::Reasoning(r) => Some(r),
                        AnyPart::Content(_) => None,
                    })
                    .collect(),
            ));
        }
        parts
            .into_iter()
            .map(|p| match p {
                AnyPart::Content(c) => Ok(c),
                AnyPart::Reasoning(r) => Err(de::Error::custom(format_args!(
                    "a `{}` part belongs in a reasoning item",
                    r.kind
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|p| Self::Content(Content::Parts(p)))
    }
}

/// A content part or a reasoning part: `content` holds either, by item type.
enum AnyPart {
    Content(ContentPart),
    Reasoning(ReasoningPart),
}

impl<'de> Deserialize<'de> for AnyPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = FlatPart::deserialize(d)?;
        if f.kind == "reasoning_text" || f.kind == "summary_text" {
            return Ok(Self::Reasoning(ReasoningPart {
                text: f.text.unwrap_or_default(),
                kind: f.kind,
            }));
        }
        f.into_part().map(Self::Content)
    }
}

fn missing<E: de::Error>(kind: &str, field: &'static str) -> E {
    E::custom(format_args!("a `{kind}` item needs `{field}`"))
}

impl<'de> Deserialize<'de> for InputItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = FlatItem::deserialize(d)?;
        // An item without `type` but with `role` is the short message form.
        let kind = f.kind.unwrap_or_else(|| "message".to_owned());
        Ok(match kind.as_str() {
            "message" => {
                let role = f.role.ok_or_else(|| missing(&kind, "role"))?;
                let content = match f.content {
                    Some(ContentOrReasoning::Content(c)) => c,
                    Some(ContentOrReasoning::Reasoning(_)) => {
                        return Err(de::Error::custom("a message cannot hold reasoning parts"));
                    }
                    None => return Err(missing(&kind, "content")),
                };
                Self::Message(InputMessage {
                    id: f.id,
                    role,
                    content,
                })
            }
            "function_call" => Self::FunctionCall(FunctionCall {
                id: f.id,
                call_id: f.call_id.ok_or_else(|| missing(&kind, "call_id"))?,
                name: f.name.ok_or_else(|| missing(&kind, "name"))?,
                arguments: match f.arguments {
                    None => String::new(),
                    Some(raw) if raw.get() == "null" => String::new(),
                    Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
                        de::Error::custom("a `function_call`'s `arguments` is a string")
                    })?,
                },
                status: f.status,
            }),
            "function_call_output" => Self::FunctionCallOutput(FunctionCallOutput {
                id: f.id,
                call_id: f.call_id.ok_or_else(|| missing(&kind, "call_id"))?,
                output: f.output.ok_or_else(|| missing(&kind, "output"))?,
            }),
            "custom_tool_call" => Self::CustomToolCall(CustomToolCall {
                id: f.id,
                call_id: f.call_id.ok_or_else(|| missing(&kind, "call_id"))?,
                name: f.name.ok_or_else(|| missing(&kind, "name"))?,
                input: f.input.unwrap_or_default(),
            }),
            "custom_tool_call_output" => Self::CustomToolCallOutput(FunctionCallOutput {
                id: f.id,
                call_id: f.call_id.ok_or_else(|| missing(&kind, "call_id"))?,
                output: f.output.ok_or_else(|| missing(&kind, "output"))?,
            }),
            // A hosted search's items (`execution: "server"`) are not the client's to replay:
            // they stay `Other`, and translation refuses them.
            "tool_search_call" if f.execution.as_deref() == Some("client") => {
                Self::ToolSearchCall(ToolSearchCall {
                    id: f.id,
                    call_id: f.call_id.ok_or_else(|| missing(&kind, "call_id"))?,
                    arguments: f.arguments.ok_or_else(|| missing(&kind, "arguments"))?,
                    execution: "client",
                })
            }
            "tool_search_output" if f.execution.as_deref() == Some("client") => {
                Self::ToolSearchOutput(ToolSearchOutput {
                    id: f.id,
                    call_id: f.call_id.ok_or_else(|| missing(&kind, "call_id"))?,
                    tools: f.tools.ok_or_else(|| missing(&kind, "tools"))?,
                    execution: "client",
                })
            }
            "reasoning" => Self::Reasoning(Reasoning {
                id: f.id,
                summary: f.summary.unwrap_or_default(),
                content: match f.content {
                    Some(ContentOrReasoning::Reasoning(parts)) => parts,
                    Some(ContentOrReasoning::Content(Content::Text(t))) => {
                        vec![ReasoningPart::reasoning_text(t)]
                    }
                    _ => Vec::new(),
                },
                encrypted_content: f.encrypted_content,
                status: f.status,
            }),
            _ => Self::Other { kind },
        })
    }
}

/// `{"type": <kind>, ...fields of inner}`.
struct Tagged<'a, T> {
    kind: &'a str,
    inner: &'a T,
}

impl<T: Serialize> Serialize for Tagged<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a, T> {
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(flatten)]
            inner: &'a T,
        }
        Out {
            kind: self.kind,
            inner: self.inner,
        }
        .serialize(s)
    }
}

impl Serialize for InputItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Message(m) => Tagged {
                kind: "message",
                inner: m,
            }
            .serialize(s),
            Self::FunctionCall(c) => Tagged {
                kind: "function_call",
                inner: c,
            }
            .serialize(s),
            Self::FunctionCallOutput(o) => Tagged {
                kind: "function_call_output",
                inner: o,
            }
            .serialize(s),
            Self::CustomToolCall(c) => Tagged {
                kind: "custom_tool_call",
                inner: c,
            }
            .serialize(s),
            Self::CustomToolCallOutput(o) => Tagged {
                kind: "custom_tool_call_output",
                inner: o,
            }
            .serialize(s),
            Self::ToolSearchCall(c) => Tagged {
                kind: "tool_search_call",
                inner: c,
            }
            .serialize(s),
            Self::ToolSearchOutput(o) => Tagged {
                kind: "tool_search_output",
                inner: o,
            }
            .serialize(s),
            Self::Reasoning(r) => Tagged {
                kind: "reasoning",
                inner: r,
            }
            .serialize(s),
            Self::Other { kind } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("type", kind)?;
                m.end()
            }
        }
    }
}

/// Message content (or a tool's output): a string or an array of parts.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(t) => t.serialize(s),
            Self::Parts(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or(d)
    }
}

impl StringOr for Content {
    const EXPECTING: &'static str = "a string or an array of content parts";
    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        elements(seq).map(Self::Parts)
    }
}

/// One content part.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
    },
    InputImage {
        image_url: Option<String>,
        file_id: Option<String>,
        detail: Option<String>,
    },
    Refusal {
        refusal: String,
    },
    /// `input_file`, `input_audio`, ...: refused when translated.
    Other {
        kind: String,
    },
}

/// Every field of any content part type, read once.
#[derive(Deserialize)]
#[serde(expecting = "a content part object")]
struct FlatPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image_url: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

impl FlatPart {
    fn into_part<E: de::Error>(self) -> Result<ContentPart, E> {
        let text = |f: Self| {
            f.text
                .ok_or_else(|| E::custom(format_args!("an `{}` part needs `text`", f.kind)))
        };
        Ok(match self.kind.as_str() {
            "input_text" => ContentPart::InputText { text: text(self)? },
            "output_text" => ContentPart::OutputText { text: text(self)? },
            "input_image" => ContentPart::InputImage {
                image_url: self.image_url,
                file_id: self.file_id,
                detail: self.detail,
            },
            "refusal" => ContentPart::Refusal {
                refusal: self.refusal.unwrap_or_default(),
            },
            _ => ContentPart::Other { kind: self.kind },
        })
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FlatPart::deserialize(d)?.into_part()
    }
}

impl Serialize for ContentPart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Self::InputText { text } => {
                m.serialize_entry("type", "input_text")?;
                m.serialize_entry("text", text)?;
            }
            Self::OutputText { text } => {
                m.serialize_entry("type", "output_text")?;
                m.serialize_entry("text", text)?;
            }
            Self::InputImage {
                image_url,
                file_id,
                detail,
            } => {
                m.serialize_entry("type", "input_image")?;
                if let Some(u) = image_url {
                    m.serialize_entry("image_url", u)?;
                }
                if let Some(f) = file_id {
                    m.serialize_entry("file_id", f)?;
                }
                if let Some(d) = detail {
                    m.serialize_entry("detail", d)?;
                }
            }
            Self::Refusal { refusal } => {
                m.serialize_entry("type", "refusal")?;
                m.serialize_entry("refusal", refusal)?;
            }
            Self::Other { kind } => m.serialize_entry("type", kind)?,
        }
        m.end()
    }
}

/// A tool. Only `function` tools translate; the rest are kept by type so the refusal names it.
#[derive(Debug, Clone, PartialEq)]
pub enum Tool {
    Function(FunctionTool),
    /// A named group of function tools (Codex sends its sub-agent tools so): each is offered
    /// to the model as a function tool of its own.
    Namespace {
        name: String,
        description: Option<String>,
        tools: Vec<FunctionTool>,
    },
    /// A tool that takes free text rather than JSON arguments (Codex's `apply_patch`),
    /// optionally constrained by a grammar. Offered to a chat engine as a function of one
    /// string parameter.
    Custom(CustomTool),
    /// A tool search the client runs (`execution: "client"`: Codex's BM25 search over its
    /// deferred tools). Offered to a chat engine as a function named `tool_search`; its calls
    /// are answered as `tool_search_call` items. A hosted search (`execution: "server"`, or
    /// none) is [`Tool::Other`].
    ToolSearch(ToolSearchTool),
    Other {
        kind: String,
    },
}

/// The name a client-executed tool search is offered under, and its calls recognised by.
pub const TOOL_SEARCH: &str = "tool_search";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSearchTool {
    /// Always `client`.
    pub execution: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The arguments' JSON schema, as the client sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<RawJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomTool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `{"type":"text"}` or `{"type":"grammar","syntax":"lark"|"regex","definition":...}`,
    /// kept as the client's JSON: echoed, and its grammar shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<RawJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema, kept as the client's JSON: Lumen forwards it, never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl<'de> Deserialize<'de> for Tool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(expecting = "a tool object")]
        struct Flat {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            description: Option<String>,
            #[serde(default)]
            parameters: Option<RawJson>,
            #[serde(default)]
            strict: Option<bool>,
            #[serde(default)]
            tools: Option<Vec<Tool>>,
            #[serde(default)]
            format: Option<RawJson>,
            #[serde(default)]
            execution: Option<String>,
        }
        let f = Flat::deserialize(d)?;
        if f.kind == "tool_search" && f.execution.as_deref() == Some("client") {
            return Ok(Self::ToolSearch(ToolSearchTool {
                execution: "client",
                description: f.description,
                parameters: f.parameters,
            }));
        }
        if f.kind == "namespace" {
            let mut inner = Vec::new();
            for t in f.tools.unwrap_or_default() {
                match t {
                    Tool::Function(t) => inner.push(t),
                    _ => return Err(de::Error::custom("a `namespace` tool holds function tools")),
                }
            }
            return Ok(Self::Namespace {
                name: f.name.unwrap_or_default(),
                description: f.description,
                tools: inner,
            });
        }
        if f.kind == "custom" {
            return Ok(Self::Custom(CustomTool {
                name: f
                    .name
                    .ok_or_else(|| de::Error::custom("a `custom` tool needs `name`"))?,
                description: f.description,
                format: f.format,
            }));
        }
        if f.kind != "function" {
            return Ok(Self::Other { kind: f.kind });
        }
        Ok(Self::Function(FunctionTool {
            name: f
                .name
                .ok_or_else(|| de::Error::custom("a `function` tool needs `name`"))?,
            description: f.description,
            parameters: f.parameters,
            strict: f.strict,
        }))
    }
}

impl Serialize for Tool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Function(f) => Tagged {
                kind: "function",
                inner: f,
            }
            .serialize(s),
            Self::Custom(c) => Tagged {
                kind: "custom",
                inner: c,
            }
            .serialize(s),
            Self::ToolSearch(t) => Tagged {
                kind: "tool_search",
                inner: t,
            }
            .serialize(s),
            Self::Namespace {
                name,
                description,
                tools,
            } => {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("type", "namespace")?;
                m.serialize_entry("name", name)?;
                if let Some(d) = description {
                    m.serialize_entry("description", d)?;
                }
                let inner: Vec<Tool> = tools.iter().cloned().map(Tool::Function).collect();
                m.serialize_entry("tools", &inner)?;
                m.end()
            }
            Self::Other { kind } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("type", kind)?;
                m.end()
            }
        }
    }
}

/// `tool_choice`: `auto`, `none`, `required`, or one function by name.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function {
        name: String,
    },
    /// `{"type":"custom","name":...}`: one custom tool.
    Custom {
        name: String,
    },
    /// Another mode string or object type (`allowed_tools`, a built-in tool): refused.
    Other {
        kind: String,
    },
}

impl From<String> for ToolChoice {
    fn from(s: String) -> Self {
        match s.as_str() {
            "auto" => Self::Auto,
            "none" => Self::None,
            "required" => Self::Required,
            _ => Self::Other { kind: s },
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or(d)
    }
}

impl StringOr for ToolChoice {
    const EXPECTING: &'static str = "a string or a tool choice object";
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        #[derive(Deserialize)]
        struct Obj {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            name: Option<String>,
        }
        let o = Obj::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(match (o.kind.as_str(), o.name) {
            ("function", Some(name)) => Self::Function { name },
            ("custom", Some(name)) => Self::Custom { name },
            _ => Self::Other { kind: o.kind },
        })
    }
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::None => s.serialize_str("none"),
            Self::Required => s.serialize_str("required"),
            Self::Function { name } | Self::Custom { name } => {
                let kind = if matches!(self, Self::Custom { .. }) {
                    "custom"
                } else {
                    "function"
                };
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("type", kind)?;
                m.serialize_entry("name", name)?;
                m.end()
            }
            Self::Other { kind } => s.serialize_str(kind),
        }
    }
}

/// `text`: the output format (and `verbosity`, kept raw).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
}

/// `text.format`: `text`, `json_object`, or `json_schema` with its fields inline (not nested
/// under `json_schema` as in chat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasoningConfig {
    /// `minimal`, `low`, `medium`, `high`: forwarded as chat's `reasoning_effort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// `auto`, `concise`, `detailed`: engines return their reasoning whole, so this is echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// The response object (`"object": "response"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    pub status: Status,
    pub error: Option<ResponseErrorBody>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: ReasoningConfig,
    pub store: bool,
    pub temperature: Option<f64>,
    pub text: TextConfig,
    pub tool_choice: ToolChoice,
    pub tools: Vec<Tool>,
    pub top_p: Option<f64>,
    pub truncation: String,
    pub usage: Option<ResponseUsage>,
    pub user: Option<String>,
    pub metadata: crate::Extra,
}

impl Response {
    /// The response as it starts: `in_progress`, no output, the request's settings echoed as
    /// OpenAI does (SDKs read `tools`, `text` and `tool_choice` back from it). `id` is
    /// `resp_<seed>`.
    pub fn start(req: &ResponsesRequest, seed: &str, created_at: u64) -> Self {
        Self {
            id: format!("resp_{seed}"),
            object: "response".to_owned(),
            created_at,
            status: Status::InProgress,
            error: None,
            incomplete_details: None,
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            model: req.model.clone(),
            output: Vec::new(),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            previous_response_id: req.previous_response_id.clone(),
            reasoning: req.reasoning.clone().unwrap_or_default(),
            store: req.store.unwrap_or(true),
            temperature: req.temperature,
            text: req.text.clone().unwrap_or_else(|| TextConfig {
                format: Some(TextFormat {
                    kind: "text".to_owned(),
                    name: None,
                    description: None,
                    schema: None,
                    strict: None,
                }),
                verbosity: None,
            }),
            tool_choice: req.tool_choice.clone().unwrap_or(ToolChoice::Auto),
            tools: req.tools.clone().unwrap_or_default(),
            top_p: req.top_p,
            truncation: req
                .truncation
                .clone()
                .unwrap_or_else(|| "disabled".to_owned()),
            usage: None,
            user: req.user.clone(),
            metadata: req
                .metadata
                .as_ref()
                .and_then(|m| serde_json::from_str(m.get()).ok())
                .unwrap_or_default(),
        }
    }

    /// The output as input items: what the gateway's store appends to a conversation so a
    /// later `previous_response_id` sees this turn.
    pub fn output_as_input(&self) -> Vec<InputItem> {
        self.output.iter().map(OutputItem::to_input).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Completed,
    Failed,
    InProgress,
    Cancelled,
    Queued,
    Incomplete,
}

/// `error` on a failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseErrorBody {
    pub code: String,
    pub message: String,
}

/// Why a response stopped early: `max_output_tokens` or `content_filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    pub reason: String,
}

/// One item of a response's `output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: ItemStatus,
        role: String,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        status: ItemStatus,
        call_id: String,
        name: String,
        arguments: String,
    },
    CustomToolCall {
        id: String,
        status: ItemStatus,
        call_id: String,
        name: String,
        input: String,
    },
    /// A call of the client's `tool_search` ([`Tool::ToolSearch`]).
    ToolSearchCall {
        id: String,
        status: ItemStatus,
        call_id: String,
        /// What the model wrote: a JSON object, or the text as a string when it is not JSON.
        arguments: serde_json::Value,
        /// Always `client`.
        execution: String,
    },
    Reasoning {
        id: String,
        status: ItemStatus,
        summary: Vec<ReasoningPart>,
        content: Vec<ReasoningPart>,
    },
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            Self::Message { id, .. }
            | Self::FunctionCall { id, .. }
            | Self::CustomToolCall { id, .. }
            | Self::ToolSearchCall { id, .. }
            | Self::Reasoning { id, .. } => id,
        }
    }

    fn to_input(&self) -> InputItem {
        match self {
            Self::Message { id, content, .. } => InputItem::Message(InputMessage {
                id: Some(id.clone()),
                role: "assistant".to_owned(),
                content: Content::Parts(
                    content
                        .iter()
                        .map(|c| ContentPart::OutputText {
                            text: c.text.clone(),
                        })
                        .collect(),
                ),
            }),
            Self::FunctionCall {
                id,
                call_id,
                name,
                arguments,
                ..
            } => InputItem::FunctionCall(FunctionCall {
                id: Some(id.clone()),
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
                status: None,
            }),
            Self::CustomToolCall {
                id,
                call_id,
                name,
                input,
                ..
            } => InputItem::CustomToolCall(CustomToolCall {
                id: Some(id.clone()),
                call_id: call_id.clone(),
                name: name.clone(),
                input: input.clone(),
            }),
            Self::ToolSearchCall {
                id,
                call_id,
                arguments,
                ..
            } => InputItem::ToolSearchCall(ToolSearchCall {
                id: Some(id.clone()),
                call_id: call_id.clone(),
                // A value always serialises; the `null` is never reached.
                arguments: RawJson(serde_json::value::to_raw_value(arguments).unwrap_or_default()),
                execution: "client",
            }),
            Self::Reasoning {
                id,
                summary,
                content,
                ..
            } => InputItem::Reasoning(Reasoning {
                id: Some(id.clone()),
                summary: summary.clone(),
                content: content.clone(),
                encrypted_content: None,
                status: None,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

/// An `output_text` part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputText {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    #[serde(default)]
    pub annotations: Vec<serde_json::Value>,
    #[serde(default)]
    pub logprobs: Vec<serde_json::Value>,
}

impl OutputText {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            kind: "output_text".to_owned(),
            text: text.into(),
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }
}

/// `usage` in the Responses shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub input_tokens_details: InputTokensDetails,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub output_tokens_details: OutputTokensDetails,
    #[serde(default)]
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl ResponseUsage {
    /// (input, output) when both are plausible (see [`crate::stream::MAX_USAGE_TOKENS`]), so a
    /// broken engine's `u64::MAX` charges nobody.
    pub fn plausible_tokens(&self) -> Option<(u64, u64)> {
        let max = crate::stream::MAX_USAGE_TOKENS;
        (self.input_tokens <= max && self.output_tokens <= max)
            .then_some((self.input_tokens, self.output_tokens))
    }
}

/// Why a request cannot be translated to chat completions. Each names the field (as OpenAI's
/// `param`) so the client sees what to change, and becomes a 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResponsesError {
    /// A feature the translation does not provide (a built-in tool, `background`, a file).
    #[error(
        "{what} is not supported on this model (it is served through chat completions): '{param}'"
    )]
    Unsupported { param: String, what: String },
    /// A request the translation could not make sense of.
    #[error("{message}: '{param}'")]
    Invalid { param: String, message: String },
    /// More of something than any real client sends: a cap, not a crash.
    #[error("at most {max} allowed, got {got}: '{param}'")]
    TooMany {
        param: &'static str,
        max: usize,
        got: usize,
    },
}

impl ResponsesError {
    pub(crate) fn unsupported(param: impl Into<String>, what: impl Into<String>) -> Self {
        Self::Unsupported {
            param: param.into(),
            what: what.into(),
        }
    }

    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }

    /// The JSON path of the field at fault.
    pub fn param(&self) -> &str {
        match self {
            Self::Unsupported { param, .. } | Self::Invalid { param, .. } => param,
            Self::TooMany { param, .. } => param,
        }
    }
}

impl From<ResponsesError> for crate::RequestError {
    fn from(e: ResponsesError) -> Self {
        let param = e.param().to_owned();
        Self::invalid(e.to_string(), param)
    }
}

#[cfg(test)]
mod tests;
