//! Engine-call failures, classified by what the caller may do about them.

use std::fmt;
use std::time::Duration;

use lumen_openai_types::ErrorObject;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which deadline expired. Each kind is its own metric label and client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// TCP (and TLS) connection setup.
    Connect,
    /// Waiting for response headers or, for streams, the first chunk.
    FirstByte,
    /// The gap between two stream chunks.
    Idle,
    /// The whole request.
    Total,
}

impl TimeoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::FirstByte => "first_byte",
            Self::Idle => "idle",
            Self::Total => "total",
        }
    }
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an engine call failed. Retryability is data ([`is_retryable`](Self::is_retryable)),
/// not string matching; the server alone turns these into HTTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The request never reached the engine (refused, DNS, TLS): always safe to retry.
    #[error("could not connect to backend {backend}: {source}")]
    Connect {
        backend: String,
        #[source]
        source: BoxError,
    },
    /// The connection failed after the request was sent but before any response byte.
    #[error("backend {backend} closed the connection before responding: {source}")]
    Transport {
        backend: String,
        #[source]
        source: BoxError,
    },
    #[error("backend timed out ({kind})")]
    Timeout { kind: TimeoutKind },
    /// The engine answered with a non-success status.
    #[error("backend {backend} returned HTTP {status}: {}", error.message)]
    Upstream {
        backend: String,
        status: u16,
        /// Boxed: errors are rare, and a small `BackendError` keeps every `Result` small.
        error: Box<ErrorObject>,
        retry_after: Option<Duration>,
    },
    /// The engine answered 2xx with something that is not a valid OpenAI response.
    #[error("backend {backend} sent an invalid response: {message}")]
    Protocol { backend: String, message: String },
    /// A non-streamed answer over the backend's size cap (declared or while reading): refused
    /// rather than buffered.
    #[error("backend {backend} sent a response larger than {limit} bytes")]
    ResponseTooLarge { backend: String, limit: usize },
    /// A stream failed. Before its first chunk this is retryable like any engine failure; after
    /// it, the gateway never retries (errors after the commit point are reported in-band and
    /// never reach the retry loop).
    #[error("stream from backend {backend} was interrupted: {message}")]
    StreamInterrupted {
        backend: String,
        message: String,
        /// The engine's own error event, when it sent one.
        error: Option<Box<ErrorObject>>,
    },
    /// No capacity to take the request (no backend, overloaded).
    #[error("{reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl BackendError {
    /// True when another attempt (on this or another backend) may succeed. Whether a retry is
    /// *safe* is a matter of phase, not kind: the gateway only ever retries before the first
    /// byte reaches the client.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Transport { .. }
            | Self::Unavailable { .. }
            | Self::StreamInterrupted { .. } => true,
            Self::Timeout { kind } => matches!(kind, TimeoutKind::Connect | TimeoutKind::FirstByte),
            // 529: "overloaded", from Anthropic-style upstreams and some proxies; as 503.
            Self::Upstream { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504 | 529),
            Self::Protocol { .. } | Self::ResponseTooLarge { .. } => false,
        }
    }

    /// True when the failure says the backend itself is unhealthy (it counts against its
    /// circuit breaker). A client error (4xx) or a rate limit means the engine works.
    pub fn is_backend_fault(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Transport { .. }
            | Self::Protocol { .. }
            | Self::ResponseTooLarge { .. }
            | Self::StreamInterrupted { .. } => true,
            Self::Timeout { kind } => !matches!(kind, TimeoutKind::Total),
            Self::Upstream { status, .. } => *status >= 500,
            Self::Unavailable { .. } => false,
        }
    }

    /// True when the engine refused this request as it stands (a 4xx other than a timeout or
    /// a rate limit): the same request would be refused again, by this engine at least.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::Upstream { status, .. } if (400..500).contains(status) && !matches!(status, 408 | 429))
    }

    /// True when the engine refused the request because it is longer than the model's context
    /// (OpenAI's `context_length_exceeded`, or vLLM's and llama.cpp's wordings of it): a model
    /// with a larger context could serve it, the same model never will.
    pub fn is_context_length_exceeded(&self) -> bool {
        let Self::Upstream { status, error, .. } = self else {
            return false;
        };
        if !(400..500).contains(status) {
            return false;
        }
        let message = error.message.to_ascii_lowercase();
        error.code.as_deref() == Some("context_length_exceeded")
            || error.kind == "exceed_context_size_error"
            || message.contains("maximum context length")
            || message.contains("exceeds the available context size")
            || message.contains("context length exceeded")
    }

    /// The engine's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Upstream { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// A low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Transport { .. } => "transport",
            Self::Timeout { kind } => match kind {
                TimeoutKind::Connect => "timeout_connect",
                TimeoutKind::FirstByte => "timeout_first_byte",
                TimeoutKind::Idle => "timeout_idle",
                TimeoutKind::Total => "timeout_total",
            },
            Self::Upstream { status, .. } if *status >= 500 => "upstream_5xx",
            Self::Upstream { .. } => "upstream_4xx",
            Self::Protocol { .. } => "protocol",
            Self::ResponseTooLarge { .. } => "response_too_large",
            Self::StreamInterrupted { .. } => "stream_interrupted",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}
