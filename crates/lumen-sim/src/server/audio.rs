//! vLLM's speech-to-text endpoints, `/v1/audio/transcriptions` and `/v1/audio/translations`,
//! and an engine-specific JSON path (`/v1/sim/echo`) for Lumen's `server.extra_json_paths`.
//!
//! The form is parsed here on its own, whole (the simulator holds the body anyway), with no
//! code shared with Lumen's scanner, so a test of one is not a test of itself. The "text" is
//! derived from the file's length, deterministically; the JSON answer carries vLLM's
//! `usage: {"type": "duration", "seconds": N}` and, for tests, what the simulator received:
//! the model, the file's length and an FNV-1a hash of the whole body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::{Body, State, admit, error, full, json, json_str};

/// FNV-1a, 64-bit: a body's fingerprint the tests compute the same way.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The named parts of a form: (name, value) in order.
fn parts<'a>(content_type: &str, body: &'a [u8]) -> Option<Vec<(String, &'a [u8])>> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    let text = body;
    let mut at = find(text, delim.as_bytes())? + delim.len();
    loop {
        let rest = &text[at..];
        if rest.starts_with(b"--") {
            return Some(out);
        }
        let rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let name = head
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("name="))
            .next()?
            .trim_matches('"')
            .to_owned();
        let value_start = head_end + 4;
        let end_delim = format!("\r\n{delim}");
        let len = find(&rest[value_start..], end_delim.as_bytes())?;
        out.push((name, &rest[value_start..value_start + len]));
        at = at + 2 + value_start + len + end_delim.len();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `POST /v1/audio/transcriptions` and `/v1/audio/translations`.
pub(super) fn transcribe(
    state: &State,
    content_type: &str,
    body: &Bytes,
    translate: bool,
) -> Response<Body> {
    let Some(parts) = parts(content_type, body) else {
        return error(StatusCode::BAD_REQUEST, "could not parse the form", false);
    };
    let field = |n: &str| parts.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    let text_field = |n: &str| field(n).and_then(|v| std::str::from_utf8(v).ok());
    let model = match admit(state, None, text_field("model")) {
        Ok((_, m)) => m,
        Err(r) => return r.response(),
    };
    let Some(file) = field("file") else {
        return error(StatusCode::BAD_REQUEST, "Field required: file", false);
    };
    let task = if translate {
        "translated"
    } else {
        "transcribed"
    };
    let text = format!("{task} {} bytes of audio", file.len());
    // 16 kHz, 16-bit mono: 32,000 bytes a second, at least one.
    let seconds = file.len().div_ceil(32_000).max(1);
    match text_field("response_format").unwrap_or("json") {
        "text" => plain(format!("{text}\n"), "text/plain; charset=utf-8"),
        "srt" => plain(
            format!("1\n00:00:00,000 --> 00:00:{seconds:02},000\n{text}\n\n"),
            "text/plain; charset=utf-8",
        ),
        "vtt" => plain(
            format!("WEBVTT\n\n00:00:00.000 --> 00:00:{seconds:02}.000\n{text}\n\n"),
            "text/vtt; charset=utf-8",
        ),
        "json" | "verbose_json" => json(
            StatusCode::OK,
            format!(
                r#"{{"text":{},"usage":{{"type":"duration","seconds":{seconds}}},"sim":{{"model":{},"file_bytes":{},"body_fnv1a":"{:016x}"}}}}"#,
                json_str(&text),
                json_str(&model),
                file.len(),
                fnv1a(body)
            ),
        ),
        other => error(
            StatusCode::BAD_REQUEST,
            &format!("Unsupported response_format: {other}"),
            false,
        ),
    }
}

fn plain(body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `POST /v1/sim/echo`: the body's JSON back under `echo`, with the model served and a usage
/// of one token per 4 bytes of body (at least one).
pub(super) fn echo(state: &State, body: &[u8]) -> Response<Body> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON", false);
    };
    let model = match admit(state, None, value.get("model").and_then(|m| m.as_str())) {
        Ok((_, m)) => m,
        Err(r) => return r.response(),
    };
    let tokens = (body.len() / 4).max(1);
    json(
        StatusCode::OK,
        format!(
            r#"{{"object":"sim.echo","model":{},"echo":{value},"usage":{{"prompt_tokens":{tokens},"completion_tokens":0,"total_tokens":{tokens}}}}}"#,
            json_str(&model)
        ),
    )
}
