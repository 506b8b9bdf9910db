//! Authentication: a presented secret becomes the caller's key (its models and limits), from
//! the configured keys or the run-time key store. Transport-free: the server extracts the
//! bearer token and maps [`AuthError`] to HTTP.

use std::sync::Arc;

use crate::keys::{ApiKey, KeyRing, digest};
use crate::store::{KeyStore, StoreError};

/// Why a secret does not name a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no key was presented")]
    Missing,
    #[error("the key is not valid")]
    Invalid,
    /// The run-time key store could not be asked. Never treated as fail-open: availability
    /// does not outrank authentication.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key `secret` names: configured keys first (in memory, constant-time digest match), then
/// the run-time store.
pub async fn authorize(
    ring: &KeyRing,
    store: &dyn KeyStore,
    secret: Option<&str>,
) -> Result<Arc<ApiKey>, AuthError> {
    let secret = secret.ok_or(AuthError::Missing)?;
    if let Some(k) = ring.lookup(secret) {
        return Ok(k);
    }
    match store.find(&digest(secret)).await? {
        Some(k) => Ok(Arc::new(k)),
        None => Err(AuthError::Invalid),
    }
}

#[cfg(test)]
mod tests;
