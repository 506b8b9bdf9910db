//! Request-body parsing that reports *where* a body is wrong, as OpenAI's `param`.

use serde::de::DeserializeOwned;

/// A client mistake in a request body: becomes a 400 with `param` set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub message: String,
    /// JSON path of the offending field, for example `messages[0].role`.
    pub param: Option<String>,
    /// OpenAI's machine-readable code, when it has one for this mistake.
    pub code: Option<&'static str>,
}

impl RequestError {
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }
}

/// Deepest nesting of arrays and objects a request body may have (the body's own object is
/// level 1). serde_json stops typed values at 128 levels, but the parts Lumen keeps as the
/// client's JSON (unknown fields, `messages`) are skipped without a limit and would be
/// forwarded: an engine's parser may crash or answer 500 on 100,000 levels, and a 500 counts
/// against the engine's breaker.
pub const MAX_DEPTH: usize = 128;

/// A body parsed as [`parse`] does, keeping the client's bytes as the request's
/// [`Source`](crate::Source): its bulk (chat `messages`, a completion's `prompt`, embeddings
/// `input`) becomes a slice of `body` (the parse's copy is freed), and the request can be
/// forwarded as those bytes ([`Forwardable::forwarded`](crate::Forwardable::forwarded)).
pub fn parse_shared<T: crate::Forwardable>(body: &bytes::Bytes) -> Result<T, RequestError> {
    let mut r: T = parse(body)?;
    crate::source::Source::attach(&mut r, body);
    Ok(r)
}

/// Parses a JSON body into `T`, naming the failing field on error.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError {
            message: "We could not parse the JSON body of your request: the body is empty. \
                      The API expects a JSON payload."
                .to_owned(),
            param: None,
            code: None,
        });
    }
    if nested_deeper_than(body, MAX_DEPTH) {
        return Err(syntax(format_args!(
            "arrays and objects nested deeper than {MAX_DEPTH} levels"
        )));
    }
    // Fast path: plain serde. Path tracking costs on every field, so it runs only to explain a
    // failure (the second parse is of a body that is already known to be bad).
    if let Ok(v) = serde_json::from_slice::<T>(body) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    let (path, inner) = match result {
        // The value parsed, so the fast path failed on what follows it (`{...} xyz`, two
        // objects back to back): one body is one JSON value, or it is not parsed at all.
        Ok(v) => match de.end() {
            Ok(()) => return Ok(v),
            Err(e) => (String::new(), e),
        },
        Err(e) => (e.path().to_string(), e.into_inner()),
    };
    Err(explain(path, inner))
}

/// True when arrays and objects in `body` nest deeper than `max`. One pass that skips string
/// contents (a bracket in a string is text); the body need not be valid JSON.
fn nested_deeper_than(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // To the closing quote, past escapes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &body[i..]) {
                        None => return false,
                        Some(j) if body[i + j] == b'"' => {
                            i += j;
                            break;
                        }
                        Some(j) => i += j + 2,
                    }
                    if i >= body.len() {
                        return false;
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// A serde error at a JSON path, worded as OpenAI does (`param` is the path).
pub(crate) fn explain(path: String, inner: serde_json::Error) -> RequestError {
    let at = |field: Option<&str>| {
        let base = (path != "." && !path.is_empty()).then_some(path.as_str());
        match (base, field) {
            (Some(p), Some(f)) => Some(format!("{p}.{f}")),
            (None, Some(f)) => Some(f.to_owned()),
            (p, None) => p.map(str::to_owned),
        }
    };
    let text = inner.to_string();
    if inner.is_syntax() || inner.is_eof() {
        // serde_json calls a number too large for any numeric type a syntax error, but it is
        // one field's value: name the field.
        if text.starts_with("number out of range") {
            if let Some(param) = at(None) {
                return RequestError {
                    message: format!("Invalid value for '{param}': number out of range."),
                    param: Some(param),
                    code: None,
                };
            }
        }
        return syntax(inner);
    }
    // A field given twice: which one should win is ambiguous (the engine's parser may keep the
    // other), so it is refused, naming the field.
    if let Some(field) = quoted_field(&text, "duplicate field `") {
        let param = at(Some(field)).unwrap_or_default();
        return RequestError {
            message: format!("Invalid value for '{param}': the field appears more than once."),
            param: Some(param),
            code: None,
        };
    }
    // serde reports a missing field at its parent's path; OpenAI names the field itself.
    if let Some(field) = missing_field(&text) {
        let param = if path == "." || path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return RequestError {
            message: format!("Missing required parameter: '{param}'."),
            param: Some(param),
            code: Some("missing_required_parameter"),
        };
    }
    let message = strip_position(&text);
    let param = (path != "." && !path.is_empty()).then_some(path);
    RequestError {
        message: match &param {
            Some(p) => format!("Invalid value for '{p}': {message}."),
            None => format!("Invalid request body: {message}."),
        },
        param,
        code: None,
    }
}

fn syntax(why: impl std::fmt::Display) -> RequestError {
    RequestError {
        message: format!(
            "We could not parse the JSON body of your request ({why}). \
             The API expects a JSON payload."
        ),
        param: None,
        code: None,
    }
}

fn missing_field(text: &str) -> Option<&str> {
    quoted_field(text, "missing field `")
}

fn quoted_field<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.strip_prefix(prefix)?.split('`').next()
}

/// serde_json appends " at line 1 column 42", which helps nobody reading an API error.
fn strip_position(text: &str) -> &str {
    match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Range checks shared by chat and completions (OpenAI's documented bounds).
pub(crate) fn check_common(
    n: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
) -> Result<(), RequestError> {
    if n == Some(0) {
        return Err(RequestError::invalid(
            "0 is less than the minimum of 1 - 'n'",
            "n",
        ));
    }
    if let Some(t) = temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(RequestError::invalid(
                format!("{t} is not in the range [0, 2] - 'temperature'"),
                "temperature",
            ));
        }
    }
    if let Some(p) = top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(RequestError::invalid(
                format!("{p} is not in the range [0, 1] - 'top_p'"),
                "top_p",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
