//! Resilience for engine calls: deadlines, and the streaming first-chunk gate.
//!
//! Engines hang, load weights slowly and die mid-stream. This crate turns each of those into a
//! typed [`BackendError::Timeout`] at a known point, using `tokio::time` throughout so tests can
//! pause the clock.
//!
//! A streamed request is *committed* only when its first chunk has arrived: [`open_stream`]
//! waits for that chunk under the first-byte deadline, so every failure before it is an ordinary
//! `Err` the caller may retry elsewhere. After it, [`Guarded`] enforces the idle and total
//! deadlines and reports expiry in-band, because the client has already seen bytes.
//!
//! # Layout
//! - `retry`: [`Backoff`] (linear by default, exponential with jitter), [`RetryPolicy`],
//!   [`RetryBudget`].
//! - `breaker`: [`CircuitBreaker`] per backend.
//! - `admission`: [`Admission`], a concurrency cap with a bounded FIFO queue.
//! - [`config`]: the settings as plain serde types (profiles, timeouts, retry, breaker,
//!   admission) and their resolution into [`config::Resolved`].
//! - [`Timeouts`]: the deadlines of one operation.
//! - [`unary`]: a non-streamed call under the total deadline.
//! - [`open_stream`] / [`Guarded`]: the first-chunk gate and the guarded stream.
//!
//! # Must not depend on
//! hyper, governance, or any concrete backend.

mod admission;
mod breaker;
pub mod config;
mod fair;
mod retry;

pub use admission::{Admission, AdmissionError, Permit};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use fair::{Class, FairAdmission, FairPermit, Ticket, UnknownClass};
pub use retry::{
    Backoff, DEFAULT_RETRYABLE_STATUSES, InvalidBackoff, RetryBudget, RetryPolicy, StatusSet,
};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use lumen_backend::{BackendError, ChunkStream, TimeoutKind};
use lumen_openai_types::Chunk;
use tokio::time::{Instant, Sleep, sleep_until};

/// Deadlines for one operation. `None` disables a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// Until the first stream chunk (time to first token, including queueing in the engine).
    pub first_byte: Option<Duration>,
    /// Longest gap between two stream chunks.
    pub idle: Option<Duration>,
    /// The whole request, first byte to last.
    pub total: Option<Duration>,
}

/// Runs a non-streamed call under the total deadline.
///
/// A non-streamed engine call only answers once generation is complete, so a first-byte deadline
/// would cut off long answers; the total deadline is the one that applies.
pub async fn unary<T>(
    call: impl Future<Output = Result<T, BackendError>>,
    timeouts: &Timeouts,
) -> Result<T, BackendError> {
    match timeouts.total {
        Some(total) => {
            tokio::time::timeout(total, call)
                .await
                .unwrap_or(Err(BackendError::Timeout {
                    kind: TimeoutKind::Total,
                }))
        }
        None => call.await,
    }
}

/// Opens a stream and waits for its first chunk: the commit point.
///
/// Returns `Err` for anything that goes wrong before the first chunk (including the engine's
/// in-band error as its first event), so the caller may still retry or answer with a status code.
/// On success the returned stream replays that chunk first, then the rest under the idle and
/// total deadlines.
pub async fn open_stream<T: Send + 'static>(
    open: impl Future<Output = Result<ChunkStream<T>, BackendError>>,
    timeouts: &Timeouts,
) -> Result<Guarded<T>, BackendError> {
    let start = Instant::now();
    let total_deadline = timeouts.total.map(|t| start + t);
    // Whichever deadline comes first bounds the wait, and names the timeout.
    let first_deadline = match (timeouts.first_byte.map(|t| start + t), total_deadline) {
        (Some(f), Some(t)) if t < f => Some((t, TimeoutKind::Total)),
        (Some(f), _) => Some((f, TimeoutKind::FirstByte)),
        (None, Some(t)) => Some((t, TimeoutKind::Total)),
        (None, None) => None,
    };
    let gate = async {
        let mut stream = open.await?;
        let first = stream.next().await.transpose()?;
        Ok::<_, BackendError>((stream, first))
    };
    let (stream, first) = match first_deadline {
        Some((deadline, kind)) => tokio::time::timeout_at(deadline, gate)
            .await
            .unwrap_or(Err(BackendError::Timeout { kind }))?,
        None => gate.await?,
    };
    Ok(Guarded {
        inner: stream,
        first,
        idle: timeouts.idle,
        idle_sleep: timeouts
            .idle
            .map(|d| Box::pin(sleep_until(Instant::now() + d))),
        total_sleep: total_deadline.map(|d| Box::pin(sleep_until(d))),
        done: false,
    })
}

pin_project_lite::pin_project! {
    /// A committed stream: replays the first chunk, then enforces idle and total deadlines.
    /// Expiry is yielded once as [`BackendError::Timeout`], then the stream ends.
    pub struct Guarded<T> {
        inner: ChunkStream<T>,
        first: Option<Chunk<T>>,
        idle: Option<Duration>,
        idle_sleep: Option<Pin<Box<Sleep>>>,
        total_sleep: Option<Pin<Box<Sleep>>>,
        done: bool,
    }
}

impl<T> Stream for Guarded<T> {
    type Item = Result<Chunk<T>, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                if let (Some(idle), Some(sleep)) = (this.idle, this.idle_sleep.as_mut()) {
                    sleep.as_mut().reset(Instant::now() + *idle);
                }
                *this.done = item.is_err();
                return Poll::Ready(Some(item));
            }
            Poll::Ready(None) => {
                *this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let expired = |s: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>| {
            s.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready())
        };
        let kind = if expired(this.total_sleep, cx) {
            TimeoutKind::Total
        } else if expired(this.idle_sleep, cx) {
            TimeoutKind::Idle
        } else {
            return Poll::Pending;
        };
        *this.done = true;
        Poll::Ready(Some(Err(BackendError::Timeout { kind })))
    }
}

#[cfg(test)]
mod tests;
