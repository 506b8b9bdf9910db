//! Shared state on the request path: API keys, limits and the response cache, in memory or on
//! Redis. Redis trouble never hangs a request: every operation has a tight deadline, and the
//! outcome is fail-open (the default) or fail-closed (`redis.fail_closed`), counted in metrics.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use lumen_governance::auth::{AuthError, authorize};
use lumen_governance::cache::{MemoryCache, MemoryKeyStore, cache_key, is_deterministic};
use lumen_governance::keys::{ApiKey, KeyRing, digest, parse_hex};
use lumen_governance::limits::{LimitError, Limiter, MemoryLimitStore, RateHeaders, Reservation};
use lumen_governance::store::{CacheStore, Clock, KeyStore, LimitStore, StoreError};
use lumen_redis::RedisState;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::config::{CacheConfig, ConfigError, LimitsConfig, RedisConfig};
use crate::error::ApiError;
use crate::metrics::{Metrics, OpLabel, ResultLabel};

/// The stores, created once per gateway (they keep their counters across reloads).
pub(crate) struct Stores {
    pub limiter: Limiter,
    pub cache: Arc<dyn CacheStore>,
    pub keys: Arc<dyn KeyStore>,
    pub redis: Option<Arc<RedisState>>,
    /// The cache again when it is in memory, for its size in `/metrics`.
    pub memory_cache: Option<Arc<MemoryCache>>,
}

/// Milliseconds since the epoch on the Tokio clock (so a paused test clock moves windows too).
fn clock() -> Clock {
    let base_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let base = Instant::now();
    Arc::new(move || base_ms + base.elapsed().as_millis() as u64)
}

impl Stores {
    pub fn new(redis: &RedisConfig, cache: &CacheConfig) -> Result<Self, ConfigError> {
        let clock = clock();
        match &redis.url {
            Some(url) => {
                let state = RedisState::new(
                    url.expose(),
                    Duration::from_millis(redis.timeout_ms),
                    Duration::from_millis(redis.key_cache_ms),
                )
                .map_err(|e| ConfigError::invalid("redis.url", e.to_string()))?;
                let state = Arc::new(state);
                Ok(Self {
                    limiter: Limiter::new(state.clone() as Arc<dyn LimitStore>, clock),
                    cache: state.clone(),
                    keys: state.clone(),
                    redis: Some(state),
                    memory_cache: None,
                })
            }
            None => {
                let memory = Arc::new(MemoryCache::new(
                    cache.max_bytes,
                    Duration::from_millis(cache.ttl_ms),
                ));
                Ok(Self {
                    limiter: Limiter::new(Arc::new(MemoryLimitStore::new(clock.clone())), clock),
                    cache: memory.clone(),
                    keys: Arc::new(MemoryKeyStore::default()),
                    redis: None,
                    memory_cache: Some(memory),
                })
            }
        }
    }
}

/// Reloadable shared-state settings.
#[derive(Debug, Clone)]
pub(crate) struct SharedSettings {
    pub auth_enabled: bool,
    pub ring: Arc<KeyRing>,
    pub keys: Vec<ApiKey>,
    pub admin_digest: Option<[u8; 32]>,
    pub limits: LimitsConfig,
    pub cache: CacheConfig,
    pub fail_closed: bool,
    pub redis_required: bool,
}

impl SharedSettings {
    pub fn new(
        auth: &crate::config::AuthConfig,
        limits: &LimitsConfig,
        cache: &CacheConfig,
        redis: &RedisConfig,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            auth_enabled: auth.enabled,
            ring: Arc::new(
                KeyRing::new(&auth.keys).map_err(|e| ConfigError::invalid(e.key, e.reason))?,
            ),
            keys: auth.keys.clone(),
            admin_digest: auth.admin_key_sha256.as_deref().and_then(parse_hex),
            limits: limits.clone(),
            cache: cache.clone(),
            fail_closed: redis.fail_closed,
            redis_required: redis.required && redis.url.is_some(),
        })
    }
}

/// The caller's key, when auth is on.
pub(crate) type Principal = Option<Arc<ApiKey>>;

/// Releases concurrency and replaces the token estimate with real usage when dropped, on every
/// path out of a request: success, error, or the client going away. Until then it renews the
/// request's concurrency slots, which otherwise expire (so a lost release cannot hold a slot).
pub(crate) struct Settlement {
    limiter: Limiter,
    reservation: Reservation,
    /// What was reserved.
    estimate: u64,
    /// Real (input + output) tokens, once known. `None` keeps the estimate.
    pub tokens: Option<u64>,
    /// The least a request whose usage never arrived is charged (a stream: the prompt
    /// estimate plus the output it relayed), when more than the estimate. See [`charge`].
    pub floor: Option<u64>,
    metrics: Arc<Metrics>,
    renewal: Option<tokio::task::AbortHandle>,
    /// Set by [`FallbackLimits`] when a fallback model took the request over.
    moved: Moved,
}

/// A fallback model's hold on a request: `Some` once the request moved to another model, with
/// that model's own reservation (`None` inside when the key has no limits there).
type Moved = Arc<Mutex<Option<Option<Settlement>>>>;

/// What a request is charged when it settles: the engine's usage when it arrived; otherwise
/// its reservation, or what it is known to have used when that is more (`None` keeps the
/// reservation). A stream the client cut off, or whose engine never sent usage, can so never
/// cost less than what it relayed, nor less than it reserved.
pub(crate) fn charge(usage: Option<u64>, floor: Option<u64>, estimate: u64) -> Option<u64> {
    usage.or(floor.filter(|f| *f > estimate))
}

impl Settlement {
    fn new(
        limiter: Limiter,
        reservation: Reservation,
        estimate: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let renewal = reservation.has_leases().then(|| {
            let (limiter, reservation, metrics) =
                (limiter.clone(), reservation.clone(), metrics.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Limiter::RENEW_EVERY).await;
                    if let Err(e) = limiter.renew(&reservation).await {
                        store_error(&metrics, "renew", &e);
                    }
                }
            })
            .abort_handle()
        });
        Self {
            limiter,
            reservation,
            estimate,
            tokens: None,
            floor: None,
            metrics,
            renewal,
            moved: Moved::default(),
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        let tokens = charge(self.tokens, self.floor, self.estimate);
        // A fallback served: the tokens are that model's (its reservation settles them), and
        // the model admitted at the door gets its per-model estimate back. The key's own
        // counters settle the same tokens either way.
        let moved = self
            .moved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(fallback) = moved {
            self.reservation.mark_moved();
            if let Some(mut f) = fallback {
                f.tokens = tokens;
            }
        }
        if !self.reservation.needs_settling(tokens) {
            return;
        }
        let limiter = self.limiter.clone();
        let reservation = std::mem::replace(&mut self.reservation, Reservation::none());
        let metrics = self.metrics.clone();
        let settle = async move {
            if let Err(e) = limiter.settle(&reservation, tokens).await {
                store_error(&metrics, "settle", &e);
            }
        };
        // The in-memory store completes at once: settle inline. A remote store gets a task, so
        // the response never waits for it.
        let mut settle = Box::pin(settle);
        if futures::FutureExt::now_or_never(settle.as_mut()).is_none() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(settle);
            }
        }
    }
}

/// The limits of a model a fallback moves a request to (the gateway asks before each move):
/// the key's `per_model` entry for it is checked and charged with the request's estimate, so a
/// key suspended or out of tokens on a model cannot reach it by asking for a broken one. The
/// key's own limits were charged at the door and are not charged twice.
pub(crate) struct FallbackLimits {
    limiter: Limiter,
    metrics: Arc<Metrics>,
    fail_closed: bool,
    key: Arc<ApiKey>,
    estimate: u64,
    /// To name a public model by the engine id when the key's limits use that (see
    /// [`limit_scope`]).
    core: lumen_gateway::Gateway,
    moved: Moved,
}

impl FallbackLimits {
    /// The gate for a request admitted with `settlement` (the two share what a move records).
    pub(crate) fn new(
        shared: &Shared,
        core: &lumen_gateway::Gateway,
        key: Arc<ApiKey>,
        estimate: u64,
        settlement: &Settlement,
    ) -> Self {
        Self {
            limiter: shared.stores.limiter.clone(),
            metrics: shared.metrics.clone(),
            fail_closed: shared.settings().fail_closed,
            key,
            estimate,
            core: core.clone(),
            moved: settlement.moved.clone(),
        }
    }

    async fn enter(&self, model: &str) -> bool {
        let scope = limit_scope(&self.core, &self.key, model);
        let scope = scope.as_deref().unwrap_or(model);
        let held = match self
            .limiter
            .admit_model(&self.key, scope, self.estimate)
            .await
        {
            Ok(r) => Some(Settlement::new(
                self.limiter.clone(),
                r,
                self.estimate,
                self.metrics.clone(),
            )),
            Err(LimitError::Store(e)) => {
                store_error(&self.metrics, "limits", &e);
                if self.fail_closed {
                    return false;
                }
                None
            }
            Err(e) => {
                tracing::info!(model = %lumen_gateway::Text(model), reason = e.reason(), "the key's limits refuse the fallback model");
                return false;
            }
        };
        let previous = self
            .moved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(held);
        // An earlier fallback that did not serve gets its estimate back.
        if let Some(Some(mut earlier)) = previous {
            earlier.tokens = Some(0);
        }
        true
    }
}

impl lumen_backend::ModelAdmission for FallbackLimits {
    fn admit<'a>(&'a self, model: &'a str) -> futures::future::BoxFuture<'a, bool> {
        Box::pin(self.enter(model))
    }
}

/// The engine id a key's `per_model` limits are looked up by, when the key limits the engine
/// model behind the public id `model` (an alias was used); `None`: the public id. So a
/// per-model limit holds whichever way the call reached the model: by name, an alias, `auto`,
/// a blank `model` or a fallback.
pub(crate) fn limit_scope(
    core: &lumen_gateway::Gateway,
    key: &ApiKey,
    model: &str,
) -> Option<String> {
    if key.per_model.is_empty() || key.per_model.contains_key(model) {
        return None;
    }
    core.router()
        .engine_for(model)
        .filter(|engine| key.per_model.contains_key(engine))
}

/// How a request meets the cache.
pub(crate) struct CachePlan {
    pub key: Option<[u8; 32]>,
    pub lookup: bool,
    pub store: bool,
}

impl CachePlan {
    pub fn bypass() -> Self {
        Self {
            key: None,
            lookup: false,
            store: false,
        }
    }

    pub fn header(&self, hit: bool) -> &'static str {
        match (self.key.is_some(), hit) {
            (_, true) => "hit",
            (true, false) if self.lookup => "miss",
            (true, false) => "refresh",
            (false, _) => "bypass",
        }
    }
}

/// Keys, limits and the cache, with their reloadable settings: everything the request path
/// needs from shared state, on Redis or in memory.
pub(crate) struct Shared {
    stores: Stores,
    settings: ArcSwap<SharedSettings>,
    metrics: Arc<Metrics>,
}

/// Counts and logs a store failure (the request goes on, fail-open or fail-closed).
fn store_error(metrics: &Metrics, op: &str, e: &StoreError) {
    tracing::warn!(op, error = %e, "shared-state store error");
    metrics
        .redis_errors
        .get_or_create(&OpLabel { op: op.to_owned() })
        .inc();
}

impl Shared {
    pub(crate) fn new(stores: Stores, settings: SharedSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            stores,
            settings: ArcSwap::from_pointee(settings),
            metrics,
        }
    }

    /// The settings in force; a reload swaps them.
    pub(crate) fn settings(&self) -> Arc<SharedSettings> {
        self.settings.load_full()
    }

    pub(crate) fn replace_settings(&self, settings: SharedSettings) {
        self.settings.store(Arc::new(settings));
    }

    pub(crate) fn store_error(&self, op: &str, e: &StoreError) {
        store_error(&self.metrics, op, e);
    }

    /// Checks `Authorization: Bearer` when auth is on. Keys from configuration are checked in
    /// memory; run-time keys in the key store. A key that cannot be verified (store down) is
    /// refused, whatever the fail-open setting: availability never outranks authentication.
    pub(crate) async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let s = self.settings();
        if !s.auth_enabled {
            return Ok(None);
        }
        match authorize(
            &s.ring,
            self.stores.keys.as_ref(),
            crate::headers::bearer(headers),
        )
        .await
        {
            Ok(k) => Ok(Some(k)),
            Err(AuthError::Missing) => Err(ApiError::missing_key()),
            Err(AuthError::Invalid) => Err(ApiError::invalid_key()),
            Err(AuthError::Store(e)) => {
                self.store_error("auth", &e);
                Err(ApiError::shared_state_unavailable())
            }
        }
    }

    /// True when the presented bearer matches the admin key's digest (constant time).
    pub(crate) fn is_admin(&self, headers: &HeaderMap) -> Option<bool> {
        let want = self.settings().admin_digest?;
        Some(crate::headers::bearer(headers).is_some_and(|s| bool::from(digest(s).ct_eq(&want))))
    }

    /// Charges the caller's limits for one request. Without a key (auth off) there is nothing
    /// to charge. Store trouble admits (fail-open) or refuses with 503 (fail-closed).
    pub(crate) async fn admit(
        &self,
        principal: &Principal,
        model: &str,
        estimate: u64,
    ) -> Result<(Option<Settlement>, RateHeaders), ApiError> {
        let Some(key) = principal else {
            return Ok((None, RateHeaders::default()));
        };
        let limiter = self.stores.limiter.clone();
        match limiter.admit(key, model, estimate).await {
            Ok((reservation, headers)) => Ok((
                Some(Settlement::new(
                    limiter,
                    reservation,
                    estimate,
                    self.metrics.clone(),
                )),
                headers,
            )),
            Err(LimitError::Store(e)) => {
                self.store_error("limits", &e);
                if self.settings().fail_closed {
                    Err(ApiError::shared_state_unavailable())
                } else {
                    Ok((None, RateHeaders::default()))
                }
            }
            Err(e) => {
                self.metrics
                    .rate_limited
                    .get_or_create(&crate::metrics::ReasonLabel {
                        reason: e.reason().replace(' ', "_"),
                    })
                    .inc();
                Err(e.into())
            }
        }
    }

    /// Whether and under which key this request meets the cache. Only deterministic requests
    /// (temperature 0 or a seed) unless the model is widened; `Cache-Control: no-store`
    /// bypasses it, `no-cache` skips the lookup but stores the fresh answer.
    pub(crate) fn cache_plan(
        &self,
        principal: &Principal,
        cache_control: Option<&HeaderValue>,
        endpoint: &str,
        model: &str,
        deterministic: Option<(Option<f64>, Option<i64>)>,
        canonical: impl FnOnce() -> Option<Vec<u8>>,
    ) -> CachePlan {
        let s = self.settings();
        if !s.cache.enabled {
            return CachePlan::bypass();
        }
        let cc = cache_control
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let no_store = cc.contains("no-store");
        let no_cache = cc.contains("no-cache");
        let cacheable = match deterministic {
            None => true,
            Some((t, seed)) => {
                is_deterministic(t, seed)
                    || s.cache.any_temperature_models.iter().any(|m| m == model)
            }
        };
        if no_store || !cacheable {
            return CachePlan::bypass();
        }
        let Some(body) = canonical() else {
            return CachePlan::bypass();
        };
        // The key's namespace, not its name: a key re-created under the same name never
        // reads the old key's answers.
        let ns = principal.as_ref().map(|k| k.namespace());
        CachePlan {
            key: Some(cache_key(
                ns.as_deref().unwrap_or(""),
                endpoint,
                model,
                &body,
            )),
            lookup: !no_cache,
            store: true,
        }
    }

    pub(crate) async fn cache_get(&self, plan: &CachePlan) -> Option<Bytes> {
        let key = plan.key.filter(|_| plan.lookup)?;
        let found = match self.stores.cache.get(&key).await {
            Ok(v) => v,
            Err(e) => {
                self.store_error("cache_get", &e);
                None
            }
        };
        self.count_cache(if found.is_some() { "hit" } else { "miss" });
        found
    }

    pub(crate) fn cache_put(&self, plan: &CachePlan, body: Bytes) {
        let s = self.settings();
        let Some(key) = plan
            .key
            .filter(|_| plan.store && body.len() <= s.cache.max_entry_bytes)
        else {
            return;
        };
        if !plan.lookup {
            self.count_cache("refresh");
        }
        let ttl = Duration::from_millis(s.cache.ttl_ms);
        let (cache, metrics) = (self.stores.cache.clone(), self.metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = cache.put(&key, body, ttl).await {
                store_error(&metrics, "cache_put", &e);
            }
        });
    }

    pub(crate) fn count_cache(&self, result: &str) {
        self.metrics
            .cache
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// `/health/redis`: PING latency, or why Redis cannot be reached. `None` without Redis.
    pub async fn redis_health(&self) -> Option<Result<Duration, StoreError>> {
        let redis = self.stores.redis.as_ref()?;
        Some(redis.ping().await)
    }

    /// Bytes the in-memory cache holds (0 with Redis, whose memory is Redis's own).
    pub(crate) fn cache_bytes(&self) -> u64 {
        self.stores
            .memory_cache
            .as_ref()
            .map_or(0, |c| c.weighted_bytes())
    }

    /// Run-time keys, for the admin API.
    pub(crate) fn key_store(&self) -> &Arc<dyn KeyStore> {
        &self.stores.keys
    }

    /// Keys from the configuration.
    pub(crate) fn config_keys(&self) -> Vec<ApiKey> {
        self.settings().keys.clone()
    }

    pub(crate) fn limiter(&self) -> &Limiter {
        &self.stores.limiter
    }
}

/// Rough prompt size in tokens: 4 bytes of request body a token (the prompt part of
/// [`estimate_tokens`]); what a stream whose usage never arrived is charged for its input.
pub(crate) fn prompt_estimate(body_len: usize) -> u64 {
    (body_len as u64 / 4).max(1)
}

/// Rough prompt size in tokens (4 bytes a token) plus the completion budget of every answer
/// the engine will generate (`choices`: `n`, `best_of`, batched prompts): the reservation that
/// is settled to the real usage afterwards. Saturates rather than wraps.
pub(crate) fn estimate_tokens(
    body_len: usize,
    max_tokens: Option<u32>,
    choices: u64,
    default_max: u64,
) -> u64 {
    let budget = max_tokens.map_or(default_max, u64::from);
    prompt_estimate(body_len).saturating_add(budget.saturating_mul(choices.max(1)))
}

#[cfg(test)]
mod tests;
