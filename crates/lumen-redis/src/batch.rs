//! Group commit: operations that arrive while one call to Redis is in flight wait and go
//! together in the next call.
//!
//! Each call to a Lua script costs Redis a fixed few microseconds (the call, its argument
//! tables, the reply, the socket reads and writes) before any counter is touched, and costs
//! Lumen a write and a wake-up. Under load, many requests want Redis at once: one call for all
//! of them pays that once. No timer: a lone operation goes at once (no latency at low load),
//! and the batch size follows the load (whatever queued during the last round trip).
//!
//! The queue is bounded. When it is full, [`Queue::submit`] hands the item back and the caller
//! sends it on its own, as without batching: nothing is dropped, and what waits is bounded by
//! the requests in flight, as it was before.
//!
//! An item can also be queued with no one waiting for it ([`Queue::send`]): a write the
//! request's way out does not need to see land. Waiting would take a task per request (the
//! request is over); instead the queue reports such an item's failure itself ([`Unwaited`]).

use futures::future::BoxFuture;
use lumen_governance::store::StoreError;
use tokio::sync::{mpsc, oneshot};

/// What one flush answers for each item, in the items' order.
pub(crate) type Replies<R> = Result<Vec<R>, StoreError>;

/// Sends one batch to Redis.
pub(crate) type Flush<T, R> = Box<dyn FnMut(Vec<T>) -> BoxFuture<'static, Replies<R>> + Send>;

struct Job<T, R> {
    item: T,
    /// `None`: queued with [`Queue::send`], no one waits.
    done: Option<oneshot::Sender<Result<R, StoreError>>>,
}

/// Takes an item's label and its error.
pub(crate) type Report = Box<dyn Fn(&'static str, &StoreError) + Send + Sync>;

/// How a queue reports the failure of an item no one waits for: its label (what it was, for
/// the caller's error metric) and the error.
pub(crate) struct Unwaited<T> {
    pub label: fn(&T) -> &'static str,
    pub report: Report,
}

/// Whether an item was queued.
pub(crate) enum Submitted<T, R> {
    /// In the queue: its reply comes on the receiver once its batch is done.
    Queued(oneshot::Receiver<Result<R, StoreError>>),
    /// The queue is full (or its task is gone): the caller sends the item itself.
    Alone(T),
}

/// How a queue batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Items waiting at most; past it, callers send on their own.
    pub capacity: usize,
    /// Items in one call at most: bounds a call's size and how long Redis runs one script.
    pub max_batch: usize,
    /// Drop items whose caller stopped waiting before they are sent (an admission the caller
    /// gave up on, which it undoes itself). Off for writes, which must land regardless.
    pub skip_abandoned: bool,
}

/// The sending side of a group-commit queue; its task ends when every sender is dropped,
/// after flushing what was queued.
pub(crate) struct Queue<T, R> {
    tx: mpsc::Sender<Job<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> Queue<T, R> {
    /// Starts the queue's task on the current Tokio runtime; `None` outside one (callers then
    /// always send alone).
    pub(crate) fn start(shape: Shape, flush: Flush<T, R>) -> Option<Self> {
        Self::start_with(shape, flush, None)
    }

    /// [`Queue::start`], reporting the failures of items sent with [`Queue::send`] to
    /// `unwaited`.
    pub(crate) fn start_with(
        shape: Shape,
        flush: Flush<T, R>,
        unwaited: Option<Unwaited<T>>,
    ) -> Option<Self> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel(shape.capacity.max(1));
        rt.spawn(run(rx, shape, flush, unwaited));
        Some(Self { tx })
    }

    /// Queues `item` with no one waiting for its reply (its failure goes to the queue's
    /// [`Unwaited`]); hands it back when the queue is full or gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        self.tx
            .try_send(Job { item, done: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job.item
                }
            })
    }

    /// Queues `item` on `queue`; without a queue (no runtime at start), hands it back.
    pub(crate) fn submit_to(queue: Option<&Self>, item: T) -> Submitted<T, R> {
        match queue {
            Some(q) => q.submit(item),
            None => Submitted::Alone(item),
        }
    }

    pub(crate) fn submit(&self, item: T) -> Submitted<T, R> {
        let (done, reply) = oneshot::channel();
        match self.tx.try_send(Job {
            item,
            done: Some(done),
        }) {
            Ok(()) => Submitted::Queued(reply),
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                Submitted::Alone(job.item)
            }
        }
    }
}

/// Which of the jobs taken from the queue go into the call.
fn keep<T, R>(job: &Job<T, R>, shape: Shape) -> bool {
    !(shape.skip_abandoned && job.done.as_ref().is_some_and(|d| d.is_closed()))
}

/// One batch at a time: take whatever is queued (at least one item, at most a batch), send it,
/// hand each caller its reply, repeat.
async fn run<T, R>(
    mut rx: mpsc::Receiver<Job<T, R>>,
    shape: Shape,
    mut flush: Flush<T, R>,
    unwaited: Option<Unwaited<T>>,
) {
    let max = shape.max_batch.max(1);
    let mut jobs = Vec::with_capacity(max);
    while rx.recv_many(&mut jobs, max).await > 0 {
        jobs.retain(|j| keep(j, shape));
        if jobs.is_empty() {
            continue;
        }
        // Labelled before the items go to the flush, in case it fails.
        let labels: Vec<&'static str> = match &unwaited {
            Some(u) => jobs
                .iter()
                .filter(|j| j.done.is_none())
                .map(|j| (u.label)(&j.item))
                .collect(),
            None => Vec::new(),
        };
        let (items, waiters): (Vec<T>, Vec<_>) = jobs.drain(..).map(|j| (j.item, j.done)).unzip();
        let n = items.len();
        let failed = |waiters: Vec<Option<oneshot::Sender<_>>>, e: StoreError| {
            for w in waiters.into_iter().flatten() {
                let _ = w.send(Err(e.clone()));
            }
            if let Some(u) = &unwaited {
                for label in &labels {
                    (u.report)(label, &e);
                }
            }
        };
        match flush(items).await {
            Ok(replies) if replies.len() == n => {
                for (w, r) in waiters.into_iter().zip(replies) {
                    if let Some(w) = w {
                        let _ = w.send(Ok(r));
                    }
                }
            }
            Ok(replies) => failed(
                waiters,
                StoreError::Unavailable(format!("a batch of {n} got {} replies", replies.len())),
            ),
            Err(e) => failed(waiters, e),
        }
    }
}

#[cfg(test)]
mod tests;
