//! Model governance and routing.
//!
//! Decides which model ids a caller may use and which backend serves each request: the exposed
//! allowlist, the default model, `auto`, aliases, unknown-id passthrough, and seven balancing
//! policies inside a model's pool (two of them on the engines' own load reports). It is plain Rust over a generic backend handle `B`, so it
//! needs no HTTP stack and no backend crate, and an embedder can use it with their own handle.
//!
//! The routing table is immutable and swapped atomically ([`arc_swap`]): discovery and config
//! reload build a new table while requests in flight keep the one they started with. Backends
//! live in [`Slot`]s that survive swaps, so in-flight counts stay exact across them. Each
//! decision returns a [`Lease`] that counts the request as in flight until it is dropped (at the
//! end of the response or stream, on error, or on cancellation).
//!
//! # Layout
//! - `config`: [`GovernanceConfig`], [`Policy`], validation; [`AuthConfig`], [`LimitsConfig`],
//!   [`CacheConfig`] for the core's policy step (keys, limits, cache).
//! - `router`: [`Router`], [`RouteRequest`], [`Route`], [`Slot`], [`Lease`].
//! - `policy`: the balancing algorithms.
//! - `hash`: stable hashes for affinity, and the streaming hash prompts are read with.
//! - `prefix`: [`PromptHasher`] / [`PromptKey`]: a prompt's block chain hashes and keys.
//! - `index`: the memory-bounded index of which backend holds which prefix (`cache_aware`).
//! - [`load`]: engine load reports, the estimate decisions read, expected wait, saturation.
//! - [`keys`]: API keys (SHA-256 digests, constant-time comparison, model access).
//! - [`limits`]: RPM / TPM / concurrency / daily and monthly token quotas, reserve then settle.
//! - [`cache`]: the exact-match cache rules and key.
//! - [`store`]: the storage traits, implemented in memory here and on Redis in `lumen-redis`.
//! - [`accounting`]: usage per key, model and day ([`accounting::UsageStore`]), CSV, prices.
//!
//! # Must not depend on
//! hyper, the resilience crate, or any backend crate.

pub mod accounting;
pub mod auth;
pub mod cache;
mod config;
mod hash;
mod index;
pub mod keys;
pub mod limits;
pub mod load;
mod policy;
mod prefix;
mod router;
mod spec;
pub mod store;

pub use config::{
    AuthConfig, AutoConfig, CacheAwareConfig, CacheConfig, DEFAULT_CACHE_MAX_BYTES,
    GovernanceConfig, InvalidConfig, LimitsConfig, ModelConfig, PassthroughConfig, Policy,
    SignalsConfig,
};
pub use prefix::{PromptHasher, PromptKey};
pub use router::{BackendSpec, Lease, Route, RouteRequest, Router, Slot};

/// The pseudo-model that picks among exposed models by preference.
pub const AUTO: &str = "auto";

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceError {
    #[error("The model `{model}` does not exist or you do not have access to it.")]
    ModelNotFound { model: String },
    #[error("you must provide a model parameter")]
    ModelRequired,
    /// The request left `model` blank and the caller may not use the default model. The
    /// message does not name the default: the caller is not allowed to learn it.
    #[error(
        "No model was given and the default model is not available to this key; name one of the key's models."
    )]
    DefaultModelNotAllowed,
    /// The model is known (an engine reported it, or the configuration names it while an
    /// engine has not answered discovery yet) but no backend serves it right now: retry.
    #[error(
        "The model `{model}` is not available right now; its engines are starting or down. Retry shortly."
    )]
    ModelNotReady { model: String },
    /// Every backend that could serve the model is unavailable (ejected or breaker open).
    #[error("no healthy backend is available for model `{model}`")]
    NoHealthyBackend { model: String },
}
