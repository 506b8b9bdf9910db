//! The bad-input campaign (issue 16): every malformed thing a client or an engine can send, to a
//! real Lumen over raw TCP. Each client case asserts the status, the OpenAI error shape (`type`,
//! `code`, `param`), that nothing bad reached the engine, and that the server serves the next
//! request. Deadline cases run on a paused clock. Engine faults run in a child process each, so
//! the counting allocator's peak belongs to that one case, and assert Lumen's heap stays under
//! the documented bound (`docs/errors.md`, "Memory bounds").
//!
//! `docs/errors.md` ("The bad-input campaign") has the same table as `client_inputs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_openai_types::sse::DEFAULT_MAX_EVENT_BYTES;
use lumen_server::config::AuthConfig;
use lumen_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "sk-bad-input";
const CHAT: &str = "/v1/chat/completions";
/// `server.max_body_bytes` for the campaign: small enough to exceed cheaply, large enough for
/// 100,000 levels of nesting.
const MAX_BODY: usize = 1024 * 1024;
const GOOD: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;

/// What one input must get back.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// An OpenAI error: status, `type`, `code` and `param` (`None`: JSON null).
    Error {
        status: u16,
        kind: &'static str,
        code: Option<&'static str>,
        param: Option<&'static str>,
    },
    /// Served (200): unusual but valid, or the engine's business (unknown fields pass through).
    Served,
    /// HTTP/2 bytes that break the protocol: an HTTP/2 answer (frames, a GOAWAY among them,
    /// never an HTTP/1.1 head), then the connection closed.
    Http2Goaway,
}

/// What the answer's `x-request-id` must be.
#[derive(Debug, Clone, Copy)]
enum Id {
    /// Lumen's own, a UUIDv7 (the client's was not sane).
    Fresh,
    /// The client's, echoed.
    Echo(&'static str),
    Any,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
    id: Id,
    /// Whether the engine is asked (a valid request, or one only the engine can judge).
    engine: bool,
}

fn invalid(status: u16, code: Option<&'static str>, param: Option<&'static str>) -> Want {
    Want::Error {
        status,
        kind: "invalid_request_error",
        code,
        param,
    }
}

/// 400, no code, `param` as given: a body Lumen refused.
fn bad(param: Option<&'static str>) -> Want {
    invalid(400, None, param)
}

fn case(name: &'static str, bytes: Vec<u8>, want: Want) -> Case {
    Case {
        name,
        want,
        id: Id::Any,
        // Lumen answers `/v1/models` itself; a served POST is an inference the engine runs.
        engine: matches!(want, Want::Served) && bytes.starts_with(b"POST "),
        bytes,
    }
}

/// A whole request: the request line, `host`, the key, `connection: close`, `headers` (each
/// line without CRLF), then `body` with its `content-length` unless `headers` frame it.
fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "{method} {path} HTTP/1.1\r\nhost: lumen\r\nauthorization: Bearer {KEY}\r\nconnection: close\r\n"
    )
    .into_bytes();
    for h in headers {
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    let framed = headers.iter().any(|h| {
        let h = h.to_ascii_lowercase();
        h.starts_with("content-length:") || h.starts_with("transfer-encoding:")
    });
    if !framed && (!body.is_empty() || method == "POST") {
        v.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

/// A JSON POST to `path`.
fn json(path: &str, body: impl AsRef<[u8]>) -> Vec<u8> {
    request(
        "POST",
        path,
        &["content-type: application/json"],
        body.as_ref(),
    )
}

/// A chat request with one more top-level member (`"k":v` as text).
fn chat_with(member: &str) -> Vec<u8> {
    json(
        CHAT,
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{member}}}"#),
    )
}

/// A chat request whose `messages` is `messages` (as text).
fn chat_messages(messages: &str) -> Vec<u8> {
    json(CHAT, format!(r#"{{"model":"m","messages":{messages}}}"#))
}

fn get(path: &str, headers: &[&str]) -> Vec<u8> {
    request("GET", path, headers, b"")
}

fn nest(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

/// `request` without `connection: close`: the server must close on its own.
fn kept_alive(request: Vec<u8>) -> Vec<u8> {
    request.splitn_replace(b"connection: close\r\n", b"")
}

/// A chunked POST to the chat endpoint with `chunks` as the raw chunked body.
fn chunked(extra: &[&str], chunks: &[u8]) -> Vec<u8> {
    let mut headers = vec![
        "content-type: application/json",
        "transfer-encoding: chunked",
    ];
    headers.extend_from_slice(extra);
    request("POST", CHAT, &headers, chunks)
}

/// `body` as one chunk, then the terminator.
fn one_chunk(body: &str) -> Vec<u8> {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).into_bytes()
}

/// Every client-side input of the campaign, with what it must get.
fn client_inputs() -> Vec<Case> {
    let huge_digits = "9".repeat(400);
    let mut cases = vec![
        // ---- bodies that are not JSON, or not UTF-8
        case("invalid JSON", json(CHAT, r#"{"model": "#), bad(None)),
        case("JSON with bare keys", json(CHAT, r#"{model:"m"}"#), bad(None)),
        case("empty body", json(CHAT, ""), bad(None)),
        case("a body that is a string", json(CHAT, r#""hi""#), bad(None)),
        case("a body that is an array", json(CHAT, "[1,2]"), bad(None)),
        case("a body that is null", json(CHAT, "null"), bad(None)),
        case(
            "invalid UTF-8 in a message",
            json(
                CHAT,
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
            ),
            bad(None),
        ),
        case(
            "invalid UTF-8 in an unknown field",
            json(
                CHAT,
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"junk\":\"\xc3\"}",
            ),
            bad(None),
        ),
        case(
            "invalid UTF-8 in a key",
            json(
                CHAT,
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"j\xfe\":1}",
            ),
            bad(None),
        ),
        case(
            "invalid UTF-8 outside any string",
            json(CHAT, b"{\"model\":\"m\",\xff}"),
            bad(None),
        ),
        // ---- nesting: refused anywhere, before anything is forwarded
        case(
            "100,000 nested arrays in an unknown field",
            chat_with(&format!(r#""junk":{}"#, nest("[", "", "]", 100_000))),
            bad(None),
        ),
        case(
            "100,000 nested objects in an unknown field",
            chat_with(&format!(r#""junk":{}"#, nest(r#"{"a":"#, "1", "}", 100_000))),
            bad(None),
        ),
        case(
            "100,000 nested arrays as messages",
            chat_messages(&nest("[", "", "]", 100_000)),
            bad(None),
        ),
        case(
            "100,000 nested arrays as message content",
            chat_messages(&format!(
                r#"[{{"role":"user","content":{}}}]"#,
                nest("[", "", "]", 100_000)
            )),
            bad(None),
        ),
        case(
            "nesting within the limit (100 levels) in an unknown field",
            chat_with(&format!(r#""junk":{}"#, nest("[", "", "]", 100))),
            Want::Served,
        ),
        // ---- huge numbers
        case(
            "max_tokens 1e400",
            chat_with(r#""max_tokens":1e400"#),
            bad(Some("max_tokens")),
        ),
        case(
            "temperature 1e400",
            chat_with(r#""temperature":1e400"#),
            bad(Some("temperature")),
        ),
        case("n 1e30", chat_with(r#""n":1e30"#), bad(Some("n"))),
        case(
            "seed with 400 digits",
            chat_with(&format!(r#""seed":{huge_digits}"#)),
            bad(Some("seed")),
        ),
        case(
            "a 400-digit number in an unknown field (forwarded as sent)",
            chat_with(&format!(r#""top_k":{huge_digits}"#)),
            Want::Served,
        ),
        // ---- duplicate keys
        case(
            "model twice",
            json(
                CHAT,
                r#"{"model":"m","model":"x","messages":[{"role":"user","content":"x"}]}"#,
            ),
            bad(Some("model")),
        ),
        case(
            "stream twice, once escaped",
            chat_with(r#""stream":false,"str\u0065am":true"#),
            bad(Some("stream")),
        ),
        case(
            "a message's role twice",
            chat_messages(r#"[{"role":"user","role":"system","content":"x"}]"#),
            bad(Some("messages[0].role")),
        ),
        case(
            "an unknown field twice (both forwarded; the engine's parser decides)",
            chat_with(r#""top_k":1,"top_k":2"#),
            Want::Served,
        ),
        // ---- wrong types, every field Lumen reads
        case(
            "model a number",
            json(
                CHAT,
                r#"{"model":1,"messages":[{"role":"user","content":"x"}]}"#,
            ),
            bad(Some("model")),
        ),
        case(
            "messages an object",
            chat_messages("{}"),
            bad(Some("messages")),
        ),
        case(
            "messages a string",
            chat_messages(r#""hi""#),
            bad(Some("messages")),
        ),
        case(
            "a message a string",
            chat_messages(r#"["hi"]"#),
            bad(Some("messages[0]")),
        ),
        case(
            "role a number",
            chat_messages(r#"[{"role":1,"content":"x"}]"#),
            bad(Some("messages[0].role")),
        ),
        case(
            "role empty",
            chat_messages(r#"[{"role":"","content":"x"}]"#),
            bad(Some("messages[0].role")),
        ),
        case(
            "content a number",
            chat_messages(r#"[{"role":"user","content":5}]"#),
            bad(Some("messages[0].content")),
        ),
        case(
            "name a number",
            chat_messages(r#"[{"role":"user","content":"x","name":5}]"#),
            bad(Some("messages[0].name")),
        ),
        case(
            "stream a string",
            chat_with(r#""stream":"true""#),
            bad(Some("stream")),
        ),
        case("stream a number", chat_with(r#""stream":1"#), bad(Some("stream"))),
        case(
            "stream_options a string",
            chat_with(r#""stream_options":"x""#),
            bad(Some("stream_options")),
        ),
        case(
            "stream_options.include_usage a string",
            chat_with(r#""stream":true,"stream_options":{"include_usage":"yes"}"#),
            bad(Some("stream_options.include_usage")),
        ),
        case(
            "max_tokens a string",
            chat_with(r#""max_tokens":"10""#),
            bad(Some("max_tokens")),
        ),
        case(
            "max_completion_tokens a boolean",
            chat_with(r#""max_completion_tokens":true"#),
            bad(Some("max_completion_tokens")),
        ),
        case(
            "temperature a string",
            chat_with(r#""temperature":"hot""#),
            bad(Some("temperature")),
        ),
        case("top_p an array", chat_with(r#""top_p":[]"#), bad(Some("top_p"))),
        case("n a string", chat_with(r#""n":"2""#), bad(Some("n"))),
        case("seed a string", chat_with(r#""seed":"s""#), bad(Some("seed"))),
        case("user a number", chat_with(r#""user":5"#), bad(Some("user"))),
        case(
            "completions: prompt an object",
            json("/v1/completions", r#"{"model":"m","prompt":{}}"#),
            bad(Some("prompt")),
        ),
        case(
            "completions: max_tokens negative",
            json("/v1/completions", r#"{"model":"m","prompt":"x","max_tokens":-1}"#),
            bad(Some("max_tokens")),
        ),
        case(
            "embeddings: input a number",
            json("/v1/embeddings", r#"{"model":"m","input":5}"#),
            bad(Some("input")),
        ),
        case(
            "embeddings: dimensions a string",
            json("/v1/embeddings", r#"{"model":"m","input":"x","dimensions":"8"}"#),
            bad(Some("dimensions")),
        ),
        case(
            "embeddings: encoding_format a number",
            json("/v1/embeddings", r#"{"model":"m","input":"x","encoding_format":5}"#),
            bad(Some("encoding_format")),
        ),
        case(
            "tokenize: model a number",
            json("/tokenize", r#"{"model":1,"prompt":"x"}"#),
            bad(Some("model")),
        ),
        // ---- missing and empty messages (and the other endpoints' required fields)
        case(
            "messages missing",
            json(CHAT, r#"{"model":"m"}"#),
            invalid(400, Some("missing_required_parameter"), Some("messages")),
        ),
        case("messages empty", chat_messages("[]"), bad(Some("messages"))),
        case("messages null", chat_messages("null"), bad(Some("messages"))),
        case(
            "completions: prompt missing",
            json("/v1/completions", r#"{"model":"m"}"#),
            invalid(400, Some("missing_required_parameter"), Some("prompt")),
        ),
        case(
            "embeddings: input missing",
            json("/v1/embeddings", r#"{"model":"m"}"#),
            invalid(400, Some("missing_required_parameter"), Some("input")),
        ),
        // ---- max_tokens and n
        case(
            "max_tokens negative",
            chat_with(r#""max_tokens":-1"#),
            bad(Some("max_tokens")),
        ),
        case(
            "max_tokens zero",
            chat_with(r#""max_tokens":0"#),
            bad(Some("max_tokens")),
        ),
        case(
            "max_completion_tokens zero",
            chat_with(r#""max_completion_tokens":0"#),
            bad(Some("max_completion_tokens")),
        ),
        case(
            "max_tokens a float",
            chat_with(r#""max_tokens":1.5"#),
            bad(Some("max_tokens")),
        ),
        case(
            "max_tokens 2^40",
            chat_with(r#""max_tokens":1099511627776"#),
            bad(Some("max_tokens")),
        ),
        Case {
            engine: true,
            ..case(
                "max_tokens 2^32-1 (the engine refuses: over its context)",
                chat_with(r#""max_tokens":4294967295"#),
                bad(None),
            )
        },
        case("n zero", chat_with(r#""n":0"#), bad(Some("n"))),
        case("n negative", chat_with(r#""n":-1"#), bad(Some("n"))),
        case(
            "n above server.max_n",
            chat_with(r#""n":129"#),
            bad(Some("n")),
        ),
        case("n 10^9", chat_with(r#""n":1000000000"#), bad(Some("n"))),
        // ---- bodies over the limit, and framing the server reads
        case(
            "body over the limit, with Content-Length",
            kept_alive(json(CHAT, vec![b' '; MAX_BODY + 1])),
            invalid(413, Some("request_too_large"), None),
        ),
        case(
            "body over the limit, chunked (no Content-Length)",
            kept_alive(chunked(&[], &{
                let mut c = Vec::new();
                for _ in 0..20 {
                    c.extend_from_slice(b"10000\r\n");
                    c.extend_from_slice(&[b' '; 0x10000]);
                    c.extend_from_slice(b"\r\n");
                }
                c.extend_from_slice(b"0\r\n\r\n");
                c
            })),
            invalid(413, Some("request_too_large"), None),
        ),
        case(
            "Content-Length of 2^40 with a small body (refused from the header)",
            request(
                "POST",
                CHAT,
                &[
                    "content-type: application/json",
                    "content-length: 1099511627776",
                ],
                b"{}",
            ),
            invalid(413, Some("request_too_large"), None),
        ),
        case(
            "Expect: 100-continue with a length over the limit (the body is never sent)",
            request(
                "POST",
                CHAT,
                &[
                    "content-type: application/json",
                    "expect: 100-continue",
                    "content-length: 99999999",
                ],
                b"",
            ),
            invalid(413, Some("request_too_large"), None),
        ),
        // ---- content types and codings
        case(
            "Content-Type text/plain",
            request("POST", CHAT, &["content-type: text/plain"], GOOD.as_bytes()),
            invalid(415, Some("unsupported_media_type"), None),
        ),
        case(
            "Content-Type a form",
            request(
                "POST",
                CHAT,
                &["content-type: application/x-www-form-urlencoded"],
                GOOD.as_bytes(),
            ),
            invalid(415, Some("unsupported_media_type"), None),
        ),
        case(
            "no Content-Type with a body",
            request("POST", CHAT, &[], GOOD.as_bytes()),
            invalid(415, Some("unsupported_media_type"), None),
        ),
        case(
            "Content-Type twice",
            request(
                "POST",
                CHAT,
                &["content-type: application/json", "content-type: text/plain"],
                GOOD.as_bytes(),
            ),
            invalid(415, Some("unsupported_media_type"), None),
        ),
        case(
            "Content-Encoding gzip",
            request(
                "POST",
                CHAT,
                &["content-type: application/json", "content-encoding: gzip"],
                GOOD.as_bytes(),
            ),
            invalid(415, Some("unsupported_encoding"), None),
        ),
        case(
            "Transfer-Encoding gzip, chunked",
            request(
                "POST",
                CHAT,
                &["content-type: application/json", "transfer-encoding: gzip, chunked"],
                &one_chunk(GOOD),
            ),
            invalid(415, Some("unsupported_encoding"), None),
        ),
        case(
            "chunked applied twice (two Transfer-Encoding lines; RFC 9112 6.1)",
            chunked(&["transfer-encoding: gzip, chunked"], &one_chunk(GOOD)),
            invalid(400, Some("invalid_http_request"), None),
        ),
        // ---- request smuggling and broken framing
        case(
            "Content-Length and Transfer-Encoding (TE wins, RFC 9112 6.3; then the connection closes, so the bytes after the chunked body are never a request)",
            {
                // The first chunk is a valid request; what follows it, which a front proxy that
                // trusted Content-Length would count as body, is a second request.
                let mut b = b"POST /v1/chat/completions HTTP/1.1\r\nhost: lumen\r\n".to_vec();
                b.extend_from_slice(format!("authorization: Bearer {KEY}\r\n").as_bytes());
                b.extend_from_slice(b"content-type: application/json\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n");
                b.extend_from_slice(&one_chunk(GOOD));
                b.extend_from_slice(&json(CHAT, GOOD));
                b
            },
            Want::Served,
        ),
        case(
            "two different Content-Lengths",
            request(
                "POST",
                CHAT,
                &[
                    "content-type: application/json",
                    "content-length: 2",
                    "content-length: 3",
                ],
                b"{}",
            ),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "Content-Length negative",
            request(
                "POST",
                CHAT,
                &["content-type: application/json", "content-length: -1"],
                b"{}",
            ),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "Content-Length with a sign",
            request(
                "POST",
                CHAT,
                &["content-type: application/json", "content-length: +2"],
                b"{}",
            ),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "Content-Length past 2^64",
            request(
                "POST",
                CHAT,
                &[
                    "content-type: application/json",
                    "content-length: 99999999999999999999999",
                ],
                b"{}",
            ),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "Transfer-Encoding not ending in chunked",
            request(
                "POST",
                CHAT,
                &["content-type: application/json", "transfer-encoding: gzip"],
                b"{}",
            ),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "Transfer-Encoding on HTTP/1.0",
            b"POST /v1/chat/completions HTTP/1.0\r\nhost: lumen\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "chunk size not hex",
            kept_alive(chunked(&[], b"zz\r\n{}\r\n0\r\n\r\n")),
            bad(None),
        ),
        case(
            "chunk size negative",
            kept_alive(chunked(&[], b"-2\r\n{}\r\n0\r\n\r\n")),
            bad(None),
        ),
        case(
            "chunk size past 2^64",
            kept_alive(chunked(&[], b"fffffffffffffffffffff\r\n{}\r\n0\r\n\r\n")),
            bad(None),
        ),
        case(
            "chunk shorter than its size",
            kept_alive(chunked(&[], b"5\r\n{}\r\n0\r\n\r\n")),
            bad(None),
        ),
        // ---- headers
        case(
            "200 headers",
            get(
                "/v1/models",
                &(0..200)
                    .map(|i| format!("x-h{i}: v"))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ),
            invalid(431, Some("request_headers_too_large"), None),
        ),
        case(
            "a 70 KB header",
            get(
                "/v1/models",
                &[format!("x-big: {}", "a".repeat(70_000)).as_str()],
            ),
            invalid(431, Some("request_headers_too_large"), None),
        ),
        case(
            "a 500 KB header",
            get(
                "/v1/models",
                &[format!("x-big: {}", "a".repeat(500_000)).as_str()],
            ),
            invalid(431, Some("request_headers_too_large"), None),
        ),
        case(
            "CR inside a header value",
            get("/v1/models", &["x-request-id: a\rb"]),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "LF inside a header value",
            get("/v1/models", &["x-request-id: a\nb"]),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "NUL inside a header value",
            get("/v1/models", &["x-request-id: a\0b"]),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "a space in a header name",
            get("/v1/models", &["x bad: 1"]),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "an obsolete folded header line",
            get("/v1/models", &["x-a: 1", " folded"]),
            invalid(400, Some("invalid_http_request"), None),
        ),
        Case {
            id: Id::Fresh,
            ..case(
                "non-ASCII request id",
                get("/v1/models", &["x-request-id: é"]),
                Want::Served,
            )
        },
        case(
            "non-ASCII bearer key",
            request("GET", "/v1/models", &[], b"")
                .splitn_replace(format!("Bearer {KEY}").as_bytes(), "Bearer é".as_bytes()),
            invalid(401, Some("invalid_api_key"), None),
        ),
        case(
            "non-ASCII x-lumen-timeout-ms",
            request(
                "POST",
                CHAT,
                &["content-type: application/json", "x-lumen-timeout-ms: é"],
                GOOD.as_bytes(),
            ),
            invalid(400, Some("invalid_header"), None),
        ),
        Case {
            id: Id::Echo("c0ffee"),
            ..case(
                "non-ASCII session id (ignored)",
                request(
                    "POST",
                    CHAT,
                    &[
                        "content-type: application/json",
                        "x-session-id: é",
                        "x-request-id: c0ffee",
                    ],
                    GOOD.as_bytes(),
                ),
                Want::Served,
            )
        },
        // ---- request ids
        Case {
            id: Id::Fresh,
            ..case(
                "a 10 KB request id",
                get(
                    "/v1/models",
                    &[format!("x-request-id: {}", "a".repeat(10_000)).as_str()],
                ),
                Want::Served,
            )
        },
        Case {
            id: Id::Fresh,
            ..case(
                "a 129-byte request id",
                get(
                    "/v1/models",
                    &[format!("x-request-id: {}", "a".repeat(129)).as_str()],
                ),
                Want::Served,
            )
        },
        Case {
            id: Id::Fresh,
            ..case(
                "a request id with a tab",
                get("/v1/models", &["x-request-id: a\tb"]),
                Want::Served,
            )
        },
        case(
            "a request id with DEL",
            get("/v1/models", &["x-request-id: a\x7fb"]),
            invalid(400, Some("invalid_http_request"), None),
        ),
        Case {
            id: Id::Fresh,
            ..case(
                "an empty request id",
                get("/v1/models", &["x-request-id:"]),
                Want::Served,
            )
        },
        Case {
            id: Id::Echo(r#"a" level=error msg="forged"#),
            ..case(
                "a request id that tries to forge a log field (kept: printable; logs quote it)",
                get("/v1/models", &[r#"x-request-id: a" level=error msg="forged"#]),
                Want::Served,
            )
        },
        Case {
            id: Id::Echo("first"),
            ..case(
                "two request ids (the first is used)",
                get("/v1/models", &["x-request-id: first", "x-request-id: second"]),
                Want::Served,
            )
        },
        // ---- URLs
        case(
            "an 8 KB unknown path",
            get(&format!("/v1/{}", "a".repeat(8_000)), &[]),
            invalid(404, Some("unknown_url"), None),
        ),
        case(
            "an 8 KB model id",
            get(
                &format!("/v1/models/{}", "a".repeat(8_000)),
                &[],
            ),
            invalid(404, Some("model_not_found"), Some("model")),
        ),
        case(
            "a 70 KB URL",
            get(
                &format!("/v1/models/{}", "a".repeat(70_000)),
                &[],
            ),
            invalid(431, Some("request_headers_too_large"), None),
        ),
        case(
            "/v1/models/..%2F..",
            get("/v1/models/..%2F..", &[]),
            invalid(404, Some("model_not_found"), Some("model")),
        ),
        case(
            "/v1/models/..%2F..%2Fadmin%2Fkeys",
            get("/v1/models/..%2F..%2Fadmin%2Fkeys", &[]),
            invalid(404, Some("model_not_found"), Some("model")),
        ),
        case(
            "/v1/models/%00",
            get("/v1/models/%00", &[]),
            invalid(404, Some("model_not_found"), Some("model")),
        ),
        case(
            "/v1/models/%zz%ff (bad escapes)",
            get("/v1/models/%zz%ff", &[]),
            invalid(404, Some("model_not_found"), Some("model")),
        ),
        case(
            "/v1/chat/completions%00",
            json("/v1/chat/completions%00", GOOD),
            invalid(404, Some("unknown_url"), None),
        ),
        case(
            "/v1/../v1/models (not normalised)",
            get("/v1/../v1/models", &[]),
            invalid(404, Some("unknown_url"), None),
        ),
        case(
            "//v1/models",
            get("//v1/models", &[]),
            invalid(404, Some("unknown_url"), None),
        ),
        case(
            "a raw NUL byte in the path",
            get("/v1/models/\0", &[]),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "a raw space in the path",
            get("/v1/mo dels", &[]),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "absolute-form URL with another host (the path is served)",
            get("http://elsewhere.example/v1/models", &[]),
            Want::Served,
        ),
        case(
            "OPTIONS *",
            request("OPTIONS", "*", &[], b""),
            invalid(404, Some("unknown_url"), None),
        ),
        // ---- methods and protocol versions
        case(
            "unknown method FOO",
            request("FOO", "/v1/models", &[], b""),
            invalid(405, Some("method_not_allowed"), None),
        ),
        case(
            "TRACE",
            request("TRACE", "/v1/models", &[], b""),
            invalid(405, Some("method_not_allowed"), None),
        ),
        case(
            "lower-case get (methods are case-sensitive)",
            request("get", "/v1/models", &[], b""),
            invalid(405, Some("method_not_allowed"), None),
        ),
        case(
            "GET on the chat endpoint",
            request("GET", CHAT, &[], b""),
            invalid(405, Some("method_not_allowed"), None),
        ),
        case(
            "CONNECT",
            request("CONNECT", "lumen:443", &[], b""),
            invalid(404, Some("unknown_url"), None),
        ),
        case(
            "a method with a non-token byte",
            request("G@T", "/v1/models", &[], b""),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "HTTP/2 prior knowledge, then DATA on stream 0",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
                .to_vec(),
            Want::Http2Goaway,
        ),
        case(
            "HTTP/0.9 request line",
            b"GET /v1/models\r\n\r\n".to_vec(),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "HTTP/3.0 request line",
            b"GET /v1/models HTTP/3.0\r\nhost: lumen\r\n\r\n".to_vec(),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "a TLS ClientHello on the plain port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            invalid(400, Some("invalid_http_request"), None),
        ),
        case(
            "binary garbage",
            (0u8..=255).rev().cycle().take(4096).collect(),
            invalid(400, Some("invalid_http_request"), None),
        ),
    ];
    // The same wrong-type checks on the other inference endpoints' shared fields.
    for path in [
        "/v1/completions",
        "/v1/embeddings",
        "/tokenize",
        "/v1/rerank",
    ] {
        cases.push(case(
            "a body that is an array (other endpoints)",
            json(path, "[]"),
            bad(None),
        ));
    }
    cases
}

/// Replaces the first occurrence of a byte string (for the cases that edit a built request).
trait SplitnReplace {
    fn splitn_replace(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl SplitnReplace for Vec<u8> {
    fn splitn_replace(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let i = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("present");
        let mut out = self[..i].to_vec();
        out.extend_from_slice(to);
        out.extend_from_slice(&self[i + from.len()..]);
        out
    }
}

/// Splits the first answer off `bytes`: head, then a `content-length` or chunked body. Returns
/// it and what follows it.
fn split_answer(bytes: &[u8]) -> (WireAnswer, &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {text:?}"));
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = &bytes[end + 4..];
    let answer = |body: Vec<u8>| WireAnswer {
        status,
        headers: headers.clone(),
        body,
    };
    if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
        let len: usize = len.parse().unwrap();
        assert!(rest.len() >= len, "body cut short: {text:?}");
        return (answer(rest[..len].to_vec()), &rest[len..]);
    }
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[..line_end])
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap(),
                16,
            )
            .unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                let trailer_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                return (answer(body), &rest[trailer_end + 2..]);
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }
    (answer(rest.to_vec()), &[])
}

/// Sends `bytes` on a new connection and reads until the server closes it (bounded: a server
/// that keeps the connection fails the test).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything (413 from the header): a
    // failed write is part of the exchange, not an error.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.bytes().filter(|b| *b == b'-').count() == 4
}

/// Checks one answer against what its case wants.
fn check(c: &Case, bytes: &[u8]) {
    let name = c.name;
    if let Want::Http2Goaway = c.want {
        // Frame headers: length (3 bytes), type, flags, stream (4).
        let mut types = Vec::new();
        let mut rest = bytes;
        while rest.len() >= 9 {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            types.push(rest[3]);
            rest = &rest[(9 + len).min(rest.len())..];
        }
        assert!(
            types.contains(&0x7),
            "{name}: expected a GOAWAY frame, got {:?}",
            String::from_utf8_lossy(bytes)
        );
        return;
    }
    let (answer, rest) = split_answer(bytes);
    assert!(
        rest.is_empty(),
        "{name}: exactly one answer, then the connection closes; after it came {:?}",
        String::from_utf8_lossy(rest)
    );
    let id = answer
        .header("x-request-id")
        .unwrap_or_else(|| panic!("{name}: every answer carries a request id: {answer:?}"));
    match c.id {
        Id::Fresh => assert!(is_uuid(id), "{name}: a fresh id, not {id:?}"),
        Id::Echo(want) => assert_eq!(id, want, "{name}"),
        Id::Any => {}
    }
    let body = String::from_utf8_lossy(&answer.body);
    match c.want {
        Want::Served => assert_eq!(answer.status, 200, "{name}: {body}"),
        Want::Error {
            status,
            kind,
            code,
            param,
        } => {
            assert_eq!(answer.status, status, "{name}: {body}");
            assert_eq!(
                answer.header("content-type"),
                Some("application/json"),
                "{name}"
            );
            // The server closes the connection after every error in this table; when the
            // client did not ask for that, the answer says so.
            if !contains(&c.bytes, b"connection: close") {
                assert_eq!(answer.header("connection"), Some("close"), "{name}");
            }
            let v: Value = serde_json::from_slice(&answer.body)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {body}"));
            let e = &v["error"];
            let obj = e.as_object().unwrap_or_else(|| panic!("{name}: {body}"));
            let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["code", "message", "param", "type"], "{name}: {body}");
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: {body}"
            );
            assert_eq!(e["type"], kind, "{name}: {body}");
            assert_eq!(
                e["code"],
                code.map_or(Value::Null, Value::from),
                "{name}: {body}"
            );
            assert_eq!(
                e["param"],
                param.map_or(Value::Null, Value::from),
                "{name}: {body}"
            );
        }
        Want::Http2Goaway => unreachable!(),
    }
}

fn auth() -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: None,
        keys: vec![ApiKey {
            name: "bad-input".into(),
            sha256: to_hex(&digest(KEY)),
            models: None,
            limits: LimitSpec::default(),
            per_model: Default::default(),
        }],
    }
}

/// A good request on a new connection is served: the bad input left nothing broken behind.
async fn still_serves(lumen: &Lumen, after: &str) {
    let bytes = exchange(lumen.addr, &json(CHAT, GOOD)).await;
    let (answer, _) = split_answer(&bytes);
    assert_eq!(
        answer.status,
        200,
        "after {after}: {}",
        String::from_utf8_lossy(&answer.body)
    );
}

#[tokio::test]
async fn client_inputs_get_openai_errors_and_the_server_keeps_serving() {
    let (url, sim) = sim(&["m"]).await;
    let lumen = Lumen::start(
        single_shot(&[&url])
            .auth(auth())
            .max_body_bytes(MAX_BODY)
            .build()
            .unwrap(),
    )
    .await;
    let cases = client_inputs();
    assert!(cases.len() > 100, "{} cases", cases.len());
    // Each case in its own task, so one failure does not hide the others.
    let mut failed = Vec::new();
    for c in cases {
        let name = c.name;
        let (addr, sim) = (lumen.addr, sim.clone());
        let run = tokio::spawn(async move {
            let before = sim.generation_count();
            let bytes = exchange(addr, &c.bytes).await;
            check(&c, &bytes);
            let asked = sim.generation_count() - before;
            if c.engine {
                assert_eq!(asked, 1, "{}: the engine is asked exactly once", c.name);
            } else {
                assert_eq!(asked, 0, "{}: nothing reached the engine", c.name);
            }
        });
        if let Err(e) = run.await {
            failed.push(format!("{name}: {e}"));
        }
        still_serves(&lumen, name).await;
    }
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---- deadlines, on a paused clock: virtual time is exact, so the tests can say which deadline
// fired without waiting for it.

/// Lumen with the given idle, head and body deadlines (the others far away).
async fn with_deadlines(idle: u64, head: u64, body: u64) -> (Lumen, lumen_sim::Simulator) {
    let (url, sim) = sim(&["m"]).await;
    let lumen = Lumen::start(
        single_shot(&[&url])
            .auth(auth())
            .idle_timeout(Duration::from_secs(idle))
            .header_read_timeout(Duration::from_secs(head))
            .body_read_timeout(Duration::from_secs(body))
            .build()
            .unwrap(),
    )
    .await;
    (lumen, sim)
}

/// Writes `pieces` one per second on `s` (stopping when the server has closed), then keeps the
/// connection open; meanwhile reads until the server closes. Returns what was read and when the
/// server closed, in seconds since the start (virtual time).
async fn dribble(s: TcpStream, pieces: Vec<Vec<u8>>, wait_first: Duration) -> (Vec<u8>, Duration) {
    let start = tokio::time::Instant::now();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(wait_first).await;
        for p in pieces {
            if w.write_all(&p).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Hold the write half open: the server, not the client, must end the exchange.
        std::future::pending::<()>().await;
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(600), r.read_to_end(&mut out)).await;
    writer.abort();
    assert!(read.is_ok(), "the server never closed the connection");
    (out, start.elapsed())
}

fn bytes_each(s: &[u8]) -> Vec<Vec<u8>> {
    s.iter().map(|b| vec![*b]).collect()
}

/// A head dribbled one byte a second is cut by the head deadline (5 s), not the idle one (60 s),
/// with a 408 in Lumen's shape; the server serves the next client.
#[tokio::test(start_paused = true)]
async fn slow_headers_are_cut_by_the_head_deadline() {
    let (lumen, sim) = with_deadlines(60, 5, 60).await;
    let s = TcpStream::connect(lumen.addr).await.unwrap();
    let (out, closed_at) = dribble(s, bytes_each(&get("/v1/models", &[])), Duration::ZERO).await;
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(7)).contains(&closed_at),
        "closed at {closed_at:?}"
    );
    check(
        &case(
            "slow headers",
            Vec::new(),
            invalid(408, Some("request_timeout"), None),
        ),
        &out,
    );
    still_serves(&lumen, "slow headers").await;
    assert_eq!(sim.generation_count(), 1);
}

/// A connection that never sends a byte is closed at the idle deadline, without an answer (there
/// was no request); so is a kept-alive connection that sends no next request.
#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_closed_at_the_idle_deadline() {
    let (lumen, _sim) = with_deadlines(5, 60, 60).await;
    let s = TcpStream::connect(lumen.addr).await.unwrap();
    let (out, closed_at) = dribble(s, Vec::new(), Duration::ZERO).await;
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(7)).contains(&closed_at),
        "closed at {closed_at:?}"
    );
    // Kept alive after an answer: the idle deadline starts again.
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    let keep_alive =
        request("GET", "/v1/models", &[], b"").splitn_replace(b"connection: close\r\n", b"");
    s.write_all(&keep_alive).await.unwrap();
    let (out, closed_at) = dribble(s, Vec::new(), Duration::ZERO).await;
    let (answer, rest) = split_answer(&out);
    assert_eq!(answer.status, 200);
    assert!(rest.is_empty(), "one answer");
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(7)).contains(&closed_at),
        "closed at {closed_at:?}"
    );
    still_serves(&lumen, "a silent connection").await;
}

/// Idle time and head time are two budgets: a client that waits 4 s and then takes 4 s to send
/// its head (8 s in all) is served with both deadlines at 5 s.
#[tokio::test(start_paused = true)]
async fn idle_and_head_time_are_separate_budgets() {
    let (lumen, sim) = with_deadlines(5, 5, 60).await;
    let s = TcpStream::connect(lumen.addr).await.unwrap();
    let req = json(CHAT, GOOD);
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let quarter = head_end / 4 + 1;
    let mut pieces: Vec<Vec<u8>> = req[..head_end]
        .chunks(quarter)
        .map(<[u8]>::to_vec)
        .collect();
    pieces.push(req[head_end..].to_vec());
    assert_eq!(pieces.len(), 5);
    let (out, _) = dribble(s, pieces, Duration::from_secs(4)).await;
    let (answer, _) = split_answer(&out);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(sim.generation_count(), 1);
}

/// A body dribbled one byte a second gets 408 at the body deadline (5 s; the idle and head
/// deadlines, 60 s, do not apply once the head is in) and its connection is closed.
#[tokio::test(start_paused = true)]
async fn a_slow_body_is_cut_by_the_body_deadline() {
    let (lumen, sim) = with_deadlines(60, 60, 5).await;
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    let req = json(CHAT, GOOD);
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    s.write_all(&req[..head_end]).await.unwrap();
    let (out, closed_at) = dribble(s, bytes_each(&req[head_end..]), Duration::ZERO).await;
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(7)).contains(&closed_at),
        "closed at {closed_at:?}"
    );
    check(
        &case(
            "slow body",
            Vec::new(),
            invalid(408, Some("request_timeout"), None),
        ),
        &out,
    );
    assert_eq!(sim.generation_count(), 0);
    still_serves(&lumen, "slow body").await;
}

/// While a request is in progress the client may be silent for as long as its answer takes: a
/// 12 s stream and a 12 s unary answer outlive idle and head deadlines of 2 s.
#[tokio::test(start_paused = true)]
async fn a_long_answer_outlives_the_idle_deadline() {
    let (lumen, _sim) = with_deadlines(2, 2, 2).await;
    for (body, stream) in [
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":12,"stream":true,"sim":{"itl_ms":1000}}"#,
            true,
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"sim":{"ttft_ms":12000}}"#,
            false,
        ),
    ] {
        let s = TcpStream::connect(lumen.addr).await.unwrap();
        let (out, closed_at) = dribble(s, vec![json(CHAT, body)], Duration::ZERO).await;
        assert!(closed_at >= Duration::from_secs(11), "{closed_at:?}");
        let (answer, rest) = split_answer(&out);
        assert!(rest.is_empty());
        assert_eq!(answer.status, 200);
        let text = String::from_utf8_lossy(&answer.body);
        assert!(!text.contains("\"error\""), "{text}");
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        }
    }
}

// ---- engine faults: a fake engine over real TCP answers the first chat request with the fault
// and every later one well, so the next request shows that nothing was left broken (a pooled
// connection with leftover bytes, a stuck permit).

/// `backends[].max_response_bytes` for the engine-fault cases.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;
const MB: usize = 1024 * 1024;
/// Peak heap growth allowed while Lumen relays one faulty answer (`docs/errors.md`, "Memory
/// bounds"): twice the cap that applies (the non-streamed answer cap, or the 8 MiB stream-event
/// cap; a buffer grows by doubling), plus 4 MiB for what does not scale with the answer.
/// Measured: 16.0 MiB at both 8 MiB caps.
const MEMORY_BOUND: usize = 2 * larger(MAX_RESPONSE, DEFAULT_MAX_EVENT_BYTES) + 4 * MB;

const fn larger(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// 50 MB of JSON, chunked (no length): cut off at the cap.
    Answer50MbChunked,
    /// A declared 50 MB: refused before the body is read.
    Answer50MbDeclared,
    /// 50 MB until the engine closes (no length, no chunking).
    Answer50MbUntilClose,
    /// `data: aaaa...` without a newline, for as long as Lumen reads.
    EndlessSseLine,
    /// One good event, then a 10 MB event.
    Event10Mb,
    /// A JSON answer with invalid UTF-8 in a string.
    NonUtf8Answer,
    /// One good event, then an event with invalid UTF-8.
    NonUtf8Event,
    /// `content-length: 1000`, 100 bytes, then the engine closes.
    LengthLongerThanBody,
    /// `content-length: 10`, then a whole (longer) answer on the kept-alive connection.
    LengthShorterThanBody,
    /// `text/html`, status 200.
    Html200,
    /// 302 to another address.
    Redirect,
    /// A response head that never ends (64 KB and beyond).
    EndlessHead,
}

impl Fault {
    const ALL: [Fault; 12] = [
        Fault::Answer50MbChunked,
        Fault::Answer50MbDeclared,
        Fault::Answer50MbUntilClose,
        Fault::EndlessSseLine,
        Fault::Event10Mb,
        Fault::NonUtf8Answer,
        Fault::NonUtf8Event,
        Fault::LengthLongerThanBody,
        Fault::LengthShorterThanBody,
        Fault::Html200,
        Fault::Redirect,
        Fault::EndlessHead,
    ];

    fn name(self) -> String {
        format!("{self:?}")
    }

    fn streams(self) -> bool {
        matches!(
            self,
            Fault::EndlessSseLine | Fault::Event10Mb | Fault::NonUtf8Event
        )
    }

    /// What the client gets: a status and code before commit, or (`200`) an in-band error event
    /// and `[DONE]` after it.
    fn want(self) -> (u16, &'static str) {
        match self {
            Fault::Answer50MbChunked | Fault::Answer50MbDeclared | Fault::Answer50MbUntilClose => {
                (502, "upstream_response_too_large")
            }
            Fault::EndlessSseLine => (502, "stream_interrupted"),
            Fault::Event10Mb | Fault::NonUtf8Event => (200, "stream_interrupted"),
            Fault::NonUtf8Answer
            | Fault::LengthLongerThanBody
            | Fault::LengthShorterThanBody
            | Fault::Html200
            | Fault::EndlessHead => (502, "upstream_invalid_response"),
            Fault::Redirect => (502, "upstream_error"),
        }
    }
}

/// 64 KiB of `a`, written again and again: the fake engine sends megabytes without holding
/// them (the heap measured is Lumen's).
static PAD: [u8; 64 * 1024] = [b'a'; 64 * 1024];

const ANSWER: &str = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
const EVENT: &str = r#"data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":null}]}"#;

/// Reads one request (head and `content-length` body) off `sock`; `None` once it closed.
async fn read_one(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return Some((head, body));
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes `total` bytes of padding (stopping early when Lumen hangs up), as chunks or raw.
async fn pad(sock: &mut TcpStream, total: usize, chunked: bool) {
    let mut sent = 0;
    while sent < total {
        let n = PAD.len().min(total - sent);
        let ok = if chunked {
            sock.write_all(format!("{n:x}\r\n").as_bytes())
                .await
                .is_ok()
                && sock.write_all(&PAD[..n]).await.is_ok()
                && sock.write_all(b"\r\n").await.is_ok()
        } else {
            sock.write_all(&PAD[..n]).await.is_ok()
        };
        if !ok {
            return;
        }
        sent += n;
    }
}

/// A chunk with `data` as its payload.
async fn chunk(sock: &mut TcpStream, data: &[u8]) -> bool {
    sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await
        .is_ok()
        && sock.write_all(data).await.is_ok()
        && sock.write_all(b"\r\n").await.is_ok()
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// Plays `fault` on `sock`. Returns whether the connection may serve another request.
async fn play(sock: &mut TcpStream, fault: Fault) -> bool {
    const JSON_CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let fifty = 50 * 1000 * 1000;
    match fault {
        Fault::Answer50MbChunked => {
            let _ = sock.write_all(JSON_CHUNKED).await;
            let _ = chunk(sock, br#"{"id":"x","pad":""#).await;
            pad(sock, fifty, true).await;
            let _ = chunk(sock, br#""}"#).await;
            let _ = sock.write_all(b"0\r\n\r\n").await;
        }
        Fault::Answer50MbDeclared => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {fifty}\r\n\r\n"
            );
            let _ = sock.write_all(head.as_bytes()).await;
            pad(sock, fifty, false).await;
        }
        Fault::Answer50MbUntilClose => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n")
                .await;
            pad(sock, fifty, false).await;
            return false;
        }
        Fault::EndlessSseLine => {
            let _ = sock.write_all(SSE_HEAD).await;
            let _ = chunk(sock, b"data: ").await;
            // "Endless": far past the 8 MiB event cap; Lumen hangs up long before.
            pad(sock, 10 * fifty, true).await;
        }
        Fault::Event10Mb => {
            let _ = sock.write_all(SSE_HEAD).await;
            let _ = chunk(sock, format!("{EVENT}\n\n").as_bytes()).await;
            let _ = chunk(sock, br#"data: {"pad":""#).await;
            pad(sock, 10 * 1000 * 1000, true).await;
            let _ = chunk(sock, b"\"}\n\ndata: [DONE]\n\n").await;
            let _ = sock.write_all(b"0\r\n\r\n").await;
        }
        Fault::NonUtf8Answer => {
            let body = ANSWER.replace("\"ok\"", "\"o\u{fffd}k\"").into_bytes();
            let body: Vec<u8> = {
                // The replacement character's bytes become an invalid sequence.
                let mut b = body;
                let i = b
                    .windows(3)
                    .position(|w| w == "\u{fffd}".as_bytes())
                    .unwrap();
                b[i..i + 3].copy_from_slice(b"\xff\xfe\xfd");
                b
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&body).await;
        }
        Fault::NonUtf8Event => {
            let _ = sock.write_all(SSE_HEAD).await;
            let _ = chunk(sock, format!("{EVENT}\n\n").as_bytes()).await;
            let bad = EVENT.replace("\"ok\"", "\"o\u{fffd}k\"");
            let mut bad = bad.into_bytes();
            let i = bad
                .windows(3)
                .position(|w| w == "\u{fffd}".as_bytes())
                .unwrap();
            bad[i..i + 3].copy_from_slice(b"\xff\xfe\xfd");
            bad.extend_from_slice(b"\n\ndata: [DONE]\n\n");
            let _ = chunk(sock, &bad).await;
            let _ = sock.write_all(b"0\r\n\r\n").await;
        }
        Fault::LengthLongerThanBody => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
                .await;
            let _ = sock.write_all(&ANSWER.as_bytes()[..100]).await;
            return false;
        }
        Fault::LengthShorterThanBody => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n")
                .await;
            // The rest of the answer stays on the connection, where a reused connection would
            // read it as the next answer's head.
            let _ = sock.write_all(ANSWER.as_bytes()).await;
        }
        Fault::Html200 => {
            let body = "<html><body><h1>It works!</h1></body></html>";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        }
        Fault::Redirect => {
            let _ = sock
                .write_all(b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data/\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
        Fault::EndlessHead => {
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nx-long: ").await;
            pad(sock, 10 * MB, false).await;
            return false;
        }
    }
    true
}

/// A good answer: JSON, or SSE with one event and `[DONE]`.
async fn answer_well(sock: &mut TcpStream, stream: bool) -> bool {
    if stream {
        sock.write_all(SSE_HEAD).await.is_ok()
            && chunk(sock, format!("{EVENT}\n\ndata: [DONE]\n\n").as_bytes()).await
            && sock.write_all(b"0\r\n\r\n").await.is_ok()
    } else {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            ANSWER.len()
        );
        sock.write_all(head.as_bytes()).await.is_ok()
            && sock.write_all(ANSWER.as_bytes()).await.is_ok()
    }
}

/// An engine that plays `fault` on the `fault_at`-th chat request (counting from 0) and answers
/// every other request well. Returns its URL and how many requests it got.
async fn fault_engine(fault: Fault, fault_at: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((_, body)) = read_one(&mut sock, &mut buf).await {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let stream = body.windows(13).any(|w| w == b"\"stream\":true");
                    let again = if n == fault_at {
                        play(&mut sock, fault).await
                    } else {
                        answer_well(&mut sock, stream).await
                    };
                    if !again {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

/// Lumen in front of one fake engine: the model fixed (no discovery), one attempt, no breaker,
/// `max_response_bytes` at [`MAX_RESPONSE`].
fn in_front_of_engine(url: &str) -> lumen_server::GatewayBuilder {
    let mut cfg = lumen_backend_vllm::VllmConfig::new("engine", url);
    cfg.max_response_bytes = MAX_RESPONSE;
    lumen_server::Gateway::builder()
        .health(no_health_checks())
        // Nothing but the test's requests reaches the hostile engine (no `/metrics` scrape).
        .governance(lumen_governance::GovernanceConfig {
            policy: lumen_governance::Policy::RoundRobin,
            ..lumen_governance::GovernanceConfig::default()
        })
        .backend(
            "engine",
            lumen_backend_vllm::VllmBackend::new(cfg).unwrap(),
            Some(vec!["m".into()]),
        )
        .retry(lumen_server::config::RetryConfig {
            max_attempts: Some(1),
            ..Default::default()
        })
        .breaker(lumen_server::config::BreakerSettings {
            consecutive_failures: 0,
            ..Default::default()
        })
}

fn chat_body(stream: bool) -> String {
    format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":2,"stream":{stream}}}"#
    )
}

/// Sends a chat and checks the answer against `(status, code)`: an OpenAI error with that
/// status, or for 200 a stream that ends with one in-band error of that code and `[DONE]`.
async fn expect_fault_answer(lumen: &Lumen, fault: Fault) {
    let name = fault.name();
    let (status, code) = fault.want();
    let r = post(&lumen.url(CHAT), &chat_body(fault.streams())).await;
    assert_eq!(r.status.as_u16(), status, "{name}: {}", r.text());
    assert!(r.header("x-request-id").is_some(), "{name}");
    let error = if status == 200 {
        let events = r.sse_data();
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{name}");
        let errors: Vec<&String> = events.iter().filter(|e| e.contains("\"error\"")).collect();
        assert_eq!(errors.len(), 1, "{name}: one in-band error: {events:?}");
        serde_json::from_str::<Value>(errors[0]).unwrap()
    } else {
        assert_eq!(r.header("content-type"), Some("application/json"), "{name}");
        r.json()
    };
    let e = &error["error"];
    assert_eq!(e["type"], "server_error", "{name}: {error}");
    assert_eq!(e["code"], code, "{name}: {error}");
    assert!(e["param"].is_null(), "{name}: {error}");
    let text = error.to_string();
    for leak in ["127.0.0.1", "169.254", "aaaaaaaa", "html"] {
        assert!(
            !text.contains(leak),
            "{name}: the error echoes {leak:?}: {text}"
        );
    }
}

/// In the child process: one fault against a fresh Lumen, then a good request; prints the peak
/// heap growth while the fault was relayed. A no-op unless `BAD_INPUT_ENGINE_FAULT` names a fault.
#[tokio::test]
#[allow(clippy::print_stdout)]
async fn engine_fault_child() {
    let Ok(name) = std::env::var("BAD_INPUT_ENGINE_FAULT") else {
        return;
    };
    let fault = Fault::ALL
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("unknown fault {name}"));
    // Request 0 warms up (connections, buffers, lazy statics); request 1 is the fault.
    let (url, count) = fault_engine(fault, 1).await;
    let lumen = Lumen::start(in_front_of_engine(&url).build().unwrap()).await;
    let warm = post(&lumen.url(CHAT), &chat_body(fault.streams())).await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    let base = crate::ALLOC.allocated();
    expect_fault_answer(&lumen, fault).await;
    let growth = crate::ALLOC.max_allocated().saturating_sub(base);
    // The next request is served, by the same engine (a reused connection must not hold the
    // fault's leftovers).
    let next = post(&lumen.url(CHAT), &chat_body(fault.streams())).await;
    assert_eq!(next.status, 200, "{name}: after the fault: {}", next.text());
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "{name}: one send per request"
    );
    println!("BAD_INPUT_HEAP_GROWTH {growth}");
}

/// Every engine fault, each in its own process (the counting allocator's peak cannot be reset):
/// a clean OpenAI error for the client, the next request served, and Lumen's heap growth under
/// [`MEMORY_BOUND`].
#[tokio::test]
#[allow(clippy::print_stdout)]
async fn engine_faults_get_clean_errors_and_memory_stays_bounded() {
    let exe = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for fault in Fault::ALL {
        let name = fault.name();
        let (exe, child_name) = (exe.clone(), name.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(exe)
                .args([
                    "--exact",
                    "bad_input::engine_fault_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("BAD_INPUT_ENGINE_FAULT", child_name)
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let growth = stdout
            .lines()
            .find_map(|l| l.split("BAD_INPUT_HEAP_GROWTH ").nth(1))
            .and_then(|g| g.trim().parse::<usize>().ok());
        match growth {
            Some(g) if out.status.success() => {
                println!(
                    "{name:<24} peak heap growth {:>6.1} MiB (bound {} MiB)",
                    g as f64 / MB as f64,
                    MEMORY_BOUND / MB
                );
                if g > MEMORY_BOUND {
                    failed.push(format!("{name}: heap grew {g} bytes, over {MEMORY_BOUND}"));
                }
            }
            _ => failed.push(format!(
                "{name}: the child failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// An engine that sends its response head one byte a second: the request's total deadline
/// (5 s) cuts it, 504 `timeout`, and the next request is served.
#[tokio::test(start_paused = true)]
async fn an_engine_with_slow_headers_is_cut_by_the_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut sock, _)) = listener.accept().await {
            let slow = std::mem::take(&mut first);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_one(&mut sock, &mut buf).await.is_some() {
                    if slow {
                        for b in b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-slow: 1234567890\r\n" {
                            if sock.write_all(&[*b]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        return;
                    }
                    if !answer_well(&mut sock, false).await {
                        return;
                    }
                }
            });
        }
    });
    let lumen = Lumen::start(
        in_front_of_engine(&url)
            .timeouts(lumen_resilience::Timeouts {
                first_byte: Some(Duration::from_secs(5)),
                idle: None,
                total: Some(Duration::from_secs(5)),
            })
            .build()
            .unwrap(),
    )
    .await;
    let start = tokio::time::Instant::now();
    let r = post(&lumen.url(CHAT), &chat_body(false)).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "timeout");
    assert_eq!(r.json()["error"]["type"], "server_error");
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(7)).contains(&start.elapsed()),
        "{:?}",
        start.elapsed()
    );
    let next = post(&lumen.url(CHAT), &chat_body(false)).await;
    assert_eq!(next.status, 200, "{}", next.text());
}
