//! An engine's own event stream for an API it serves natively (Anthropic's Messages, OpenAI's
//! Responses): each event kept as the engine sent it and read once, by the API's reader, for
//! what billing and routing need. One stream for every such API: only the reader differs.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::Stream;
use lumen_backend::{BackendError, ChunkStream};
use lumen_openai_types::{Chunk, JsonAnswer};

/// The engine's events, each read by `read`; an event it cannot read ends the stream as an
/// interrupted one (the engine, not the client, is at fault).
pub(crate) struct EngineEvents<R> {
    inner: ChunkStream<JsonAnswer>,
    read: R,
    backend: String,
    done: bool,
}

impl<R> EngineEvents<R> {
    pub(crate) fn new(inner: ChunkStream<JsonAnswer>, backend: String, read: R) -> Self {
        Self {
            inner,
            read,
            backend,
            done: false,
        }
    }
}

impl<T, R> Stream for EngineEvents<R>
where
    R: FnMut(&[u8]) -> Result<T, serde_json::Error> + Unpin,
{
    type Item = Result<Chunk<T>, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let item = match ready!(this.inner.as_mut().poll_next(cx)) {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok(chunk)) => {
                let read = match chunk.raw() {
                    Some(raw) => (this.read)(raw),
                    None => chunk.to_json().and_then(|json| (this.read)(&json)),
                };
                Some(
                    read.map(Chunk::new)
                        .map_err(|e| BackendError::StreamInterrupted {
                            backend: this.backend.clone(),
                            message: format!("engine sent an invalid stream event: {e}"),
                            error: None,
                        }),
                )
            }
        };
        this.done = !matches!(item, Some(Ok(_)));
        Poll::Ready(item)
    }
}
