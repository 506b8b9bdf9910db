//! `[server.http2]`: HTTP/2 from clients (h2c with prior knowledge, and ALPN `h2` over TLS).
//!
//! Ingresses, Envoy and service meshes speak HTTP/2 to their upstreams, many requests on one
//! connection. What bounds such a connection is HTTP/2's own machinery: the streams it may open
//! at once, its flow-control windows (`serve.rs` sizes them), and keep-alive pings that end a
//! connection whose client has stopped reading altogether. The request deadlines and limits are
//! the same as over HTTP/1.1 (`docs/deploy.md`, HTTP/2).

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http2Config {
    /// Serve HTTP/2 as well as HTTP/1.1 (off: HTTP/1.1 only, as before it existed).
    pub enabled: bool,
    /// Streams a client may have open at once on one connection (HTTP/2's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`); a stream beyond it is refused by the protocol, so a
    /// client waits for one to end instead. Admission still decides what runs: a stream it
    /// refuses gets 429 or 503 like any request.
    pub max_concurrent_streams: u32,
    /// How often a ping checks that the client still reads (0: never). A client that has
    /// stopped reading cannot answer, so its connection, streams and their slots end after
    /// [`keep_alive_timeout_ms`](Self::keep_alive_timeout_ms) more.
    pub keep_alive_interval_ms: u64,
    /// How long the answer to a ping may take before the connection is closed.
    pub keep_alive_timeout_ms: u64,
}

/// Envoy and ingresses multiplex their traffic over few connections: a thousand streams on one
/// is an ordinary load, so the default leaves room above it (hyper's own default is 200).
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 1_024;

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            keep_alive_interval_ms: 20_000,
            keep_alive_timeout_ms: 20_000,
        }
    }
}

impl Http2Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::invalid(
                "server.http2.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if self.keep_alive_interval_ms > 0 && self.keep_alive_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.http2.keep_alive_timeout_ms",
                "must be greater than 0 while pings are on (keep_alive_interval_ms > 0)",
            ));
        }
        Ok(())
    }
}
