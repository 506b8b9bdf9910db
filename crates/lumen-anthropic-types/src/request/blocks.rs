//! Content blocks. Each is read as one flat struct of every member a block type may have (a
//! plain derive: no buffering), then checked for the members its `type` needs. A block type not
//! modelled here becomes [`ContentBlock::Other`] with its name, so a translation can refuse it
//! clearly; the native path never parses blocks at all.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::value::RawValue;

use super::{Either, StringOrSeq};

/// One block of a message's content.
#[derive(Debug, Clone)]
pub enum ContentBlock {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    /// A call the assistant made: `input` is the client's JSON object.
    ToolUse {
        id: String,
        name: String,
        input: Box<RawValue>,
    },
    /// The result of a call, in a user message.
    ToolResult {
        tool_use_id: String,
        content: ToolResultContent,
        is_error: bool,
    },
    Thinking {
        thinking: String,
        signature: Option<String>,
    },
    /// Thinking Anthropic encrypted: opaque to any other model.
    RedactedThinking {
        data: String,
    },
    /// Any other type (`document`, `search_result`, `server_tool_use`, `container_upload`,
    /// ...), by name.
    Other {
        kind: String,
    },
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    /// Another source type (`file` from the Files API, ...), by name.
    Other {
        kind: String,
    },
}

/// A tool result's `content`: a string, or blocks (text and images; documents and search
/// results parse as [`ResultBlock::Other`]). Absent means empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<ResultBlock>),
}

/// A block inside a tool result. Its own type, without a `content` member, so results cannot
/// nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultBlock {
    Text { text: String },
    Image { source: ImageSource },
    Other { kind: String },
}

/// Every member any block may have; unknown members (`cache_control`, `citations`) skipped.
#[derive(Deserialize)]
struct FlatBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    source: Option<Box<RawValue>>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Box<RawValue>>,
    #[serde(default)]
    tool_use_id: Option<String>,
    #[serde(default)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

fn required<T, E: de::Error>(v: Option<T>, field: &'static str) -> Result<T, E> {
    v.ok_or_else(|| de::Error::missing_field(field))
}

/// A member kept raw, parsed now that the block's type says what it must be. The error names
/// the member (the path tracker stops at the block).
fn member<'a, T: Deserialize<'a>, E: de::Error>(raw: &'a RawValue, field: &str) -> Result<T, E> {
    serde_json::from_str(raw.get()).map_err(|e| de::Error::custom(format_args!("{field}: {e}")))
}

impl<'de> Deserialize<'de> for ContentBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = FlatBlock::deserialize(d)?;
        Ok(match b.kind.as_str() {
            "text" => Self::Text {
                text: required(b.text, "text")?,
            },
            "image" => Self::Image {
                source: member(&required(b.source, "source")?, "source")?,
            },
            "tool_use" => {
                let input = required(b.input, "input")?;
                if !input.get().starts_with('{') {
                    return Err(de::Error::custom("input: expected an object"));
                }
                Self::ToolUse {
                    id: required(b.id, "id")?,
                    name: required(b.name, "name")?,
                    input,
                }
            }
            "tool_result" => Self::ToolResult {
                tool_use_id: required(b.tool_use_id, "tool_use_id")?,
                content: match b.content {
                    None => ToolResultContent::Text(String::new()),
                    Some(raw) if raw.get() == "null" => ToolResultContent::Text(String::new()),
                    Some(raw) => member(&raw, "content")?,
                },
                is_error: b.is_error.unwrap_or(false),
            },
            "thinking" => Self::Thinking {
                thinking: required(b.thinking, "thinking")?,
                signature: b.signature,
            },
            "redacted_thinking" => Self::RedactedThinking {
                data: required(b.data, "data")?,
            },
            _ => Self::Other { kind: b.kind },
        })
    }
}

impl<'de> Deserialize<'de> for ToolResultContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrSeq::<ResultBlock>::new(
            "a string or an array of content blocks",
        ))
        .map(|v| match v {
            Either::Text(t) => Self::Text(t),
            Either::Seq(b) => Self::Blocks(b),
        })
    }
}

impl<'de> Deserialize<'de> for ResultBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Flat {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            text: Option<String>,
            #[serde(default)]
            source: Option<Box<RawValue>>,
        }
        let b = Flat::deserialize(d)?;
        Ok(match b.kind.as_str() {
            "text" => Self::Text {
                text: required(b.text, "text")?,
            },
            "image" => Self::Image {
                source: member(&required(b.source, "source")?, "source")?,
            },
            _ => Self::Other { kind: b.kind },
        })
    }
}

impl<'de> Deserialize<'de> for ImageSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Flat {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            data: Option<String>,
            #[serde(default)]
            url: Option<String>,
        }
        let s = Flat::deserialize(d)?;
        Ok(match s.kind.as_str() {
            "base64" => Self::Base64 {
                media_type: required(s.media_type, "media_type")?,
                data: required(s.data, "data")?,
            },
            "url" => Self::Url {
                url: required(s.url, "url")?,
            },
            _ => Self::Other { kind: s.kind },
        })
    }
}
