//! `POST /v1/chat/completions`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::raw::{Elements, deserialize_object, escape_unit, kind, same_json};
use crate::request::RequestError;
use crate::stream::{StreamOptions, Usage};
use crate::{Extra, RawExtra, RawJson};

/// A chat completion request. Only the fields Lumen reads are typed; `messages` and every
/// unknown field stay the client's JSON (see [`Messages`], [`RawExtra`]), so a large body
/// costs about its own size to parse and is forwarded unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatCompletionRequest {
    /// Empty when the caller left it out; governance may fill in a default.
    pub model: String,
    pub messages: Messages,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
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
    /// Everything else: `tools`, `response_format`, and engine extras such as `top_k`.
    #[serde(flatten)]
    pub extra: RawExtra,
    /// The client's bytes, when the request was read from a body with
    /// [`crate::request::parse_shared`]: the engine is sent them (with what Lumen changed
    /// spliced in) rather than a re-serialisation ([`crate::Forwardable::forwarded`]). Not
    /// part of the request's value: ignored by `==` and never serialised.
    #[serde(skip)]
    pub source: Option<crate::source::Source>,
}

deserialize_object!(ChatCompletionRequest, "a chat completion request object", {
    model: String = null_default,
    messages: Messages = required,
    stream: Option<bool> = default,
    stream_options: Option<StreamOptions> = default,
    max_tokens: Option<u32> = default,
    max_completion_tokens: Option<u32> = default,
    temperature: Option<f64> = default,
    top_p: Option<f64> = default,
    n: Option<u32> = default,
    seed: Option<i64> = default,
    user: Option<String> = default,
}, skip: [source]);

impl ChatCompletionRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Checks what the JSON types alone cannot: the rules OpenAI enforces before inference,
    /// and the shape of each message (kept as JSON, so checked here, one message at a time).
    pub fn validate(&self) -> Result<(), RequestError> {
        self.messages.check()?;
        // A chat answer needs room for at least one token (OpenAI and vLLM refuse 0 too).
        for (value, param) in [
            (self.max_tokens, "max_tokens"),
            (self.max_completion_tokens, "max_completion_tokens"),
        ] {
            if value == Some(0) {
                return Err(RequestError::invalid(
                    format!("0 is less than the minimum of 1 - '{param}'"),
                    param,
                ));
            }
        }
        crate::request::check_common(self.n, self.temperature, self.top_p)
    }
}

/// The `messages` array. A parsed request keeps the client's JSON (a body of many tiny messages
/// would otherwise cost ten times its size as structs); a request built in code holds
/// [`ChatMessage`]s (`vec![ChatMessage::new("user", "hi")].into()`). Read it with
/// [`iter`](Self::iter) (typed, one message at a time) or [`views`](Self::views) (borrowed).
#[derive(Clone)]
pub struct Messages(Repr);

#[derive(Clone)]
enum Repr {
    /// The client's JSON: the parse's copy, or a slice of the body ([`crate::source`]).
    Raw(RawJson),
    Typed(Vec<ChatMessage>),
}

impl Default for Messages {
    fn default() -> Self {
        Self(Repr::Typed(Vec::new()))
    }
}

impl From<Vec<ChatMessage>> for Messages {
    fn from(v: Vec<ChatMessage>) -> Self {
        Self(Repr::Typed(v))
    }
}

impl fmt::Debug for Messages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Typed(v) => fmt::Debug::fmt(v, f),
            Repr::Raw(r) => fmt::Debug::fmt(r, f),
        }
    }
}

impl PartialEq for Messages {
    fn eq(&self, other: &Self) -> bool {
        same_json(self, other)
    }
}

impl Serialize for Messages {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Raw(r) => r.serialize(s),
            Repr::Typed(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawJson::deserialize(d)?;
        if raw.kind() != b'[' {
            return Err(de::Error::custom(
                "invalid type: expected an array of messages",
            ));
        }
        Ok(Self(Repr::Raw(raw)))
    }
}

impl Messages {
    /// The array as a slice of the client's body (`text`, the body's `messages` array);
    /// `None` when it is not UTF-8.
    pub(crate) fn shared(text: bytes::Bytes) -> Option<Self> {
        RawJson::shared(text).map(|r| Self(Repr::Raw(r)))
    }

    /// The body slice the array is, when it is one.
    pub(crate) fn shared_bytes(&self) -> Option<&bytes::Bytes> {
        match &self.0 {
            Repr::Raw(r) => r.shared_bytes(),
            Repr::Typed(_) => None,
        }
    }

    /// True for `[]`.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Repr::Typed(v) => v.is_empty(),
            Repr::Raw(r) => Elements::<IgnoredAny>::new(r.get()).next().is_none(),
        }
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Typed(v) => v.len(),
            Repr::Raw(r) => Elements::<IgnoredAny>::new(r.get()).count(),
        }
    }

    /// The messages, parsed one at a time as they are read.
    pub fn iter(&self) -> impl Iterator<Item = Result<ChatMessage, serde_json::Error>> + '_ {
        let (raw, typed) = match &self.0 {
            Repr::Typed(v) => (None, Some(v.iter().cloned().map(Ok))),
            Repr::Raw(r) => (Some(Elements::<ChatMessage>::new(r.get())), None),
        };
        raw.into_iter().flatten().chain(typed.into_iter().flatten())
    }

    /// Every message parsed (costs the messages' size again; prefer [`iter`](Self::iter)).
    pub fn to_vec(&self) -> Result<Vec<ChatMessage>, serde_json::Error> {
        self.iter().collect()
    }

    /// The role and raw content of each message, borrowed: nothing is copied.
    pub fn views(&self) -> Box<dyn Iterator<Item = MessageView<'_>> + '_> {
        match &self.0 {
            Repr::Raw(r) => {
                Box::new(Elements::<MessageView<'_>>::new(r.get()).map_while(Result::ok))
            }
            Repr::Typed(v) => Box::new(v.iter().map(|m| MessageView {
                role: Cow::Borrowed(m.role.as_str()),
                content: m.content.as_ref().map(ViewContent::Typed),
            })),
        }
    }

    /// The shape of every message (an object with a non-empty string `role`, `content` a
    /// string, an array or null, `name` a string), with the JSON path of the first mistake.
    fn check(&self) -> Result<(), RequestError> {
        let raw = match &self.0 {
            Repr::Raw(r) => r.get(),
            Repr::Typed(v) => {
                if v.is_empty() {
                    return Err(no_messages());
                }
                return match v.iter().position(|m| m.role.is_empty()) {
                    Some(i) => Err(empty_role(i)),
                    None => Ok(()),
                };
            }
        };
        // Fast path without path tracking; the tracked walk only explains a failure.
        let checked = serde_json::from_str::<CheckMessages>(raw);
        let count = match checked {
            Ok(CheckMessages(Ok(n))) => n,
            Ok(CheckMessages(Err(i))) => return Err(empty_role(i)),
            Err(_) => {
                let de = &mut serde_json::Deserializer::from_str(raw);
                let err = match serde_path_to_error::deserialize::<_, CheckMessages>(de) {
                    Ok(_) => return Ok(()),
                    Err(e) => e,
                };
                let path = match err.path().to_string() {
                    p if p == "." => "messages".to_owned(),
                    p if p.starts_with('[') => format!("messages{p}"),
                    p => format!("messages.{p}"),
                };
                return Err(crate::request::explain(path, err.into_inner()));
            }
        };
        if count == 0 {
            return Err(no_messages());
        }
        Ok(())
    }
}

fn no_messages() -> RequestError {
    RequestError::invalid("'messages' must contain at least one message.", "messages")
}

fn empty_role(i: usize) -> RequestError {
    RequestError::invalid(
        "'role' must be a non-empty string.",
        format!("messages[{i}].role"),
    )
}

/// Walks the messages without keeping them: the count, or the index of the first empty role.
struct CheckMessages(Result<usize, usize>);

impl<'de> Deserialize<'de> for CheckMessages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CheckMessages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CheckMessages, A::Error> {
                let mut n = 0;
                let mut empty = None;
                while let Some(m) = seq.next_element::<CheckMessage<'de>>()? {
                    if m.role.is_empty() && empty.is_none() {
                        empty = Some(n);
                    }
                    n += 1;
                }
                Ok(CheckMessages(empty.map_or(Ok(n), Err)))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
#[serde(expecting = "a message object")]
struct CheckMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(default)]
    #[allow(dead_code)]
    content: Option<CheckContent>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    name: Option<Cow<'a, str>>,
}

/// `content` is a string, an array of parts, or null; the parts are not kept.
struct CheckContent;

impl<'de> Deserialize<'de> for CheckContent {
    /// Borrowed and looked at, never decoded: a long message with escapes was decoded whole
    /// here, into a buffer that doubles as it grows (issue 24: a 10 MB body of `\u` escapes
    /// peaked at 3× its size in RSS). The messages are checked from the body's text, so the
    /// borrow always holds.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        if matches!(kind(raw), b'"' | b'[') {
            return Ok(CheckContent);
        }
        // The same answer serde gives a visitor expecting these (an error path: small).
        let unexpected = match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::Bool(b)) => de::Unexpected::Bool(b),
            Ok(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => return Err(invalid(de::Unexpected::Unsigned(u))),
                (_, Some(i), _) => return Err(invalid(de::Unexpected::Signed(i))),
                (_, _, f) => de::Unexpected::Float(f.unwrap_or_default()),
            },
            Ok(serde_json::Value::Object(_)) => de::Unexpected::Map,
            _ => de::Unexpected::Other("a value"),
        };
        Err(invalid(unexpected))
    }
}

fn invalid<E: de::Error>(unexpected: de::Unexpected<'_>) -> E {
    E::invalid_type(unexpected, &"a string or an array of content parts")
}

/// One message, borrowed from the request: what prefix routing reads.
#[derive(Debug)]
pub struct MessageView<'a> {
    pub role: Cow<'a, str>,
    content: Option<ViewContent<'a>>,
}

#[derive(Debug)]
enum ViewContent<'a> {
    Raw(&'a RawValue),
    Typed(&'a MessageContent),
}

impl MessageView<'_> {
    /// Appends the message's text (the string, or the `text` of each text part) to `out`,
    /// stopping at `max` bytes in all.
    pub fn text_into(&self, out: &mut Vec<u8>, max: usize) {
        match &self.content {
            None => {}
            Some(ViewContent::Typed(MessageContent::Text(t))) => push_capped(out, t, max),
            Some(ViewContent::Typed(MessageContent::Parts(p))) => parts_text(p, out, max),
            Some(ViewContent::Raw(r)) => match kind(r) {
                b'"' => push_json_str(r.get(), out, max),
                b'[' => parts_text(r, out, max),
                _ => {}
            },
        }
    }
}

impl<'de> Deserialize<'de> for MessageView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct View<'a> {
            #[serde(borrow, default)]
            role: Cow<'a, str>,
            #[serde(borrow, default)]
            content: Option<&'a RawValue>,
        }
        let v = View::deserialize(d)?;
        Ok(MessageView {
            role: v.role,
            content: v.content.map(ViewContent::Raw),
        })
    }
}

fn push_capped(out: &mut Vec<u8>, s: &str, max: usize) {
    let room = max.saturating_sub(out.len());
    out.extend_from_slice(&s.as_bytes()[..s.len().min(room)]);
}

/// The `text` of each text part, read one part at a time.
fn parts_text(parts: &RawValue, out: &mut Vec<u8>, max: usize) {
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(borrow, default)]
        text: Option<&'a RawValue>,
    }
    for part in Elements::<Part<'_>>::new(parts.get()) {
        if out.len() >= max {
            return;
        }
        if let Ok(Part { text: Some(t) }) = part
            && kind(t) == b'"'
        {
            push_json_str(t.get(), out, max);
        }
    }
}

/// Appends the text of the JSON string literal `raw` (checked JSON: quotes, valid escapes)
/// to `out`, stopping at `max` bytes in all, and reads only as much of `raw` as that takes:
/// decoding the whole string (serde) cost a copy of it, and of a long message only the first
/// bytes are wanted. Stops at an escape that is not a whole character (a lone surrogate),
/// where serde would refuse the string.
fn push_json_str(raw: &str, out: &mut Vec<u8>, max: usize) {
    let b = raw.as_bytes();
    let mut i = 1;
    while i < b.len() && out.len() < max {
        match b[i] {
            b'"' => return,
            b'\\' => {
                let (c, len) = match b.get(i + 1) {
                    Some(b'u') => match json_escape_char(&b[i..]) {
                        Some(decoded) => decoded,
                        None => return,
                    },
                    Some(&e) => match e {
                        b'"' | b'\\' | b'/' => (char::from(e), 2),
                        b'b' => ('\u{8}', 2),
                        b'f' => ('\u{c}', 2),
                        b'n' => ('\n', 2),
                        b'r' => ('\r', 2),
                        b't' => ('\t', 2),
                        _ => return,
                    },
                    None => return,
                };
                push_capped(out, c.encode_utf8(&mut [0; 4]), max);
                i += len;
            }
            _ => {
                let start = i;
                while i < b.len() && b[i] != b'"' && b[i] != b'\\' {
                    i += 1;
                }
                // Both stops are ASCII, so the run is whole characters.
                push_capped(out, &raw[start..i], max);
            }
        }
    }
}

/// The character of a `\uXXXX` escape (two for a surrogate pair) at the start of `b`, and
/// the bytes it took.
fn json_escape_char(b: &[u8]) -> Option<(char, usize)> {
    let first = escape_unit(b, 0)?;
    if (0xD800..0xDC00).contains(&first) {
        if b.get(6..8)? != b"\\u" {
            return None;
        }
        let second = escape_unit(b, 6)?;
        if !(0xDC00..0xE000).contains(&second) {
            return None;
        }
        let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
        return char::from_u32(c).map(|c| (c, 12));
    }
    char::from_u32(first).map(|c| (c, 6))
}

/// One message. `content` is a string or an array of content parts (text, images, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<MessageContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tool_calls`, `tool_call_id`, `reasoning_content`, ...
    #[serde(flatten)]
    pub extra: RawExtra,
}

deserialize_object!(ChatMessage, "a message object", {
    role: String = required,
    content: Option<MessageContent> = default,
    name: Option<String> = default,
});

impl ChatMessage {
    pub fn new(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Some(MessageContent::Text(text.into())),
            ..Self::default()
        }
    }
}

/// Message content: plain text, or the parts array kept as JSON so new part types pass through
/// and a huge array costs its own size.
#[derive(Debug, Clone)]
pub enum MessageContent {
    Text(String),
    Parts(Box<RawValue>),
}

impl PartialEq for MessageContent {
    fn eq(&self, other: &Self) -> bool {
        same_json(self, other)
    }
}

impl Serialize for MessageContent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(t) => t.serialize(s),
            Self::Parts(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        match kind(&raw) {
            b'"' => serde_json::from_str(raw.get())
                .map(Self::Text)
                .map_err(de::Error::custom),
            b'[' => Ok(Self::Parts(raw)),
            _ => Err(de::Error::custom(
                "invalid type: expected a string or an array of content parts",
            )),
        }
    }
}

impl MessageContent {
    /// The text of the message; for parts, the `text` of each text part, concatenated.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Parts(parts) => {
                let mut out = Vec::new();
                parts_text(parts, &mut out, usize::MAX);
                String::from_utf8(out).unwrap_or_default()
            }
        }
    }
}

/// A non-streamed chat completion. Hand-written `Deserialize` (no `flatten`): its messages
/// hold raw JSON, which serde cannot buffer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: RawExtra,
}

deserialize_object!(ChatCompletionResponse, "a chat completion object", {
    id: String = default,
    object: String = [object_chat_completion],
    created: u64 = default,
    model: String = default,
    choices: Vec<ChatChoice> = default,
    usage: Option<Usage> = default,
});

fn object_chat_completion() -> String {
    "chat.completion".to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessage,
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: RawExtra,
}

deserialize_object!(ChatChoice, "a choice object", {
    index: u32 = default,
    message: ChatMessage = required,
    finish_reason: Option<String> = default,
});

/// One `chat.completion.chunk` stream event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "object_chat_chunk")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChatChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn object_chat_chunk() -> String {
    "chat.completion.chunk".to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: ChatDelta,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests;
