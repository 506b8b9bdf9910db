//! Where the core's policy step keeps its state: on Redis when `redis.url` is set (every
//! replica sees the same keys, counters and cache), else in this process. Redis trouble never
//! hangs a request: every operation has a tight deadline, and the outcome is fail-open (the
//! default) or fail-closed (`redis.fail_closed`), counted in metrics by the observer.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use lumen_gateway::PolicyStores;
use lumen_gateway::policy::clock;
use lumen_governance::accounting::MemoryUsageStore;
use lumen_governance::cache::MemoryCache;
use lumen_governance::keys::digest;
use lumen_governance::limits::Limiter;
use lumen_governance::store::LimitStore;
use lumen_redis::{RedisState, RedisUsageStore};
use subtle::ConstantTimeEq;

use crate::config::{AccountingConfig, CacheConfig, ConfigError, RedisConfig};

/// The stores, created once per gateway (they keep their counters across reloads).
pub(crate) struct Stores {
    pub policy: PolicyStores,
    pub redis: Option<Arc<RedisState>>,
    /// The cache again when it is in memory, for its size in `/metrics`.
    pub memory_cache: Option<Arc<MemoryCache>>,
}

impl Stores {
    pub fn new(
        redis: &RedisConfig,
        cache: &CacheConfig,
        accounting: &AccountingConfig,
    ) -> Result<Self, ConfigError> {
        match &redis.url {
            Some(url) => {
                let state = RedisState::new(
                    url.expose(),
                    Duration::from_millis(redis.timeout_ms),
                    Duration::from_millis(redis.key_cache_ms),
                )
                .map_err(|e| ConfigError::invalid("redis.url", e.to_string()))?;
                let state = Arc::new(state);
                let clock = clock();
                Ok(Self {
                    policy: PolicyStores {
                        limiter: Limiter::new(state.clone() as Arc<dyn LimitStore>, clock.clone())
                            .with_leases(redis.lease),
                        cache: state.clone(),
                        keys: state.clone(),
                        usage: Arc::new(RedisUsageStore::new(
                            state.clone(),
                            accounting.retention_days,
                        )),
                        clock,
                    },
                    redis: Some(state),
                    memory_cache: None,
                })
            }
            None => {
                let (mut policy, memory) = PolicyStores::in_memory(cache);
                policy.usage = Arc::new(MemoryUsageStore::new(
                    policy.clock.clone(),
                    accounting.bounds(),
                ));
                Ok(Self {
                    policy,
                    redis: None,
                    memory_cache: Some(memory),
                })
            }
        }
    }
}

/// True when the presented bearer matches the admin key's digest (constant time); `None` when
/// no admin key is configured (the admin API is off).
pub(crate) fn is_admin(headers: &HeaderMap, admin_digest: Option<[u8; 32]>) -> Option<bool> {
    let want = admin_digest?;
    Some(crate::headers::bearer(headers).is_some_and(|s| bool::from(digest(s).ct_eq(&want))))
}
