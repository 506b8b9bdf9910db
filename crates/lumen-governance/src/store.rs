//! What shared state needs from a store, so the same policy runs on an in-memory map (the
//! embedded default) or on Redis (shared across replicas, in `lumen-redis`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::keys::ApiKey;

/// A store operation that did not complete. The caller decides between fail-open and
/// fail-closed; a store never blocks a request for long (it has its own tight timeout).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("shared-state store timed out")]
    Timeout,
    #[error("shared-state store unavailable: {0}")]
    Unavailable(String),
}

/// Milliseconds since the Unix epoch, injected so tests can drive windows with a paused clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How long a counter lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Set once, when the counter is created: a window that starts at the first hit.
    Window(Duration),
    /// Refreshed on every acquire: a safety net for concurrency counters whose releases could
    /// be lost if a replica dies.
    Lease(Duration),
}

/// One counter to check and charge atomically with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub key: String,
    /// The most the counter may hold after the charge. 0 refuses every charge: absent limits
    /// have no counter at all, so 0 never stands for "unlimited".
    pub limit: u64,
    pub cost: u64,
    pub expiry: Expiry,
}

/// A counter's value after the operation and the time until it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterState {
    pub value: u64,
    pub reset: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every counter fitted and was charged.
    Admitted(Vec<CounterState>),
    /// Counter `index` would exceed its limit; nothing was charged.
    Refused { index: usize, state: CounterState },
}

/// Counters that must be exact across replicas: check all, then charge all, atomically.
pub trait LimitStore: Send + Sync {
    fn acquire<'a>(&'a self, counters: &'a [Counter])
    -> BoxFuture<'a, Result<Verdict, StoreError>>;

    /// Adds `delta` (negative to refund) to counters that still exist; never creates one.
    fn adjust<'a>(&'a self, deltas: &'a [(String, i64)]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Current values, for usage reports (missing counters read as 0).
    fn read<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<CounterState>, StoreError>>;
}

/// Exact-match response cache.
pub trait CacheStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;
    fn put<'a>(
        &'a self,
        key: &'a [u8; 32],
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// API keys created at run time through the admin API.
pub trait KeyStore: Send + Sync {
    fn find<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<ApiKey>, StoreError>>;
    fn insert<'a>(&'a self, key: ApiKey) -> BoxFuture<'a, Result<(), StoreError>>;
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn list(&self) -> BoxFuture<'_, Result<Vec<ApiKey>, StoreError>>;
}
