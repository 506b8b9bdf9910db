//! Lumen's HTTP/1.1 server connection: one client connection, request after request.
//!
//! Why not hyper's (still used for HTTP/2, `serve.rs`): hyper keeps an 8 KiB read buffer and an
//! 8 KiB write buffer for a connection's whole life, and an open stream touches a page of each,
//! 8 KB of its memory (issue 24, `benches/results/burst-2026-12-07.md`), which neither setting
//! lowers. Here the read buffer holds what has arrived and is let go once a request's head and
//! body are consumed, and the response head is written straight to the socket, so a stream
//! that is relaying tokens holds no buffer of its own. Engines' side does the same (`h1.rs` in
//! `lumen-backend-vllm`).
//!
//! What it keeps from hyper: `httparse` for the head, the same limits (64 KB head, 100 header
//! lines), `Expect: 100-continue` answered when the body is first read, pipelined requests
//! answered in order, and a client that closes its side while its request is in progress
//! cancels the request (its stream stops, the engine sees the disconnect). Framing follows RFC
//! 9112 strictly (`h1/head.rs`, `h1/recv.rs`). Deadlines stay the socket's (`conn.rs`); every
//! refusal is Lumen's JSON error (`error.rs`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::ResponseBody;
use crate::conn::{Activity, Conn, Tracked};
use crate::http::Api;

mod head;
mod recv;
mod send;

pub(crate) use head::MAX_HEAD_BYTES;
use head::Refusal;
use recv::{Framing, RecvBody, Slot, Step};
use send::{Facts, Out, Plan};

/// The first read of a request: most heads, and small bodies with them, fit.
const FIRST_READ: usize = 2 * 1024;

/// While the buffer is this short, a head is parsed on every read (see `read_head`).
const EARLY_PARSE: usize = 4 * 1024;

/// A small response body is copied behind its head and sent in one write.
const COALESCE: usize = 8 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

type Handler = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// Serves requests on `io` until the client closes, a deadline or an error ends it, a request
/// asks to close, or `closing` turns true between requests.
///
/// Not an `async fn`: the connection is built here and the loop's block uses it, and what it
/// is given, in place. An `async fn` keeps its arguments for its whole life beside the locals
/// they are moved into, and this future lives as long as the connection: its every byte
/// counts in each open stream's memory (issue 24).
pub(crate) fn serve<S>(
    io: Conn<S>,
    api: Api,
    activity: Arc<Activity>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = io::Result<()>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection {
        io,
        buf: BytesMut::new(),
        scanned: 0,
    };
    async move {
        loop {
            let Some(head::Head {
                parts,
                mut framing,
                close,
                expect_continue,
            }) = conn.read_head(&mut closing).await?
            else {
                return Ok(());
            };
            let version = parts.version;
            let method = parts.method.clone();
            let slot = Arc::new(Slot::default());
            let body = RecvBody::new(slot.clone(), framing.declared());
            let request = activity.begin();
            let mut handler: Handler = Box::pin(api.handle(Request::from_parts(parts, body)));
            let mut feed = Feed {
                slot,
                broken: false,
                continue_left: expect_continue.then_some(CONTINUE),
            };
            if framing.is_done() {
                feed.slot.end(Ok(()), None);
            }
            let response = std::future::poll_fn(|cx| {
                conn.poll_exchange(cx, &mut handler, &mut framing, &mut feed)
            })
            .await?;
            drop(handler);
            if let Some(rest) = feed.continue_left.filter(|r| r.len() < CONTINUE.len()) {
                // A `100 Continue` the socket took only part of: finished before the final
                // answer, or the client would read the two heads run together.
                conn.io.write_all(rest).await?;
            }
            // What is left of an unread body is skipped if it is all here already; otherwise
            // the connection cannot be reused.
            let request_read = !feed.broken && conn.skip_buffered_body(&mut framing);
            let (parts, body) = response.into_parts();
            let body = Tracked::new(body, request);
            let plan = send::plan(&Facts {
                version,
                method: &method,
                status: parts.status,
                headers: &parts.headers,
                exact: body.size_hint().exact(),
                request_close: close,
                request_read,
                closing: *closing.borrow(),
            });
            conn.release_idle_buffer();
            let head = send::encode_head(parts.status, &parts.headers, plan);
            drop(parts);
            let sent = conn.send(head, body, plan).await;
            if !plan.keep_alive || sent.is_err() {
                let _ = conn.io.shutdown().await;
                return sent;
            }
        }
    }
}

/// The request body's side of an exchange.
struct Feed {
    slot: Arc<Slot>,
    /// The body's framing failed, or the socket ended inside it.
    broken: bool,
    /// What is left to write of `100 Continue`, once the body is first read.
    continue_left: Option<&'static [u8]>,
}

struct Connection<S> {
    io: Conn<S>,
    /// Bytes read and not yet consumed: a head being read, a body, the next request.
    buf: BytesMut,
    /// How far `buf` has been searched for the end of a head.
    scanned: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Reads the next request's head. `None`: the client closed between requests, or the server
    /// is closing and nothing of a next request has arrived. A head that cannot be parsed is
    /// answered here, and ends the connection with an error.
    async fn read_head(
        &mut self,
        closing: &mut tokio::sync::watch::Receiver<bool>,
    ) -> io::Result<Option<head::Head>> {
        loop {
            // Parsed when a head's end has arrived, and on every read while the buffer is
            // short, so garbage is refused at once; not on every read of a long head, which
            // would scan it again per read.
            let end = head::end_of_head(&self.buf, self.scanned);
            self.scanned = self.buf.len();
            if !self.buf.is_empty() && (end.is_some() || self.buf.len() <= EARLY_PARSE) {
                match head::parse(&self.buf) {
                    Ok(Some((head, len))) => {
                        self.buf.advance(len);
                        self.scanned = 0;
                        return Ok(Some(head));
                    }
                    Ok(None) => {}
                    Err(refusal) => return Err(self.refuse(refusal).await),
                }
            }
            if self.buf.len() > head::MAX_HEAD_BYTES {
                return Err(self.refuse(Refusal::TooLarge).await);
            }
            if !self.buf.is_empty() {
                // Part of a head is here: its deadline, not the idle one, runs from now.
                self.io.head_begun();
            }
            tokio::select! {
                read = std::future::poll_fn(|cx| self.poll_fill(cx, FIRST_READ)) => {
                    if read? == 0 {
                        // The client closed: between requests, a normal end.
                        return Ok(None);
                    }
                }
                // Shutting down: a request whose head is not all here is not started (the
                // client sees the connection close before any answer, and may retry).
                _ = closing.wait_for(|c| *c) => return Ok(None),
            }
        }
    }

    /// Answers a head that was refused, and gives the error that ends the connection.
    async fn refuse(&mut self, refusal: Refusal) -> io::Error {
        let answer = crate::error::unparsable_request(refusal.status());
        if self.io.write_all(&answer).await.is_ok() {
            let _ = self.io.flush().await;
        }
        let _ = self.io.shutdown().await;
        io::Error::new(io::ErrorKind::InvalidData, "request head refused")
    }

    /// Reads into the buffer, making room for `want` more bytes; the count read (0: EOF).
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want.min(512) {
            self.buf.reserve(want);
        }
        // `read_buf`'s future does one `poll_read`: dropping it when pending loses nothing.
        let read = std::pin::pin!(self.io.read_buf(&mut self.buf));
        read.poll(cx)
    }

    /// Runs the handler to its response, meanwhile feeding its body from the socket and noticing
    /// a client that goes away (which cancels the request: `Err`).
    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        handler: &mut Handler,
        framing: &mut Framing,
        feed: &mut Feed,
    ) -> Poll<io::Result<Response<ResponseBody>>> {
        loop {
            if let Poll::Ready(response) = handler.as_mut().poll(cx) {
                return Poll::Ready(Ok(response));
            }
            if feed.slot.wanted() {
                if !self.buf.is_empty() {
                    // The client sent its body without waiting: no `100` is owed.
                    feed.continue_left = None;
                }
                if let Some(rest) = feed.continue_left {
                    let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    feed.continue_left = Some(&rest[n..]).filter(|r| !r.is_empty());
                    if feed.continue_left.is_none() {
                        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                    }
                    continue;
                }
                match recv::decode(framing, &mut self.buf) {
                    Ok(Step::Data(piece)) => feed.slot.put(piece, cx.waker()),
                    Ok(Step::End) => feed.slot.end(Ok(()), Some(cx.waker())),
                    Ok(Step::More) => match ready!(self.poll_fill(cx, framing.read_hint())) {
                        Ok(0) => {
                            feed.broken = true;
                            feed.slot
                                .end(Err(io::ErrorKind::UnexpectedEof), Some(cx.waker()));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            feed.broken = true;
                            feed.slot.end(Err(e.kind()), Some(cx.waker()));
                        }
                    },
                    Err(_) => {
                        feed.broken = true;
                        feed.slot
                            .end(Err(io::ErrorKind::InvalidData), Some(cx.waker()));
                    }
                }
                continue;
            }
            // A body not read to its end stays in the kernel until the handler wants it (it
            // may be waiting for room in the body budget); only a finished one lets the
            // connection watch for the client going away.
            if !framing.is_done() {
                return Poll::Pending;
            }
            // The request is all read: its buffer goes now, not once the answer starts (a
            // stream waits for its first token with nothing to read).
            self.release_idle_buffer();
            ready!(self.poll_gone(cx))?;
            return Poll::Ready(Err(gone()));
        }
    }

    /// Ready when the client has gone (EOF or an error) while an answer is in progress. Read
    /// only while nothing is buffered, at most 512 bytes, through a stack buffer (as hyper's
    /// check does): bytes that arrive meanwhile (a pipelined request) are kept, and then the
    /// socket is left alone until the answer is done, so neither a client nor a stream makes
    /// the connection hold more than that.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            return Poll::Pending;
        }
        let mut tmp = [0u8; 512];
        let mut rb = ReadBuf::new(&mut tmp);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        if rb.filled().is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.buf.extend_from_slice(rb.filled());
        Poll::Pending
    }

    /// Skips what is left of a request body the handler did not read, if all of it is already
    /// buffered; whether the body is now behind us.
    fn skip_buffered_body(&mut self, framing: &mut Framing) -> bool {
        loop {
            match recv::decode(framing, &mut self.buf) {
                Ok(Step::Data(_)) => {}
                Ok(Step::End) => return true,
                Ok(Step::More) | Err(_) => return false,
            }
        }
    }

    /// Lets the read buffer go when it holds nothing: a stream that relays for minutes keeps
    /// no buffer for a request that may never come.
    fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
            self.scanned = 0;
        }
    }

    /// Writes the head and the body under `plan`, noticing a client that goes away while the
    /// body waits for its next piece. `Err` when the connection cannot go on.
    async fn send(
        &mut self,
        head: Vec<u8>,
        body: Tracked<ResponseBody>,
        plan: Plan,
    ) -> io::Result<()> {
        let mut body = std::pin::pin!(body);
        let mut head = Some(head);
        let mut left = match plan.out {
            Out::Length(n) => Some(n),
            _ => None,
        };
        if matches!(plan.out, Out::Empty | Out::Head(_)) {
            return self
                .write_piece(head.take(), Bytes::new(), Piece::Raw)
                .await;
        }
        loop {
            let next = std::future::poll_fn(|cx| {
                if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                    return Poll::Ready(Next::Frame(frame));
                }
                if head.is_some() {
                    return Poll::Ready(Next::Idle);
                }
                self.poll_gone(cx).map(|_| Next::Gone)
            })
            .await;
            let data = match next {
                // Nothing to send with the head yet (a stream before its first event): the
                // head goes now, so the client sees the status at once.
                Next::Idle => {
                    self.write_piece(head.take(), Bytes::new(), Piece::Raw)
                        .await?;
                    continue;
                }
                Next::Gone => return Err(gone()),
                Next::Frame(None) => break,
                Next::Frame(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) if !d.is_empty() => d,
                    _ => continue,
                },
                Next::Frame(Some(Err(never))) => match never {},
            };
            let Some(n) = &mut left else {
                // The body's last piece carries the chunked terminator: one write, not two.
                if plan.out == Out::Chunked && body.is_end_stream() {
                    self.write_piece(head.take(), data, Piece::LastChunk)
                        .await?;
                    return Ok(());
                }
                self.write_piece(head.take(), data, Piece::of(plan.out))
                    .await?;
                continue;
            };
            let take = usize::try_from(*n).unwrap_or(usize::MAX).min(data.len());
            *n -= take as u64;
            self.write_piece(head.take(), data.slice(..take), Piece::Raw)
                .await?;
            if take < data.len() {
                // Longer than its declared length: cut where it said it would end, with
                // the connection.
                return Err(io::Error::other("response longer than its length"));
            }
        }
        // The terminator goes with the head when the body had nothing at all.
        if plan.out == Out::Chunked {
            return self
                .write_piece(head.take(), Bytes::new(), Piece::LastChunk)
                .await;
        }
        if head.is_some() {
            self.write_piece(head.take(), Bytes::new(), Piece::Raw)
                .await?;
        }
        match plan.out {
            Out::Length(_) if left != Some(0) => {
                Err(io::Error::other("response shorter than its length"))
            }
            _ => Ok(()),
        }
    }

    /// One piece of the body, framed as `piece` says, behind the head if that has not gone
    /// yet, in one write: small pieces are copied behind the head, larger ones go as slices of
    /// one vectored write. Flushed, so TLS sends it now.
    async fn write_piece(
        &mut self,
        head: Option<Vec<u8>>,
        data: Bytes,
        piece: Piece,
    ) -> io::Result<()> {
        let (size, size_len) = send::chunk_line(data.len());
        let (prefix, suffix): (&[u8], &[u8]) = match piece {
            Piece::Chunk if !data.is_empty() => (&size[..size_len], b"\r\n"),
            Piece::LastChunk if !data.is_empty() => (&size[..size_len], b"\r\n0\r\n\r\n"),
            Piece::LastChunk => (&[], b"0\r\n\r\n"),
            Piece::Raw | Piece::Chunk => (&[], &[]),
        };
        let small = data.len() <= COALESCE;
        match head {
            Some(mut h) if small => {
                h.extend_from_slice(prefix);
                h.extend_from_slice(&data);
                h.extend_from_slice(suffix);
                self.io.write_all(&h).await?;
            }
            Some(mut h) => {
                h.extend_from_slice(prefix);
                write_all_vectored(&mut self.io, [&h, &data, suffix]).await?;
            }
            // A socket that cannot write slices at once (TLS here) would turn each slice into
            // a record of its own.
            None if small && !self.io.is_write_vectored() && !prefix.is_empty() => {
                let mut v = Vec::with_capacity(prefix.len() + data.len() + suffix.len());
                v.extend_from_slice(prefix);
                v.extend_from_slice(&data);
                v.extend_from_slice(suffix);
                self.io.write_all(&v).await?;
            }
            None => write_all_vectored(&mut self.io, [prefix, &data, suffix]).await?,
        }
        self.io.flush().await
    }
}

/// How [`Connection::write_piece`] frames a piece of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// As it is (a length-framed or close-framed body, or the head alone).
    Raw,
    /// One chunk of a chunked body (nothing when empty: an empty chunk would end it).
    Chunk,
    /// The last chunk with the terminator behind it (the terminator alone when empty).
    LastChunk,
}

impl Piece {
    fn of(out: Out) -> Self {
        if out == Out::Chunked {
            Self::Chunk
        } else {
            Self::Raw
        }
    }
}

/// What the body did while the response was being written.
enum Next {
    Frame(Option<Result<http_body::Frame<Bytes>, std::convert::Infallible>>),
    /// Nothing yet, and the head has not been sent.
    Idle,
    /// The client went away.
    Gone,
}

/// Writes every slice, in as few calls as the socket allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    parts: [&[u8]; 3],
) -> io::Result<()> {
    let mut at = [0usize; 3];
    loop {
        let slices = [
            io::IoSlice::new(&parts[0][at[0]..]),
            io::IoSlice::new(&parts[1][at[1]..]),
            io::IoSlice::new(&parts[2][at[2]..]),
        ];
        if slices.iter().all(|s| s.is_empty()) {
            return Ok(());
        }
        let mut n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for (p, a) in parts.iter().zip(at.iter_mut()) {
            let take = (p.len() - *a).min(n);
            *a += take;
            n -= take;
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the client went away")
}

#[cfg(any(test, feature = "fuzz"))]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests;
