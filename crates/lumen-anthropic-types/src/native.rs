//! A Messages answer or stream event as the gateway relays it: the JSON as the engine sent it
//! (or as the chat translation wrote it), with what the gateway reads from it — the event's
//! `type`, the model it shows, the usage so far and the text it generated — read once.
//!
//! One type for both paths, so a request that falls back from an engine that serves
//! `/v1/messages` to one that is translated keeps one stream type, and is billed the same way:
//! the translated events are read by the same code as the native ones.

use std::borrow::Cow;

use lumen_openai_types::continuation::{Piece, StreamPiece};
use lumen_openai_types::{HasModel, HasUsage, JsonBody, Usage as ChatUsage};
use serde::de::Error as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{NativeUsage, StreamEvent};

/// One Anthropic stream event, or (`kind` `"message"`) a whole answer.
#[derive(Debug, Clone, Default)]
pub struct NativeEvent {
    /// The JSON to send (`None` only for the default value, which is never sent).
    raw: Option<Box<RawValue>>,
    /// The `type`: the SSE event's name.
    kind: String,
    /// The model the JSON names (a whole answer's, or `message_start`'s `message.model`).
    shown: String,
    /// The model to show: the gateway rewrites it to the caller's alias, and the JSON is
    /// rewritten only when it differs from `shown`.
    model: String,
    /// (prompt, output) tokens so far in this answer: the prompt from `message_start` (input,
    /// cache reads and writes), the output from the last `message_delta`.
    tokens: Option<(u64, u64)>,
    /// This is the answer's final usage: `message_delta`, or a whole answer.
    last_usage: bool,
    /// Bytes of text, thinking and tool input this event generated.
    output: u64,
    /// Never set: continuation, which would edit it, is off for Anthropic streams.
    no_usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<PeekMessage<'a>>,
    #[serde(borrow, default)]
    delta: Option<PeekDelta<'a>>,
}

#[derive(Deserialize)]
struct PeekMessage<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PeekDelta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Nested<'a> {
    #[serde(borrow)]
    message: &'a RawValue,
}

impl NativeEvent {
    /// Reads one stream event's `data:` JSON; `usage` is the stream's usage so far, which
    /// `message_start` and `message_delta` add to (a `message_delta` that leaves the input out
    /// keeps `message_start`'s).
    pub fn event(data: &[u8], usage: &mut NativeUsage) -> Result<Self, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_slice(data)?;
        let peek: Peek<'_> = serde_json::from_str(raw.get())?;
        let kind = peek.kind.unwrap_or_default().into_owned();
        let shown = match (kind.as_str(), peek.message) {
            ("message_start", Some(m)) => m.model.unwrap_or_default().into_owned(),
            _ => String::new(),
        };
        let (tokens, last_usage) = match kind.as_str() {
            "message_start" | "message_delta" => {
                usage.observe_event(raw.get().as_bytes())?;
                (usage.tokens(), kind == "message_delta")
            }
            _ => (None, false),
        };
        let output = peek.delta.map_or(0, |d| {
            [d.text, d.thinking, d.partial_json]
                .iter()
                .flatten()
                .map(|t| t.len() as u64)
                .sum()
        });
        Ok(Self {
            raw: Some(raw),
            kind,
            model: shown.clone(),
            shown,
            tokens,
            last_usage,
            output,
            no_usage: None,
        })
    }

    /// A translated event, read as an engine's would be.
    pub fn translated(event: &StreamEvent, usage: &mut NativeUsage) -> Self {
        let mut out = Vec::with_capacity(128);
        // Strings, numbers and raw JSON already checked when parsed: cannot fail.
        let _ = serde_json::to_writer(&mut out, event);
        Self::event(&out, usage).unwrap_or_default()
    }

    /// Reads a whole answer: a JSON object whose `type` is `message`.
    pub fn answer(body: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_slice(body)?;
        let peek: Peek<'_> = serde_json::from_str(raw.get())?;
        if peek.kind.as_deref() != Some("message") {
            return Err(serde_json::Error::custom(
                "expected an object whose type is \"message\"",
            ));
        }
        let shown = peek.model.unwrap_or_default().into_owned();
        Ok(Self {
            tokens: NativeUsage::from_response(raw.get().as_bytes())?.tokens(),
            raw: Some(raw),
            kind: "message".to_owned(),
            model: shown.clone(),
            shown,
            last_usage: true,
            output: 0,
            no_usage: None,
        })
    }

    /// The event's `type` (its SSE `event:` name); `message` for a whole answer.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// An in-band `error` event.
    pub fn is_error(&self) -> bool {
        self.kind == "error"
    }

    /// The JSON as it will be sent: the engine's (or the translation's) bytes, with `model`
    /// replaced in place when the gateway shows another.
    pub fn json(&self) -> Cow<'_, str> {
        let Some(raw) = &self.raw else {
            return Cow::Borrowed("null");
        };
        if self.model == self.shown {
            return Cow::Borrowed(raw.get());
        }
        let spliced = match self.kind.as_str() {
            "message" => Some(splice(raw.get(), &self.model)),
            "message_start" => serde_json::from_str::<Nested<'_>>(raw.get()).ok().map(|n| {
                let inner = n.message.get();
                let start = (inner.as_ptr() as usize).wrapping_sub(raw.get().as_ptr() as usize);
                let end = start.wrapping_add(inner.len());
                match (raw.get().get(..start), raw.get().get(end..)) {
                    (Some(before), Some(after)) => {
                        format!("{before}{}{after}", splice(inner, &self.model))
                    }
                    _ => raw.get().to_owned(),
                }
            }),
            _ => None,
        };
        spliced.map_or(Cow::Borrowed(raw.get()), Cow::Owned)
    }
}

/// `object` with its top-level `model` set to `model` (the rest byte for byte).
fn splice(object: &str, model: &str) -> String {
    match JsonBody::parse(bytes::Bytes::copy_from_slice(object.as_bytes())) {
        Ok(mut body) => {
            model.clone_into(&mut body.model);
            String::from_utf8_lossy(&body.to_bytes()).into_owned()
        }
        Err(_) => object.to_owned(),
    }
}

impl Serialize for NativeEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.json() {
            Cow::Borrowed(json) => match RawValue::from_string(json.to_owned()) {
                Ok(raw) => raw.serialize(s),
                Err(e) => Err(serde::ser::Error::custom(e)),
            },
            Cow::Owned(json) => match RawValue::from_string(json) {
                Ok(raw) => raw.serialize(s),
                Err(e) => Err(serde::ser::Error::custom(e)),
            },
        }
    }
}

/// Reads an answer (`type: message`) or an event with no usage before it (a cached answer, or
/// a value parsed back).
impl<'de> Deserialize<'de> for NativeEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let bytes = raw.get().as_bytes();
        Self::answer(bytes)
            .or_else(|_| Self::event(bytes, &mut NativeUsage::new()))
            .map_err(D::Error::custom)
    }
}

impl HasModel for NativeEvent {
    fn model(&self) -> &str {
        &self.model
    }
    /// Only an answer and `message_start` name a model; the others show it unchanged.
    fn model_mut(&mut self) -> &mut String {
        &mut self.model
    }
}

impl HasUsage for NativeEvent {
    fn tokens(&self) -> Option<(u64, u64)> {
        self.tokens
    }
    fn is_usage_only(&self) -> bool {
        self.last_usage
    }
    fn output_bytes(&self) -> Option<u64> {
        Some(self.output)
    }
}

/// An Anthropic stream is never continued on another engine (its events are not chat
/// chunks): every event reads as one a continuation could not reproduce.
impl StreamPiece for NativeEvent {
    fn piece(&self) -> Piece<'_> {
        Piece::Unsupported
    }
    fn set_text(&mut self, _text: &str) {}
    fn usage_mut(&mut self) -> &mut Option<ChatUsage> {
        &mut self.no_usage
    }
    fn stream_id(&self) -> (&str, u64) {
        ("", 0)
    }
    fn set_stream_id(&mut self, _id: &str, _created: u64) {}
}

#[cfg(test)]
mod tests;
