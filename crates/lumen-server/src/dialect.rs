//! The dialects the edge speaks: how an error's body, and a committed stream's frames, are
//! written for the caller's API. OpenAI's (chat, completions, embeddings, the engines' JSON
//! endpoints; its Responses events on `/v1/responses`) and Anthropic's (`/v1/messages`). The core's pipeline is the same for both; only
//! the rendering differs, so a new API is a dialect here and a translation, not a copy of the
//! chat path.

use bytes::Bytes;
use lumen_anthropic_types::{ErrorObject as AnthropicError, ErrorType, NativeEvent, StreamEvent};
use lumen_gateway::StoredResponse;
use lumen_openai_types::responses::{
    self, Input, InputItem, NativeResponse, Response, history_items,
};
use lumen_openai_types::sse::{DONE_FRAME, data_frame};
use lumen_openai_types::{ChatCompletionChunk, Chunk};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The API a request speaks, chosen by its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// An error's JSON body in this dialect: OpenAI's `{"error": {...}}`, or Anthropic's
    /// `{"type": "error", "error": {"type", "message"}}` (its type from the status), so each
    /// SDK raises its own exception types.
    pub(crate) fn error_body(self, e: &ApiError) -> Bytes {
        match self {
            Self::OpenAi => e.body_json(),
            Self::Anthropic => Bytes::from(
                lumen_anthropic_types::ErrorBody::for_status(
                    e.status.as_u16(),
                    e.error.message.clone(),
                )
                .to_json(),
            ),
        }
    }
}

/// How a committed stream's chunks become SSE frames. Per stream: a dialect that translates
/// keeps its state here.
pub(crate) trait Frames<T>: Send + 'static {
    /// The frames one engine chunk becomes (empty: none yet). `Err` when it cannot be encoded.
    fn chunk(&mut self, chunk: &Chunk<T>) -> Result<Bytes, String>;
    /// The frames that end a stream the engine finished.
    fn end(&mut self) -> Bytes;
    /// The frames that end a stream with a failure after commit.
    fn fail(&mut self, e: &ApiError) -> Bytes;
}

/// OpenAI's SSE: one `data:` frame per chunk (the engine's bytes when unchanged), `data:
/// [DONE]` at the end, and a failure as one `data: {"error": ...}` frame before `[DONE]`.
pub(crate) struct OpenAiFrames;

impl<T: Serialize + DeserializeOwned + Default> Frames<T> for OpenAiFrames {
    fn chunk(&mut self, chunk: &Chunk<T>) -> Result<Bytes, String> {
        chunk
            .to_json()
            .map(|json| data_frame(&json))
            .map_err(|e| e.to_string())
    }

    fn end(&mut self) -> Bytes {
        Bytes::from_static(DONE_FRAME)
    }

    fn fail(&mut self, e: &ApiError) -> Bytes {
        let mut out = data_frame(&e.body_json()).to_vec();
        out.extend_from_slice(DONE_FRAME);
        Bytes::from(out)
    }
}

/// Anthropic's event stream: each event as `event: <type>` and `data: <json>`, the JSON as the
/// engine sent it (or as the core translated it from a chat stream); the engine's own
/// `message_stop` ends it, and a failure is an `event: error` frame typed by its status.
pub(crate) struct AnthropicFrames;

impl Frames<NativeEvent> for AnthropicFrames {
    fn chunk(&mut self, chunk: &Chunk<NativeEvent>) -> Result<Bytes, String> {
        let event = chunk.get();
        let json = event.json();
        let mut out = Vec::with_capacity(json.len() + event.kind().len() + 16);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.kind().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(b"\n\n");
        Ok(Bytes::from(out))
    }

    fn end(&mut self) -> Bytes {
        Bytes::new()
    }

    fn fail(&mut self, e: &ApiError) -> Bytes {
        StreamEvent::Error {
            error: AnthropicError {
                kind: ErrorType::from_status(e.status.as_u16()),
                message: e.error.message.clone(),
            },
        }
        .to_sse()
    }
}

/// What a Responses request with `store` keeps once its answer is complete: the conversation
/// it continued, and its own input (so a later `previous_response_id` sees this turn).
pub(crate) struct Keep {
    pub(crate) core: lumen_gateway::Gateway,
    pub(crate) owner: String,
    pub(crate) conversation: Vec<InputItem>,
    pub(crate) input: Input,
}

impl Keep {
    /// Stores `response` with the conversation up to and including it (in the background).
    pub(crate) fn save(self, response: &Response) {
        let input = history_items(
            &self.input,
            &Response {
                output: Vec::new(),
                ..response.clone()
            },
        );
        let mut conversation = self.conversation;
        conversation.extend(history_items(&self.input, response));
        self.core.policy().save_response(&StoredResponse {
            owner: self.owner,
            response: response.clone(),
            conversation,
            input,
        });
    }
}

/// OpenAI's Responses events, translated from a chat completion stream as it is relayed
/// (`response.created`, items and their deltas, `response.completed` with usage); a failure
/// is `response.failed`. A stored response is kept when the stream completes.
pub(crate) struct ResponsesFrames {
    translator: responses::StreamTranslator,
    keep: Option<Keep>,
}

impl ResponsesFrames {
    pub(crate) fn new(translator: responses::StreamTranslator, keep: Option<Keep>) -> Self {
        Self { translator, keep }
    }
}

fn sse(events: &[responses::ResponseEvent]) -> Bytes {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(&e.to_sse());
    }
    Bytes::from(out)
}

impl Frames<ChatCompletionChunk> for ResponsesFrames {
    fn chunk(&mut self, chunk: &Chunk<ChatCompletionChunk>) -> Result<Bytes, String> {
        Ok(sse(&self.translator.push(chunk.get())))
    }

    fn end(&mut self) -> Bytes {
        let events = self.translator.finish();
        if let Some(keep) = self.keep.take() {
            keep.save(self.translator.response());
        }
        sse(&events)
    }

    fn fail(&mut self, e: &ApiError) -> Bytes {
        sse(&self.translator.fail(&e.error.message))
    }
}

/// Where a native engine's response lives, recorded once its id is known (`store` on).
pub(crate) struct NativeHome {
    pub(crate) core: lumen_gateway::Gateway,
    pub(crate) owner: String,
    pub(crate) backend: String,
}

impl NativeHome {
    /// Maps `id` to the backend and owner (in the background).
    pub(crate) fn save(self, id: &str) {
        self.core
            .policy()
            .save_native_response(id, &self.owner, &self.backend);
    }
}

/// OpenAI's Responses events as a native engine sent them: `event: <type>` and its `data:`,
/// the engine's bytes and `sequence_number`s; the stream's own terminal event ends it. The
/// response's id is mapped to its engine as soon as an event names it (`response.created`).
/// A failure after commit is an `error` event numbered after the last one relayed.
pub(crate) struct NativeResponsesFrames {
    home: Option<NativeHome>,
    next: u64,
}

impl NativeResponsesFrames {
    pub(crate) fn new(home: Option<NativeHome>) -> Self {
        Self { home, next: 0 }
    }
}

impl Frames<NativeResponse> for NativeResponsesFrames {
    fn chunk(&mut self, chunk: &Chunk<NativeResponse>) -> Result<Bytes, String> {
        let event = chunk.get();
        if !event.id().is_empty() {
            if let Some(home) = self.home.take() {
                home.save(event.id());
            }
        }
        if let Some(n) = event.sequence() {
            self.next = n.saturating_add(1);
        }
        let json = event.json();
        let mut out = Vec::with_capacity(json.len() + event.kind().len() + 16);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.kind().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(b"\n\n");
        Ok(Bytes::from(out))
    }

    fn end(&mut self) -> Bytes {
        Bytes::new()
    }

    fn fail(&mut self, e: &ApiError) -> Bytes {
        #[derive(Serialize)]
        struct ErrorEvent<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: &'a str,
            message: &'a str,
            param: Option<&'a str>,
            sequence_number: u64,
        }
        let event = ErrorEvent {
            kind: "error",
            code: e.error.code.as_deref().unwrap_or(&e.error.kind),
            message: &e.error.message,
            param: e.error.param.as_deref(),
            sequence_number: self.next,
        };
        let data = serde_json::to_string(&event).unwrap_or_default();
        Bytes::from(format!("event: error\ndata: {data}\n\n"))
    }
}
