//! Exact-match response caching: which requests may be cached, and what the key is.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::keys::ApiKey;
use crate::store::{CacheStore, KeyStore, StoreError};

/// Only deterministic requests are cached by default: the same input must give the same output
/// for a cached answer to be the right one.
pub fn is_deterministic(temperature: Option<f64>, seed: Option<i64>) -> bool {
    temperature == Some(0.0) || seed.is_some()
}

/// The cache key: SHA-256 over a namespace (the API key's name, so tenants never share
/// answers), the endpoint, the resolved model and the canonical request bytes.
pub fn cache_key(namespace: &str, endpoint: &str, model: &str, canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [namespace.as_bytes(), endpoint.as_bytes(), model.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(canonical);
    h.finalize().into()
}

/// The embedded default: a bounded in-process cache (moka: size-weighted, TTL, concurrent).
pub struct MemoryCache {
    inner: moka::sync::Cache<[u8; 32], Bytes>,
}

impl MemoryCache {
    /// At most `max_bytes` of answers, each kept at most `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        Self {
            inner: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_k, v: &Bytes| u32::try_from(v.len() + 64).unwrap_or(u32::MAX))
                .time_to_live(ttl)
                .build(),
        }
    }

    /// What the cache holds, as it counts against `max_bytes` (each answer plus 64 bytes).
    /// Applies pending inserts and evictions first, so the figure is current rather than
    /// however far moka's batched bookkeeping has got; cheap enough for a metrics scrape.
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.weighted_size()
    }
}

impl CacheStore for MemoryCache {
    fn get<'a>(&'a self, key: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.inner.get(key))))
    }

    fn put<'a>(
        &'a self,
        key: &'a [u8; 32],
        value: Bytes,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        // A copy of exactly the answer's size: the answer usually arrives as a slice of the
        // engine connection's read buffer, and keeping the slice would keep that whole buffer
        // (measured: 1.8 bytes of memory per byte counted, 41 KB answers).
        self.inner.insert(*key, Bytes::copy_from_slice(&value));
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Run-time API keys in process memory (the default without Redis).
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: Mutex<Vec<ApiKey>>,
}

impl KeyStore for MemoryKeyStore {
    fn find<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<ApiKey>, StoreError>> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let found = keys
            .iter()
            .find(|k| crate::keys::digest_matches(&k.sha256, digest))
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn insert<'a>(&'a self, key: ApiKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = !keys.iter().any(|k| k.name == key.name);
        if fresh {
            keys.push(key);
        }
        Box::pin(std::future::ready(Ok(fresh)))
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let before = keys.len();
        keys.retain(|k| k.name != name);
        Box::pin(std::future::ready(Ok(keys.len() != before)))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ApiKey>, StoreError>> {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(std::future::ready(Ok(keys)))
    }
}

#[cfg(test)]
mod tests;
