//! The header names Lumen reads or writes beyond the standard ones, and how it reads the
//! client's: every function here takes any bytes a client can send and never fails but with
//! an OpenAI-shaped error (fuzzed by `fuzz/fuzz_targets/headers.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};

use crate::error::ApiError;

/// Longest client-supplied request id (and session id) that is accepted as is.
pub(crate) const MAX_REQUEST_ID: usize = 128;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's own deadline in milliseconds; it can only lower the configured caps.
pub const TIMEOUT_MS: HeaderName = HeaderName::from_static("x-lumen-timeout-ms");

/// Session key for `session_affinity` (the `user` field is the fallback).
pub const SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");

/// W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Marks the response cached (`hit`), freshly fetched (`miss`, `refresh`) or not cacheable
/// (`bypass`); present when the cache is on.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-lumen-cache");

/// The model that served the request, when a fallback chain moved it off the caller's model.
pub const SERVED_MODEL: HeaderName = HeaderName::from_static("x-lumen-served-model");

/// The client's `x-request-id` when it is sane (printable ASCII, at most 128 bytes), else a
/// fresh time-ordered UUIDv7.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x20..0x7f).contains(c))
        {
            return v.clone();
        }
    }
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The `traceparent` to send upstream and the trace id for logs. A valid incoming header keeps
/// its trace id and flags with Lumen as the new parent span; otherwise a new trace starts.
pub(crate) fn traceparent(headers: &HeaderMap) -> (String, String) {
    use std::fmt::Write as _;
    static SPAN: AtomicU64 = AtomicU64::new(0);
    // Read once: `process::id` is a system call, and this runs on every request.
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| (std::process::id() as u64) << 40);
    let n = SPAN.fetch_add(1, Ordering::Relaxed) ^ seed;
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let span_id = (z ^ (z >> 31)).max(1);
    let incoming = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let (trace_id, flags) = match incoming {
        Some((t, f)) => (t.to_owned(), f),
        None => {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
            ((*id).to_owned(), "01")
        }
    };
    let mut header = String::with_capacity(55);
    // Writing into a String cannot fail.
    let _ = write!(header, "00-{trace_id}-{span_id:016x}-{flags}");
    (header, trace_id)
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
pub(crate) fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    match parts.as_slice() {
        [ver, trace, parent, flags]
            if hex(ver, 2)
                && *ver != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0') =>
        {
            Some((trace, flags))
        }
        _ => None,
    }
}

/// `x-session-id`, when it is text of a sane length.
pub(crate) fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= MAX_REQUEST_ID)
}

/// `x-lumen-timeout-ms`: absent, or a positive whole number of milliseconds (anything else is a
/// 400 naming the header).
pub(crate) fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(v) = headers.get(TIMEOUT_MS) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| ApiError::invalid_header(TIMEOUT_MS.as_str()))
}

/// The bearer token of `Authorization`, when there is a non-empty one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
