//! A request body as the handler reads it, fed by the connection from its own read buffer.
//!
//! The connection and the body run in one task: when the handler asks the body for bytes and
//! there are none, the body says so in the [`Slot`] they share, and the connection (which polls
//! the handler) then decodes the next piece from its buffer or reads the socket for it. One
//! piece at a time: nothing is read ahead of the handler, so a request waiting for room in the
//! body budget leaves the client's bytes in the kernel, as hyper did.
//!
//! The framing decoder is strict where the engine client's (`lumen-backend-vllm`'s `h1.rs`) is
//! lenient: a client's chunked body crosses a front proxy first, and a line ending or chunk
//! size the proxy reads differently is a smuggled request. So lines end in CRLF only, a size
//! is 1 to 16 hex digits, and trailers are bounded.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};

/// Longest chunk-size line (size and extensions), and the most trailer bytes, accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// How a request body is delimited, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length` bytes left (0: no body, or all of it read).
    Length(u64),
    Chunked(Chunked),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    /// Trailer bytes read so far.
    Trailers(usize),
    Done,
}

impl Framing {
    pub(crate) fn chunked() -> Self {
        Self::Chunked(Chunked::Size)
    }

    /// The body's exact length, when the head declared one.
    pub(crate) fn declared(self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(n),
            Self::Chunked(_) => None,
        }
    }

    /// Whether the whole body has been decoded.
    pub(crate) fn is_done(self) -> bool {
        matches!(self, Self::Length(0) | Self::Chunked(Chunked::Done))
    }

    /// How many more bytes to make room for before a read: the rest of a declared body (at
    /// most 64 KiB), or a modest step for chunked framing.
    pub(crate) fn read_hint(self) -> usize {
        const STEP: usize = 64 * 1024;
        match self {
            Self::Length(n) => usize::try_from(n).unwrap_or(STEP).clamp(1, STEP),
            Self::Chunked(Chunked::Data(n)) => usize::try_from(n).unwrap_or(STEP).clamp(512, STEP),
            Self::Chunked(_) => 512,
        }
    }
}

/// What the framing makes of the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body is complete; what is left in the buffer is the next request's.
    End,
}

/// Why a chunked body could not be read. The connection closes: its framing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    #[error("bad chunk size line")]
    ChunkSize,
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    #[error("trailers too long or malformed")]
    Trailers,
}

/// One step of framing over `buf`, updating `framing` (sans-IO). Verdicts do not depend on how
/// the bytes were split into reads: lines are judged whole.
pub(crate) fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, FramingError> {
    loop {
        match *framing {
            Framing::Length(0) | Framing::Chunked(Chunked::Done) => return Ok(Step::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                *framing = Framing::Length(left - n as u64);
                return Ok(Step::Data(buf.split_to(n).freeze()));
            }
            Framing::Chunked(Chunked::Size) => {
                let Some(line) = crlf_line(buf, MAX_CHUNK_LINE, FramingError::ChunkSize)? else {
                    return Ok(Step::More);
                };
                let size = chunk_size(&line).ok_or(FramingError::ChunkSize)?;
                *framing = Framing::Chunked(if size == 0 {
                    Chunked::Trailers(0)
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
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if !buf.starts_with(b"\r\n") {
                    return Err(FramingError::ChunkEnd);
                }
                buf.advance(2);
                *framing = Framing::Chunked(Chunked::Size);
            }
            Framing::Chunked(Chunked::Trailers(seen)) => {
                let room = MAX_TRAILERS.saturating_sub(seen);
                let Some(line) = crlf_line(buf, room, FramingError::Trailers)? else {
                    return Ok(Step::More);
                };
                if line.is_empty() {
                    *framing = Framing::Chunked(Chunked::Done);
                    return Ok(Step::End);
                }
                // A trailer line is a header line; its contents are not used.
                if !line.contains(&b':') || line.iter().any(|b| *b == b'\r' || *b == 0) {
                    return Err(FramingError::Trailers);
                }
                *framing = Framing::Chunked(Chunked::Trailers(seen + line.len() + 2));
            }
        }
    }
}

/// Takes one CRLF-terminated line (without its CRLF) off `buf`; `None` while it is incomplete.
/// A bare LF, or a line longer than `max`, is `err`.
fn crlf_line(
    buf: &mut BytesMut,
    max: usize,
    err: FramingError,
) -> Result<Option<Bytes>, FramingError> {
    let Some(lf) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > max { Err(err) } else { Ok(None) };
    };
    if lf == 0 || buf[lf - 1] != b'\r' || lf - 1 > max {
        return Err(err);
    }
    let line = buf.split_to(lf + 1).freeze();
    Ok(Some(line.slice(..lf - 1)))
}

/// A chunk-size line's size: 1 to 16 hex digits, then nothing or `;` and extensions (which
/// are not used, but may hold no control bytes).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    if !(rest.is_empty() || rest.first() == Some(&b';'))
        || rest.iter().any(|b| b.is_ascii_control() && *b != b'\t')
    {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = char::from(*d).to_digit(16)?;
        Some((n << 4) | u64::from(v))
    })
}

/// What the connection and the body share.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The next piece, handed over by the connection.
    piece: Option<Bytes>,
    /// The body is complete (`Ok`) or broken (`Err`) once set.
    end: Option<Result<(), io::ErrorKind>>,
    /// The body was polled and found nothing: the connection should fetch the next piece.
    wanted: bool,
    waker: Option<Waker>,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the handler waits for the next piece.
    pub(crate) fn wanted(&self) -> bool {
        let s = self.lock();
        s.wanted && s.piece.is_none() && s.end.is_none()
    }

    /// Hands over the next piece. `polling` is the waker of the task feeding the body: when
    /// the body was polled from that same task (the handler runs in the connection's task),
    /// it is not woken, since the connection polls the handler again at once. A spurious wake
    /// would re-poll the whole request's futures once more.
    pub(crate) fn put(&self, piece: Bytes, polling: &Waker) {
        let mut s = self.lock();
        s.piece = Some(piece);
        s.wanted = false;
        Self::wake(&mut s, Some(polling));
    }

    /// The body ended well (`Ok`), or cannot be read further (`Err`: the handler sees an error).
    pub(crate) fn end(&self, how: Result<(), io::ErrorKind>, polling: Option<&Waker>) {
        let mut s = self.lock();
        s.end.get_or_insert(how);
        s.wanted = false;
        Self::wake(&mut s, polling);
    }

    fn wake(s: &mut SlotState, polling: Option<&Waker>) {
        if let Some(w) = s.waker.take() {
            if !polling.is_some_and(|p| w.will_wake(p)) {
                w.wake();
            }
        }
    }
}

/// The request body handed to the handler.
#[derive(Debug)]
pub(crate) struct RecvBody {
    slot: Arc<Slot>,
    /// Bytes left of a declared length, for `size_hint`.
    declared: Option<u64>,
    finished: bool,
}

impl RecvBody {
    pub(crate) fn new(slot: Arc<Slot>, declared: Option<u64>) -> Self {
        Self {
            slot,
            declared,
            finished: declared == Some(0),
        }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let mut s = self.slot.lock();
        if let Some(piece) = s.piece.take() {
            drop(s);
            if let Some(left) = &mut self.declared {
                *left = left.saturating_sub(piece.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        match s.end {
            Some(Ok(())) => {
                drop(s);
                self.finished = true;
                Poll::Ready(None)
            }
            Some(Err(kind)) => {
                drop(s);
                self.finished = true;
                Poll::Ready(Some(Err(io::Error::new(
                    kind,
                    "the request body could not be read",
                ))))
            }
            None => {
                s.wanted = true;
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
