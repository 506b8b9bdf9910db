//! Stream events, and their framing: every event is an `event: <type>` line and a `data:` line
//! holding the JSON (whose `type` repeats the event name), as Anthropic sends them.

use bytes::Bytes;
use serde::Serialize;

use crate::{ErrorObject, MessagesResponse, ResponseBlock, StopReason, Usage};

/// One event of a streamed answer, in the order Anthropic sends them: `message_start`, then per
/// content block `content_block_start`, `content_block_delta`s and `content_block_stop` (a
/// `ping` after the first start), then `message_delta` and `message_stop`; `error` on failure.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: MessagesResponse,
    },
    ContentBlockStart {
        index: u32,
        content_block: ResponseBlock,
    },
    Ping,
    ContentBlockDelta {
        index: u32,
        delta: Delta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: Usage,
    },
    MessageStop,
    Error {
        error: ErrorObject,
    },
}

/// What a `content_block_delta` adds to its block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    TextDelta {
        text: String,
    },
    /// A piece of a tool call's `input`, as JSON text (not valid JSON on its own).
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
}

/// The top-level changes `message_delta` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageDelta {
    pub stop_reason: Option<StopReason>,
    pub stop_sequence: Option<String>,
}

impl StreamEvent {
    /// The `event:` name (the JSON's `type`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::Ping => "ping",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
            Self::Error { .. } => "error",
        }
    }

    /// Appends the event's SSE frame to `out`.
    pub fn write_sse(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(self.name().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Strings, numbers and raw JSON already checked when parsed: cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
        out.extend_from_slice(b"\n\n");
    }

    /// The event's SSE frame.
    pub fn to_sse(&self) -> Bytes {
        let mut out = Vec::with_capacity(128);
        self.write_sse(&mut out);
        Bytes::from(out)
    }
}

/// The frames of `events`, one after another.
pub fn to_sse(events: &[StreamEvent]) -> Bytes {
    let mut out = Vec::with_capacity(128 * events.len());
    for e in events {
        e.write_sse(&mut out);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
