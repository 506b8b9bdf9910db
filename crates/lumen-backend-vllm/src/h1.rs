//! A small HTTP/1.1 client for plain-`http` engines that does its I/O in the caller's task.
//!
//! Why not hyper-util's pooled client here: it runs every connection in its own task, so each
//! request crossed tasks twice (request in, response and body out through channels), took a
//! pool lock keyed by SipHash'd origin twice, and ran hyper's generic client machinery. Profiles
//! put that at about a fifth of Lumen's own CPU per proxied request. Engines speak a narrow,
//! well-behaved slice of HTTP/1.1 (JSON or SSE bodies, content-length or chunked), so Lumen
//! writes the request in one `write`, parses the head with `httparse`, and frames the body
//! itself. `https` engines still use hyper-util with rustls.
//!
//! Connections are pooled per backend, most recently used first. A connection goes back to the
//! pool only after its response body was read to the end; a dropped request or stream drops
//! its connection, which closes it, so the engine sees the disconnect and stops generating.
//! Idle connections the engine has closed are noticed without a system call (the runtime
//! already knows the socket is readable) and discarded; a reused connection whose *write*
//! fails is retried once on a fresh one.
//!
//! While any connection is idle, a small reaper task (one per pool, holding only a weak
//! reference, gone when the pool is idle-free or dropped) closes those idle past the idle
//! timeout and those the engine has closed, without waiting for a request to come: after a
//! burst, hundreds of connections would otherwise hold descriptors on both sides (or sit in
//! `CLOSE_WAIT` on ours once the engine's keep-alive ran out) until the next request. A failure after the request was written (the engine
//! may have started generating) is never re-sent here: it goes back to the gateway's attempt
//! loop, so the engine sees exactly one send per attempt the access log counts.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use lumen_backend::{BackendError, RequestContext, TimeoutKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Larger heads are refused: engines send a handful of headers.
const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size line (hex size plus extensions) longer than this is malformed.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// A read buffer's first size, and what it grows by while reads do not fill it: a head and a
/// stream's events fit. A stream spends most of its life waiting for the next token, holding
/// this buffer all along, so it is counted once per open stream (issue 24: 16 KiB here was a
/// third of a stream's memory; 4 KiB, all of it touched as events move through it, was still
/// a seventh; 2 KiB, a seventh again once the client side stopped holding buffers). The events
/// split off it are sent on and dropped, so the same allocation is reclaimed in place at the
/// next refill. An engine's head and a stream's event (a few hundred bytes) fit; an event with
/// logprobs (about a kilobyte) fills it, and the next step doubles.
const FIRST_READ: usize = 1024;
/// The largest step a read buffer grows by: a read that fills the free space (a large answer
/// arriving faster than it is read) doubles the step up to this, so big bodies still come in
/// 16 KiB reads.
const READ_CHUNK: usize = 16 * 1024;
/// Grow the read buffer only when less than this is free: stream events are split off the
/// buffer as they arrive, and reserving after each would allocate per event.
const MIN_SPARE: usize = 512;
/// How often the reaper looks for idle connections the engine has closed (engines such as
/// vLLM's uvicorn and llama.cpp close theirs after about five idle seconds).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Where and how to reach one plain-HTTP engine, and its idle connections.
pub(crate) struct Pool {
    backend: String,
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path prefix from the base URL (no trailing slash), put before every request path.
    prefix: String,
    /// Fixed request header lines (`Authorization`), already formatted with CRLF.
    fixed: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Most recently used at the back (reused first), oldest at the front (reaped first).
    idle: Mutex<VecDeque<(TcpStream, Instant)>>,
    /// A reaper task is running for this pool.
    reaping: AtomicBool,
}

pub(crate) struct PoolConfig {
    pub backend: String,
    pub host: String,
    pub port: u16,
    pub authority: String,
    pub prefix: String,
    pub authorization: Option<String>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// Status and the headers the backend uses.
#[derive(Debug)]
pub(crate) struct Head {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The answer's `content-type` when it is neither JSON nor an event stream (an audio
    /// transcription as text): only those are kept, so the usual answer allocates nothing here.
    pub content_type: Option<Box<str>>,
}

impl Pool {
    pub(crate) fn new(cfg: PoolConfig) -> Arc<Self> {
        let fixed = cfg
            .authorization
            .map(|a| format!("authorization: {a}\r\n"))
            .unwrap_or_default();
        Arc::new(Self {
            backend: cfg.backend,
            host: cfg.host,
            port: cfg.port,
            authority: cfg.authority,
            prefix: cfg.prefix,
            fixed,
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            max_idle: cfg.max_idle,
            idle: Mutex::new(VecDeque::new()),
            reaping: AtomicBool::new(false),
        })
    }

    /// Sends one request and reads the response head; the body is read through [`Body`].
    pub(crate) async fn request(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        cx: &RequestContext,
    ) -> Result<(Head, Body), BackendError> {
        let mut wire = self.encode(
            method,
            path,
            body.map(|b| ("application/json", b.len())),
            true,
            cx,
        );
        if let Some(b) = body {
            wire.extend_from_slice(b);
        }
        self.exchange(method, &wire, &[]).await
    }

    /// Sends a body of `content_type` given as pieces (a form with its model spliced in).
    /// A small body goes in the one write with the head; a large one is written piece by piece
    /// after it, so the client's file is never copied into a request buffer.
    pub(crate) async fn request_parts(
        self: &Arc<Self>,
        path: &str,
        content_type: &str,
        parts: &[Bytes],
        cx: &RequestContext,
    ) -> Result<(Head, Body), BackendError> {
        /// Below this a copy costs less than another write.
        const ONE_WRITE: usize = 64 * 1024;
        let len = parts.iter().map(Bytes::len).sum();
        let mut wire = self.encode(
            "POST",
            path,
            Some((content_type, len)),
            len <= ONE_WRITE,
            cx,
        );
        if len <= ONE_WRITE {
            for p in parts {
                wire.extend_from_slice(p);
            }
            return self.exchange("POST", &wire, &[]).await;
        }
        self.exchange("POST", &wire, parts).await
    }

    /// Writes `wire` and then `tail`, and reads the response head, on a pooled connection (a
    /// fresh one when a pooled one turns out closed on write).
    async fn exchange(
        self: &Arc<Self>,
        method: &str,
        wire: &[u8],
        tail: &[Bytes],
    ) -> Result<(Head, Body), BackendError> {
        let mut fresh_only = false;
        loop {
            let (mut io, reused) = match self.checkout(fresh_only) {
                Some(io) => (io, true),
                None => (self.connect().await?, false),
            };
            let mut buf = BytesMut::with_capacity(FIRST_READ);
            let mut sent = io.write_all(wire).await;
            for part in tail {
                if sent.is_err() {
                    break;
                }
                sent = io.write_all(part).await;
            }
            let head = match sent {
                Ok(()) => read_head(&mut io, &mut buf).await,
                Err(e) => Err(HeadError::Write(e)),
            };
            match head {
                Ok((head, framing, close)) => {
                    let framing = if method == "HEAD" {
                        Framing::Length(0)
                    } else {
                        framing
                    };
                    let body = Body {
                        io: Some(io),
                        buf,
                        framing,
                        reusable: !close,
                        pool: self.clone(),
                        done: false,
                        step: FIRST_READ,
                    };
                    return Ok((head, body.finish_if_empty()));
                }
                // A pooled connection the engine had already closed, found on write: nothing
                // was processed. Any later failure is an attempt of its own (the attempt loop
                // counts, backs off and budgets it): generation is not idempotent.
                Err(HeadError::Write(_)) if reused => fresh_only = true,
                Err(HeadError::Write(e) | HeadError::Io(e)) => {
                    return Err(BackendError::Transport {
                        backend: self.backend.clone(),
                        source: Box::new(e),
                    });
                }
                Err(HeadError::Malformed(message)) => {
                    return Err(BackendError::Protocol {
                        backend: self.backend.clone(),
                        message,
                    });
                }
            }
        }
    }

    /// The request head and body in one buffer (one `write`). Built by appending slices: the
    /// `fmt` machinery was a visible share of this function.
    fn encode(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, usize)>,
        appended: bool,
        cx: &RequestContext,
    ) -> Vec<u8> {
        let len = body.map_or(0, |(_, len)| len);
        // Room for the body too when it will follow in the same buffer.
        let mut w = Vec::with_capacity(256 + if appended { len } else { 0 });
        for part in [
            method,
            " ",
            &self.prefix,
            path,
            " HTTP/1.1\r\nhost: ",
            &self.authority,
            "\r\n",
            &self.fixed,
        ] {
            w.extend_from_slice(part.as_bytes());
        }
        if !cx.request_id.is_empty() {
            w.extend_from_slice(b"x-request-id: ");
            w.extend_from_slice(cx.request_id.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if let Some(tp) = &cx.traceparent {
            w.extend_from_slice(b"traceparent: ");
            w.extend_from_slice(tp.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        for (name, value) in &cx.headers {
            w.extend_from_slice(name.as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        match body {
            Some((content_type, len)) => {
                w.extend_from_slice(b"content-type: ");
                w.extend_from_slice(content_type.as_bytes());
                w.extend_from_slice(b"\r\ncontent-length: ");
                w.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                w.extend_from_slice(b"\r\n\r\n");
            }
            None => w.extend_from_slice(b"\r\n"),
        }
        w
    }

    /// The most recently used idle connection that is still open, if any.
    fn checkout(&self, fresh_only: bool) -> Option<TcpStream> {
        if fresh_only {
            return None;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((io, since)) = idle.pop_back() {
            if now.duration_since(since) < self.idle_timeout && still_open(&io) {
                return Some(io);
            }
        }
        None
    }

    fn checkin(self: &Arc<Self>, io: TcpStream) {
        let now = Instant::now();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            // Connections idle past the timeout are closed here too, oldest first, so a busy
            // pool does not wait for the reaper.
            while idle
                .front()
                .is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_timeout)
            {
                idle.pop_front();
            }
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push_back((io, now));
        }
        self.reap_in_background();
    }

    /// Starts the pool's reaper unless one runs (or there is no runtime to run it on).
    fn reap_in_background(self: &Arc<Self>) {
        if self.reaping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reaping.store(false, Ordering::Release);
            return;
        };
        rt.spawn(reap::reap(reap::Reaper {
            pool: Arc::downgrade(self),
            armed: true,
        }));
    }

    /// Closes idle connections past the timeout or closed by the engine. Returns when to look
    /// again: at the next timeout or sweep, whichever is first; `None` when nothing is idle.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(io, since)| now.duration_since(*since) < self.idle_timeout && still_open(io));
        let oldest = idle.front()?.1;
        Some((oldest + self.idle_timeout).min(now + SWEEP_EVERY))
    }

    async fn connect(&self) -> Result<TcpStream, BackendError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let io = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                return Err(BackendError::Connect {
                    backend: self.backend.clone(),
                    source: Box::new(e),
                });
            }
            Err(_) => {
                return Err(BackendError::Timeout {
                    kind: TimeoutKind::Connect,
                });
            }
        };
        // Best effort: a proxy that cannot set these still works.
        let _ = io.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&io).set_tcp_keepalive(&keepalive);
        Ok(io)
    }
}

/// Makes room for the next read: `step` more bytes when less than [`MIN_SPARE`] is free.
fn reserve(buf: &mut BytesMut, step: usize) {
    if buf.capacity() - buf.len() < MIN_SPARE {
        buf.reserve(step);
    }
}

/// The next growth step after a read of `read` bytes into `spare` free bytes: doubled (up to
/// [`READ_CHUNK`]) when the read filled the space, so more was likely waiting; else back to
/// [`FIRST_READ`].
fn next_step(step: usize, read: usize, spare: usize) -> usize {
    if read >= spare {
        (step * 2).min(READ_CHUNK)
    } else {
        FIRST_READ
    }
}

/// True unless the runtime has seen the idle socket become readable and a peek confirms the
/// engine closed it (or sent something unasked). No system call in the common case.
fn still_open(io: &TcpStream) -> bool {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match io.poll_read_ready(&mut cx) {
        // The runtime may not have seen the engine's FIN yet: ask the socket itself (one
        // non-blocking peek). A request must not be written on a connection that is already
        // closed, because after the write a failure can no longer be re-sent here.
        Poll::Pending => {
            let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            matches!(
                socket2::SockRef::from(io).peek(&mut probe),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            )
        }
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

enum HeadError {
    /// Writing the request failed: the engine cannot have read it whole, so nothing was
    /// processed and the request may be sent again on a fresh connection.
    Write(io::Error),
    /// Reading the response head failed. The engine may have received and started the
    /// request, so this goes back to the attempt loop.
    Io(io::Error),
    Malformed(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    /// No length: the body ends when the engine closes the connection.
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// Reads until a complete head (skipping `1xx` interim responses). Returns the head, the body
/// framing and whether the connection must close after this response.
async fn read_head(
    io: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<(Head, Framing, bool), HeadError> {
    loop {
        if let Some(head) = parse_head(buf).map_err(HeadError::Malformed)? {
            return Ok(head);
        }
        reserve(buf, FIRST_READ);
        match io.read_buf(buf).await {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response head",
                );
                return Err(HeadError::Io(e));
            }
            Ok(_) => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// The response head at the start of `buf`, consumed with any `1xx` interim heads before it
/// (sans-IO): the head, the body framing and whether the connection must close after this
/// response; `Ok(None)` when more bytes are needed. The size cap applies to each head whole,
/// so the verdict does not depend on how the bytes were split into reads.
fn parse_head(buf: &mut BytesMut) -> Result<Option<(Head, Framing, bool)>, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                if len > MAX_HEAD {
                    return Err("response head too large".into());
                }
                let status = resp.code.unwrap_or(0);
                let http10 = resp.version == Some(0);
                let mut framing = Framing::Eof;
                let mut close = http10;
                let mut retry_after = None;
                let mut content_type = None;
                let mut chunked = false;
                let mut coded = false;
                let mut length = None;
                for h in resp.headers.iter() {
                    let v = h.value;
                    if h.name.eq_ignore_ascii_case("content-length") {
                        // Digits only (no sign), and one value: two different lengths leave
                        // the body's end, and so the next response on the connection, unknown.
                        let n = Some(v.trim_ascii())
                            .filter(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
                            .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u64>().ok())
                            .ok_or_else(|| "bad content-length".to_owned())?;
                        if length.is_some_and(|m| m != n) {
                            return Err("conflicting content-length".into());
                        }
                        length = Some(n);
                        framing = Framing::Length(n);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        coded = true;
                        chunked = v
                            .rsplit(|&b| b == b',')
                            .next()
                            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        let has = |word: &[u8]| {
                            v.split(|&b| b == b',')
                                .any(|t| t.trim_ascii().eq_ignore_ascii_case(word))
                        };
                        if has(b"close") {
                            close = true;
                        } else if has(b"keep-alive") {
                            close = false;
                        }
                    } else if h.name.eq_ignore_ascii_case("content-type") {
                        content_type = std::str::from_utf8(v)
                            .ok()
                            .map(str::trim)
                            .filter(|t| !is_json_or_sse(t))
                            .map(Box::from);
                    } else if h.name.eq_ignore_ascii_case("retry-after") {
                        retry_after = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                    }
                }
                buf.advance(len);
                if (100..200).contains(&status) {
                    // Interim (100 Continue, 103 Early Hints): the real head follows.
                    continue;
                }
                if chunked {
                    framing = Framing::Chunked(Chunked::Size);
                } else if coded {
                    // A coding other than chunked last: the body ends at close (RFC 9112 6.3).
                    framing = Framing::Eof;
                }
                if coded && length.is_some() {
                    // Transfer-Encoding wins, but a response framed both ways is not trusted
                    // to leave the connection clean.
                    close = true;
                }
                if status == 204 || status == 304 {
                    framing = Framing::Length(0);
                }
                if framing == Framing::Eof {
                    close = true;
                }
                return Ok(Some((
                    Head {
                        status,
                        retry_after,
                        content_type,
                    },
                    framing,
                    close,
                )));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err("response head too large".into());
                }
                return Ok(None);
            }
            Err(e) => return Err(format!("bad response head: {e}")),
        }
    }
}

/// Whether a content type is JSON or server-sent events (the answers that need no note of it).
fn is_json_or_sse(t: &str) -> bool {
    let essence = t.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("text/event-stream")
}

/// A response body read straight from the connection. The connection returns to the pool when
/// the body has been read to its end; dropping the body early closes it.
pub(crate) struct Body {
    io: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    reusable: bool,
    pool: Arc<Pool>,
    done: bool,
    /// What the read buffer grows by next ([`next_step`]).
    step: usize,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl Body {
    fn finish_if_empty(mut self) -> Self {
        if self.framing == Framing::Length(0) {
            self.finish();
        }
        self
    }

    /// The body is complete: the connection can serve the next request.
    fn finish(&mut self) {
        self.done = true;
        if let Some(io) = self.io.take() {
            if self.reusable && self.buf.is_empty() {
                self.pool.checkin(io);
            }
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, message: &str) -> io::Error {
        self.done = true;
        self.io = None;
        io::Error::new(kind, message.to_owned())
    }

    /// Reads more from the connection into the buffer; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_ref() else {
            return Poll::Ready(Ok(0));
        };
        reserve(&mut self.buf, self.step);
        let spare = self.buf.capacity() - self.buf.len();
        loop {
            ready!(io.poll_read_ready(cx))?;
            match io.try_read_buf(&mut self.buf) {
                Ok(n) => {
                    self.step = next_step(self.step, n, spare);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The next piece of body data; `None` once the body is complete.
    pub(crate) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match decode(&mut self.framing, &mut self.buf) {
                Ok(Step::Data(data)) => {
                    // The last bytes of a sized body: the connection is free at once.
                    if self.framing == Framing::Length(0) {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(Step::End) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(message) => {
                    return Poll::Ready(Some(Err(self.fail(io::ErrorKind::InvalidData, message))));
                }
            }
            // Need more bytes.
            let n = match ready!(self.poll_fill(cx)) {
                Ok(n) => n,
                Err(e) => {
                    self.done = true;
                    self.io = None;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            if n == 0 {
                if self.framing == Framing::Eof {
                    self.done = true;
                    self.io = None;
                    return Poll::Ready(None);
                }
                let e = self.fail(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the end of the body",
                );
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    /// The whole body, refusing more than `max` bytes: a declared length over it before any
    /// byte is read, a chunked or until-close body as soon as it passes it.
    pub(crate) async fn collect(mut self, max: usize) -> Result<Bytes, crate::CollectError> {
        if let Framing::Length(n) = self.framing {
            if n > max as u64 {
                return Err(crate::CollectError::TooLarge);
            }
        }
        let mut out: Option<BytesMut> = None;
        let mut first: Option<Bytes> = None;
        while let Some(data) = std::future::poll_fn(|cx| self.poll_data(cx)).await {
            let data = data.map_err(|e| crate::CollectError::Broken(Box::new(e)))?;
            let total = first.as_ref().map_or(0, Bytes::len)
                + out.as_ref().map_or(0, BytesMut::len)
                + data.len();
            if total > max {
                return Err(crate::CollectError::TooLarge);
            }
            // One piece (the usual case) is returned as is, without a copy.
            match (&mut first, &mut out) {
                (None, None) => first = Some(data),
                (Some(f), None) => {
                    let mut joined = BytesMut::with_capacity(total);
                    joined.extend_from_slice(f);
                    joined.extend_from_slice(&data);
                    out = Some(joined);
                    first = None;
                }
                (_, Some(o)) => o.extend_from_slice(&data),
            }
        }
        Ok(match (first, out) {
            (_, Some(o)) => o.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        })
    }
}

/// What the body framing makes of the buffered bytes.
#[derive(Debug, PartialEq)]
enum Step {
    Data(Bytes),
    /// More bytes are needed (for an until-close body, also its end: the caller sees the EOF).
    More,
    /// The body is complete; what is left in the buffer is not part of it.
    End,
}

/// One step of body framing over `buf` (sans-IO), updating `framing`. Line caps apply to each
/// line whole, so the verdict does not depend on how the bytes were split into reads.
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, &'static str> {
    loop {
        match *framing {
            Framing::Length(0) => return Ok(Step::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                *framing = Framing::Length(left - n as u64);
                return Ok(Step::Data(buf.split_to(n).freeze()));
            }
            Framing::Eof => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            Framing::Chunked(Chunked::Size) => {
                let Some(end) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err("chunk size line too long");
                    }
                    return Ok(Step::More);
                };
                if end > MAX_CHUNK_LINE {
                    return Err("chunk size line too long");
                }
                let line = buf.split_to(end + 1);
                let text = line
                    .strip_suffix(b"\r\n")
                    .or_else(|| line.strip_suffix(b"\n"))
                    .unwrap_or(&line);
                let hex = text
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or(&[])
                    .trim_ascii();
                let size = Some(hex)
                    .filter(|h| {
                        !h.is_empty() && h.len() <= 16 && h.iter().all(u8::is_ascii_hexdigit)
                    })
                    .and_then(|h| u64::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
                    .ok_or("bad chunk size")?;
                *framing = Framing::Chunked(if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                });
            }
            Framing::Chunked(Chunked::Data(left)) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                *framing = Framing::Chunked(if left == n as u64 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - n as u64)
                });
                return Ok(Step::Data(buf.split_to(n).freeze()));
            }
            Framing::Chunked(Chunked::DataEnd) => {
                if buf.len() < 2 && !buf.starts_with(b"\n") {
                    return Ok(Step::More);
                }
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                } else if buf.starts_with(b"\n") {
                    buf.advance(1);
                } else {
                    return Err("missing CRLF after chunk data");
                }
                *framing = Framing::Chunked(Chunked::Size);
            }
            Framing::Chunked(Chunked::Trailers) => {
                // Trailer lines until an empty one; their contents are not used.
                let Some(end) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err("trailer line too long");
                    }
                    return Ok(Step::More);
                };
                if end > MAX_CHUNK_LINE {
                    return Err("trailer line too long");
                }
                let line = buf.split_to(end + 1);
                if line.as_ref() == b"\r\n" || line.as_ref() == b"\n" {
                    *framing = Framing::Length(0);
                    return Ok(Step::End);
                }
            }
        }
    }
}

mod reap;

#[cfg(any(test, feature = "fuzz"))]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests;
