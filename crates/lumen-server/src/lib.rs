//! Lumen's server: the composition crate and the API boundary for embedders.
//!
//! It is the only crate that knows HTTP status codes and figment. It wires the pieces together —
//! governance picks the backend, resilience bounds the call, the backend talks to the engine — and
//! exposes them two ways: [`Gateway::core`] (the `lumen_gateway` core with the server's
//! configuration: `chat`, `chat_stream`, ...) for a service that embeds Lumen, and [`serve`] for
//! HTTP, in mini-redis style: the caller owns the listener and the shutdown signal.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults, TOML, `LUMEN_*`, flags) and validation.
//! - [`gateway`]: [`Gateway`] (the core plus shared state and server settings), its builder,
//!   reload and metrics rendering.
//! - `http`: routes, body limits, request ids, the inference pipeline, JSON and SSE responses.
//! - `shared`: keys, limits and the cache on the request path (`Settlement`, `FallbackLimits`).
//! - `admin`: `/admin/*`. [`health`]: `/health/inference` and `/ready`.
//! - `body`: reading request bodies, and the memory budget they share.
//! - [`error`]: [`ApiError`], the single error-to-HTTP mapping; `dialect`: how errors and
//!   stream frames are written in the caller's API (OpenAI's, or Anthropic's on `/v1/messages`).
//! - `discovery`: backends found by DNS (A/AAAA or SRV), re-resolved in the background.
//! - `serve`, `conn`, `h1`, `tls`: the accept loop and graceful shutdown, the socket's
//!   deadlines, Lumen's own HTTP/1.1 server connection (HTTP/2 is hyper's), the TLS acceptor.
//! - `headers`, `path`, [`redact`]: what is read from client headers and paths; secrets in URLs.
//! - `metrics`, `observe`, `access`: Prometheus, the core's observer, the access record.
//! - `otel`: OTLP trace export, spans built from the core's events (the `otel` feature gates
//!   only its exporter, in that file).

mod access;
mod admin;
mod body;
pub mod config;
mod conn;
mod dialect;
mod discovery;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod gateway;
mod h1;
mod headers;
pub mod health;
mod http;
mod metrics;
mod observe;
mod otel;
mod path;
pub mod redact;
mod serve;
mod shared;
mod tls;

pub use config::{LumenConfig, Overrides};
pub use error::ApiError;
pub use gateway::{Gateway, GatewayBuilder, GatewayError, GatewayStream, Upstream};
pub use headers::{CACHE_HEADER, REQUEST_ID, SERVED_MODEL, SESSION_ID, TIMEOUT_MS, TRACEPARENT};
pub use http::{Api, Surface};
/// Log values from clients and engines; `Text::json_logs` where a JSON subscriber is installed.
pub use lumen_gateway::Text;
pub use serve::{bind, serve, serve_admin, serve_api};

/// Body of every response Lumen sends: a full buffer, or an SSE stream.
pub type ResponseBody =
    http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::convert::Infallible>;
