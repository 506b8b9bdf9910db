//! Admission control: a cap on concurrent requests with a bounded FIFO queue in front of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted. Both carry a `Retry-After` hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The queue is full: answer at once (429) rather than pile up.
    #[error("the gateway is at capacity and its queue is full")]
    QueueFull { retry_after: Duration },
    /// Waited the whole queue timeout without a slot (503).
    #[error("timed out waiting in the gateway's queue")]
    QueueTimeout { retry_after: Duration },
}

impl AdmissionError {
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::QueueFull { retry_after } | Self::QueueTimeout { retry_after } => *retry_after,
        }
    }
}

/// A concurrency cap (`None` = unlimited) with a FIFO queue of bounded length and wait.
/// Tokio's semaphore is fair, so waiters are served in arrival order.
#[derive(Debug)]
pub struct Admission {
    permits: Option<Arc<Semaphore>>,
    queue_size: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
}

/// Held for as long as the request (or its stream) runs.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Admission {
    pub fn new(max_concurrent: Option<usize>, queue_size: usize, queue_timeout: Duration) -> Self {
        Self {
            permits: max_concurrent.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            queue_size,
            queue_timeout,
            waiting: AtomicUsize::new(0),
        }
    }

    pub fn unlimited() -> Self {
        Self::new(None, 0, Duration::ZERO)
    }

    /// Requests waiting for a slot right now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Slots free right now (`usize::MAX` when unlimited).
    pub fn available(&self) -> usize {
        self.permits
            .as_ref()
            .map_or(usize::MAX, |s| s.available_permits())
    }

    /// Takes a slot, queueing (FIFO) up to the queue timeout when none is free.
    pub async fn acquire(&self) -> Result<Permit, AdmissionError> {
        self.acquire_within(self.queue_timeout).await
    }

    /// As [`acquire`](Self::acquire), with an explicit longest wait.
    pub async fn acquire_within(&self, wait: Duration) -> Result<Permit, AdmissionError> {
        let Some(sem) = &self.permits else {
            return Ok(Permit(None));
        };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Permit(Some(p)));
        }
        let retry_after = Duration::from_secs(1);
        // Reserve a queue place atomically so concurrent arrivals cannot overfill it.
        let reserved = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.queue_size).then_some(w + 1)
            });
        if reserved.is_err() {
            return Err(AdmissionError::QueueFull { retry_after });
        }
        // Released however the wait ends, including when the caller's future is dropped
        // (the client went away): a place held by nobody would shrink the queue for ever.
        let _place = QueuePlace(&self.waiting);
        let waited = tokio::time::timeout(wait, sem.clone().acquire_owned()).await;
        match waited {
            Ok(Ok(p)) => Ok(Permit(Some(p))),
            _ => Err(AdmissionError::QueueTimeout { retry_after }),
        }
    }
}

/// One reserved queue place, given back on drop.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
