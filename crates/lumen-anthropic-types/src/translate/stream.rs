//! A chat completion stream as Anthropic stream events: a sans-IO state machine.
//!
//! Feed it every chat chunk ([`StreamTranslator::push`]), then [`StreamTranslator::finish`]
//! when the engine's stream ends (`[DONE]` or end of body), or [`StreamTranslator::fail`] when
//! it broke. It returns the events to send, in Anthropic's order: `message_start` with the
//! first chunk; each block's `content_block_start`, deltas and `content_block_stop`, a block
//! closed as soon as the next kind begins (thinking → text → tool calls, or any order the engine
//! takes); one `ping` after the first block starts; `message_delta` (stop reason and usage) and
//! `message_stop` once the engine finished and its usage chunk arrived, or at `finish`.

use lumen_openai_types::{ChatCompletionChunk, Usage as ChatUsage};
use serde::Deserialize;

use super::reply::{Function, fallback_call_id};
use super::{
    ReplyContext, ReplyError, THINKING_SIGNATURE, message_id, stop_reason, usage_from_chat,
};
use crate::{
    Delta, ErrorObject, ErrorType, MessageDelta, MessagesResponse, ResponseBlock, StreamEvent, ids,
};

/// Most tool calls one answer may make before the stream is ended as broken: an engine's tool
/// index is a number it chose, not a size to allocate for.
pub const MAX_TOOL_CALLS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// The slot in `tools`.
    Tool(usize),
}

#[derive(Debug)]
struct ToolSlot {
    /// The engine's `index` for this call.
    engine_index: u32,
    id: Option<String>,
    name: Option<String>,
    /// The Anthropic block index, once started.
    block: Option<u32>,
    /// Arguments that arrived before the name (rare): sent when the block starts.
    pending: String,
    closed: bool,
}

/// The translation of one streamed answer.
#[derive(Debug)]
pub struct StreamTranslator {
    ctx: ReplyContext,
    started: bool,
    pinged: bool,
    ended: bool,
    open: Option<(Open, u32)>,
    next_block: u32,
    tools: Vec<ToolSlot>,
    finish_reason: Option<String>,
    matched_stop: Option<String>,
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<Function>,
}

impl StreamTranslator {
    pub fn new(ctx: ReplyContext) -> Self {
        Self {
            ctx,
            started: false,
            pinged: false,
            ended: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            finish_reason: None,
            matched_stop: None,
            usage: None,
        }
    }

    /// True once `message_stop` or `error` was produced: nothing more will be.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The engine's last reported usage (for billing the translated stream).
    pub fn chat_usage(&self) -> Option<&ChatUsage> {
        self.usage.as_ref()
    }

    /// Translates one chunk, appending the events it yields to `out`.
    pub fn push(&mut self, chunk: &ChatCompletionChunk, out: &mut Vec<StreamEvent>) {
        if self.ended {
            return;
        }
        if let Err(e) = self.step(chunk, out) {
            self.close(out);
            self.error(ErrorType::ApiError, e.to_string(), out);
        }
    }

    fn step(
        &mut self,
        chunk: &ChatCompletionChunk,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ReplyError> {
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        if !self.started {
            self.started = true;
            let model = if self.ctx.model.is_empty() {
                chunk.model.clone()
            } else {
                self.ctx.model.clone()
            };
            // With per-chunk usage (vLLM's continuous_usage_stats) the prompt is known now.
            let mut usage = usage_from_chat(chunk.usage.as_ref());
            usage.output_tokens = 0;
            out.push(StreamEvent::MessageStart {
                message: MessagesResponse::empty(message_id(&chunk.id), model, usage),
            });
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            // The usage chunk (`choices: []`) after the finish reason ends the message.
            if chunk.choices.is_empty() && chunk.usage.is_some() && self.finish_reason.is_some() {
                self.end(out);
            }
            return Ok(());
        };
        let d = &choice.delta;
        let reasoning = d
            .extra
            .get("reasoning_content")
            .or_else(|| d.extra.get("reasoning"))
            .and_then(serde_json::Value::as_str)
            .filter(|r| !r.is_empty());
        if let Some(r) = reasoning {
            let index = self.ensure(Open::Thinking, out);
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: Delta::ThinkingDelta {
                    thinking: r.to_owned(),
                },
            });
        }
        if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.ensure(Open::Text, out);
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: Delta::TextDelta {
                    text: text.to_owned(),
                },
            });
        }
        if let Some(calls) = d.extra.get("tool_calls").filter(|v| !v.is_null()) {
            let calls = Vec::<ToolCallDelta>::deserialize(calls)
                .map_err(|e| ReplyError::ToolCalls(e.to_string()))?;
            for (n, call) in calls.into_iter().enumerate() {
                self.tool_delta(call, n, out)?;
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
            self.matched_stop = choice
                .extra
                .get("stop_reason")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            self.close(out);
        }
        Ok(())
    }

    fn tool_delta(
        &mut self,
        call: ToolCallDelta,
        position: usize,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ReplyError> {
        // Engines that leave `index` out send one call per delta, in order.
        let engine_index = call
            .index
            .unwrap_or(u32::try_from(position).unwrap_or(u32::MAX));
        let slot = match self
            .tools
            .iter()
            .position(|t| t.engine_index == engine_index)
        {
            Some(s) => s,
            None => {
                if self.tools.len() == MAX_TOOL_CALLS {
                    return Err(ReplyError::TooManyToolCalls(MAX_TOOL_CALLS));
                }
                self.tools.push(ToolSlot {
                    engine_index,
                    id: None,
                    name: None,
                    block: None,
                    pending: String::new(),
                    closed: false,
                });
                self.tools.len() - 1
            }
        };
        let (name, args) = match call.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        let t = &mut self.tools[slot];
        if t.closed {
            return Err(ReplyError::InterleavedToolCall(engine_index));
        }
        if t.id.is_none() {
            t.id = call.id.filter(|id| !id.is_empty());
        }
        if t.name.is_none() {
            t.name = name.filter(|n| !n.is_empty());
        }
        let args = args.unwrap_or_default();
        if t.block.is_none() {
            t.pending.push_str(&args);
            if t.name.is_some() {
                self.start_tool(slot, out);
            }
            return Ok(());
        }
        if self.open.map(|(o, _)| o) != Some(Open::Tool(slot)) {
            return Err(ReplyError::InterleavedToolCall(engine_index));
        }
        if !args.is_empty()
            && let Some(index) = self.tools[slot].block
        {
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: Delta::InputJsonDelta { partial_json: args },
            });
        }
        Ok(())
    }

    fn start_tool(&mut self, slot: usize, out: &mut Vec<StreamEvent>) {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        let t = &mut self.tools[slot];
        t.block = Some(index);
        let engine_id = t.id.clone().unwrap_or_else(|| fallback_call_id(slot));
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: ResponseBlock::ToolUse {
                id: ids::to_anthropic(&engine_id),
                name: t.name.clone().unwrap_or_default(),
                input: empty_object(),
            },
        });
        let pending = std::mem::take(&mut t.pending);
        self.open = Some((Open::Tool(slot), index));
        self.ping(out);
        if !pending.is_empty() {
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: Delta::InputJsonDelta {
                    partial_json: pending,
                },
            });
        }
    }

    /// The index of an open block of `kind`, starting one (and closing another) if needed.
    fn ensure(&mut self, kind: Open, out: &mut Vec<StreamEvent>) -> u32 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        let content_block = match kind {
            Open::Thinking => ResponseBlock::Thinking {
                thinking: String::new(),
                signature: String::new(),
            },
            _ => ResponseBlock::Text {
                text: String::new(),
            },
        };
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block,
        });
        self.open = Some((kind, index));
        self.ping(out);
        index
    }

    fn ping(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.pinged {
            self.pinged = true;
            out.push(StreamEvent::Ping);
        }
    }

    /// Closes the open block; a thinking block gets its signature first, as Anthropic's do.
    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        let Some((kind, index)) = self.open.take() else {
            return;
        };
        match kind {
            Open::Thinking => out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: Delta::SignatureDelta {
                    signature: THINKING_SIGNATURE.to_owned(),
                },
            }),
            Open::Tool(slot) => {
                if let Some(t) = self.tools.get_mut(slot) {
                    t.closed = true;
                }
            }
            Open::Text => {}
        }
        out.push(StreamEvent::ContentBlockStop { index });
    }

    fn end(&mut self, out: &mut Vec<StreamEvent>) {
        self.close(out);
        self.ping(out);
        let called_tools = self.tools.iter().any(|t| t.block.is_some());
        let (stop, stop_sequence) = stop_reason(
            self.finish_reason.as_deref(),
            self.matched_stop.as_deref(),
            called_tools,
            &self.ctx,
        );
        out.push(StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(stop),
                stop_sequence,
            },
            usage: usage_from_chat(self.usage.as_ref()),
        });
        out.push(StreamEvent::MessageStop);
        self.ended = true;
    }

    fn error(&mut self, kind: ErrorType, message: String, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::Error {
            error: ErrorObject { kind, message },
        });
        self.ended = true;
    }

    /// The engine's stream ended (`[DONE]`, or the body ended). After a finish reason the
    /// message ends normally (with whatever usage was reported); without one the answer was cut
    /// short, which the client learns as an `error` event rather than a truncated answer that
    /// looks complete. A call started by a name-less delta is started now, so its arguments are
    /// not lost.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.ended {
            return;
        }
        if !self.started {
            self.error(
                ErrorType::ApiError,
                "the engine sent no answer".to_owned(),
                out,
            );
            return;
        }
        for slot in 0..self.tools.len() {
            if self.tools[slot].block.is_none() && !self.tools[slot].closed {
                self.start_tool(slot, out);
            }
        }
        if self.finish_reason.is_none() {
            self.close(out);
            self.error(ErrorType::ApiError, ReplyError::Unfinished.to_string(), out);
            return;
        }
        self.end(out);
    }

    /// The engine's stream broke (an in-band error, a dropped connection): an `error` event of
    /// the type for `status`, the way Anthropic reports a failure mid-stream.
    pub fn fail(&mut self, status: u16, message: impl Into<String>, out: &mut Vec<StreamEvent>) {
        if self.ended {
            return;
        }
        self.error(ErrorType::from_status(status), message.into(), out);
    }
}

fn empty_object() -> Box<serde_json::value::RawValue> {
    // `{}` is valid JSON: the default (`null`) is never used.
    serde_json::value::RawValue::from_string("{}".to_owned()).unwrap_or_default()
}
