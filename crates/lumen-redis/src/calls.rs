//! The two batched calls every limited request makes, as values: what a batch of admissions
//! or of writes (settlements and usage records) sends to Redis, and how a reply reads. Pure
//! functions, so the encoding is tested without a server; `lib.rs` sends them.
//!
//! Both scripts take many requests at once ([`crate::batch`]): Redis pays a script call's fixed
//! cost (a few µs) once per batch rather than once per request, and the writes of a batch are
//! merged first — one `DEL` for all tickets, one `ZREM` per lease counter, one `INCRBY` per
//! window counter, one `HINCRBY` per usage field — so Redis's work follows the distinct keys a
//! batch touches, not its requests.

use std::collections::BTreeMap;

use lumen_governance::store::{Counter, CounterState, Expiry, StoreError, Ticket, Verdict};
use redis::ToRedisArgs;

/// Check every counter, then charge every counter, for each request of a batch in turn (each
/// request is all or nothing; one refused does not affect the next).
/// KEYS: per request, its ticket, then one key per counter.
/// ARGV[1]: how long a ticket is remembered (ms); then per request: its number of counters,
/// its ticket id, and per counter: limit, cost, ttl_ms, mode (0: a window — the expiry is set
/// when the counter is new; 1: a lease — a sorted set of ticket ids scored by when each slot
/// expires).
/// Returns one reply per request: {1, value1, pttl1, ...}; {0, index, value, pttl} for the
/// first counter that would exceed its limit (0 refuses every charge); {2} if the ticket was
/// cancelled first (the caller stopped waiting and the undo got here before this charge did).
/// The ticket is written first (`SET NX`: one call both checks for a tombstone and opens the
/// ticket) and deleted again on a refusal, so an undo refunds only a charge that was applied.
///
/// Each `redis.call` costs a script a microsecond or two beyond the command itself, so a batch
/// reads each counter once (value and PTTL; a lease counter is pruned of expired slots once),
/// admits its requests in order against the running values in Lua — the same verdicts as one
/// call each, in that order — and writes each counter once at the end (one `INCRBY`, or `SET
/// PX` for a new window; one variadic `ZADD` for the new slots). Redis runs the script
/// atomically and its clock stands still during it, so nothing else sees the counters between
/// the read and the write. A request costs about one call (its ticket) plus its share of the
/// per-counter ones.
pub(crate) const ACQUIRE: &str = r#"
local ticket_ttl = ARGV[1]
local now = nil
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = t[1] * 1000 + math.floor(t[2] / 1000)
  end
  return now
end
local state = {}
local order = {}
local function load(key, lease)
  local s = state[key]
  if s then return s end
  if lease then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', clock())
    s = {lease = true, v = redis.call('ZCARD', key), add = {}, ttl = 0}
  else
    s = {v = tonumber(redis.call('GET', key) or '0')}
  end
  s.p = redis.call('PTTL', key)
  s.v0 = s.v
  s.p0 = s.p
  state[key] = s
  order[#order + 1] = key
  return s
end
local function acquire(k, a, n, id)
  if not redis.call('SET', KEYS[k], '1', 'NX', 'PX', ticket_ttl) then return {2} end
  local ss = {}
  for i = 1, n do
    local b = a + (i - 1) * 4
    local limit = tonumber(ARGV[b])
    local cost = tonumber(ARGV[b + 1])
    local s = load(KEYS[k + i], ARGV[b + 3] == '1')
    ss[i] = s
    if limit == 0 or s.v + cost > limit then
      redis.call('DEL', KEYS[k])
      return {0, i, s.v, math.max(s.p, s.ttl or 0)}
    end
  end
  local out = {1}
  for i = 1, n do
    local b = a + (i - 1) * 4
    local ttl = tonumber(ARGV[b + 2])
    local s = ss[i]
    if s.lease then
      s.add[#s.add + 1] = clock() + ttl
      s.add[#s.add + 1] = id
      s.v = s.v + 1
      if ttl > s.ttl then s.ttl = ttl end
      out[#out + 1] = s.v
      out[#out + 1] = ttl
    else
      s.v = s.v + tonumber(ARGV[b + 1])
      s.charged = true
      if s.p < 0 then s.p = ttl end
      out[#out + 1] = s.v
      out[#out + 1] = s.p
    end
  end
  return out
end
local replies = {}
local k = 1
local a = 2
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  replies[#replies + 1] = acquire(k, a + 2, n, ARGV[a + 1])
  k = k + 1 + n
  a = a + 2 + 4 * n
end
for _, key in ipairs(order) do
  local s = state[key]
  if s.lease then
    if #s.add > 0 then
      redis.call('ZADD', key, unpack(s.add))
      if s.p0 < s.ttl then redis.call('PEXPIRE', key, s.ttl) end
    end
  elseif s.charged then
    if s.p0 == -2 then
      redis.call('SET', key, s.v, 'PX', s.p)
    else
      if s.v ~= s.v0 then redis.call('INCRBY', key, s.v - s.v0) end
      if s.p0 == -1 then redis.call('PEXPIRE', key, s.p) end
    end
  end
end
return replies
"#;

/// The ends of many requests and their usage records, applied once: the first call opens a
/// marker (`SET NX`), so a retry of the same batch (it timed out, and may still land) finds it
/// and changes nothing — no settlement or record is lost to a timeout or counted twice.
/// Forgets the tickets, frees their lease slots, adds each window counter's summed delta if
/// the counter still exists (never creates one, never goes below zero), adds each usage field
/// and sets its day's expiry (an expiry already past deletes the day: a late record dropped
/// the way the in-memory store drops it).
/// KEYS: the marker; the tickets; the lease counters; the window counters; the usage hashes.
/// ARGV[1]: how long the marker lives (ms); ARGV[2..5]: how many tickets, lease counters,
/// window counters and hashes; then per lease counter: how many slots, and their ticket ids;
/// per window counter: its delta; per hash: expire-at (Unix s), how many fields, and per
/// field: its name and increment.
pub(crate) const WRITE: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local t = tonumber(ARGV[2])
local z = tonumber(ARGV[3])
local w = tonumber(ARGV[4])
local h = tonumber(ARGV[5])
local k = 2
local a = 6
if t > 0 then redis.call('DEL', unpack(KEYS, k, k + t - 1)) end
k = k + t
for _ = 1, z do
  local m = tonumber(ARGV[a])
  redis.call('ZREM', KEYS[k], unpack(ARGV, a + 1, a + m))
  a = a + 1 + m
  k = k + 1
end
for _ = 1, w do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    local v = redis.call('INCRBY', KEYS[k], ARGV[a])
    if v < 0 then redis.call('SET', KEYS[k], 0, 'KEEPTTL') end
  end
  a = a + 1
  k = k + 1
end
for _ = 1, h do
  local n = tonumber(ARGV[a + 1])
  for i = 1, n do
    redis.call('HINCRBY', KEYS[k], ARGV[a + 2 * i], ARGV[a + 2 * i + 1])
  end
  redis.call('EXPIREAT', KEYS[k], ARGV[a])
  a = a + 2 + 2 * n
  k = k + 1
end
return 1
"#;

/// A script call's keys and arguments, sent as `EVALSHA` and, when Redis does not know the
/// script (restarted, flushed) or for a retry queued behind a stall, as `EVAL`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub keys: Vec<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
}

impl Invocation {
    fn key(&mut self, k: impl ToRedisArgs) -> &mut Self {
        k.write_redis_args(&mut self.keys);
        self
    }

    fn arg(&mut self, v: impl ToRedisArgs) -> &mut Self {
        v.write_redis_args(&mut self.args);
        self
    }

    /// `verb` (`EVALSHA` or `EVAL`) with `script` (its hash or its source).
    pub(crate) fn cmd(&self, verb: &str, script: &str) -> redis::Cmd {
        let mut c = redis::cmd(verb);
        c.arg(script)
            .arg(self.keys.len())
            .arg(&self.keys[..])
            .arg(&self.args[..]);
        c
    }
}

/// One admission waiting for its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admission {
    pub ticket: Ticket,
    pub counters: Vec<Counter>,
}

pub(crate) fn mode(e: Expiry) -> (std::time::Duration, u8) {
    match e {
        Expiry::Window(d) => (d, 0),
        Expiry::Lease(d) => (d, 1),
    }
}

/// The [`ACQUIRE`] call for a batch of admissions.
pub(crate) fn acquire_call(ticket_ttl_ms: u64, batch: &[Admission]) -> Invocation {
    let mut inv = Invocation::default();
    inv.arg(ticket_ttl_ms);
    for a in batch {
        inv.key(&a.ticket.key)
            .arg(a.counters.len())
            .arg(&a.ticket.id);
        for c in &a.counters {
            let (ttl, mode) = mode(c.expiry);
            inv.key(&c.key)
                .arg(c.limit)
                .arg(c.cost)
                .arg(ttl.as_millis().max(1) as u64)
                .arg(mode);
        }
    }
    inv
}

fn ms(v: i64) -> std::time::Duration {
    std::time::Duration::from_millis(v.max(0) as u64)
}

/// One request's reply from [`ACQUIRE`].
pub(crate) fn verdict(reply: &[i64], counters: usize) -> Result<Verdict, StoreError> {
    match reply {
        [1, rest @ ..] if rest.len() == counters * 2 => Ok(Verdict::Admitted(
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

/// One write waiting for its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    /// The end of a request: its ticket goes, its slot in each of `leases` is freed, and each
    /// of `deltas` is added to its window counter.
    Settle {
        ticket: Ticket,
        deltas: Vec<(String, i64)>,
        leases: Vec<String>,
    },
    /// A usage record: `fields` (name, increment) added to the day's `hash`, which expires at
    /// `expires_at` (Unix s).
    Usage {
        hash: String,
        expires_at: i64,
        fields: Vec<(String, i64)>,
    },
    /// Writes nothing: its reply says that everything queued before it has been written.
    Barrier,
}

impl Write {
    /// What the write is, as the request path names its store errors (`lumen_redis_errors_total`
    /// `op`), for a failure the write queue reports itself.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Settle { .. } => "settle",
            Self::Usage { .. } => "usage",
            Self::Barrier => "flush",
        }
    }
}

/// What a batch of writes changes, merged per key: exact sums, so merging loses nothing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Merged<'a> {
    tickets: Vec<&'a str>,
    /// Lease counter → the ticket ids whose slots go.
    leases: BTreeMap<&'a str, Vec<&'a str>>,
    /// Window counter → summed delta (saturating).
    windows: BTreeMap<&'a str, i64>,
    /// Usage hash → (expire-at, field → summed increment).
    hashes: BTreeMap<&'a str, (i64, BTreeMap<&'a str, i64>)>,
}

fn merge(batch: &[Write]) -> Merged<'_> {
    let mut m = Merged::default();
    for w in batch {
        match w {
            Write::Settle {
                ticket,
                deltas,
                leases,
            } => {
                m.tickets.push(&ticket.key);
                for l in leases {
                    m.leases.entry(l).or_default().push(&ticket.id);
                }
                for (k, d) in deltas {
                    let sum = m.windows.entry(k).or_default();
                    *sum = sum.saturating_add(*d);
                }
            }
            Write::Usage {
                hash,
                expires_at,
                fields,
            } => {
                let (at, row) = m.hashes.entry(hash).or_default();
                *at = *expires_at;
                for (f, v) in fields {
                    let sum = row.entry(f).or_default();
                    *sum = sum.saturating_add(*v);
                }
            }
            Write::Barrier => {}
        }
    }
    m.windows.retain(|_, d| *d != 0);
    m.hashes.retain(|_, (_, row)| {
        row.retain(|_, v| *v != 0);
        !row.is_empty()
    });
    m
}

/// The [`WRITE`] call for a batch, under `marker`; `None` when the batch writes nothing (only
/// barriers, or deltas that cancel out and nothing else).
pub(crate) fn write_call(marker: &str, marker_ttl_ms: u64, batch: &[Write]) -> Option<Invocation> {
    let m = merge(batch);
    if m.tickets.is_empty() && m.hashes.is_empty() && m.windows.is_empty() {
        return None;
    }
    let mut inv = Invocation::default();
    inv.key(marker)
        .arg(marker_ttl_ms)
        .arg(m.tickets.len())
        .arg(m.leases.len())
        .arg(m.windows.len())
        .arg(m.hashes.len());
    for t in &m.tickets {
        inv.key(*t);
    }
    for (k, ids) in &m.leases {
        inv.key(*k).arg(ids.len());
        for id in ids {
            inv.arg(*id);
        }
    }
    for (k, d) in &m.windows {
        inv.key(*k).arg(*d);
    }
    for (h, (at, row)) in &m.hashes {
        inv.key(*h).arg(*at).arg(row.len());
        for (f, v) in row {
            inv.arg(*f).arg(*v);
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests;
