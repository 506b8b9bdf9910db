//! How a response goes on the wire: its framing and whether the connection stays open (a pure
//! decision, [`plan`]), and its head as bytes.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    /// No body at all (1xx, 204, 304).
    Empty,
    /// The answer to `HEAD`: no body, but the length a `GET` would have had, when known.
    Head(Option<u64>),
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (HTTP/1.1).
    Chunked,
    /// Until the connection closes (HTTP/1.0 with no known length).
    UntilClose,
}

/// What the exchange knows when the response head is about to be written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) version: Version,
    pub(crate) method: &'a Method,
    pub(crate) status: StatusCode,
    pub(crate) headers: &'a HeaderMap,
    /// The body's exact length, if it knows it.
    pub(crate) exact: Option<u64>,
    /// The request's head asked to close (or HTTP/1.0, or conflicting framing).
    pub(crate) request_close: bool,
    /// The request body was read to its end, so the next bytes are the next request's.
    pub(crate) request_read: bool,
    /// The server is shutting down.
    pub(crate) closing: bool,
}

/// The decision: framing, and whether the connection is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) out: Out,
    pub(crate) keep_alive: bool,
}

pub(crate) fn plan(f: &Facts<'_>) -> Plan {
    let no_body = f.status.is_informational()
        || f.status == StatusCode::NO_CONTENT
        || f.status == StatusCode::NOT_MODIFIED;
    let declared = f
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let out = if no_body {
        Out::Empty
    } else if *f.method == Method::HEAD {
        Out::Head(declared.or(f.exact))
    } else if let Some(n) = declared.or(f.exact) {
        Out::Length(n)
    } else if f.version == Version::HTTP_11 {
        Out::Chunked
    } else {
        Out::UntilClose
    };
    let response_close = f.headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    let keep_alive = !(f.request_close
        || !f.request_read
        || f.closing
        || response_close
        || out == Out::UntilClose);
    Plan { out, keep_alive }
}

/// The response head: status line, the handler's headers, then those the plan adds (`date`,
/// the framing, `connection: close`). A handler's own framing headers are replaced.
pub(crate) fn encode_head(status: StatusCode, headers: &HeaderMap, plan: Plan) -> Vec<u8> {
    let size = 96
        + headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let framing =
            *name == TRANSFER_ENCODING || (*name == CONTENT_LENGTH && plan.out != Out::Empty);
        if framing || (*name == CONNECTION && !plan.keep_alive) {
            continue;
        }
        line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(DATE) {
        with_date(|d| line(&mut out, b"date", d));
    }
    match plan.out {
        Out::Length(n) | Out::Head(Some(n)) => line(
            &mut out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        ),
        Out::Chunked => line(&mut out, b"transfer-encoding", b"chunked"),
        Out::Empty | Out::Head(None) | Out::UntilClose => {}
    }
    if !plan.keep_alive {
        line(&mut out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value, formatted once a second per thread (as hyper does).
    static DATE_CACHE: RefCell<(u64, HeaderValue)> = const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if let Ok(v) = HeaderValue::from_str(&text) {
                *c = (secs, v);
            }
        }
        f(c.1.as_bytes());
    });
}

/// A chunk's size line, `{len:x}\r\n`, in a stack buffer.
pub(crate) fn chunk_line(len: usize) -> ([u8; 18], usize) {
    let mut out = [0u8; 18];
    let digits = format_hex(len, &mut out);
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    (out, digits + 2)
}

fn format_hex(mut n: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    out[..len].copy_from_slice(&tmp[i..]);
    len
}
