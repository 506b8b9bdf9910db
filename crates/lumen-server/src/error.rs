//! The one place where errors become HTTP.
//!
//! Every failure a client sees is OpenAI-shaped JSON, `{"error": {"message", "type", "param",
//! "code"}}`, with the status OpenAI's SDKs expect. The same mapping produces the in-band SSE
//! error event once a stream has started. Upstream messages pass through only for the engine's
//! 4xx answers (they describe the client's request); transport details, backend addresses and
//! credentials never reach the client: they are logged instead.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use lumen_backend::{BackendError, TimeoutKind};
use lumen_governance::GovernanceError;
use lumen_governance::limits::{LimitError, RateHeaders};
use lumen_openai_types::{ErrorObject, RequestError};
use lumen_resilience::AdmissionError;

use crate::ResponseBody;
use lumen_gateway::GatewayError;

pub const INVALID_REQUEST: &str = "invalid_request_error";
pub const SERVER_ERROR: &str = "server_error";
pub const RATE_LIMIT: &str = "rate_limit_error";

/// A client-visible failure: status, OpenAI error object and the headers that go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed so `Result<_, ApiError>` stays small on the success path.
    pub error: Box<ErrorObject>,
    pub retry_after: Option<Duration>,
    allow: Option<&'static str>,
    /// `x-ratelimit-*` headers for rate-limit refusals.
    pub rate: Option<RateHeaders>,
    /// The request body was not read to its end (too large, too slow, broken framing): what
    /// follows on the connection cannot be trusted to start a request, so it is closed.
    close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: Box::new(ErrorObject::new(message, kind)),
            retry_after: None,
            allow: None,
            rate: None,
            close: false,
        }
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            INVALID_REQUEST,
            "You didn't provide an API key. Provide it in an Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY).",
        )
        .code("invalid_api_key")
    }

    /// No key on the Messages API, where Anthropic's clients send it as `x-api-key`.
    pub fn missing_anthropic_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            INVALID_REQUEST,
            "x-api-key header is required (or Authorization: Bearer YOUR_KEY).",
        )
        .code("invalid_api_key")
    }

    /// A stored response that does not exist, expired, or belongs to another key (the same
    /// answer for all three, so ids cannot be probed).
    pub fn response_not_found(id: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            format!("Response with id '{id}' not found."),
        );
        e.error.param = Some("response_id".to_owned());
        e
    }

    /// A native response whose engine (the only one that holds it) is gone from the
    /// configuration or discovery, or cannot be reached: its state is there, so no other
    /// engine can read, continue or delete it. A 503: it may come back. Says nothing of which
    /// engine, and is only given to the key that created the response.
    pub fn response_engine_unavailable(id: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            format!(
                "The engine that holds response '{id}' is unavailable (no longer configured, \
                 unreachable, or not serving the model asked for); the response cannot be \
                 read, continued or deleted until it is back."
            ),
        )
        .code("response_engine_unavailable");
        e.error.param = Some("response_id".to_owned());
        e
    }

    pub fn invalid_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            INVALID_REQUEST,
            "Incorrect API key provided.",
        )
        .code("invalid_api_key")
    }

    pub fn shared_state_unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            "The gateway's shared state is unavailable; retry shortly.",
        )
        .code("shared_state_unavailable");
        e.retry_after = Some(Duration::from_secs(1));
        e
    }

    fn code(mut self, code: &str) -> Self {
        self.error.code = Some(code.to_owned());
        self
    }

    pub(crate) fn with_code(self, code: &str) -> Self {
        self.code(code)
    }

    pub(crate) fn with_param(mut self, param: &str) -> Self {
        self.error.param = Some(param.to_owned());
        self
    }

    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            format!("Invalid URL ({method} {path})"),
        )
        .code("unknown_url")
    }

    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_REQUEST,
            format!("Method {method} is not allowed for {path}; use {allow}."),
        )
        .code("method_not_allowed");
        e.allow = Some(allow);
        e
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            format!("Request body is larger than the {limit}-byte limit."),
        )
        .code("request_too_large")
        .closing()
    }

    pub fn shutting_down() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            "The gateway is shutting down and ended this stream before the answer was complete; retry the request.",
        )
        .code("server_shutting_down");
        e.retry_after = Some(Duration::from_secs(1));
        e
    }

    pub fn body_timeout(limit: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            INVALID_REQUEST,
            format!(
                "The request body did not arrive within {} ms.",
                limit.as_millis()
            ),
        )
        .code("request_timeout")
        .closing()
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            "Request bodies must be JSON: send 'Content-Type: application/json'.",
        )
        .code("unsupported_media_type")
    }

    pub fn unsupported_encoding(header: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            format!("{header} is not supported: send the JSON body uncompressed."),
        )
        .code("unsupported_encoding")
    }

    pub fn invalid_header(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            format!("Invalid {name} header: expected a positive integer."),
        )
        .code("invalid_header")
    }

    pub fn unreadable_body() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "The request body could not be read (broken chunked framing or connection).",
        )
        .closing()
    }

    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .code("model_not_found");
        e.error.param = Some("model".to_owned());
        e
    }

    /// The JSON body alone (also the payload of the in-band SSE error event).
    pub fn body_json(&self) -> Bytes {
        let body = (*self.error).clone().into_body();
        Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#.to_vec()
        }))
    }

    pub fn into_response(self, request_id: &HeaderValue) -> Response<ResponseBody> {
        self.into_response_in(crate::dialect::Dialect::OpenAi, request_id)
    }

    /// The response, with the body in the caller's API dialect.
    pub(crate) fn into_response_in(
        self,
        dialect: crate::dialect::Dialect,
        request_id: &HeaderValue,
    ) -> Response<ResponseBody> {
        let mut resp = Response::new(full(dialect.error_body(&self)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(crate::headers::REQUEST_ID, request_id.clone());
        if let Some(after) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        if let Some(allow) = self.allow {
            h.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(rate) = &self.rate {
            rate_headers(h, rate);
        }
        if self.close {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The whole HTTP/1.1 answer, as bytes, to a request hyper could not parse (status 400, 414
/// or 431), or whose head did not arrive in time (408); see `conn.rs`. No request was read, so
/// it carries a fresh request id and closes the connection.
pub(crate) fn unparsable_request(status: u16) -> Vec<u8> {
    let (status, message, code) = match status {
        408 => (
            StatusCode::REQUEST_TIMEOUT,
            "The request headers did not arrive in time.",
            "request_timeout",
        ),
        414 => (
            StatusCode::URI_TOO_LONG,
            "The request URL is too long.",
            "url_too_long",
        ),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "The request line and headers are too long, or there are too many headers.",
            "request_headers_too_large",
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "The request is not valid HTTP/1.1 (malformed request line, header or framing).",
            "invalid_http_request",
        ),
    };
    raw_answer(status, message, code)
}

/// The whole HTTP/1.1 answer, as bytes, to plain HTTP sent to the TLS port (see `tls.rs`):
/// 400 in Lumen's JSON, as nginx and others answer, rather than a TLS alert a person cannot
/// read. No request was parsed, so it carries a fresh request id and closes the connection.
pub(crate) fn plain_http_on_tls_port() -> Vec<u8> {
    raw_answer(
        StatusCode::BAD_REQUEST,
        "This port serves HTTPS, and the request was sent as plain HTTP: use an https:// URL.",
        "https_required",
    )
}

/// An answer written on the socket directly, before hyper reads a request.
fn raw_answer(status: StatusCode, message: &str, code: &str) -> Vec<u8> {
    let body = ApiError::new(status, INVALID_REQUEST, message)
        .code(code)
        .body_json();
    let mut id = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut id);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}: {id}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        crate::headers::REQUEST_ID,
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.
pub fn rate_headers(h: &mut http::HeaderMap, rate: &RateHeaders) {
    use http::HeaderName;
    // Static names and integer values: this runs on every admitted request with a limited key.
    const NAMES: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ];
    for (names, v) in NAMES.into_iter().zip([rate.requests, rate.tokens]) {
        if let Some((limit, remaining, reset)) = v {
            let [limit_name, remaining_name, reset_name] = names;
            h.insert(limit_name, decimal(limit, ""));
            h.insert(remaining_name, decimal(remaining, ""));
            h.insert(reset_name, decimal(reset.as_secs_f64().ceil() as u64, "s"));
        }
    }
}

/// `n` in decimal plus a unit, through `itoa` rather than `HeaderValue::from(u64)`, which goes
/// through `fmt`: six of these are written on every rate-limited response.
fn decimal(n: u64, unit: &str) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    let mut buf = [0u8; 32];
    let end = digits.len() + unit.len().min(8);
    buf[..digits.len()].copy_from_slice(digits.as_bytes());
    buf[digits.len()..end].copy_from_slice(&unit.as_bytes()[..end - digits.len()]);
    HeaderValue::from_bytes(&buf[..end]).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::RateLimited {
                retry_after,
                ref headers,
                ..
            } => {
                let mut out = Self::new(StatusCode::TOO_MANY_REQUESTS, RATE_LIMIT, e.to_string())
                    .code("rate_limit_exceeded");
                out.retry_after = Some(retry_after);
                out.rate = Some(headers.clone());
                out
            }
            LimitError::QuotaExceeded { retry_after, .. } => {
                let mut out = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "insufficient_quota",
                    e.to_string(),
                )
                .code("insufficient_quota");
                out.retry_after = Some(retry_after);
                out
            }
            // No Retry-After: waiting does not lift a suspension.
            LimitError::Suspended { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, RATE_LIMIT, e.to_string())
                    .code("rate_limit_exceeded")
            }
            LimitError::Store(_) => Self::shared_state_unavailable(),
        }
    }
}

impl From<lumen_anthropic_types::RequestError> for ApiError {
    fn from(e: lumen_anthropic_types::RequestError) -> Self {
        let mut out = Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, e.to_string());
        if let Some(field) = e.field() {
            out.error.param = Some(field.to_owned());
        }
        out
    }
}

impl From<lumen_openai_types::responses::ItemsQueryError> for ApiError {
    fn from(e: lumen_openai_types::responses::ItemsQueryError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, e.to_string()).with_param(e.param())
    }
}

impl From<lumen_gateway::ServeError> for ApiError {
    fn from(e: lumen_gateway::ServeError) -> Self {
        use lumen_gateway::ServeError;
        match e {
            ServeError::Policy(e) => e.into(),
            ServeError::Gateway(e) => e.into(),
            ServeError::Encode(e) => {
                tracing::error!(error = %e, "response serialisation failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    SERVER_ERROR,
                    "internal error",
                )
            }
        }
    }
}

impl From<lumen_gateway::PolicyError> for ApiError {
    fn from(e: lumen_gateway::PolicyError) -> Self {
        use lumen_gateway::PolicyError;
        match e {
            PolicyError::MissingKey => Self::missing_key(),
            PolicyError::InvalidKey => Self::invalid_key(),
            PolicyError::Unavailable => Self::shared_state_unavailable(),
            PolicyError::Limited(e) => e.into(),
        }
    }
}

impl From<crate::body::BodyError> for ApiError {
    fn from(e: crate::body::BodyError) -> Self {
        use crate::body::BodyError;
        match e {
            BodyError::TooLarge { limit } => Self::body_too_large(limit),
            BodyError::Timeout(limit) => Self::body_timeout(limit),
            BodyError::Unreadable => Self::unreadable_body(),
            // The body was not read, so the connection closes; the next try may find room.
            BodyError::OverBudget { .. } => {
                let mut out = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVER_ERROR,
                    "The gateway is reading as many request bodies as its memory budget allows; retry shortly.",
                )
                .code("body_budget_exhausted")
                .closing();
                out.retry_after = Some(Duration::from_secs(1));
                out
            }
            BodyError::Refused => Self::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "The request body was refused while it was read.",
            )
            .closing(),
        }
    }
}

/// A form Lumen cannot route (the audio endpoints): 400, the field named when one is to
/// blame. The connection closes, as the body may be unread.
impl From<lumen_openai_types::multipart::FormError> for ApiError {
    fn from(e: lumen_openai_types::multipart::FormError) -> Self {
        let mut out = Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, e.to_string()).closing();
        if let Some(p) = e.param() {
            out = out.with_param(p);
        }
        out
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let mut out = Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, e.message);
        out.error.param = e.param;
        out.error.code = e.code.map(str::to_owned);
        out
    }
}

impl From<GovernanceError> for ApiError {
    fn from(e: GovernanceError) -> Self {
        match e {
            GovernanceError::ModelNotFound { model } => Self::model_not_found(&model),
            GovernanceError::ModelRequired => {
                let mut out = Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, e.to_string())
                    .code("missing_required_parameter");
                out.error.param = Some("model".to_owned());
                out
            }
            GovernanceError::DefaultModelNotAllowed => {
                let mut out = Self::new(StatusCode::NOT_FOUND, INVALID_REQUEST, e.to_string())
                    .code("model_not_found");
                out.error.param = Some("model".to_owned());
                out
            }
            GovernanceError::ModelNotReady { .. } => {
                let mut out =
                    Self::new(StatusCode::SERVICE_UNAVAILABLE, SERVER_ERROR, e.to_string())
                        .code("model_not_ready");
                out.retry_after = Some(Duration::from_secs(2));
                out
            }
            GovernanceError::NoHealthyBackend { .. } => {
                let mut out =
                    Self::new(StatusCode::SERVICE_UNAVAILABLE, SERVER_ERROR, e.to_string())
                        .code("no_healthy_backend");
                out.retry_after = Some(Duration::from_secs(1));
                out
            }
            other => Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, other.to_string()),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let retry_after = e.retry_after();
        let mut out = match e {
            BackendError::Upstream { status, error, .. } => upstream(status, *error),
            BackendError::Timeout { kind } => {
                let what = match kind {
                    TimeoutKind::Connect => "connecting to the inference backend",
                    TimeoutKind::FirstByte => "waiting for the first token",
                    TimeoutKind::Idle => "waiting for the next token",
                    TimeoutKind::Total => "waiting for the response",
                };
                Self::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    SERVER_ERROR,
                    format!("Timed out {what}."),
                )
                .code("timeout")
            }
            BackendError::Connect { .. } | BackendError::Transport { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                SERVER_ERROR,
                "The inference backend could not be reached.",
            )
            .code("upstream_unreachable"),
            BackendError::Protocol { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                SERVER_ERROR,
                "The inference backend sent an invalid response.",
            )
            .code("upstream_invalid_response"),
            BackendError::ResponseTooLarge { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                SERVER_ERROR,
                "The inference backend sent a response larger than the gateway accepts.",
            )
            .code("upstream_response_too_large"),
            BackendError::StreamInterrupted { error, .. } => {
                let detail = error
                    .map(|e| format!(": {}", e.message))
                    .unwrap_or_default();
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    SERVER_ERROR,
                    format!("The stream from the inference backend was interrupted{detail}"),
                )
                .code("stream_interrupted")
            }
            BackendError::Unavailable { reason, .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, SERVER_ERROR, reason).code("unavailable")
            }
            other => Self::new(StatusCode::BAD_GATEWAY, SERVER_ERROR, other.to_string()),
        };
        out.retry_after = retry_after.or(out.retry_after);
        out
    }
}

/// An engine's non-success answer. Client errors keep the engine's message and `param`; the
/// engine's own credential or server failures are the gateway's problem, not the client's.
fn upstream(status: u16, error: ErrorObject) -> ApiError {
    let code = error.code.clone().filter(|c| c.parse::<u16>().is_err());
    match status {
        401 | 403 => ApiError::new(
            StatusCode::BAD_GATEWAY,
            SERVER_ERROR,
            "The inference backend rejected the gateway's credentials.",
        )
        .code("upstream_auth"),
        429 => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, RATE_LIMIT, error.message);
            e.error.code = code.or_else(|| Some("rate_limit_exceeded".to_owned()));
            e
        }
        400..=499 => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let kind = match error.kind.as_str() {
                "invalid_request_error" | "not_found_error" | "permission_error" => {
                    error.kind.clone()
                }
                _ => INVALID_REQUEST.to_owned(),
            };
            let mut e = ApiError::new(status, &kind, error.message);
            e.error.param = error.param;
            e.error.code = code;
            e
        }
        // 529: an upstream's "overloaded" (Anthropic's dialect): to an OpenAI client, a 503.
        503 | 529 => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            "The inference backend is overloaded or not ready.",
        )
        .code("upstream_unavailable"),
        504 => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            SERVER_ERROR,
            "The inference backend timed out.",
        )
        .code("timeout"),
        _ => ApiError::new(
            StatusCode::BAD_GATEWAY,
            SERVER_ERROR,
            format!("The inference backend failed (HTTP {status})."),
        )
        .code("upstream_error"),
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Governance(g) => g.into(),
            GatewayError::Backend(b) => b.into(),
            // Only calls bound to one backend name it; the caller words the error for what it
            // wanted from there (`response_engine_unavailable`).
            GatewayError::BackendGone { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVER_ERROR,
                "The engine this request needs is no longer configured.",
            )
            .code("engine_unavailable"),
            GatewayError::Admission(a) => {
                let retry_after = Some(a.retry_after());
                let mut out = match a {
                    AdmissionError::QueueFull { .. } => Self::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        RATE_LIMIT,
                        "The gateway is at capacity and its queue is full; retry shortly.",
                    )
                    .code("queue_full"),
                    AdmissionError::QueueTimeout { .. } => Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        SERVER_ERROR,
                        "Timed out waiting for capacity; retry shortly.",
                    )
                    .code("queue_timeout"),
                };
                out.retry_after = retry_after;
                out
            }
        }
    }
}

#[cfg(test)]
mod tests;

impl From<crate::headers::InvalidHeader> for ApiError {
    fn from(e: crate::headers::InvalidHeader) -> Self {
        Self::invalid_header(e.0)
    }
}
