//! Shared state on Redis: a real distributed store instead of a home-made one.
//!
//! Implements `lumen-governance`'s storage traits, so the same limit, cache and key policy runs
//! in memory (one replica) or here (many replicas):
//!
//! - [`LimitStore`]: one Lua script per request checks every counter, then charges every
//!   counter — atomic and one round trip, so limits are exact across replicas.
//! - [`CacheStore`]: `GET` / `SET PX`.
//! - [`KeyStore`]: run-time API keys in a hash keyed by digest, with a short local cache so the
//!   request path rarely waits on Redis for them.
//!
//! Every operation has a tight deadline and fails with a [`StoreError`] rather than block: the
//! caller decides between fail-open and fail-closed. The connection is lazy and reconnects by
//! itself, so Lumen starts while Redis is down and resumes when it returns.
//!
//! # Must not depend on
//! hyper, the server, or any backend.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use lumen_governance::keys::{ApiKey, to_hex};
use lumen_governance::store::{
    CacheStore, Counter, CounterState, Expiry, KeyStore, LimitStore, StoreError, Verdict,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::time::{Instant, timeout};

/// Check every counter, then charge every counter. ARGV per counter: limit, cost, ttl_ms, mode
/// (0: set the expiry only when the counter is new — a window; 1: refresh it — a lease).
/// Returns {1, value1, pttl1, ...} or {0, index, value, pttl} for the first counter that
/// would exceed its limit (0 refuses every charge).
const ACQUIRE: &str = r#"
for i = 1, #KEYS do
  local limit = tonumber(ARGV[(i - 1) * 4 + 1])
  local cost = tonumber(ARGV[(i - 1) * 4 + 2])
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  if limit == 0 or cur + cost > limit then
    return {0, i, cur, redis.call('PTTL', KEYS[i])}
  end
end
local out = {1}
for i = 1, #KEYS do
  local cost = tonumber(ARGV[(i - 1) * 4 + 2])
  local ttl = tonumber(ARGV[(i - 1) * 4 + 3])
  local mode = tonumber(ARGV[(i - 1) * 4 + 4])
  local v = redis.call('INCRBY', KEYS[i], cost)
  local p = redis.call('PTTL', KEYS[i])
  if mode == 1 or p < 0 then
    redis.call('PEXPIRE', KEYS[i], ttl)
    p = ttl
  end
  out[#out + 1] = v
  out[#out + 1] = p
end
return out
"#;

/// Add a delta to counters that still exist (never create one, never go below zero).
const ADJUST: &str = r#"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], tonumber(ARGV[i]))
    if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 1
"#;

const KEYS_HASH: &str = "lumen:keys";
const CACHE_PREFIX: &str = "lumen:cache:";

/// A Redis connection with deadlines.
pub struct RedisState {
    conn: ConnectionManager,
    deadline: Duration,
    acquire: Script,
    adjust: Script,
    /// Run-time keys seen recently (or known absent), so key checks rarely wait on Redis.
    key_cache: moka::sync::Cache<[u8; 32], Option<ApiKey>>,
}

#[derive(Debug)]
pub struct RedisConfigError(pub String);

impl std::fmt::Display for RedisConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedisConfigError {}

impl RedisState {
    /// Prepares a lazy connection to `url`. Never waits for Redis: it may be down now.
    /// `deadline` bounds every operation; `key_ttl` is how long a looked-up key is trusted.
    /// Must be called inside a Tokio runtime.
    pub fn new(url: &str, deadline: Duration, key_ttl: Duration) -> Result<Self, RedisConfigError> {
        let client = redis::Client::open(url).map_err(|e| RedisConfigError(e.to_string()))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(deadline.max(Duration::from_millis(100))))
            .set_response_timeout(Some(deadline))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, cfg)
            .map_err(|e| RedisConfigError(e.to_string()))?;
        Ok(Self {
            conn,
            deadline,
            acquire: Script::new(ACQUIRE),
            adjust: Script::new(ADJUST),
            key_cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(key_ttl)
                .build(),
        })
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match timeout(self.deadline, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Round-trip latency of a PING.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let mut c = self.conn.clone();
        let pong: String = self.bounded(redis::cmd("PING").query_async(&mut c)).await?;
        if pong == "PONG" {
            Ok(start.elapsed())
        } else {
            Err(StoreError::Unavailable(format!(
                "unexpected PING reply {pong:?}"
            )))
        }
    }
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

impl LimitStore for RedisState {
    fn acquire<'a>(
        &'a self,
        counters: &'a [Counter],
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        Box::pin(async move {
            let mut inv = self.acquire.prepare_invoke();
            for c in counters {
                let (ttl, mode) = match c.expiry {
                    Expiry::Window(d) => (d, 0),
                    Expiry::Lease(d) => (d, 1),
                };
                inv.key(&c.key)
                    .arg(c.limit)
                    .arg(c.cost)
                    .arg(ttl.as_millis().max(1) as u64)
                    .arg(mode);
            }
            let mut conn = self.conn.clone();
            let reply: Vec<i64> = self.bounded(inv.invoke_async(&mut conn)).await?;
            match reply.as_slice() {
                [1, rest @ ..] if rest.len() == counters.len() * 2 => Ok(Verdict::Admitted(
                    rest.chunks(2)
                        .map(|p| CounterState {
                            value: p[0].max(0) as u64,
                            reset: ms(p[1]),
                        })
                        .collect(),
                )),
                [0, index, value, pttl] => Ok(Verdict::Refused {
                    index: (*index as usize).saturating_sub(1),
                    state: CounterState {
                        value: (*value).max(0) as u64,
                        reset: ms(*pttl),
                    },
                }),
                other => Err(StoreError::Unavailable(format!(
                    "unexpected script reply {other:?}"
                ))),
            }
        })
    }

    fn adjust<'a>(&'a self, deltas: &'a [(String, i64)]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inv = self.adjust.prepare_invoke();
            for (k, d) in deltas {
                inv.key(k).arg(*d);
            }
            let mut conn = self.conn.clone();
            let _: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<CounterState>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            let mut conn = self.conn.clone();
            for k in keys {
                let (v, p): (Option<i64>, i64) = self
                    .bounded(redis::pipe().get(k).pttl(k).query_async(&mut conn))
                    .await?;
                out.push(CounterState {
                    value: v.unwrap_or(0).max(0) as u64,
                    reset: ms(p),
                });
            }
            Ok(out)
        })
    }
}

impl CacheStore for RedisState {
    fn get<'a>(&'a self, key: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let v: Option<Vec<u8>> = self
                .bounded(conn.get(format!("{CACHE_PREFIX}{}", to_hex(key))))
                .await?;
            Ok(v.map(Bytes::from))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a [u8; 32],
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let ttl_ms = ttl.as_millis().max(1) as u64;
            let _: () = self
                .bounded(conn.pset_ex(
                    format!("{CACHE_PREFIX}{}", to_hex(key)),
                    value.as_ref(),
                    ttl_ms,
                ))
                .await?;
            Ok(())
        })
    }
}

impl KeyStore for RedisState {
    fn find<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<ApiKey>, StoreError>> {
        Box::pin(async move {
            if let Some(hit) = self.key_cache.get(digest) {
                return Ok(hit);
            }
            let mut conn = self.conn.clone();
            let raw: Option<String> = self.bounded(conn.hget(KEYS_HASH, to_hex(digest))).await?;
            let key = raw.and_then(|s| serde_json::from_str::<ApiKey>(&s).ok());
            self.key_cache.insert(*digest, key.clone());
            Ok(key)
        })
    }

    fn insert<'a>(&'a self, key: ApiKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let json =
                serde_json::to_string(&key).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut conn = self.conn.clone();
            // One key per name: drop any other digest with this name first.
            let existing = self.list().await?;
            for old in existing
                .iter()
                .filter(|k| k.name == key.name && k.sha256 != key.sha256)
            {
                let _: i64 = self.bounded(conn.hdel(KEYS_HASH, &old.sha256)).await?;
                if let Some(d) = old.digest() {
                    self.key_cache.invalidate(&d);
                }
            }
            let _: i64 = self
                .bounded(conn.hset(KEYS_HASH, &key.sha256, json))
                .await?;
            if let Some(d) = key.digest() {
                self.key_cache.invalidate(&d);
            }
            Ok(())
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut removed = false;
            let mut conn = self.conn.clone();
            for k in self.list().await?.into_iter().filter(|k| k.name == name) {
                let n: i64 = self.bounded(conn.hdel(KEYS_HASH, &k.sha256)).await?;
                removed |= n > 0;
                if let Some(d) = k.digest() {
                    self.key_cache.invalidate(&d);
                }
            }
            Ok(removed)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ApiKey>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let all: Vec<(String, String)> = self.bounded(conn.hgetall(KEYS_HASH)).await?;
            Ok(all
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_str(&v).ok())
                .collect())
        })
    }
}
