//! One client connection's socket, with the deadlines between requests.
//!
//! `server.idle_timeout_ms` applies while no request is in progress and no byte of the next
//! one has arrived, then `server.header_read_timeout_ms` from that first byte until the head is
//! complete: two budgets, where hyper's header timer counted a kept-alive connection's idle time
//! against its next head. While a request is in progress neither applies: its body has its own
//! deadline (`server.body_read_timeout_ms`, in `http.rs`), and a client is silent for as long as
//! its stream runs. A head cut off by its deadline is answered 408 in Lumen's JSON.
//!
//! Over HTTP/2 (`serve.rs`) only the idle deadline applies between requests, and bytes do not
//! end it: a connection with no stream in progress sends pings and settings as readily as the
//! first bytes of a request, and a request starts only once its whole HEADERS frame (at most
//! 64 KB of headers) has arrived. When it expires the connection is asked to close gracefully
//! (GOAWAY, so the client knows which streams were taken); if it has not closed after one more
//! idle period, it is cut.
//!
//! Writes have a deadline of their own, on both protocols and whether or not a request is in
//! progress: `server.write_timeout_ms` from the first write the socket cannot take (the
//! client's buffers are full: it reads nothing) until one makes progress. A client that never
//! reads its answer would otherwise hold its stream, the engine's request and its admission
//! place for as long as it liked.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The two waits of a connection between requests, and how HTTP/2 is served: what a new
/// connection is set up with (a reload applies to connections accepted after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadlines {
    /// No request in progress and no byte of the next one yet.
    pub(crate) idle: Duration,
    /// From the first byte of a request head until the head is complete.
    pub(crate) header: Duration,
    /// A write to the client making no progress.
    pub(crate) write: Duration,
    /// `server.http2`.
    pub(crate) http2: crate::config::Http2Config,
}

impl Deadlines {
    pub(crate) fn from_config(server: &crate::config::ServerConfig) -> Self {
        Self {
            idle: Duration::from_millis(server.idle_timeout_ms),
            header: Duration::from_millis(server.header_read_timeout_ms),
            write: Duration::from_millis(server.write_timeout_ms),
            http2: server.http2,
        }
    }
}

/// What an HTTP/2 client sends first (RFC 9113, 3.4): with prior knowledge over plain TCP, and
/// after ALPN `h2` over TLS.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// What the service tells the socket: requests started, and requests whose response is still
/// alive (a stream runs for as long as its body does).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    open: AtomicUsize,
    /// Over HTTP/2: the idle deadline has passed, and the connection should close gracefully.
    /// Set by the socket, taken by the task that drives the connection (the same task).
    idle_expired: AtomicBool,
    /// The connection task's last read. A connection may not read again after an answer until the
    /// socket has news, so the end of a request wakes it to start the idle deadline.
    reader: AtomicWaker,
    /// HTTP/2: each stream's send progress, for the window watchdog ([`Activity::window_stalled`]).
    watched: std::sync::Mutex<Vec<Watched>>,
}

/// One HTTP/2 stream as the window watchdog sees it: its progress word (the response body's
/// polls, and whether the last one gave data), and what the last ticks saw of it.
#[derive(Debug)]
struct Watched {
    progress: std::sync::Weak<AtomicU64>,
    last: u64,
    unchanged: u8,
}

impl Activity {
    /// Marks a request in progress until the returned guard is dropped (with its response body).
    pub(crate) fn begin(self: &Arc<Self>) -> InProgress {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.open.fetch_add(1, Ordering::AcqRel);
        InProgress(self.clone())
    }

    fn busy(&self) -> bool {
        self.open.load(Ordering::Acquire) > 0
    }

    /// Like [`Activity::begin`], for an HTTP/2 stream whose response body the window watchdog
    /// follows: the body reports its polls through the returned word.
    pub(crate) fn begin_watched(self: &Arc<Self>) -> (InProgress, Arc<AtomicU64>) {
        let progress = Arc::new(AtomicU64::new(0));
        let mut watched = self
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if watched.len() == watched.capacity() {
            // Ended streams go before the list grows: it stays within twice the streams open.
            watched.retain(|w| w.progress.strong_count() > 0);
        }
        watched.push(Watched {
            progress: Arc::downgrade(&progress),
            last: 0,
            unchanged: 0,
        });
        drop(watched);
        (self.begin(), progress)
    }

    /// One tick of the HTTP/2 window watchdog, every half write deadline: whether a stream has
    /// had data for the client that its flow-control window would not take for a whole deadline.
    ///
    /// Why it is needed: hyper polls a response body only while the stream has window to send
    /// into, so a client that keeps reading the socket (and answering pings) but never grants
    /// window holds its stream, the engine's request and its admission place, and no socket
    /// write ever waits. A stream is stalled when its body's last poll gave data and it has not
    /// been polled since; seen so at three ticks in a row, that has lasted between one and one
    /// and a half deadlines.
    pub(crate) fn window_stalled(&self) -> bool {
        let mut watched = self
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stalled = false;
        // Ended streams leave the list in the same pass.
        watched.retain_mut(|w| {
            let Some(progress) = w.progress.upgrade() else {
                return false;
            };
            let now = progress.load(Ordering::Relaxed);
            if now & 1 == 1 && now == w.last {
                w.unchanged = w.unchanged.saturating_add(1);
                stalled |= w.unchanged >= 2;
            } else {
                w.last = now;
                w.unchanged = 0;
            }
            true
        });
        stalled
    }

    /// Whether an HTTP/2 connection has been idle past its deadline since the last call.
    pub(crate) fn take_idle_expired(&self) -> bool {
        self.idle_expired.swap(false, Ordering::AcqRel)
    }
}

/// A request in progress; dropped with its response body.
#[derive(Debug)]
pub(crate) struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request marked in progress until the connection drops it,
    /// and over HTTP/2 reports its polls to the window watchdog.
    pub(crate) struct Tracked<B> {
        #[pin]
        body: B,
        _request: InProgress,
        progress: Option<Arc<AtomicU64>>,
    }
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, request: InProgress) -> Self {
        Self {
            body,
            _request: request,
            progress: None,
        }
    }

    /// A body the window watchdog follows (`Activity::begin_watched`).
    pub(crate) fn watched(body: B, request: InProgress, progress: Arc<AtomicU64>) -> Self {
        Self {
            body,
            _request: request,
            progress: Some(progress),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let out = this.body.poll_frame(cx);
        if let Some(progress) = this.progress {
            // One writer (this body): a count of polls, and in the low bit whether this one
            // gave data the stream must now send.
            let polls = (progress.load(Ordering::Relaxed) >> 1).wrapping_add(1);
            let gave = u64::from(matches!(out, Poll::Ready(Some(Ok(_)))));
            progress.store(polls << 1 | gave, Ordering::Relaxed);
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Idle,
    Head,
}

/// A client connection's socket, with the between-request deadlines on its reads.
pub(crate) struct Conn<S> {
    io: S,
    activity: Arc<Activity>,
    deadlines: Deadlines,
    /// The wait under way: the requests started when it began, and which deadline it is under.
    waiting: Option<(u64, Wait)>,
    timer: Pin<Box<Sleep>>,
    /// The bytes [`Conn::sniff`] read, and how many of them have been read back since.
    sniffed: Option<(Vec<u8>, usize)>,
    /// HTTP/2: the between-request waits are the idle deadline alone.
    h2: bool,
    /// Over HTTP/2, the idle deadline has passed once and a graceful close was asked for.
    asked_to_close: bool,
    /// The write deadline, made the first time a write cannot go on (most connections never
    /// need one), and whether it is running: a write is waiting for the client to read.
    write_timer: Option<Pin<Box<Sleep>>>,
    write_stalled: bool,
}

impl<S> Conn<S> {
    pub(crate) fn new(io: S, activity: Arc<Activity>, deadlines: Deadlines) -> Self {
        Self {
            io,
            activity,
            deadlines,
            waiting: None,
            timer: Box::pin(tokio::time::sleep(deadlines.idle)),
            sniffed: None,
            h2: false,
            asked_to_close: false,
            write_timer: None,
            write_stalled: false,
        }
    }

    /// A write's outcome, under the write deadline: pending writes start it (the first of
    /// them; those after it keep it), and any other outcome stops it. `TimedOut` once the
    /// client has read nothing for the whole deadline. Inline, with the wait apart: it runs on
    /// every write of every stream, and a write that goes through costs one store.
    #[inline]
    fn under_write_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.write_stalled = false;
            return outcome;
        }
        self.poll_write_stalled(cx).map(Err)
    }

    #[cold]
    fn poll_write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.deadlines.write;
        let timer = match &mut self.write_timer {
            Some(timer) => {
                if !self.write_stalled {
                    timer.as_mut().reset(Instant::now() + limit);
                }
                timer
            }
            None => self.write_timer.insert(Box::pin(tokio::time::sleep(limit))),
        };
        self.write_stalled = true;
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its answer within the write deadline",
            ));
        }
        Poll::Pending
    }

    /// Bytes of the client's first read that [`Conn::sniff`] kept, read back first.
    fn take_sniffed(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Some((bytes, given)) = &mut self.sniffed else {
            return false;
        };
        let n = (bytes.len() - *given).min(buf.remaining());
        buf.put_slice(&bytes[*given..*given + n]);
        *given += n;
        if *given == bytes.len() {
            self.sniffed = None;
        }
        true
    }

    /// Part of a request head is already buffered (it came while the last request was in
    /// progress, when no deadline applies): the head deadline runs from now, not the idle one.
    pub(crate) fn head_begun(&mut self) {
        let started = self.activity.started.load(Ordering::Acquire);
        // A head wait armed before the last request (for its own head) does not count.
        if !self.h2 && self.waiting != Some((started, Wait::Head)) {
            self.arm(started, Wait::Head);
        }
    }

    fn arm(&mut self, started: u64, wait: Wait) {
        let limit = match wait {
            Wait::Idle => self.deadlines.idle,
            Wait::Head => self.deadlines.header,
        };
        self.waiting = Some((started, wait));
        self.timer.as_mut().reset(Instant::now() + limit);
    }
}

impl<S: AsyncWrite + Unpin> Conn<S> {
    /// Tells a client whose head was cut off why, if the socket takes the answer at once (it
    /// has sent nothing on this connection since its last answer, so it normally does); the
    /// connection closes either way. An idle connection is closed without a word, as HTTP
    /// allows.
    fn tell_too_slow(&mut self, cx: &mut Context<'_>) {
        let answer = crate::error::unparsable_request(408);
        let mut io = Pin::new(&mut self.io);
        // TLS buffers what is written until a flush.
        if let Poll::Ready(Ok(n)) = io.as_mut().poll_write(cx, &answer) {
            if n == answer.len() {
                let _ = io.poll_flush(cx);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Reads until the client's first bytes tell its protocol: the HTTP/2 preface, or anything
    /// else (HTTP/1.1, for `h1.rs` to parse or refuse). Under the same deadlines as a request
    /// head; what was read is read back first.
    pub(crate) async fn sniff(&mut self) -> io::Result<Protocol> {
        let mut first = [0u8; H2_PREFACE.len()];
        let mut filled = 0;
        let protocol = loop {
            let mut buf = ReadBuf::new(&mut first[filled..]);
            std::future::poll_fn(|cx| Pin::new(&mut *self).poll_read(cx, &mut buf)).await?;
            let n = buf.filled().len();
            if n == 0 {
                break Protocol::Http1;
            }
            filled += n;
            if first[..filled] != H2_PREFACE[..filled] {
                break Protocol::Http1;
            }
            if filled == H2_PREFACE.len() {
                break Protocol::Http2;
            }
        };
        if protocol == Protocol::Http2 {
            // From here only the idle deadline applies between streams.
            self.h2 = true;
            self.waiting = None;
        }
        if filled > 0 {
            self.sniffed = Some((first[..filled].to_vec(), 0));
        }
        Ok(protocol)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.take_sniffed(buf) {
            // The rest of the request is most likely in the socket already: read it in the
            // same call, so the first read holds the whole head (with hyper, a first read of
            // only the sniffed bytes grew its buffer to 16 KiB on every connection; issue 24).
            // Nothing to read yet, or an error, is left to the next call.
            if this.sniffed.is_none() && buf.remaining() > 0 {
                let _ = Pin::new(&mut this.io).poll_read(cx, buf);
            }
            return Poll::Ready(Ok(()));
        }
        this.activity.reader.register(cx.waker());
        if this.activity.busy() {
            this.waiting = None;
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let started = this.activity.started.load(Ordering::Acquire);
        if this.waiting.is_some_and(|(n, _)| n != started) {
            this.waiting = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got_bytes = buf.filled().len() > before;
                if got_bytes && !this.h2 && !matches!(this.waiting, Some((_, Wait::Head))) {
                    this.arm(started, Wait::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.waiting.is_none() {
                    this.arm(started, Wait::Idle);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    if this.h2 && !this.asked_to_close {
                        // GOAWAY first (`serve.rs` takes the flag once this read is pending),
                        // then one more idle period for the client to finish.
                        this.asked_to_close = true;
                        this.activity.idle_expired.store(true, Ordering::Release);
                        this.arm(started, Wait::Idle);
                        let _ = this.timer.as_mut().poll(cx);
                        return Poll::Pending;
                    }
                    let what = match this.waiting {
                        Some((_, Wait::Head)) => {
                            this.tell_too_slow(cx);
                            "request head not complete within the deadline"
                        }
                        _ => "connection idle past the deadline",
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_write(cx, buf);
        this.under_write_deadline(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.under_write_deadline(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_flush(cx);
        this.under_write_deadline(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_shutdown(cx);
        this.under_write_deadline(cx, outcome)
    }
}

#[cfg(test)]
mod tests;
