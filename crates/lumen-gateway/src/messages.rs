//! Anthropic's Messages API in the core: one request that each attempt serves natively or
//! translated, whichever its backend needs.
//!
//! An engine that serves `/v1/messages` itself ([`lumen_backend::Backend::native_messages`])
//! gets the client's body unchanged but for `model`, and its answer or events come back as it
//! sent them. Any other engine gets the request translated to a chat completion, and its
//! answer or chat stream is translated back to Anthropic's, in the attempt. Both give the same
//! answer and chunk type ([`NativeEvent`]), so one request can fall back from a native engine
//! to a translated one, and both are billed by the same reading of `message_start` and
//! `message_delta`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use lumen_anthropic_types::translate::{self, StreamTranslator};
use lumen_anthropic_types::{MessagesRequest, NativeEvent, NativeUsage, ReplyContext, StreamEvent};
use lumen_backend::{BackendError, ChunkStream};
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Chunk, ErrorObject,
    HasModel, JsonAnswer, JsonBody, Reply,
};

/// The engine path of the Messages API.
pub const MESSAGES_PATH: &str = "/v1/messages";

/// A Messages request as the attempts need it: the client's body for a native engine, and its
/// chat translation for the others. `model` is the body's; each attempt gives the translation
/// the same.
#[derive(Debug, Clone)]
pub struct MessagesCall {
    pub body: JsonBody,
    pub chat: ChatCompletionRequest,
    pub reply: ReplyContext,
    pub stream: bool,
}

/// Why a body is not a Messages request the gateway can serve.
#[derive(Debug, thiserror::Error)]
pub enum MessagesError {
    #[error(transparent)]
    Request(#[from] lumen_anthropic_types::RequestError),
    #[error("the body is not a JSON object with a string model: {0}")]
    Body(#[from] serde_json::Error),
}

impl MessagesCall {
    /// From the client's body, already parsed and translated by the caller (which words the
    /// errors in its API).
    pub fn new(
        body: Bytes,
        request: &MessagesRequest,
        translated: translate::Translated,
    ) -> Result<Self, serde_json::Error> {
        // The translated answer names the engine's model, as a native one does; the stream
        // and the answer then show the caller's alias (or the fallback that served) the same
        // way on both paths.
        let reply = ReplyContext {
            model: String::new(),
            ..translated.reply
        };
        Ok(Self {
            body: JsonBody::parse(body)?,
            chat: translated.request,
            reply,
            stream: request.stream,
        })
    }

    /// Parses and translates a body (with the default translation settings).
    pub fn read(body: Bytes) -> Result<Self, MessagesError> {
        let request = MessagesRequest::parse(&body)?;
        let translated = translate::to_chat(&request, &translate::TranslateOptions::default())?;
        Ok(Self::new(body, &request, translated)?)
    }

    /// The chat translation, for this attempt's engine model.
    pub(crate) fn chat_for_attempt(&self) -> ChatCompletionRequest {
        let mut chat = self.chat.clone();
        self.body.model.clone_into(&mut chat.model);
        chat
    }
}

impl HasModel for MessagesCall {
    fn model(&self) -> &str {
        &self.body.model
    }
    fn model_mut(&mut self) -> &mut String {
        &mut self.body.model
    }
}

impl<'de> serde::Deserialize<'de> for MessagesCall {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Self::read(Bytes::copy_from_slice(raw.get().as_bytes())).map_err(serde::de::Error::custom)
    }
}

/// An engine's native answer: a `message` object, else a protocol error (the engine's bytes
/// are not shown to the client as an answer).
pub(crate) fn native_answer(
    reply: Reply<JsonAnswer>,
    backend: &str,
) -> Result<Reply<NativeEvent>, BackendError> {
    let json = reply.to_json().map_err(|e| protocol(backend, &e))?;
    NativeEvent::answer(&json)
        .map(Reply::new)
        .map_err(|e| protocol(backend, &e))
}

/// A chat answer translated to a `message`.
pub(crate) fn translated_answer(
    reply: Reply<ChatCompletionResponse>,
    ctx: &ReplyContext,
    backend: &str,
) -> Result<Reply<NativeEvent>, BackendError> {
    let chat = reply.into_inner();
    let message = translate::reply_from_chat(&chat, ctx).map_err(|e| protocol(backend, &e))?;
    NativeEvent::answer(message.to_json().as_bytes())
        .map(Reply::new)
        .map_err(|e| protocol(backend, &e))
}

fn protocol(backend: &str, e: &dyn std::fmt::Display) -> BackendError {
    BackendError::Protocol {
        backend: backend.to_owned(),
        message: format!("the engine's answer is not an Anthropic message: {e}"),
    }
}

/// An engine's own Messages events, each read for its usage (`message_start`'s prompt, the last
/// `message_delta`'s output).
pub(crate) fn native_events(
    inner: ChunkStream<JsonAnswer>,
    backend: String,
) -> crate::engine_events::EngineEvents<
    impl FnMut(&[u8]) -> Result<NativeEvent, serde_json::Error> + Unpin,
> {
    let mut usage = NativeUsage::new();
    crate::engine_events::EngineEvents::new(inner, backend, move |raw: &[u8]| {
        NativeEvent::event(raw, &mut usage)
    })
}

/// A chat stream translated to Anthropic's events as it is read. An `error` event the
/// translation ends with (an answer cut short, a tool call it cannot express) ends the
/// stream as a failure instead, so it is reported (and billed) as one.
pub(crate) struct TranslatedEvents {
    inner: ChunkStream<ChatCompletionChunk>,
    translator: StreamTranslator,
    usage: NativeUsage,
    backend: String,
    events: Vec<StreamEvent>,
    ready: VecDeque<Result<Chunk<NativeEvent>, BackendError>>,
    done: bool,
}

impl TranslatedEvents {
    pub(crate) fn new(
        inner: ChunkStream<ChatCompletionChunk>,
        ctx: ReplyContext,
        backend: String,
    ) -> Self {
        Self {
            inner,
            translator: StreamTranslator::new(ctx),
            usage: NativeUsage::new(),
            backend,
            events: Vec::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// Moves the translator's events to the queue; an `error` event becomes the stream's end.
    fn take(&mut self) {
        for event in self.events.drain(..) {
            if let StreamEvent::Error { error } = &event {
                self.ready.push_back(Err(BackendError::StreamInterrupted {
                    backend: self.backend.clone(),
                    message: error.message.clone(),
                    error: Some(Box::new(ErrorObject::new(
                        error.message.clone(),
                        error.kind.as_str(),
                    ))),
                }));
                self.done = true;
                return;
            }
            self.ready.push_back(Ok(Chunk::new(NativeEvent::translated(
                &event,
                &mut self.usage,
            ))));
        }
    }
}

impl Stream for TranslatedEvents {
    type Item = Result<Chunk<NativeEvent>, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => {
                    this.translator.push(chunk.get(), &mut this.events);
                    this.take();
                }
                // The engine's failure as it is: typed by its status, it is what the caller
                // and the breakers see.
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.translator.finish(&mut this.events);
                    this.take();
                    this.done = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
