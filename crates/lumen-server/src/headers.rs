//! The header names Lumen reads or writes beyond the standard ones, how it reads the client's
//! (every function here takes any bytes a client can send and never fails but with an
//! OpenAI-shaped error; fuzzed by `fuzz/fuzz_targets/headers.rs`), and the W3C trace context
//! Lumen sends on, with its span ids.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};

/// Longest client-supplied request id (and session id) that is accepted as is.
pub(crate) const MAX_REQUEST_ID: usize = 128;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's own deadline in milliseconds; it can only lower the configured caps.
pub const TIMEOUT_MS: HeaderName = HeaderName::from_static("x-lumen-timeout-ms");

/// Session key for `session_affinity` and `cache_aware` (the `user` field is the fallback).
pub const SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");

/// Agent clients' own session headers, read when `x-session-id` is absent, in this order:
/// Claude Code sends `x-claude-code-session-id` on every request of a session; Codex sends its
/// conversation id as `session_id` (older releases also as `conversation_id`).
pub const AGENT_SESSION_IDS: [HeaderName; 3] = [
    HeaderName::from_static("x-claude-code-session-id"),
    HeaderName::from_static("session_id"),
    HeaderName::from_static("conversation_id"),
];

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

/// The request's place in a W3C trace: the `traceparent` to send upstream, the trace id for
/// logs, and what a span for it needs.
pub(crate) struct TraceContext {
    pub header: String,
    pub trace_id: String,
    /// Lumen's span for this request: the parent the engine sees.
    pub span_id: u64,
    /// The caller's span, from a valid incoming `traceparent`.
    pub parent: Option<u64>,
    pub flags: u8,
}

impl TraceContext {
    /// Whether the flags sent on say "sampled".
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 16 bytes (it is 32 lowercase hex digits by construction).
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, pair) in self.trace_id.as_bytes().chunks(2).take(16).enumerate() {
            out[i] = std::str::from_utf8(pair)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        out
    }
}

/// A valid incoming header keeps its trace id and flags with Lumen as the new parent span;
/// otherwise a new trace starts. With a `sampler` (trace export on, an inference endpoint), the
/// sampled flag sent on is Lumen's decision, so the engine records exactly the traces Lumen does.
pub(crate) fn trace_context(
    headers: &HeaderMap,
    sampler: Option<&crate::config::Sampler>,
) -> TraceContext {
    use std::fmt::Write as _;
    let span_id = span_id();
    let incoming = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let (trace_id, parent, flags) = match incoming {
        Some((t, p, f)) => (t.to_owned(), Some(p), f),
        None => {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
            ((*id).to_owned(), None, 1)
        }
    };
    let mut cx = TraceContext {
        header: String::new(),
        trace_id,
        span_id,
        parent,
        flags,
    };
    if let Some(s) = sampler {
        let from_parent = parent.map(|_| flags & 1 == 1);
        let sampled = s.sampled(from_parent, || cx.trace_id_bytes());
        cx.flags = (flags & !1) | u8::from(sampled);
    }
    let mut header = String::with_capacity(55);
    // Writing into a String cannot fail.
    let _ = write!(header, "00-{}-{span_id:016x}-{:02x}", cx.trace_id, cx.flags);
    cx.header = header;
    cx
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero: the trace id,
/// the parent span id and the flags.
pub(crate) fn parse_traceparent(v: &str) -> Option<(&str, u64, u8)> {
    let mut parts = v.trim().split('-');
    let (ver, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let valid = parts.next().is_none()
        && hex(ver, 2)
        && ver != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0');
    let parent = u64::from_str_radix(parent, 16).ok().filter(|p| *p != 0);
    let flags = u8::from_str_radix(flags, 16).ok();
    match (valid, parent, flags) {
        (true, Some(p), Some(f)) => Some((trace, p, f)),
        _ => None,
    }
}

/// A fresh, non-zero span id: a per-process random seed (so replicas, which often all run as
/// pid 1, do not share a sequence) plus a counter, mixed by splitmix64. No system call after the
/// first.
pub(crate) fn span_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: OnceLock<u64> = OnceLock::new();
    // `RandomState` is keyed from the OS's randomness once per process.
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let mut z = COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(seed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// The client's session: `x-session-id`, else an agent client's session header (see
/// [`AGENT_SESSION_IDS`]); the first that is text of a sane length.
pub(crate) fn session_id(headers: &HeaderMap) -> Option<&str> {
    std::iter::once(&SESSION_ID)
        .chain(AGENT_SESSION_IDS.iter())
        .filter_map(|name| headers.get(name))
        .filter_map(|v| v.to_str().ok())
        .find(|s| !s.is_empty() && s.len() <= MAX_REQUEST_ID)
}

/// A header whose value Lumen must read is not what it should be; the HTTP layer answers 400
/// naming it (`error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {0} header")]
pub(crate) struct InvalidHeader(pub &'static str);

/// `x-lumen-timeout-ms`: absent, or a positive whole number of milliseconds (anything else is a
/// 400 naming the header).
pub(crate) fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, InvalidHeader> {
    let Some(v) = headers.get(TIMEOUT_MS) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or(InvalidHeader("x-lumen-timeout-ms"))
}

/// The priority class a request asks for: `interactive`, `standard` or `batch`, granted up
/// to its key's `max_priority` (`docs/keys-and-limits.md`).
pub(crate) const PRIORITY: &str = "x-lumen-priority";

/// Anthropic's `x-api-key`, when there is a non-empty one (Claude Code and the Anthropic SDKs
/// send the key there rather than as a bearer token).
pub(crate) fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Anthropic's version and beta headers: passed on to an engine that serves `/v1/messages`
/// itself, which may read them as Anthropic does.
pub(crate) const ANTHROPIC_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// Longest Anthropic header value passed on (a beta list is a few hundred bytes).
const MAX_ANTHROPIC_HEADER: usize = 4096;

/// The client's [`ANTHROPIC_HEADERS`] that are visible text of a sane length (each value of a
/// repeated header).
pub(crate) fn anthropic(headers: &HeaderMap) -> Vec<(&'static str, String)> {
    ANTHROPIC_HEADERS
        .iter()
        .flat_map(|name| {
            headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter(|v| v.len() <= MAX_ANTHROPIC_HEADER)
                .map(move |v| (*name, v.to_owned()))
        })
        .collect()
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

#[cfg(test)]
mod tests;
