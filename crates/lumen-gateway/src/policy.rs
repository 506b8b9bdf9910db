//! The policy step of the pipeline: who may call (API keys), how much (limits and quotas,
//! reserved before the engine is asked and settled on the real usage), and which answers are
//! reused (the exact-match cache). It takes a bearer token and returns typed errors; what
//! happens is reported to the [`Observer`] (store failures, refusals, cache results), never
//! written to a metrics registry here. The stores are traits: in memory by default, on Redis
//! when the server wires `lumen-redis` in.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use lumen_governance::accounting::{
    Counts, Day, MemoryUsageStore, UsageBounds, UsageDelta, UsageQuery, UsageRow, UsageStore,
};
use lumen_governance::auth::{AuthError, authorize};
use lumen_governance::cache::{MemoryCache, MemoryKeyStore, cache_key, is_deterministic};
use lumen_governance::keys::{ApiKey, KeyRing};
use lumen_governance::limits::{LimitError, Limiter, MemoryLimitStore, RateHeaders};
use lumen_governance::store::{CacheStore, Clock, KeyStore, StoreError};
use lumen_governance::{AuthConfig, CacheConfig, InvalidConfig, LimitsConfig};
use tokio::time::Instant;

use crate::observer::{Event, Observer};

mod settlement;

pub(crate) use settlement::FallbackLimits;
pub use settlement::Settlement;

/// The caller's key, when auth is on (`None`: auth is off, nothing to charge).
pub type Principal = Option<Arc<ApiKey>>;

/// Why the policy step refused a request. The server maps each to its HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Auth is on and the request carried no key.
    #[error("no API key was provided")]
    MissingKey,
    /// The key is unknown (or was deleted).
    #[error("the API key is not valid")]
    InvalidKey,
    /// The shared-state store could not answer where the request cannot go on without it: a
    /// key that cannot be verified, or limits with `fail_closed`.
    #[error("shared state is unavailable")]
    Unavailable,
    /// The key's limits or quotas refuse the request.
    #[error(transparent)]
    Limited(#[from] LimitError),
}

/// The stores behind the policy step. Created once (they keep their counters across reloads).
#[derive(Clone)]
pub struct PolicyStores {
    pub limiter: Limiter,
    pub cache: Arc<dyn CacheStore>,
    pub keys: Arc<dyn KeyStore>,
    /// Usage per key, model and day, for finance (`/admin/usage/history`).
    pub usage: Arc<dyn UsageStore>,
    /// Milliseconds since the epoch: the day a request's usage is counted in.
    pub clock: Clock,
}

/// Milliseconds since the epoch on the Tokio clock (so a paused test clock moves windows too).
pub fn clock() -> Clock {
    let base_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let base = Instant::now();
    Arc::new(move || base_ms + base.elapsed().as_millis() as u64)
}

impl PolicyStores {
    /// Everything in this process: limits per replica, the cache bounded by `cache.max_bytes`
    /// (returned too, for its size), run-time keys in memory.
    pub fn in_memory(cache: &CacheConfig) -> (Self, Arc<MemoryCache>) {
        let clock = clock();
        let memory = Arc::new(MemoryCache::new(
            cache.max_bytes,
            Duration::from_millis(cache.ttl_ms),
        ));
        let stores = Self {
            limiter: Limiter::new(
                Arc::new(MemoryLimitStore::new(clock.clone())),
                clock.clone(),
            ),
            cache: memory.clone(),
            keys: Arc::new(MemoryKeyStore::default()),
            usage: Arc::new(MemoryUsageStore::new(clock.clone(), UsageBounds::default())),
            clock,
        };
        (stores, memory)
    }
}

/// The policy step's reloadable settings.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub(crate) auth_enabled: bool,
    ring: Arc<KeyRing>,
    keys: Vec<ApiKey>,
    pub(crate) limits: LimitsConfig,
    pub(crate) cache: CacheConfig,
    fail_closed: bool,
}

impl Default for PolicySettings {
    /// Open: no keys, no cache.
    fn default() -> Self {
        Self {
            auth_enabled: false,
            ring: Arc::new(KeyRing::default()),
            keys: Vec::new(),
            limits: LimitsConfig::default(),
            cache: CacheConfig::default(),
            fail_closed: false,
        }
    }
}

impl PolicySettings {
    /// `fail_closed`: refuse (rather than admit) when the limit store cannot answer.
    pub fn new(
        auth: &AuthConfig,
        limits: &LimitsConfig,
        cache: &CacheConfig,
        fail_closed: bool,
    ) -> Result<Self, InvalidConfig> {
        Ok(Self {
            auth_enabled: auth.enabled,
            ring: Arc::new(KeyRing::new(&auth.keys)?),
            keys: auth.keys.clone(),
            limits: limits.clone(),
            cache: cache.clone(),
            fail_closed,
        })
    }

    /// Keys from the configuration.
    pub fn keys(&self) -> &[ApiKey] {
        &self.keys
    }

    pub fn cache_enabled(&self) -> bool {
        self.cache.enabled
    }

    pub fn fail_closed(&self) -> bool {
        self.fail_closed
    }
}

/// How a request meets the cache.
pub struct CachePlan {
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

    /// What the request met: `hit`, `miss`, `refresh` (looked past, stored) or `bypass`.
    pub fn result(&self, hit: bool) -> &'static str {
        match (self.key.is_some(), hit) {
            (_, true) => "hit",
            (true, false) if self.lookup => "miss",
            (true, false) => "refresh",
            (false, _) => "bypass",
        }
    }
}

/// Keys, limits and the cache, with their reloadable settings.
pub struct PolicyStep {
    stores: PolicyStores,
    settings: ArcSwap<PolicySettings>,
    observer: Arc<dyn Observer>,
    /// Stored responses and native response homes written to the store in the background and
    /// not in it yet.
    unsettled: Arc<Unsettled>,
}

/// Writes in flight to the store, readable at once: an agent (Codex) sends its next request
/// with `previous_response_id` as soon as the last event arrives, sooner than a background
/// write to Redis lands. A reader asks the store first and falls back to these, so an entry
/// never shadows what the store holds (another key's native response id, say). Each entry
/// lives until its write ends, so the map holds only writes in flight.
#[derive(Default)]
struct Unsettled(std::sync::Mutex<std::collections::HashMap<[u8; 32], Bytes>>);

impl Unsettled {
    fn insert(&self, key: [u8; 32], value: Bytes) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, value);
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<Bytes> {
        self.0.lock().ok()?.get(key).cloned()
    }

    /// Forgets `key` once its write ended, unless a later write replaced the value.
    fn settled(&self, key: &[u8; 32], value: &Bytes) {
        if let Ok(mut m) = self.0.lock()
            && m.get(key).is_some_and(|v| v.as_ptr() == value.as_ptr())
        {
            m.remove(key);
        }
    }

    fn forget(&self, key: &[u8; 32]) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

impl PolicyStep {
    pub(crate) fn new(
        stores: PolicyStores,
        settings: PolicySettings,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            stores,
            settings: ArcSwap::from_pointee(settings),
            observer,
            unsettled: Arc::default(),
        }
    }

    /// The settings in force; a reload swaps them.
    pub fn settings(&self) -> Arc<PolicySettings> {
        self.settings.load_full()
    }

    pub fn replace_settings(&self, settings: PolicySettings) {
        self.settings.store(Arc::new(settings));
    }

    /// Logs a store failure and reports it (the request goes on, fail-open or fail-closed).
    pub fn store_failed(&self, op: &'static str, e: &StoreError) {
        store_failed(self.observer.as_ref(), op, e);
    }

    /// Checks a bearer token when auth is on. Keys from configuration are checked in memory;
    /// run-time keys in the key store. A key that cannot be verified (store down) is refused,
    /// whatever the fail-open setting: availability never outranks authentication.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal, PolicyError> {
        let s = self.settings();
        if !s.auth_enabled {
            return Ok(None);
        }
        match authorize(&s.ring, self.stores.keys.as_ref(), token).await {
            Ok(k) => Ok(Some(k)),
            Err(AuthError::Missing) => Err(PolicyError::MissingKey),
            Err(AuthError::Invalid) => Err(PolicyError::InvalidKey),
            Err(AuthError::Store(e)) => {
                self.store_failed("auth", &e);
                Err(PolicyError::Unavailable)
            }
        }
    }

    /// Charges the caller's limits for one request in `scope` (the model, or the engine id the
    /// key's per-model limits name). Without a key there is nothing to charge. Store trouble
    /// admits (fail-open) or refuses (fail-closed).
    pub async fn admit(
        &self,
        principal: &Principal,
        scope: &str,
        estimate: u64,
    ) -> Result<(Option<Settlement>, RateHeaders), PolicyError> {
        let Some(key) = principal else {
            return Ok((None, RateHeaders::default()));
        };
        let limiter = self.stores.limiter.clone();
        match limiter.admit(key, scope, estimate).await {
            Ok((reservation, headers)) => Ok((
                Some(Settlement::new(
                    limiter,
                    reservation,
                    estimate,
                    self.observer.clone(),
                )),
                headers,
            )),
            Err(LimitError::Store(e)) => {
                self.store_failed("limits", &e);
                if self.settings().fail_closed {
                    Err(PolicyError::Unavailable)
                } else {
                    Ok((None, RateHeaders::default()))
                }
            }
            Err(e) => {
                self.observer
                    .event(&Event::RateLimited { reason: e.reason() });
                Err(e.into())
            }
        }
    }

    /// Whether and under which key this request meets the cache. Only deterministic requests
    /// (temperature 0 or a seed) unless the model is widened; `Cache-Control: no-store`
    /// bypasses it, `no-cache` skips the lookup but stores the fresh answer.
    pub fn cache_plan(
        &self,
        principal: &Principal,
        cache_control: Option<&str>,
        operation: &str,
        model: &str,
        deterministic: Option<(Option<f64>, Option<i64>)>,
        canonical: impl FnOnce() -> Option<Vec<u8>>,
    ) -> CachePlan {
        let s = self.settings();
        if !s.cache.enabled {
            return CachePlan::bypass();
        }
        let cc = cache_control.unwrap_or("").to_ascii_lowercase();
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
                operation,
                model,
                &body,
            )),
            lookup: !no_cache,
            store: true,
        }
    }

    pub async fn cache_get(&self, plan: &CachePlan) -> Option<Bytes> {
        let key = plan.key.filter(|_| plan.lookup)?;
        let found = match self.stores.cache.get(&key).await {
            Ok(v) => v,
            Err(e) => {
                self.store_failed("cache_get", &e);
                None
            }
        };
        self.observer.event(&Event::Cache {
            result: if found.is_some() { "hit" } else { "miss" },
        });
        found
    }

    /// Stores an answer in the background (the response never waits for the store).
    pub fn cache_put(&self, plan: &CachePlan, body: Bytes) {
        let s = self.settings();
        let Some(key) = plan
            .key
            .filter(|_| plan.store && body.len() <= s.cache.max_entry_bytes)
        else {
            return;
        };
        if !plan.lookup {
            self.observer.event(&Event::Cache { result: "refresh" });
        }
        let ttl = Duration::from_millis(s.cache.ttl_ms);
        let (cache, observer) = (self.stores.cache.clone(), self.observer.clone());
        tokio::spawn(async move {
            if let Err(e) = cache.put(&key, body, ttl).await {
                store_failed(observer.as_ref(), "cache_put", &e);
            }
        });
    }

    /// Keeps a stored response (OpenAI's Responses API with `store`) for `RESPONSE_TTL`, in the
    /// cache's store (Redis when configured, so every replica finds it). In the background: the
    /// answer never waits for it. One over `MAX_STORED_RESPONSE_BYTES` is not kept (logged).
    pub fn save_response(&self, stored: &StoredResponse) {
        let Ok(bytes) = serde_json::to_vec(stored) else {
            return;
        };
        if bytes.len() > MAX_STORED_RESPONSE_BYTES {
            tracing::warn!(
                bytes = bytes.len(),
                "a conversation too large to keep; previous_response_id will not find it"
            );
            return;
        }
        let key = response_key(&stored.response.id);
        let bytes = Bytes::from(bytes);
        self.unsettled.insert(key, bytes.clone());
        let (cache, observer) = (self.stores.cache.clone(), self.observer.clone());
        let unsettled = self.unsettled.clone();
        tokio::spawn(async move {
            if let Err(e) = cache.put(&key, bytes.clone(), RESPONSE_TTL).await {
                store_failed(observer.as_ref(), "response_put", &e);
            }
            unsettled.settled(&key, &bytes);
        });
    }

    /// A stored response, when it exists and `owner` (the key's namespace; empty without
    /// keys) created it. Another key's response is reported as absent, so ids cannot be probed.
    pub async fn load_response(
        &self,
        id: &str,
        owner: &str,
    ) -> Result<Option<StoredResponse>, PolicyError> {
        let key = response_key(id);
        let found = match self.stores.cache.get(&key).await {
            Ok(v) => v.or_else(|| self.unsettled.get(&key)),
            Err(e) => {
                self.store_failed("response_get", &e);
                return Err(PolicyError::Unavailable);
            }
        };
        Ok(found
            .filter(|b| !b.is_empty())
            .and_then(|b| serde_json::from_slice::<StoredResponse>(&b).ok())
            .filter(|s| s.owner == owner))
    }

    /// Forgets a stored response (a tombstone until its time would have run out).
    pub async fn delete_response(&self, id: &str) -> Result<(), PolicyError> {
        self.unsettled.forget(&response_key(id));
        self.stores
            .cache
            .put(&response_key(id), Bytes::new(), RESPONSE_TTL)
            .await
            .map_err(|e| {
                self.store_failed("response_delete", &e);
                PolicyError::Unavailable
            })
    }

    /// Records which backend's engine keeps a native response and which key created it
    /// (`owner`: the key's namespace, empty without keys), for `RESPONSE_TTL`, in the cache's
    /// store (Redis when configured, so every replica sends its `previous_response_id`, `GET`
    /// and `DELETE` to the same engine). In the background. An id that could not be put in an
    /// engine path as it is (see [`forwardable_id`]) is not recorded: its calls stay Lumen's
    /// (a 404).
    pub fn save_native_response(&self, id: &str, owner: &str, backend: &str) {
        if !forwardable_id(id) {
            tracing::warn!("an engine answered a response id that cannot be forwarded; not kept");
            return;
        }
        let entry = NativeResponseHome {
            owner: owner.to_owned(),
            backend: backend.to_owned(),
        };
        let Ok(bytes) = serde_json::to_vec(&entry) else {
            return;
        };
        let key = native_key(id);
        let bytes = Bytes::from(bytes);
        self.unsettled.insert(key, bytes.clone());
        let (cache, observer) = (self.stores.cache.clone(), self.observer.clone());
        let unsettled = self.unsettled.clone();
        let owner = owner.to_owned();
        tokio::spawn(async move {
            native_put(&*cache, observer.as_ref(), &key, bytes.clone(), &owner).await;
            unsettled.settled(&key, &bytes);
        });
    }

    /// Where a native response lives, when `owner` created it: another key's is reported as
    /// absent, as [`load_response`](Self::load_response) does, so ids cannot be probed.
    pub async fn native_response(
        &self,
        id: &str,
        owner: &str,
    ) -> Result<Option<NativeResponseHome>, PolicyError> {
        if !forwardable_id(id) {
            return Ok(None);
        }
        let key = native_key(id);
        let found = match self.stores.cache.get(&key).await {
            Ok(v) => v.or_else(|| self.unsettled.get(&key)),
            Err(e) => {
                self.store_failed("native_response_get", &e);
                return Err(PolicyError::Unavailable);
            }
        };
        Ok(found
            .filter(|b| !b.is_empty())
            .and_then(|b| serde_json::from_slice::<NativeResponseHome>(&b).ok())
            .filter(|h| h.owner == owner))
    }

    /// Forgets where a native response lives (a tombstone until its time would have run out),
    /// once its engine deleted it.
    pub async fn delete_native_response(&self, id: &str) -> Result<(), PolicyError> {
        self.unsettled.forget(&native_key(id));
        self.stores
            .cache
            .put(&native_key(id), Bytes::new(), RESPONSE_TTL)
            .await
            .map_err(|e| {
                self.store_failed("native_response_delete", &e);
                PolicyError::Unavailable
            })
    }

    /// Counts one request in its key's usage for the day (`served`: the model that answered;
    /// `requested`: the one asked for, when a fallback answered instead). Inline when the
    /// store is in memory; in the background on Redis, so the answer never waits for it.
    pub fn account(&self, key: &str, served: &str, requested: Option<&str>, counts: Counts) {
        Accountant::of(self).record(key, served, requested, counts);
    }

    /// Usage rows for `query`, with their cost when prices are known.
    pub async fn usage_history(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, PolicyError> {
        self.stores.usage.query(query).await.map_err(|e| {
            self.store_failed("usage_query", &e);
            PolicyError::Unavailable
        })
    }

    /// Run-time keys, for an admin API.
    pub fn key_store(&self) -> &Arc<dyn KeyStore> {
        &self.stores.keys
    }

    pub fn limiter(&self) -> &Limiter {
        &self.stores.limiter
    }

    pub(crate) fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    /// The reservation of a request: its prompt (4 bytes of body a token) plus the completion
    /// budget of every answer it asks for (`max_tokens`, else `limits.default_max_tokens`).
    pub fn estimate(&self, body_len: usize, max_tokens: Option<u32>, choices: u64) -> u64 {
        estimate_tokens(
            body_len,
            max_tokens,
            choices,
            self.settings().limits.default_max_tokens,
        )
    }
}

/// What usage rows and labels name a passthrough model (a name the caller chose): no client
/// string becomes a row.
pub(crate) const PASSTHROUGH: &str = "passthrough";

/// How long a stored response (and its conversation) can be continued or read.
pub const RESPONSE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The largest conversation kept for `previous_response_id`.
pub const MAX_STORED_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Writes where a native response lives, unless another key holds its id: an engine that let a
/// client choose its response's id would otherwise hand that key the other's conversation.
/// (Read, then write: the store has no compare-and-set; the window is the engine answering the
/// same id to two keys at once.)
async fn native_put(
    cache: &dyn CacheStore,
    observer: &dyn Observer,
    key: &[u8; 32],
    entry: Bytes,
    owner: &str,
) {
    if let Ok(Some(held)) = cache.get(key).await
        && let Ok(home) = serde_json::from_slice::<NativeResponseHome>(&held)
        && home.owner != owner
    {
        tracing::warn!("an engine answered a response id another key holds; not remapped");
        return;
    }
    if let Err(e) = cache.put(key, entry, RESPONSE_TTL).await {
        store_failed(observer, "native_response_put", &e);
    }
}

/// A response kept for the Responses API: who created it, the response as returned, the whole
/// conversation up to and including it (what a `previous_response_id` continues), and this
/// turn's input (`/input_items`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredResponse {
    pub owner: String,
    pub response: lumen_openai_types::responses::Response,
    pub conversation: Vec<lumen_openai_types::responses::InputItem>,
    pub input: Vec<lumen_openai_types::responses::InputItem>,
}

/// Where a stored response lives in the cache's store: apart from every cached answer (the
/// operation part of the key differs).
fn response_key(id: &str) -> [u8; 32] {
    cache_key("", "responses", "", id.as_bytes())
}

/// Where a native response lives: the backend whose engine keeps it, and the key that created
/// it (its namespace).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NativeResponseHome {
    pub owner: String,
    pub backend: String,
}

/// The longest response id forwarded to an engine.
const MAX_RESPONSE_ID: usize = 256;

/// Whether a response id can be put in an engine path as it is: ASCII letters, digits, `_`,
/// `-` and `.` (every engine's ids are), not `.` or `..`, at most [`MAX_RESPONSE_ID`] bytes.
/// Only such ids are mapped, so only such ids are ever forwarded.
pub fn forwardable_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RESPONSE_ID
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Where a native response's home lives in the cache's store: apart from Lumen's own stored
/// responses and every cached answer.
fn native_key(id: &str) -> [u8; 32] {
    cache_key("", "responses native", "", id.as_bytes())
}

/// What records a request's usage; a stream carries one until it settles.
#[derive(Clone)]
pub(crate) struct Accountant {
    usage: Arc<dyn UsageStore>,
    clock: Clock,
    observer: Arc<dyn Observer>,
}

impl Accountant {
    pub(crate) fn of(policy: &PolicyStep) -> Self {
        Self {
            usage: policy.stores.usage.clone(),
            clock: policy.stores.clock.clone(),
            observer: policy.observer.clone(),
        }
    }

    pub(crate) fn record(&self, key: &str, served: &str, requested: Option<&str>, counts: Counts) {
        self.observer.event(&Event::Accounted {
            key,
            counts: &counts,
        });
        let day = Day::from_unix_ms((self.clock)());
        // A store that queues the record (Redis) writes it, and reports its failure, by
        // itself: no task for it.
        let queued = self.usage.try_queue(&UsageDelta {
            key,
            model: served,
            requested,
            day,
            counts,
        });
        if queued {
            return;
        }
        let (usage, observer) = (self.usage.clone(), self.observer.clone());
        let (key, served) = (key.to_owned(), served.to_owned());
        let requested = requested.map(str::to_owned);
        let record = async move {
            let delta = UsageDelta {
                key: &key,
                model: &served,
                requested: requested.as_deref(),
                day,
                counts,
            };
            if let Err(e) = usage.record(delta).await {
                store_failed(observer.as_ref(), "usage", &e);
            }
        };
        let mut record = Box::pin(record);
        if futures::FutureExt::now_or_never(record.as_mut()).is_none() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(record);
            }
        }
    }
}

fn store_failed(observer: &dyn Observer, op: &'static str, e: &StoreError) {
    tracing::warn!(op, error = %e, "shared-state store error");
    observer.event(&Event::StoreFailed { op });
}

/// Rough prompt size in tokens: 4 bytes of request body a token (the prompt part of
/// [`estimate_tokens`]); what a stream whose usage never arrived is charged for its input.
pub fn prompt_estimate(body_len: usize) -> u64 {
    (body_len as u64 / 4).max(1)
}

/// Rough prompt size in tokens (4 bytes a token) plus the completion budget of every answer
/// the engine will generate (`choices`: `n`, `best_of`, batched prompts): the reservation that
/// is settled to the real usage afterwards. Saturates rather than wraps.
pub fn estimate_tokens(
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
