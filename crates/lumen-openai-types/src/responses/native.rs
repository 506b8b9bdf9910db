//! A Responses answer or stream event as the gateway relays it from an engine that serves
//! `/v1/responses` itself: the JSON as the engine sent it, with what the gateway reads from it
//! — the event's `type`, the response's id and model, the final usage and the text generated —
//! read once, without parsing the rest into values.
//!
//! Billing reads the Responses fields: `usage.input_tokens` and `usage.output_tokens` of a
//! whole answer, and `response.usage` of the terminal event (`response.completed`,
//! `response.incomplete` or `response.failed`); a stream that never reaches one is charged from
//! the bytes of its `*.delta` events, as every stream without usage is.

use std::borrow::Cow;

use serde::de::Error as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ResponseUsage;
use crate::continuation::{Piece, StreamPiece};
use crate::{HasModel, HasUsage, JsonBody, Usage};

/// One Responses stream event, or (`kind` `"response"`) a whole answer.
#[derive(Debug, Clone, Default)]
pub struct NativeResponse {
    /// The JSON to send (`None` only for the default value, which is never sent).
    raw: Option<Box<RawValue>>,
    /// The event's `type` (its SSE `event:` name); `response` for a whole answer.
    kind: String,
    /// The response's id: the answer's `id`, or an event's `response.id` (empty otherwise).
    id: String,
    /// The model the JSON names (the answer's, or an event's `response.model`).
    shown: String,
    /// The model to show: the gateway rewrites it to the caller's alias, and the JSON is
    /// rewritten only when it differs from `shown`.
    model: String,
    /// (input, output) tokens: only a whole answer and the terminal events carry them.
    tokens: Option<(u64, u64)>,
    /// This is the answer's final usage (a whole answer, or a terminal event).
    last_usage: bool,
    /// Bytes of text (output, reasoning, tool arguments) this event generated.
    output: u64,
    /// The event's `sequence_number`, when it has one.
    sequence: Option<u64>,
    /// The event carries the response object (`response.created`, the terminal events, ...).
    nested: bool,
    /// Never set: continuation, which would edit it, is off for Responses streams.
    no_usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<ResponseUsage>,
    #[serde(borrow, default)]
    response: Option<PeekResponse<'a>>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(default)]
    sequence_number: Option<u64>,
}

#[derive(Deserialize)]
struct PeekResponse<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<ResponseUsage>,
}

#[derive(Deserialize)]
struct Nested<'a> {
    #[serde(borrow)]
    response: &'a RawValue,
}

/// Whether an event is one of the stream's terminal events, which carry the final usage.
pub fn is_terminal(kind: &str) -> bool {
    matches!(
        kind,
        "response.completed" | "response.incomplete" | "response.failed"
    )
}

impl NativeResponse {
    /// Reads one stream event's `data:` JSON: an object with a string `type`.
    pub fn event(data: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_slice(data)?;
        let peek: Peek<'_> = serde_json::from_str(raw.get())?;
        let Some(kind) = peek.kind.filter(|k| !k.is_empty()) else {
            return Err(serde_json::Error::custom("an event without a type"));
        };
        let kind = kind.into_owned();
        let terminal = is_terminal(&kind);
        let nested = peek.response.is_some();
        let (id, shown, usage) = match peek.response {
            Some(r) => (
                r.id.unwrap_or_default().into_owned(),
                r.model.unwrap_or_default().into_owned(),
                r.usage,
            ),
            None => (String::new(), String::new(), None),
        };
        let output = match peek.delta {
            Some(d) if kind.ends_with(".delta") => {
                serde_json::from_str::<Cow<'_, str>>(d.get()).map_or(0, |t| t.len() as u64)
            }
            _ => 0,
        };
        Ok(Self {
            tokens: usage
                .filter(|_| terminal)
                .and_then(|u| u.plausible_tokens()),
            last_usage: terminal,
            sequence: peek.sequence_number,
            nested,
            raw: Some(raw),
            kind,
            id,
            model: shown.clone(),
            shown,
            output,
            no_usage: None,
        })
    }

    /// Reads a whole answer: a JSON object whose `object` is `response`.
    pub fn answer(body: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_slice(body)?;
        let peek: Peek<'_> = serde_json::from_str(raw.get())?;
        if peek.object.as_deref() != Some("response") {
            return Err(serde_json::Error::custom(
                "expected an object whose object is \"response\"",
            ));
        }
        let shown = peek.model.unwrap_or_default().into_owned();
        let id = peek.id.unwrap_or_default().into_owned();
        let tokens = peek.usage.and_then(|u| u.plausible_tokens());
        Ok(Self {
            tokens,
            raw: Some(raw),
            kind: "response".to_owned(),
            id,
            model: shown.clone(),
            shown,
            last_usage: true,
            output: 0,
            sequence: None,
            nested: false,
            no_usage: None,
        })
    }

    /// The event's `type` (its SSE `event:` name); `response` for a whole answer.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The response's id, where the JSON names it (an answer, `response.created`, ...).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event's `sequence_number`.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// The JSON as it will be sent: the engine's bytes, with the response's `model` replaced
    /// in place when the gateway shows another.
    pub fn json(&self) -> Cow<'_, str> {
        let Some(raw) = &self.raw else {
            return Cow::Borrowed("null");
        };
        if self.model == self.shown || (!self.nested && self.kind != "response") {
            return Cow::Borrowed(raw.get());
        }
        if self.kind == "response" {
            return Cow::Owned(splice(raw.get(), &self.model));
        }
        let spliced = serde_json::from_str::<Nested<'_>>(raw.get()).ok().map(|n| {
            let inner = n.response.get();
            let start = (inner.as_ptr() as usize).wrapping_sub(raw.get().as_ptr() as usize);
            let end = start.wrapping_add(inner.len());
            match (raw.get().get(..start), raw.get().get(end..)) {
                (Some(before), Some(after)) => {
                    format!("{before}{}{after}", splice(inner, &self.model))
                }
                _ => raw.get().to_owned(),
            }
        });
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

impl Serialize for NativeResponse {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.json().into_owned())
            .map_err(<S::Error as serde::ser::Error>::custom)?;
        raw.serialize(s)
    }
}

/// Reads an answer, or an event (a value parsed back).
impl<'de> Deserialize<'de> for NativeResponse {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let bytes = raw.get().as_bytes();
        Self::answer(bytes)
            .or_else(|_| Self::event(bytes))
            .map_err(D::Error::custom)
    }
}

impl HasModel for NativeResponse {
    fn model(&self) -> &str {
        &self.model
    }
    /// Only an answer and the events that carry the response object name a model; the
    /// others show it unchanged.
    fn model_mut(&mut self) -> &mut String {
        &mut self.model
    }
}

impl HasUsage for NativeResponse {
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

/// A Responses stream is never continued on another engine (its events are not chat chunks).
impl StreamPiece for NativeResponse {
    fn piece(&self) -> Piece<'_> {
        Piece::Unsupported
    }
    fn set_text(&mut self, _text: &str) {}
    fn usage_mut(&mut self) -> &mut Option<Usage> {
        &mut self.no_usage
    }
    fn stream_id(&self) -> (&str, u64) {
        ("", 0)
    }
    fn set_stream_id(&mut self, _id: &str, _created: u64) {}
}

#[cfg(test)]
mod tests;
