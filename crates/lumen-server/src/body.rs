//! Request bodies: reading one within its cap and deadline, against the memory budget that
//! every body in flight shares.
//!
//! Why a budget: the per-body cap (`server.max_body_bytes`) bounds one request, but a body
//! costs several times its size while it is read and parsed (docs/deploy.md, "Sizing"), so a
//! few large bodies at once could take a replica past its memory limit. The budget
//! (`server.body_budget_bytes`) bounds them together. A request takes its share before its bytes
//! are buffered — the declared `Content-Length` up front, or frame by frame as a chunked body
//! arrives — and gives it back when its [`BodyPermit`] is dropped, which the pipeline does once
//! the parsed request is gone. Over the budget a request waits a bounded time
//! (`server.body_budget_wait_ms`) for others to finish, then gets 503 with `Retry-After`:
//! memory never grows past the budget to make room. A client that sent `Expect: 100-continue`
//! is not asked for its body until there is room for it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a request body was not read. HTTP answers for each are in `error.rs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the request body could not be read")]
    Unreadable,
    #[error("request bodies in flight fill the {budget}-byte budget")]
    OverBudget { budget: u64 },
    /// The reader's inspector refused the bytes so far (a broken form): the caller knows why.
    #[error("the request body was refused while it was read")]
    Refused,
}

/// How one body may be read: the server settings of the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
    pub budget_wait: Duration,
}

/// What a request asking for `more` bytes, holding `own` already, should do while all bodies
/// hold `held` of `capacity`. A pure decision, so its edges are tested without tasks or clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// There is room: take it.
    Take,
    /// Others hold the room; it may be given back.
    Wait,
    /// More than the whole budget: no wait can help.
    Refuse,
}

pub(crate) fn decide(held: u64, capacity: u64, own: u64, more: u64) -> Decision {
    let fits = |base: u64| {
        base.checked_add(more)
            .is_some_and(|total| total <= capacity)
    };
    if !fits(own) {
        Decision::Refuse
    } else if fits(held) {
        Decision::Take
    } else {
        Decision::Wait
    }
}

/// The request body bytes every request in flight shares (one per gateway; a reload changes
/// its capacity, not what requests already hold).
#[derive(Debug)]
pub(crate) struct BodyBudget {
    state: Mutex<Usage>,
    /// Woken whenever bytes are given back or the capacity grows.
    freed: Notify,
    /// `lumen_request_body_bytes`: what `state.held` says, for `/metrics`.
    held_gauge: Gauge,
    /// `lumen_rejected_total{reason="body_budget"}`.
    refused: Counter,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    held: u64,
    capacity: u64,
}

impl BodyBudget {
    pub(crate) fn new(capacity: u64, held_gauge: Gauge, refused: Counter) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Usage { held: 0, capacity }),
            freed: Notify::new(),
            held_gauge,
            refused,
        })
    }

    /// Bytes held by bodies in flight now.
    pub(crate) fn held(&self) -> u64 {
        self.usage().held
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.usage().capacity
    }

    /// A reload's new capacity. Shrinking takes nothing back: new requests wait until enough
    /// is given back.
    pub(crate) fn set_capacity(&self, capacity: u64) {
        self.lock().capacity = capacity;
        self.freed.notify_waiters();
    }

    /// An empty claim on the budget, grown as the body arrives.
    pub(crate) fn permit(self: &Arc<Self>) -> BodyPermit {
        BodyPermit {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn usage(&self) -> Usage {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_take(&self, own: u64, more: u64) -> Decision {
        let mut u = self.lock();
        let d = decide(u.held, u.capacity, own, more);
        if d == Decision::Take {
            u.held += more;
            self.held_gauge
                .set(i64::try_from(u.held).unwrap_or(i64::MAX));
        }
        d
    }

    fn give_back(&self, bytes: u64) {
        {
            let mut u = self.lock();
            u.held = u.held.saturating_sub(bytes);
            self.held_gauge
                .set(i64::try_from(u.held).unwrap_or(i64::MAX));
        }
        self.freed.notify_waiters();
    }
}

/// One request's share of the [`BodyBudget`]; dropping it gives the share back. The pipeline
/// keeps it for as long as the body or the request parsed from it is alive.
#[derive(Debug)]
#[must_use = "dropping the permit gives its bytes back at once"]
pub(crate) struct BodyPermit {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl BodyPermit {
    /// Takes `more` bytes, waiting until `until` for others to give room back; refused (and
    /// counted) when there is none by then or the request alone would exceed the budget.
    async fn grow(&mut self, more: u64, until: Instant) -> Result<(), BodyError> {
        loop {
            // Registered before the check, so a release between the check and the wait is
            // not missed.
            let freed = self.budget.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            match self.budget.try_take(self.bytes, more) {
                Decision::Take => {
                    self.bytes += more;
                    return Ok(());
                }
                Decision::Refuse => break,
                Decision::Wait => {
                    if tokio::time::timeout_at(until, freed).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.budget.refused.inc();
        Err(BodyError::OverBudget {
            budget: self.budget.capacity(),
        })
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

/// Reads a whole body: refused at once when `declared` is over the cap; room in the budget for
/// `declared` is taken before the first byte is read (a chunked body takes it frame by frame);
/// the cap holds however the body is framed, and the read has its deadline. The permit comes
/// back with the bytes: the caller keeps it while they, or what is parsed from them, live.
pub(crate) async fn read<B>(
    body: B,
    declared: Option<u64>,
    limits: BodyLimits,
    budget: &Arc<BodyBudget>,
) -> Result<(Bytes, BodyPermit), BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    read_inspected(body, declared, limits, budget, &mut |_| true).await
}

/// [`read`], showing each frame to `inspect` as it arrives (a form scanner): when it answers
/// `false` the read stops at once with [`BodyError::Refused`], so a broken form is refused
/// without reading the rest of it.
pub(crate) async fn read_inspected<B>(
    body: B,
    declared: Option<u64>,
    limits: BodyLimits,
    budget: &Arc<BodyBudget>,
    inspect: &mut (dyn FnMut(&[u8]) -> bool + Send),
) -> Result<(Bytes, BodyPermit), BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(BodyError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let mut permit = budget.permit();
    if let Some(n) = declared.filter(|n| *n > 0) {
        permit.grow(n, Instant::now() + limits.budget_wait).await?;
    }
    match tokio::time::timeout(
        limits.read_timeout,
        collect(body, declared, limits, &mut permit, inspect),
    )
    .await
    {
        Err(_) => Err(BodyError::Timeout(limits.read_timeout)),
        Ok(Ok(bytes)) => Ok((bytes, permit)),
        Ok(Err(e)) => Err(e),
    }
}

async fn collect<B>(
    body: B,
    declared: Option<u64>,
    limits: BodyLimits,
    permit: &mut BodyPermit,
    inspect: &mut (dyn FnMut(&[u8]) -> bool + Send),
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut buf = Buffer::new(declared);
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len() as u64;
        if total > limits.max_bytes as u64 {
            return Err(BodyError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        if total > permit.bytes {
            permit
                .grow(total - permit.bytes, Instant::now() + limits.budget_wait)
                .await?;
        }
        if !inspect(&data) {
            return Err(BodyError::Refused);
        }
        buf.push(&data);
    }
    Ok(buf.finish(total))
}

/// Where the frames go. With a declared length, one buffer of exactly that size, filled as the
/// frames arrive: the body's size in memory, once. Without one, the bytes are copied into
/// segments (8 KiB, doubling up to 1 MiB) and joined at the end: no buffer doubles and copies
/// itself as it grows, tiny chunks cost no per-frame overhead, and memory never holds more than
/// twice the body.
enum Buffer {
    Sized(BytesMut),
    Segments { full: Vec<Bytes>, current: BytesMut },
}

const FIRST_SEGMENT: usize = 8 * 1024;
const MAX_SEGMENT: usize = 1024 * 1024;

impl Buffer {
    fn new(declared: Option<u64>) -> Self {
        match declared.and_then(|n| usize::try_from(n).ok()) {
            Some(n) => Self::Sized(BytesMut::with_capacity(n)),
            None => Self::Segments {
                full: Vec::new(),
                current: BytesMut::new(),
            },
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        match self {
            Self::Sized(buf) => buf.extend_from_slice(data),
            Self::Segments { full, current } => {
                while !data.is_empty() {
                    if current.len() == current.capacity() {
                        let next = (current.capacity() * 2).clamp(FIRST_SEGMENT, MAX_SEGMENT);
                        let done = std::mem::replace(current, BytesMut::with_capacity(next));
                        if !done.is_empty() {
                            full.push(done.freeze());
                        }
                    }
                    let n = (current.capacity() - current.len()).min(data.len());
                    current.extend_from_slice(&data[..n]);
                    data = &data[n..];
                }
            }
        }
    }

    fn finish(self, total: u64) -> Bytes {
        match self {
            Self::Sized(buf) => buf.freeze(),
            Self::Segments { full, current } if full.is_empty() => current.freeze(),
            Self::Segments { full, current } => {
                let mut out = BytesMut::with_capacity(usize::try_from(total).unwrap_or(0));
                for segment in full {
                    out.extend_from_slice(&segment);
                }
                out.extend_from_slice(&current);
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests;
