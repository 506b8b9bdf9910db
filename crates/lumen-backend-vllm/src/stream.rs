//! Turns an engine's SSE response body into a [`ChunkStream`].

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::Stream;
use lumen_backend::BackendError;
use lumen_openai_types::sse::SseDecoder;
use lumen_openai_types::{Chunk, ErrorObject};
use serde::de::DeserializeOwned;

use crate::UpBody;

/// Decodes SSE from the body, yields parsed chunks that keep their bytes, ends at `[DONE]` (or
/// at a clean end of the body after a chunk with a `finish_reason`). Any failure is yielded
/// once as [`BackendError::StreamInterrupted`] and ends the stream.
/// Dropping it drops the body, which closes the connection and aborts generation.
pub(crate) struct SseChunks<T> {
    body: UpBody,
    decoder: SseDecoder,
    backend: String,
    finished: bool,
    /// An event carried a `finish_reason`: a clean end of the body without `[DONE]` is then a
    /// complete answer, not an interruption.
    complete: bool,
    /// An API whose event stream ends at a typed last event, with no `[DONE]`.
    last: Option<LastEvent>,
    _t: PhantomData<fn() -> T>,
}

/// Just the `type` of a typed stream event.
#[derive(serde::Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// The event that ends an API's stream, for the APIs whose streams carry no `[DONE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastEvent {
    /// Anthropic's `message_stop`.
    MessageStop,
    /// OpenAI Responses' terminal events: `response.completed`, `response.incomplete`,
    /// `response.failed`.
    ResponseDone,
}

impl LastEvent {
    /// Whether an event's data is this API's last event.
    fn is_last(self, data: &[u8]) -> bool {
        let kind = serde_json::from_slice::<EventType<'_>>(data)
            .ok()
            .and_then(|e| e.kind);
        let Some(kind) = kind else {
            return false;
        };
        match self {
            Self::MessageStop => kind == "message_stop",
            Self::ResponseDone => matches!(
                kind.as_ref(),
                "response.completed" | "response.incomplete" | "response.failed"
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::MessageStop => "message_stop",
            Self::ResponseDone => "response.completed",
        }
    }
}

impl<T> SseChunks<T> {
    pub(crate) fn new(body: UpBody, backend: String) -> Self {
        Self {
            body,
            decoder: SseDecoder::new(),
            backend,
            finished: false,
            complete: false,
            last: None,
            _t: PhantomData,
        }
    }

    /// For an event stream without `[DONE]` (Anthropic's, OpenAI Responses'): `last` is its
    /// end (the body is then released as after `[DONE]`), and a body that ends before it was
    /// interrupted.
    pub(crate) fn until(mut self, last: LastEvent) -> Self {
        self.last = Some(last);
        self
    }
}

impl<T: DeserializeOwned> Stream for SseChunks<T> {
    type Item = Result<Chunk<T>, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let interrupted = |backend: &String, message: String, error: Option<Box<ErrorObject>>| {
            BackendError::StreamInterrupted {
                backend: backend.clone(),
                message,
                error,
            }
        };
        loop {
            match this.decoder.next_event() {
                Ok(Some(event)) if event.is_done() => {
                    this.finished = true;
                    this.body.release(cx);
                    return Poll::Ready(None);
                }
                Ok(Some(event)) => {
                    let item = match Chunk::<T>::from_raw(event.data) {
                        Ok(chunk) => match chunk.upstream_error() {
                            None if this.last.is_some() => {
                                if this
                                    .last
                                    .is_some_and(|l| chunk.raw().is_some_and(|r| l.is_last(r)))
                                {
                                    this.finished = true;
                                    this.body.release(cx);
                                }
                                return Poll::Ready(Some(Ok(chunk)));
                            }
                            None => {
                                this.complete |= chunk.finishes();
                                Ok(chunk)
                            }
                            Some(e) => Err(interrupted(
                                &this.backend,
                                e.message.clone(),
                                Some(Box::new(e.clone())),
                            )),
                        },
                        Err(e) => Err(interrupted(
                            &this.backend,
                            format!("engine sent an invalid stream event: {e}"),
                            None,
                        )),
                    };
                    this.finished = item.is_err();
                    return Poll::Ready(Some(item));
                }
                Ok(None) => {}
                Err(e) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(interrupted(&this.backend, e.to_string(), None))));
                }
            }
            match ready!(this.body.poll_data(cx)) {
                Some(Ok(data)) => this.decoder.push(&data),
                Some(Err(e)) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(interrupted(
                        &this.backend,
                        format!("connection to the engine failed mid-stream: {e}"),
                        None,
                    ))));
                }
                // The body ended cleanly (its HTTP framing was complete). With a finish reason
                // already sent, the answer is whole: some engines omit `[DONE]`.
                None if this.complete && !this.decoder.has_partial() => {
                    this.finished = true;
                    return Poll::Ready(None);
                }
                None => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(interrupted(
                        &this.backend,
                        match this.last {
                            Some(last) => {
                                format!("the engine closed the stream before {}", last.name())
                            }
                            None => "the engine closed the stream before [DONE]".to_owned(),
                        },
                        None,
                    ))));
                }
            }
        }
    }
}
