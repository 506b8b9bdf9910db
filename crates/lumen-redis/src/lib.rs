//! Shared state on Redis: a real distributed store instead of a home-made one.
//!
//! Implements `lumen-governance`'s storage traits, so the same limit, cache and key policy runs
//! in memory (one replica) or here (many replicas):
//!
//! - [`LimitStore`]: one Lua script per request checks every counter, then charges every
//!   counter — atomic and one round trip, so limits are exact across replicas. Concurrency is
//!   a sorted set of per-request slots that expire unless renewed; an admission Lumen stopped
//!   waiting for is undone when its script runs late (tickets and tombstones, below). With
//!   `redis.lease` the same script charges blocks of `rpm` and `tpm` (a counter's cost is then
//!   the block), which the limiter spends in process: nothing changes here.
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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use lumen_governance::keys::{ApiKey, to_hex};
use lumen_governance::store::{
    CacheStore, Counter, CounterState, KeyStore, LimitStore, StoreError, Ticket, Verdict,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ErrorKind, Script, ServerErrorKind};
use tokio::time::{Instant, timeout, timeout_at};

mod accounting;
mod batch;
mod calls;

pub use accounting::RedisUsageStore;

use batch::{Queue, Shape, Submitted, Unwaited};
use calls::{Admission, Invocation, Write, mode};

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

/// Admissions in one [`calls::ACQUIRE`] call at most: a batch runs in Redis for about 5 µs a
/// request, so 64 keep one call well under a millisecond.
const ACQUIRE_BATCH: usize = 64;
/// Admissions waiting for a call at most (a few requests in flight each); past it, an
/// admission is sent on its own, as without batching.
const ACQUIRE_QUEUE: usize = 1_024;
/// Settlements and usage records in one [`calls::WRITE`] call at most; merged per key, so a
/// batch of one API key's requests is a few commands whatever its size.
const WRITE_BATCH: usize = 256;
/// Writes waiting at most: while Redis stalls, settlements queue here (each holds a ticket,
/// a few counter names and a usage row, a few hundred bytes); past it, each is sent on its
/// own, as without batching, so nothing is dropped.
const WRITE_QUEUE: usize = 4_096;

/// What the batch tasks share with the request path: the connection, its deadline, the
/// scripts, and the background retries.
struct Core {
    conn: ConnectionManager,
    deadline: Duration,
    acquire: Script,
    write: Script,
    /// Undos and writes being retried in the background, bounded by [`MAX_RETRYING`].
    retrying: Arc<AtomicUsize>,
    /// Names the markers of write batches: random per process, then a sequence number.
    marker_prefix: u64,
    marker_seq: AtomicU64,
}

/// A Redis connection with deadlines.
pub struct RedisState {
    conn: ConnectionManager,
    deadline: Duration,
    core: Arc<Core>,
    renew: Script,
    read: Script,
    /// Concurrent admissions, one script call per batch (`None` outside a Tokio runtime).
    acquires: Option<Queue<Admission, Result<Verdict, StoreError>>>,
    /// Settlements and usage records, one script call per batch.
    writes: Option<Queue<Write, ()>>,
    /// Where the write queue reports the failure of a write no one waits for (see
    /// [`RedisState::report_write_errors`]).
    write_errors: Arc<OnceLock<WriteErrors>>,
    /// Admissions sent on their own and not answered yet (see [`DirectSlot`]).
    direct: Arc<AtomicUsize>,
    /// Run-time keys seen recently (or known absent), so key checks rarely wait on Redis.
    key_cache: moka::sync::Cache<[u8; 32], Option<ApiKey>>,
}

/// Counts (and logs) a store error of a write sent without waiting: the operation (`settle`,
/// `usage`) and the error.
pub type WriteErrors = Arc<dyn Fn(&'static str, &StoreError) + Send + Sync>;

/// `redis.url` cannot be used (it does not parse, or names an unsupported scheme).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RedisConfigError(pub String);

/// A number no other process picks (with high probability), from the standard library's
/// randomly seeded hasher, the process id and the clock: no extra dependency for it.
fn process_random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.finish()
}

impl RedisState {
    /// Prepares a lazy connection to `url`. Never waits for Redis: it may be down now.
    /// `deadline` bounds every operation; `key_ttl` is how long a looked-up key is trusted.
    /// Must be called inside a Tokio runtime (it starts the batch tasks there).
    pub fn new(url: &str, deadline: Duration, key_ttl: Duration) -> Result<Self, RedisConfigError> {
        let client = redis::Client::open(url).map_err(|e| RedisConfigError(e.to_string()))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(deadline.max(Duration::from_millis(100))))
            .set_response_timeout(Some(deadline))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, cfg)
            .map_err(|e| RedisConfigError(e.to_string()))?;
        let core = Arc::new(Core {
            conn: conn.clone(),
            deadline,
            acquire: Script::new(calls::ACQUIRE),
            write: Script::new(calls::WRITE),
            retrying: Arc::new(AtomicUsize::new(0)),
            marker_prefix: process_random(),
            marker_seq: AtomicU64::new(0),
        });
        let acquires = {
            let core = core.clone();
            Queue::start(
                Shape {
                    capacity: ACQUIRE_QUEUE,
                    max_batch: ACQUIRE_BATCH,
                    skip_abandoned: true,
                },
                Box::new(move |batch| Box::pin(core.clone().acquire_batch(batch))),
            )
        };
        let write_errors: Arc<OnceLock<WriteErrors>> = Arc::default();
        let writes = {
            let core = core.clone();
            let errors = write_errors.clone();
            Queue::start_with(
                Shape {
                    capacity: WRITE_QUEUE,
                    max_batch: WRITE_BATCH,
                    skip_abandoned: false,
                },
                Box::new(move |batch| Box::pin(core.clone().write_batch(batch))),
                Some(Unwaited {
                    label: Write::label,
                    report: Box::new(move |op, e| match errors.get() {
                        Some(report) => report(op, e),
                        None => tracing::warn!(op, error = %e, "shared-state store error"),
                    }),
                }),
            )
        };
        Ok(Self {
            conn,
            deadline,
            core,
            renew: Script::new(RENEW),
            read: Script::new(READ),
            acquires,
            writes,
            write_errors,
            direct: Arc::new(AtomicUsize::new(0)),
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
        self.core.bounded(op).await
    }

    /// `op` on the connection, sent once more within the same deadline when the connection is
    /// found dead (as [`Core::run`]'s scripts): for the reads and renewals on the request
    /// path, which must not fail once on every idle replica after Redis restarted.
    async fn retried<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.bounded(async {
            match op(self.conn.clone()).await {
                Err(e) if e.is_connection_dropped() => op(self.conn.clone()).await,
                other => other,
            }
        })
        .await
    }

    /// Round-trip latency of a PING.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let pong: String = self
            .retried(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        if pong == "PONG" {
            Ok(start.elapsed())
        } else {
            Err(StoreError::Unavailable(format!(
                "unexpected PING reply {pong:?}"
            )))
        }
    }

    /// Waits until every settlement and usage record queued so far has been sent and
    /// answered (or failed, its retries then running in the background): for shutdown, so
    /// what requests wrote just before the end is not lost with the process.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self.writes.as_ref().map(|q| q.submit(Write::Barrier)) {
            Some(Submitted::Queued(reply)) => flatten(reply.await),
            _ => Ok(()),
        }
    }

    /// Where the failures of writes sent without waiting ([`LimitStore::try_queue_settle`],
    /// [`lumen_governance::accounting::UsageStore::try_queue`]) go: the server counts them as
    /// it counts a failure its request path sees. Set once; before it is set, they are logged.
    pub fn report_write_errors(&self, report: WriteErrors) {
        let _ = self.write_errors.set(report);
    }

    /// Queues `w` for the next batch of writes without waiting for it (its failure goes to
    /// [`RedisState::report_write_errors`]); hands it back when the queue is full or absent.
    fn send(&self, w: Write) -> Result<(), Write> {
        match &self.writes {
            Some(q) => q.send(w),
            None => Err(w),
        }
    }

    /// Sends `w` with the next batch of writes (or alone, when the queue is full) and waits
    /// for it to be written.
    async fn write(&self, w: Write) -> Result<(), StoreError> {
        let w = match Queue::submit_to(self.writes.as_ref(), w) {
            Submitted::Queued(reply) => return flatten(reply.await),
            Submitted::Alone(w) => w,
        };
        self.core.clone().write_batch(vec![w]).await.map(|_| ())
    }

    /// Checks and charges with the next batch of admissions (or alone, when the queue is
    /// full), waiting at most the deadline.
    async fn try_acquire(
        &self,
        ticket: &Ticket,
        counters: &[Counter],
    ) -> Result<Verdict, StoreError> {
        let a = Admission {
            ticket: ticket.clone(),
            counters: counters.to_vec(),
        };
        let direct = DirectSlot::take(&self.direct);
        let queue = match direct {
            Some(_) => None,
            None => self.acquires.as_ref(),
        };
        let a = match Queue::submit_to(queue, a) {
            Submitted::Queued(reply) => {
                return match timeout(self.deadline, reply).await {
                    Ok(r) => flatten(r)?,
                    Err(_) => Err(StoreError::Timeout),
                };
            }
            Submitted::Alone(a) => a,
        };
        let mut out = self.core.clone().acquire_batch(vec![a]).await?;
        out.pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("no reply for an admission".into())))
    }
}

/// A batch's reply to one of its items; a batch task that went away is an unavailable store.
fn flatten<R>(
    r: Result<Result<R, StoreError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<R, StoreError> {
    r.unwrap_or_else(|_| Err(StoreError::Unavailable("the batch task ended".into())))
}

/// Admissions sent on their own at once at most. While fewer are on their way, an admission
/// goes straight from the request's task (no hop through the batch task: the least latency
/// when Redis is idle); otherwise it joins the next batch, which goes while this one is out.
const DIRECT_MAX: usize = 1;

/// An admission sent on its own, counted until it is answered (or given up).
struct DirectSlot(Arc<AtomicUsize>);

impl DirectSlot {
    /// A slot when fewer than [`DIRECT_MAX`] are taken.
    fn take(count: &Arc<AtomicUsize>) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) < DIRECT_MAX {
            Some(Self(count.clone()))
        } else {
            count.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }
}

impl Drop for DirectSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

impl Core {
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

    /// `EVALSHA`, then `EVAL` (which also loads the script) when Redis does not know it. The
    /// call has one deadline, and the `EVAL` a new one (Redis answered: loading the script is
    /// one more round trip).
    ///
    /// Sent once more, within the same deadline, when the connection turns out to be dead
    /// (Redis restarted or closed it while it was idle: that shows only at the next use, and
    /// the connection manager reconnects then): the Redis that answers now normally never saw
    /// the call. Writes apply once under their marker; an admission that a dying connection
    /// did deliver is counted twice (a block taken twice, with leases): capacity refused early
    /// for the rest of its window, never one request too many admitted.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        source: &str,
        inv: &Invocation,
    ) -> Result<T, StoreError> {
        let mut end = Instant::now() + self.deadline;
        let (mut loaded, mut resent) = (false, false);
        let mut conn = self.conn.clone();
        loop {
            let cmd = if loaded {
                inv.cmd("EVAL", source)
            } else {
                inv.cmd("EVALSHA", script.get_hash())
            };
            match timeout_at(end, cmd.query_async::<T>(&mut conn)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e))
                    if !loaded && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                {
                    loaded = true;
                    end = Instant::now() + self.deadline;
                }
                Ok(Err(e)) if !resent && e.is_connection_dropped() => {
                    resent = true;
                    conn = self.conn.clone();
                }
                Ok(Err(e)) => return Err(StoreError::Unavailable(e.to_string())),
                Err(_) => return Err(StoreError::Timeout),
            }
        }
    }

    /// One call for a batch of admissions; each gets its own verdict.
    async fn acquire_batch(
        self: Arc<Self>,
        batch: Vec<Admission>,
    ) -> Result<Vec<Result<Verdict, StoreError>>, StoreError> {
        let inv = calls::acquire_call(TICKET_TTL.as_millis() as u64, &batch);
        let replies: Vec<Vec<i64>> = self.run(&self.acquire, calls::ACQUIRE, &inv).await?;
        Ok(batch
            .iter()
            .zip(
                replies
                    .iter()
                    .map(Vec::as_slice)
                    .chain(std::iter::repeat(&[][..])),
            )
            .map(|(a, r)| calls::verdict(r, a.counters.len()))
            .collect())
    }

    /// One call for a batch of writes. When it fails (it may still land: a stall) the same
    /// call, under the same marker, is retried in the background, and it applies once.
    async fn write_batch(self: Arc<Self>, batch: Vec<Write>) -> Result<Vec<()>, StoreError> {
        let n = batch.len();
        let marker = format!(
            "lumen:write:{:016x}{:x}",
            self.marker_prefix,
            self.marker_seq.fetch_add(1, Ordering::Relaxed)
        );
        let Some(inv) = calls::write_call(&marker, TICKET_TTL.as_millis() as u64, &batch) else {
            return Ok(vec![(); n]);
        };
        match self.run::<i64>(&self.write, calls::WRITE, &inv).await {
            Ok(_) => Ok(vec![(); n]),
            Err(e) => {
                // A lost release would hold a slot for a whole lease, a lost correction keeps
                // the estimate, a lost record is missing from the report.
                self.keep_trying(
                    inv.cmd("EVAL", calls::WRITE),
                    "write settlements and usage",
                    &marker,
                );
                Err(e)
            }
        }
    }

    /// Sends an idempotent command in the background until it succeeds or the attempts run
    /// out. `EVAL` with the source, not `EVALSHA`: a command queued behind a stall cannot
    /// recover from `NOSCRIPT`.
    fn keep_trying(&self, cmd: redis::Cmd, what: &'static str, id: &str) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.retrying.fetch_add(1, Ordering::Relaxed) >= MAX_RETRYING {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%id, "too many Redis retries in flight: did not {what}");
            return;
        }
        let slot = Retrying(self.retrying.clone());
        let mut conn = self.conn.clone();
        let deadline = self.deadline;
        let id = id.to_owned();
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
                %id,
                "could not {what}: a slot it holds frees itself when its lease expires, tokens \
                 when their window ends"
            );
        });
    }
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
        self.core
            .keep_trying(cmd, "undo a timed-out admission", &ticket.id);
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
        Box::pin(self.write(Write::Settle {
            ticket: ticket.clone(),
            deltas: deltas.to_vec(),
            leases: leases.to_vec(),
        }))
    }

    fn try_queue_settle(
        &self,
        ticket: &Ticket,
        deltas: &[(String, i64)],
        leases: &[String],
    ) -> bool {
        self.send(Write::Settle {
            ticket: ticket.clone(),
            deltas: deltas.to_vec(),
            leases: leases.to_vec(),
        })
        .is_ok()
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
            let inv = &inv;
            let _: i64 = self
                .retried(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
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
            let inv = &inv;
            let reply: Vec<i64> = self
                .retried(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
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
            let field = &to_hex(digest);
            let raw: Option<String> = self
                .retried(|mut c| async move { c.hget(KEYS_HASH, field).await })
                .await?;
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
