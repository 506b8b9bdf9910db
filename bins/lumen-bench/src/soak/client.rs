//! A bare HTTP/1.1 client over one keep-alive TCP connection: one write per request, httparse
//! for the head, `content-length`, chunked and until-close bodies. Bare because the soak must
//! be able to hang up at exact points (before the answer, after the first stream event), which
//! a full client hides, and because its CPU is taken from the gateway it measures.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bodies are kept up to this many bytes (enough for every answer the soak asks for); the
/// rest is read and dropped.
const KEEP: usize = 64 * 1024;

/// How much of the answer to read before giving the connection back (or hanging up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The whole response; the connection is reused when the server allows it.
    Full,
    /// The head and body up to the first SSE event, then hang up mid-stream.
    FirstEvent,
    /// Nothing: hang up as soon as the request is written.
    Nothing,
}

/// What came back.
#[derive(Debug, Default)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// When the first SSE event (`data: `) arrived: a stream's time to first token.
    pub first_event: Option<Instant>,
}

impl Answer {
    /// SSE events in the body (`data: ` lines).
    pub fn events(&self) -> usize {
        self.body.windows(6).filter(|w| w == b"data: ").count()
    }

    pub fn has(&self, needle: &[u8]) -> bool {
        self.body.windows(needle.len()).any(|w| w == needle)
    }

    /// An OpenAI-shaped error body: `{"error":{..."type":...}}`.
    pub fn is_error_shaped(&self) -> bool {
        self.body.starts_with(b"{\"error\":{") && self.has(b"\"type\":")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed before the response was complete")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

pub struct Client {
    addr: SocketAddr,
    io: Option<TcpStream>,
    buf: BytesMut,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            io: None,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Drops the connection (the next request opens a new one).
    pub fn hang_up(&mut self) {
        self.io = None;
    }

    /// Sends `wire` (a whole request) and reads as much as `read` asks. On any error the
    /// connection is dropped.
    pub async fn send(&mut self, wire: &[u8], read: Read) -> Result<Answer, ClientError> {
        let out = self.exchange(wire, read).await;
        if out.is_err() || read != Read::Full {
            self.io = None;
        }
        out
    }

    async fn exchange(&mut self, wire: &[u8], read: Read) -> Result<Answer, ClientError> {
        if self.io.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(ClientError::Connect)?;
            let _ = s.set_nodelay(true);
            self.io = Some(s);
            self.buf.clear();
        }
        let Some(io) = self.io.as_mut() else {
            return Err(ClientError::Closed);
        };
        io.write_all(wire).await?;
        if read == Read::Nothing {
            return Ok(Answer::default());
        }
        let (status, framing, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp
                .parse(&self.buf)
                .map_err(|_| ClientError::Malformed("head"))?
            {
                httparse::Status::Complete(len) => {
                    let status = resp.code.ok_or(ClientError::Malformed("status"))?;
                    let framing = framing(resp.headers)?;
                    let close = resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("connection")
                            && h.value.eq_ignore_ascii_case(b"close")
                    });
                    self.buf.advance(len);
                    break (status, framing, close);
                }
                httparse::Status::Partial => fill(io, &mut self.buf).await?,
            }
        };
        let mut answer = Answer {
            status,
            ..Answer::default()
        };
        let first_event_only = read == Read::FirstEvent;
        match framing {
            Framing::Length(n) => {
                while self.buf.len() < n {
                    fill(io, &mut self.buf).await?;
                }
                keep(&mut answer.body, &self.buf[..n]);
                self.buf.advance(n);
            }
            Framing::Chunked => loop {
                let line = line_end(io, &mut self.buf).await?;
                let size = std::str::from_utf8(&self.buf[..line])
                    .ok()
                    .map(|l| l.split(';').next().unwrap_or("").trim())
                    .and_then(|h| usize::from_str_radix(h, 16).ok())
                    .ok_or(ClientError::Malformed("chunk size"))?;
                self.buf.advance(line + 2);
                if size == 0 {
                    // Trailers, if any, then the empty line.
                    loop {
                        let line = line_end(io, &mut self.buf).await?;
                        self.buf.advance(line + 2);
                        if line == 0 {
                            break;
                        }
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    fill(io, &mut self.buf).await?;
                }
                keep(&mut answer.body, &self.buf[..size]);
                if answer.first_event.is_none() && answer.has(b"data: ") {
                    answer.first_event = Some(Instant::now());
                }
                self.buf.advance(size + 2);
                if first_event_only && answer.has(b"data: ") {
                    return Ok(answer);
                }
            },
            Framing::UntilClose => loop {
                keep(&mut answer.body, &self.buf);
                if answer.first_event.is_none() && answer.has(b"data: ") {
                    answer.first_event = Some(Instant::now());
                }
                self.buf.clear();
                if first_event_only && answer.has(b"data: ") {
                    return Ok(answer);
                }
                match io.read_buf(&mut self.buf).await? {
                    0 => {
                        self.io = None;
                        return Ok(answer);
                    }
                    _ => continue,
                }
            },
        }
        if close {
            self.io = None;
        }
        Ok(answer)
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, ClientError> {
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return if h.value.eq_ignore_ascii_case(b"chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(ClientError::Malformed("transfer-encoding"))
            };
        }
    }
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            return std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .map(Framing::Length)
                .ok_or(ClientError::Malformed("content-length"));
        }
    }
    Ok(Framing::UntilClose)
}

fn keep(body: &mut Vec<u8>, bytes: &[u8]) {
    let room = KEEP.saturating_sub(body.len());
    body.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

async fn fill(io: &mut TcpStream, buf: &mut BytesMut) -> Result<(), ClientError> {
    match io.read_buf(buf).await? {
        0 => Err(ClientError::Closed),
        _ => Ok(()),
    }
}

/// Index of the next CRLF in `buf`, reading more until there is one.
async fn line_end(io: &mut TcpStream, buf: &mut BytesMut) -> Result<usize, ClientError> {
    loop {
        if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
            return Ok(p);
        }
        if buf.len() > 4096 {
            return Err(ClientError::Malformed("chunk line too long"));
        }
        fill(io, buf).await?;
    }
}
