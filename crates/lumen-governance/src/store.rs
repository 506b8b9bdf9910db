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
    /// Concurrency: each admitted request holds its own slot (keyed by its [`Ticket`]) that
    /// expires this long after admission or its last renewal, so a slot whose release is lost
    /// (a replica died, the store was unreachable) frees itself; a live request renews it.
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

/// One request's identity in the store. Its leases are its own slots, and a charge that lands
/// after the caller stopped waiting for it can be recognised and undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Unique across replicas: a process-random prefix and a sequence number.
    pub id: String,
    /// Where a store keeps the request's state, next to the API key's counters (same Redis
    /// Cluster slot).
    pub key: String,
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
    /// Checks and charges `counters` for the request `ticket`. When this returns an error the
    /// caller admits or refuses without a reservation, so the store must make sure that the
    /// charge never counts: a remote store whose operation timed out undoes it if it was (or
    /// is later) applied.
    fn acquire<'a>(
        &'a self,
        ticket: &'a Ticket,
        counters: &'a [Counter],
    ) -> BoxFuture<'a, Result<Verdict, StoreError>>;

    /// Ends the request: adds `deltas` (negative to refund) to window counters that still
    /// exist (never creates one) and frees the ticket's slot in each of `leases`.
    fn settle<'a>(
        &'a self,
        ticket: &'a Ticket,
        deltas: &'a [(String, i64)],
        leases: &'a [String],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// [`LimitStore::settle`] for a caller that does not wait for it: `true` when the store
    /// queued the settlement to write it by itself (and report its failure itself), so a
    /// request's way out needs no task of its own; `false` (the default, and a full queue):
    /// nothing was done, call `settle`.
    fn try_queue_settle(
        &self,
        _ticket: &Ticket,
        _deltas: &[(String, i64)],
        _leases: &[String],
    ) -> bool {
        false
    }

    /// Extends the ticket's slots in `leases` by `lease` from now. A slot that already expired
    /// or was freed stays free.
    fn renew<'a>(
        &'a self,
        ticket: &'a Ticket,
        leases: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Current values, for usage reports (missing counters read as 0; a lease counter reads
    /// as its live slots).
    fn read<'a>(
        &'a self,
        counters: &'a [Counter],
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
    /// Adds a key unless one with the same name exists (`Ok(false)`): a name is taken once, so
    /// a second create cannot silently replace a key and drop its restrictions.
    fn insert<'a>(&'a self, key: ApiKey) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn list(&self) -> BoxFuture<'_, Result<Vec<ApiKey>, StoreError>>;
}
