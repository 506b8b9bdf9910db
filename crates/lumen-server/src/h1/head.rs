//! A client's request head, parsed (sans-IO): the request line and headers as `http` types, and
//! what the head says about the body and the connection. Every refusal here is a framing
//! decision a front proxy must agree with, so the rules are RFC 9112's strict ones: a
//! `Transfer-Encoding` must end in `chunked` and wins over `Content-Length` (and then the
//! connection closes after the answer, so bytes a proxy counted as body are never read as a
//! request); `Content-Length` is digits only and every copy agrees; HTTP/1.0 has no chunked
//! framing.

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, EXPECT, HeaderName, HeaderValue, TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, Uri, Version};

use super::recv::Framing;

/// Largest request head (request line and headers) read: beyond it, 431. No OpenAI or
/// Anthropic client sends a head near this one.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header lines in one head (hyper's bound too): beyond it, 431.
const MAX_HEADERS: usize = 100;

/// Why a head was refused before any request existed; each is answered with Lumen's JSON
/// error (`error::unparsable_request`) and the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not HTTP/1.x, or framing that cannot be trusted: 400.
    Malformed,
    /// A head over [`MAX_HEAD_BYTES`], or over [`MAX_HEADERS`] lines: 431.
    TooLarge,
}

impl Refusal {
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::TooLarge => 431,
        }
    }
}

/// A parsed head: the request without its body, and what it means for the exchange.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) parts: http::request::Parts,
    pub(crate) framing: Framing,
    /// The connection closes after this exchange: the client asked, HTTP/1.0, or both
    /// `Transfer-Encoding` and `Content-Length` were sent.
    pub(crate) close: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits for a `100` before its body.
    pub(crate) expect_continue: bool,
}

/// Where a complete head ends in `buf`, looking only at bytes from `from` on (a caller that
/// keeps `from` as what it has scanned reads each byte once however slowly the head arrives).
/// `None`: not yet. An empty line ends a head; bare LF line ends are accepted, as httparse does.
pub(crate) fn end_of_head(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut at = start;
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
        let lf = at + i;
        let rest = &buf[lf + 1..];
        if rest.starts_with(b"\n") {
            return Some(lf + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(lf + 3);
        }
        at = lf + 1;
    }
    None
}

/// Parses the head at the start of `buf`, which holds at least `len` bytes (what
/// [`end_of_head`] found). `Ok(None)`: more bytes are needed (leading empty lines only).
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    // Uninitialised: httparse writes the lines it finds (an initialised array would be 3.2 KB
    // written on every request).
    let mut lines =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut lines) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Refusal::TooLarge);
    }
    // One copy of the head: header values and the path are slices of it, so the connection's
    // read buffer is not kept alive by a request's headers.
    let bytes = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    // httparse's slices point into `buf`; the same ranges of the copy.
    let slice = |part: &[u8]| {
        let at = (part.as_ptr() as usize).wrapping_sub(base).min(len);
        bytes.slice(at..(at + part.len()).min(len))
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::Malformed)?;
    let target = req.path.unwrap_or_default().as_bytes();
    let uri = Uri::from_maybe_shared(slice(target)).map_err(|_| Refusal::Malformed)?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(Refusal::Malformed),
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Refusal::Malformed)?;
        let value =
            HeaderValue::from_maybe_shared(slice(h.value)).map_err(|_| Refusal::Malformed)?;
        headers.append(name, value);
    }
    let (framing, conflict) = framing(version, &mut headers)?;
    let close =
        conflict || version == Version::HTTP_10 || has_token(&headers, &CONNECTION, "close");
    let expect_continue =
        version == Version::HTTP_11 && has_token(&headers, &EXPECT, "100-continue");
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((
        Head {
            parts,
            framing,
            close,
            expect_continue,
        },
        len,
    )))
}

/// The body's framing, and whether both framings were sent (RFC 9112 6.3: `Transfer-Encoding`
/// wins, its `Content-Length` is removed so nothing downstream trusts it, and the connection
/// closes after the answer).
fn framing(version: Version, headers: &mut HeaderMap) -> Result<(Framing, bool), Refusal> {
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(Refusal::Malformed);
        }
        let mut last = None;
        for value in headers.get_all(TRANSFER_ENCODING) {
            let text = value.to_str().map_err(|_| Refusal::Malformed)?;
            for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                // `chunked` is applied once, last (RFC 9112 6.1).
                if last.is_some_and(|l: &str| l.eq_ignore_ascii_case("chunked")) {
                    return Err(Refusal::Malformed);
                }
                last = Some(coding);
            }
        }
        if !last.is_some_and(|l| l.eq_ignore_ascii_case("chunked")) {
            return Err(Refusal::Malformed);
        }
        let conflict = headers.remove(CONTENT_LENGTH).is_some();
        return Ok((Framing::chunked(), conflict));
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let n = content_length(part.trim_ascii()).ok_or(Refusal::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::Malformed);
            }
            length = Some(n);
        }
    }
    Ok((Framing::Length(length.unwrap_or(0)), false))
}

/// A `Content-Length` value: ASCII digits only (no sign, no space inside), within `u64`.
fn content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether a comma-separated header holds `token` (case-insensitively) in any of its lines.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}
