//! The header names Lumen reads or writes beyond the standard ones.

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
