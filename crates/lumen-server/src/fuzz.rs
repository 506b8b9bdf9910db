//! Bodies of the fuzz targets over the server's request reading (`fuzz/fuzz_targets/request.rs`,
//! `headers.rs` and `h1_request.rs`), as plain functions so that an ordinary test replays their corpora
//! (`fuzz/corpus/<target>/`) on stable Rust without a fuzzer. Each panics when a property
//! breaks; returning means the input passed.

use futures::FutureExt;
use http::StatusCode;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use lumen_governance::auth::{AuthError, authorize};
use lumen_governance::cache::MemoryKeyStore;
use lumen_governance::keys::{ApiKey, KeyRing, digest, to_hex};
use lumen_openai_types::{ErrorBody, Forwardable, HasModel, RequestError};
use serde::Serialize;

use crate::error::ApiError;
use crate::headers;
use lumen_gateway::operation::{
    Chat, Completions, Detokenize, Embeddings, Operation, Rerank, Tokenize,
};

/// The default `server.max_n`.
const MAX_N: u32 = 128;

/// A client error as the client sees it: 400, `invalid_request_error`, a message, and a
/// `param` that names a field when there is one.
fn check_error(e: RequestError) {
    let api = ApiError::from(e);
    assert_eq!(api.status, StatusCode::BAD_REQUEST);
    assert!(!api.error.message.is_empty(), "empty error message");
    assert!(
        api.error.param.as_ref().is_none_or(|p| !p.is_empty()),
        "empty param"
    );
    check_shape(&api);
}

/// Serialises to OpenAI's `{"error": {"message", "type", "param", "code"}}`.
fn check_shape(api: &ApiError) {
    let body = match serde_json::to_value(ErrorBody {
        error: (*api.error).clone(),
    }) {
        Ok(v) => v,
        Err(e) => panic!("error body does not serialise: {e}"),
    };
    let inner = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(
            inner.get(field).is_some(),
            "error body lacks {field}: {body}"
        );
    }
    assert_eq!(inner["type"], "invalid_request_error");
}

fn read<E: Operation>(body: &[u8])
where
    E::Request: Serialize,
{
    let r = match E::read(body, MAX_N) {
        Ok(r) => r,
        Err(e) => return check_error(e),
    };
    // Everything the pipeline asks of a request it accepted.
    let _ = E::completion_budget(&r);
    let _ = E::streams(&r);
    let _ = E::caching(&r);
    let canonical = E::canonical(&r);
    // What Lumen forwards (the request serialised), Lumen reads back the same.
    let wire = match serde_json::to_vec(&r) {
        Ok(w) => w,
        Err(e) => panic!("an accepted request does not serialise: {e}"),
    };
    let again = match E::read(&wire, MAX_N) {
        Ok(a) => a,
        Err(e) => panic!("the forwarded request is refused: {e}"),
    };
    match serde_json::to_vec(&again) {
        Ok(w) => assert_eq!(w, wire, "serialising is not stable"),
        Err(e) => panic!("the forwarded request does not serialise again: {e}"),
    }
    assert_eq!(E::canonical(&again), canonical, "the cache key changed");
}

/// A body read as the server reads it (the request keeps the client's bytes) and forwarded as
/// those bytes, unchanged and with its model rewritten as an alias is: what the engine is sent
/// reads back as the request Lumen holds (serialising both gives the same JSON). Refusals are
/// [`read`]'s to check.
fn forward<E: Operation>(body: &[u8])
where
    E::Request: Forwardable,
{
    let body = bytes::Bytes::copy_from_slice(body);
    let Ok(mut r) = E::read_shared(&body, MAX_N) else {
        return;
    };
    for model in [None, Some("engine/m\"1")] {
        if let Some(m) = model {
            m.clone_into(r.model_mut());
        }
        let Some(pieces) = r.forwarded() else {
            continue;
        };
        let sent = pieces.concat();
        let again = match E::read(&sent, MAX_N) {
            Ok(a) => a,
            Err(e) => panic!("the forwarded body is refused: {e}"),
        };
        match (serde_json::to_vec(&again), serde_json::to_vec(&r)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "the forwarded body is another request"),
            (a, b) => panic!("an accepted request does not serialise: {a:?} {b:?}"),
        }
    }
}

/// `request`: the first byte picks the endpoint, the rest is the body. Every body is either
/// read (and then forwards as JSON that reads back the same, serialised or as the client's
/// bytes with Lumen's changes spliced in) or refused with a 400 that names what is wrong,
/// OpenAI-shaped; nothing panics.
pub fn request(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            read::<Chat>(body);
            forward::<Chat>(body);
        }
        1 => {
            read::<Completions>(body);
            forward::<Completions>(body);
        }
        2 => {
            read::<Embeddings>(body);
            forward::<Embeddings>(body);
        }
        3 => read::<Tokenize>(body),
        4 => read::<Detokenize>(body),
        _ => read::<Rerank>(body),
    }
}

/// The headers Lumen reads from clients, in the order of the tag byte's value.
const NAMES: [&str; 6] = [
    "x-request-id",
    "traceparent",
    "authorization",
    "x-session-id",
    "x-lumen-timeout-ms",
    "x-request-id",
];

/// The secret of the one configured key of the `headers` target.
const SECRET: &str = "sk-fuzz";

/// `headers`: the input is a list of headers, each a tag byte (which header), a length byte and
/// that many value bytes. Every reading must give a sane request id (the client's when it was
/// sane), a valid `traceparent` that keeps a valid incoming trace id, a trimmed non-empty bearer
/// token, and a timeout or a 400 naming the header.
pub fn headers(data: &[u8]) {
    let mut map = HeaderMap::new();
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (value, tail) = tail.split_at(n);
        rest = tail;
        // hyper refuses these bytes before Lumen sees them (HeaderValue enforces the same).
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = HeaderName::from_static(NAMES[usize::from(*tag) % NAMES.len()]);
        map.append(name, value);
    }

    let id = headers::request_id(&map);
    let b = id.as_bytes();
    assert!(!b.is_empty() && b.len() <= headers::MAX_REQUEST_ID);
    assert!(
        b.iter().all(|c| (0x20..0x7f).contains(c)),
        "request id not printable"
    );
    if let Some(sent) = map.get(headers::REQUEST_ID) {
        let s = sent.as_bytes();
        let sane = !s.is_empty()
            && s.len() <= headers::MAX_REQUEST_ID
            && s.iter().all(|c| (0x20..0x7f).contains(c));
        assert_eq!(
            sane,
            id == sent,
            "a sane request id must be kept, any other replaced"
        );
    }

    let cx = headers::trace_context(&map, None);
    let Some((t, _, _)) = headers::parse_traceparent(&cx.header) else {
        panic!("Lumen sent an invalid traceparent: {:?}", cx.header);
    };
    assert_eq!(t, cx.trace_id);
    let incoming = map
        .get(headers::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(headers::parse_traceparent);
    if let Some((t, parent, flags)) = incoming {
        assert_eq!(cx.trace_id, t, "a valid incoming trace id must be kept");
        assert_eq!(cx.parent, Some(parent), "the caller's span is the parent");
        assert!(cx.header.ends_with(&format!("{flags:02x}")));
    }

    if let Some(token) = headers::bearer(&map) {
        assert!(!token.is_empty() && token == token.trim());
        let raw = map.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        assert!(raw.is_some_and(|r| r.contains(token)));
    }
    let ring = match KeyRing::new(&[ApiKey {
        name: "fuzz".into(),
        sha256: to_hex(&digest(SECRET)),
        models: None,
        limits: Default::default(),
        per_model: Default::default(),
    }]) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let store = MemoryKeyStore::default();
    let token = headers::bearer(&map);
    match authorize(&ring, &store, token).now_or_never() {
        Some(Ok(k)) => assert!(token == Some(SECRET) && k.name == "fuzz"),
        Some(Err(AuthError::Missing)) => assert!(token.is_none()),
        Some(Err(AuthError::Invalid)) => assert!(token.is_some_and(|t| t != SECRET)),
        Some(Err(e)) => panic!("the in-memory store failed: {e}"),
        None => panic!("the in-memory store must answer at once"),
    }

    if let Some(s) = headers::session_id(&map) {
        assert!(!s.is_empty() && s.len() <= headers::MAX_REQUEST_ID);
    }
    match headers::timeout(&map) {
        Ok(Some(d)) => assert!(!d.is_zero()),
        Ok(None) => assert!(map.get(headers::TIMEOUT_MS).is_none()),
        Err(e) => {
            let e = crate::error::ApiError::from(e);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.error.code.as_deref(), Some("invalid_header"));
        }
    }
}

/// A client's request head and body framing, read as the HTTP/1.1 connection reads them:
/// nothing panics, and the outcome is the same however the bytes were split into reads.
pub fn h1_request(data: &[u8]) {
    crate::h1::fuzz::request(data);
}
