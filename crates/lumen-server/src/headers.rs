//! The header names Lumen reads or writes beyond the standard ones, and the span ids the
//! W3C `traceparent` Lumen sends carries.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::HeaderName;

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
