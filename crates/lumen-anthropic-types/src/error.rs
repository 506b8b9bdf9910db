//! Errors in Anthropic's shape: `{"type":"error","error":{"type":...,"message":...}}`.
//!
//! The Anthropic SDKs pick their exception class from the HTTP status and the `error.type`, so
//! both must agree with what Anthropic itself sends for the same failure.

use serde::{Deserialize, Serialize};

/// Anthropic's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    BillingError,
    PermissionError,
    NotFoundError,
    RequestTooLarge,
    RateLimitError,
    ApiError,
    TimeoutError,
    OverloadedError,
}

impl ErrorType {
    /// The type Anthropic uses for an HTTP status. 503 is `overloaded_error` like Anthropic's
    /// own 529: both mean "try again later", which is what the SDKs retry on.
    pub fn from_status(status: u16) -> Self {
        match status {
            401 => Self::AuthenticationError,
            402 => Self::BillingError,
            403 => Self::PermissionError,
            404 => Self::NotFoundError,
            413 => Self::RequestTooLarge,
            429 => Self::RateLimitError,
            503 | 529 => Self::OverloadedError,
            504 => Self::TimeoutError,
            400..=499 => Self::InvalidRequestError,
            _ => Self::ApiError,
        }
    }

    /// The status Anthropic answers with for this type.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequestError => 400,
            Self::AuthenticationError => 401,
            Self::BillingError => 402,
            Self::PermissionError => 403,
            Self::NotFoundError => 404,
            Self::RequestTooLarge => 413,
            Self::RateLimitError => 429,
            Self::ApiError => 500,
            Self::TimeoutError => 504,
            Self::OverloadedError => 529,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequestError => "invalid_request_error",
            Self::AuthenticationError => "authentication_error",
            Self::BillingError => "billing_error",
            Self::PermissionError => "permission_error",
            Self::NotFoundError => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimitError => "rate_limit_error",
            Self::ApiError => "api_error",
            Self::TimeoutError => "timeout_error",
            Self::OverloadedError => "overloaded_error",
        }
    }
}

/// The inner `error` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
}

/// A whole error body, as answered with a non-2xx status or sent as a stream's `error` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always `"error"`.
    #[serde(rename = "type")]
    pub kind: ErrorTag,
    pub error: ErrorObject,
}

/// The constant `"error"` tag (a unit type, so a body of another type fails to parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorTag {
    Error,
}

impl ErrorBody {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorTag::Error,
            error: ErrorObject {
                kind,
                message: message.into(),
            },
        }
    }

    /// The body for a failure Lumen answers with `status` (its own refusals, or an engine's
    /// error status passed on).
    pub fn for_status(status: u16, message: impl Into<String>) -> Self {
        Self::new(ErrorType::from_status(status), message)
    }

    pub fn to_json(&self) -> String {
        // Two enums and a string: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A client mistake in a Messages request: the body is not what the API accepts, or asks for
/// something this deployment cannot do. Always a 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or a field of the wrong type or missing.
    #[error("{message}")]
    Json {
        message: String,
        /// The JSON path of the field, when known (`messages[0].content[1].source`).
        field: Option<String>,
    },
    /// Well-formed but against the API's rules.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A feature the engine behind this model cannot serve (documents, server tools, ...):
    /// refused rather than silently dropped.
    #[error("{field}: {feature} is not supported by this model's engine")]
    Unsupported { field: String, feature: String },
    /// More entries than Lumen accepts in one list.
    #[error("{field}: at most {limit} entries are accepted")]
    TooMany { field: String, limit: usize },
}

impl RequestError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, feature: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            feature: feature.into(),
        }
    }

    /// The field at fault, when known.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Json { field, .. } => field.as_deref(),
            Self::Invalid { field, .. }
            | Self::Unsupported { field, .. }
            | Self::TooMany { field, .. } => Some(field),
        }
    }

    pub fn status(&self) -> u16 {
        400
    }

    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(ErrorType::InvalidRequestError, self.to_string())
    }
}

#[cfg(test)]
mod tests;
