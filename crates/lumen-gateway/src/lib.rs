//! `lumen-gateway`: Lumen's routing and retry core, without an HTTP server.
//!
//! A Rust service embeds this crate to get what Lumen's server does between parsing a request
//! and writing the answer: resolve the model once (blank, `auto`, alias, passthrough), admit
//! it (a global cap with a FIFO queue), route it (governance's policies, skipping backends
//! already tried, ejected or breaker-open), call the engine under deadlines, retry what is
//! retryable before the commit point (backoff, `Retry-After`, a retry budget, the total
//! deadline), and relay a committed stream with its usage. Backends are anything that
//! implements `lumen_backend::Backend`.
//!
//! # Layout
//! - [`Gateway`] and [`GatewayBuilder`] (`gateway.rs`): the attempt loop, discovery and the
//!   health checker's loop.
//! - [`Gateway::serve`] and its types (`pipeline.rs`: [`Call`], [`Served`], [`ServeError`]):
//!   the whole chain for one request; [`operation`]: the operations it serves.
//! - [`GatewayStream`] (`stream.rs`): a committed stream; holds its lease and permits.
//! - [`GatewayError`] (`error.rs`): typed, with `is_retryable`; the caller maps it.
//! - [`Observer`] (`observer.rs`): events for metrics and access logs.
//! - [`Upstream`], [`Probe`] (`upstream.rs`); [`HealthConfig`], [`HealthBook`] (`health.rs`).
//! - [`signals`]: the engines' load reports — a sans-IO parser of their `/metrics` (vLLM,
//!   SGLang, llama.cpp names) and the scrape round behind `Gateway::run_signals`.
//! - [`policy`]: keys, limits and the cache ([`PolicyStep`]), the reservation a request holds
//!   until it settles ([`Settlement`]).
//! - `prompt.rs`: a request's prompt as `cache_aware` reads it (engine order, session hint).
//!
//! # Must not depend on
//! hyper, figment, redis, rustls or prometheus-client (a test reads `cargo tree` to hold it).

mod answered;
mod decide;
mod engine_events;
mod error;
mod gateway;
mod health;
pub mod messages;
mod observer;
pub mod operation;
mod pipeline;
pub mod policy;
mod prompt;
pub mod responses;
pub mod signals;
mod stream;
mod text;
mod upstream;

pub use error::GatewayError;
pub use gateway::{Gateway, GatewayBuilder, InvalidCore, Settings};
pub use health::{CheckState, HealthBook, HealthConfig, Tracker};
pub use observer::{Event, NoopObserver, Observer};
pub use operation::Operation;
pub use pipeline::{Answer, Call, ServeError, Served};
pub use policy::{
    NativeResponseHome, PolicyError, PolicySettings, PolicyStep, PolicyStores, Settlement,
    StoredResponse, forwardable_id,
};
pub use stream::GatewayStream;
pub use text::Text;
pub use upstream::{ModelBreakers, Probe, Upstream};

pub use lumen_resilience::config as resilience_config;
