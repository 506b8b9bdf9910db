//! Shared state on Redis: a real distributed store instead of a home-made one.
//!
//! Implements `lumen-governance`'s storage traits, so the same limit, cache and key policy runs
//! in memory (one replica) or here (many replicas):
//!
//! - [`LimitStore`]: one Lua script per request checks every counter, then charges every
//!   counter — atomic and one round trip, so limits are exact across replicas. Concurrency is
//!   a sorted set of per-request slots that expire unless renewed; an admission Lumen stopped
//!   waiting for is undone when its script runs late (tickets and tombstones, below).
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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use lumen_governance::keys::{ApiKey, to_hex};
use lumen_governance::store::{
    CacheStore, Counter, CounterState, Expiry, KeyStore, LimitStore, StoreError, Ticket, Verdict,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::time::{Instant, timeout};

mod accounting;

pub use accounting::RedisUsageStore;

/// Check every counter, then charge every counter, for one request.
/// KEYS[1]: the request's ticket; then one key per counter.
/// ARGV[1]: the ticket id; ARGV[2]: how long the ticket is remembered (ms); then per counter:
/// limit, cost, ttl_ms, mode (0: a window — the expiry is set when the counter is new; 1: a
/// lease — a sorted set of ticket ids scored by when each slot expires).
/// Returns {1, value1, pttl1, ...}; {0, index, value, pttl} for the first counter that would
/// exceed its limit (0 refuses every charge); {2} if the ticket was cancelled first (the caller
/// stopped waiting and the undo got here before this charge did).
const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {2} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = #KEYS - 1
local cur = {}
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local limit = tonumber(ARGV[a + 1])
  local cost = tonumber(ARGV[a + 2])
  local k = KEYS[i + 1]
  if tonumber(ARGV[a + 4]) == 1 then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    cur[i] = redis.call('ZCARD', k)
  else
    cur[i] = tonumber(redis.call('GET', k) or '0')
  end
  if limit == 0 or cur[i] + cost > limit then
    return {0, i, cur[i], redis.call('PTTL', k)}
  end
end
local out = {1}
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local cost = tonumber(ARGV[a + 2])
  local ttl = tonumber(ARGV[a + 3])
  local k = KEYS[i + 1]
  local v
  local p
  if tonumber(ARGV[a + 4]) == 1 then
    redis.call('ZADD', k, now + ttl, ARGV[1])
    if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
    v = cur[i] + 1
    p = ttl
  else
    v = redis.call('INCRBY', k, cost)
    p = redis.call('PTTL', k)
    if p < 0 then
      redis.call('PEXPIRE', k, ttl)
      p = ttl
    end
  end
  out[#out + 1] = v
  out[#out + 1] = p
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return out
"#;

/// The end of an admitted request: add a delta to window counters that still exist (never
/// create one, never go below zero), free the ticket's lease slots, forget the ticket.
/// KEYS[1]: the ticket; then counters. ARGV[1]: the ticket id; ARGV[2]: 1 on a retry, which
/// applies only while the ticket is still open (an earlier attempt may have landed late and
/// closed it), so retrying never settles twice; per counter: delta, mode.
const SETTLE: &str = r#"
if ARGV[2] == '1' and redis.call('GET', KEYS[1]) ~= '1' then return 0 end
for i = 2, #KEYS do
  local a = (i - 2) * 2 + 3
  if tonumber(ARGV[a + 1]) == 1 then
    redis.call('ZREM', KEYS[i], ARGV[1])
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], tonumber(ARGV[a]))
    if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
redis.call('DEL', KEYS[1])
return 1
"#;

/// Undo an admission the caller stopped waiting for: if its charge was applied, refund it
/// (windows) and free its slots (leases); either way leave a tombstone, so a charge that is
/// still on its way is refused when it arrives. Idempotent, so it can be retried.
/// KEYS[1]: the ticket; then counters. ARGV[1]: the ticket id; ARGV[2]: how long the
/// tombstone lives (ms); per counter: cost, mode.
const CANCEL: &str = r#"
if redis.call('GET', KEYS[1]) == '1' then
  for i = 2, #KEYS do
    local a = (i - 2) * 2 + 3
    if tonumber(ARGV[a + 1]) == 1 then
      redis.call('ZREM', KEYS[i], ARGV[1])
    elseif redis.call('EXISTS', KEYS[i]) == 1 then
      local v = redis.call('DECRBY', KEYS[i], tonumber(ARGV[a]))
      if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
    end
  end
end
redis.call('SET', KEYS[1], 'x', 'PX', ARGV[2])
return 1
"#;

/// Extend a live request's lease slots; a slot already expired or freed is not brought back.
/// The open ticket is kept as long, so a settlement retried late still finds it.
/// KEYS[1]: the ticket; then lease counters. ARGV[1]: the ticket id; ARGV[2]: the lease (ms);
/// ARGV[3]: how long the ticket is remembered (ms).
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
if redis.call('GET', KEYS[1]) == '1' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
for i = 2, #KEYS do
  local s = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if s and tonumber(s) > now then
    redis.call('ZADD', KEYS[i], 'XX', now + ttl, ARGV[1])
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
return 1
"#;

/// Current values: a window's count, or a lease counter's live slots; with PTTLs.
/// ARGV per key: mode.
const READ: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for i = 1, #KEYS do
  local v
  if tonumber(ARGV[i]) == 1 then
    v = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
  else
    v = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  out[#out + 1] = v
  out[#out + 1] = redis.call('PTTL', KEYS[i])
end
return out
"#;

/// How long Redis remembers a ticket: that its charge was applied (so an undo knows to refund
/// it) or that it was cancelled (so a charge still on its way is refused). It bounds how late
/// a charge can land and still be undone (a stall longer than this is past saving: a late
/// lease slot then expires after its lease, a late token charge with its window). Short,
/// because a request with nothing to settle (only `rpm`) leaves its ticket to expire: one
/// small key per such request for this long.
const TICKET_TTL: Duration = Duration::from_secs(60);

/// Background attempts for an undo or a settlement that failed on the request path, with a
/// doubling pause between them (0.1 s, then up to 1.6 s: about 3 s in all, past a short stall).
const RETRY_ATTEMPTS: u32 = 6;
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// While Redis is down every admission fails, and each would start its own retries: past this
/// many at once, new ones are dropped (their charges, if any ever land, expire with their lease
/// or window) rather than pile up tasks and commands against an unreachable server.
const MAX_RETRYING: usize = 1_024;

const KEYS_HASH: &str = "lumen:keys";
/// Run-time key name → digest: claims a name once (HSETNX) across replicas.
const KEY_NAMES_HASH: &str = "lumen:key_names";
const CACHE_PREFIX: &str = "lumen:cache:";

/// A Redis connection with deadlines.
pub struct RedisState {
    conn: ConnectionManager,
    deadline: Duration,
    acquire: Script,
    settle: Script,
    renew: Script,
    read: Script,
    /// Undos and settlements being retried in the background, bounded by [`MAX_RETRYING`].
    retrying: Arc<AtomicUsize>,
    /// Run-time keys seen recently (or known absent), so key checks rarely wait on Redis.
    key_cache: moka::sync::Cache<[u8; 32], Option<ApiKey>>,
}

/// `redis.url` cannot be used (it does not parse, or names an unsupported scheme).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RedisConfigError(pub String);

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
            settle: Script::new(SETTLE),
            renew: Script::new(RENEW),
            read: Script::new(READ),
            retrying: Arc::new(AtomicUsize::new(0)),
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

/// One background retry in flight, counted until dropped (done, or its task aborted).
struct Retrying(Arc<AtomicUsize>);

impl Drop for Retrying {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

fn mode(e: Expiry) -> (Duration, u8) {
    match e {
        Expiry::Window(d) => (d, 0),
        Expiry::Lease(d) => (d, 1),
    }
}

/// A settlement sent again: `EVAL` (see [`RedisState::keep_trying`]) in the mode that applies
/// only while the ticket is open.
fn settle_retry(ticket: &Ticket, deltas: &[(String, i64)], leases: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SETTLE)
        .arg(deltas.len() + leases.len() + 1)
        .arg(&ticket.key)
        .arg(deltas.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
        .arg(leases)
        .arg(&ticket.id)
        .arg(1);
    for (_, d) in deltas {
        cmd.arg(*d).arg(0);
    }
    for _ in leases {
        cmd.arg(0).arg(1);
    }
    cmd
}

impl RedisState {
    /// After an admission failed (most often: it timed out while Redis stalled, and its script
    /// may still run), undoes its charge in the background: the request went on without a
    /// reservation, so nothing would ever release it. Sent on the same connection, so it
    /// normally runs right after the late charge; the tombstone covers the other order.
    fn undo(&self, ticket: &Ticket, counters: &[Counter]) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CANCEL)
            .arg(counters.len() + 1)
            .arg(&ticket.key)
            .arg(counters.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
            .arg(&ticket.id)
            .arg(TICKET_TTL.as_millis() as u64);
        for c in counters {
            cmd.arg(c.cost).arg(mode(c.expiry).1);
        }
        self.keep_trying(cmd, "undo a timed-out admission", &ticket.id);
    }

    /// Sends an idempotent command in the background until it succeeds or the attempts run
    /// out. `EVAL` with the source, not `EVALSHA`: a command queued behind a stall cannot
    /// recover from `NOSCRIPT`.
    fn keep_trying(&self, cmd: redis::Cmd, what: &'static str, ticket: &str) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.retrying.fetch_add(1, Ordering::Relaxed) >= MAX_RETRYING {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%ticket, "too many Redis retries in flight: did not {what}");
            return;
        }
        let slot = Retrying(self.retrying.clone());
        let mut conn = self.conn.clone();
        let deadline = self.deadline;
        let ticket = ticket.to_owned();
        rt.spawn(async move {
            let _slot = slot;
            let mut backoff = RETRY_BACKOFF;
            for _ in 0..RETRY_ATTEMPTS {
                if let Ok(Ok(())) = timeout(deadline, cmd.exec_async(&mut conn)).await {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            tracing::warn!(
                %ticket,
                "could not {what}: a slot it holds frees itself when its lease expires, tokens \
                 when their window ends"
            );
        });
    }

    async fn try_acquire(
        &self,
        ticket: &Ticket,
        counters: &[Counter],
    ) -> Result<Verdict, StoreError> {
        let mut inv = self.acquire.prepare_invoke();
        inv.key(&ticket.key)
            .arg(&ticket.id)
            .arg(TICKET_TTL.as_millis() as u64);
        for c in counters {
            let (ttl, mode) = mode(c.expiry);
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
    }
}

impl LimitStore for RedisState {
    fn acquire<'a>(
        &'a self,
        ticket: &'a Ticket,
        counters: &'a [Counter],
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        Box::pin(async move {
            let out = self.try_acquire(ticket, counters).await;
            if out.is_err() {
                self.undo(ticket, counters);
            }
            out
        })
    }

    fn settle<'a>(
        &'a self,
        ticket: &'a Ticket,
        deltas: &'a [(String, i64)],
        leases: &'a [String],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inv = self.settle.prepare_invoke();
            inv.key(&ticket.key).arg(&ticket.id).arg(0);
            for (k, d) in deltas {
                inv.key(k).arg(*d).arg(0);
            }
            for k in leases {
                inv.key(k).arg(0).arg(1);
            }
            let mut conn = self.conn.clone();
            let out = self.bounded(inv.invoke_async::<i64>(&mut conn)).await;
            if out.is_err() {
                // A lost release would hold a slot for a whole lease, a lost correction keeps
                // the estimate: retry, in the mode that cannot apply twice.
                let cmd = settle_retry(ticket, deltas, leases);
                self.keep_trying(cmd, "settle a request", &ticket.id);
            }
            out.map(|_| ())
        })
    }

    fn renew<'a>(
        &'a self,
        ticket: &'a Ticket,
        leases: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inv = self.renew.prepare_invoke();
            inv.key(&ticket.key);
            for k in leases {
                inv.key(k);
            }
            inv.arg(&ticket.id)
                .arg(lease.as_millis().max(1) as u64)
                .arg(TICKET_TTL.max(lease * 2).as_millis() as u64);
            let mut conn = self.conn.clone();
            let _: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        counters: &'a [Counter],
    ) -> BoxFuture<'a, Result<Vec<CounterState>, StoreError>> {
        Box::pin(async move {
            let mut inv = self.read.prepare_invoke();
            for c in counters {
                inv.key(&c.key).arg(mode(c.expiry).1);
            }
            let mut conn = self.conn.clone();
            let reply: Vec<i64> = self.bounded(inv.invoke_async(&mut conn)).await?;
            if reply.len() != counters.len() * 2 {
                return Err(StoreError::Unavailable(format!(
                    "unexpected script reply {reply:?}"
                )));
            }
            Ok(reply
                .chunks(2)
                .map(|p| CounterState {
                    value: p[0].max(0) as u64,
                    reset: ms(p[1]),
                })
                .collect())
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

    fn insert<'a>(&'a self, key: ApiKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let json =
                serde_json::to_string(&key).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut conn = self.conn.clone();
            // Keys stored before names were claimed have no entry in the names hash.
            if self.list().await?.iter().any(|k| k.name == key.name) {
                return Ok(false);
            }
            // The name is claimed atomically, so two replicas creating the same name at once
            // cannot both succeed.
            let claimed: bool = self
                .bounded(conn.hset_nx(KEY_NAMES_HASH, &key.name, &key.sha256))
                .await?;
            if !claimed {
                return Ok(false);
            }
            let _: i64 = self
                .bounded(conn.hset(KEYS_HASH, &key.sha256, json))
                .await?;
            if let Some(d) = key.digest() {
                self.key_cache.invalidate(&d);
            }
            Ok(true)
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut removed = false;
            let mut conn = self.conn.clone();
            for k in self.list().await?.into_iter().filter(|k| k.name == name) {
                let n: i64 = self.bounded(conn.hdel(KEYS_HASH, &k.sha256)).await?;
                removed |= n > 0;
                let _: i64 = self.bounded(conn.hdel(KEY_NAMES_HASH, &k.name)).await?;
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

#[cfg(test)]
mod tests;
