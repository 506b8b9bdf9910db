//! Block leases for `rpm` and `tpm` (`redis.lease`; on by default at 1 % of a limit, off at
//! `fraction = 0`).
//!
//! Exact limits on a shared store cost every request a round trip, and Redis CPU, for its
//! admission. With leases a replica instead charges a *block* of a key's window in one store
//! operation — N requests of its `rpm`, T tokens of its `tpm` — and admits from that block in
//! process until it is spent or the window ends, so most requests make no round trip to admit.
//!
//! **The block is charged before it is used**, so the store's count always holds every block a
//! replica took: a key never admits more than its limit in a window, whatever the replicas do
//! (no over-admission, unlike counting locally and reporting later). The price is the other
//! way: a block taken but not spent is capacity the other replicas cannot use. At most one
//! block per replica per counter is unspent at a time — a replica takes the next one only when
//! the last cannot cover a request, one refill at a time, and when it takes a new block while
//! the old one still holds tokens, those tokens go back to the store with the request's
//! settlement — so a window refuses at most `replicas × block` that an exact limiter would have
//! admitted. An unspent block is not returned at the end of its window: the window's counter
//! expires with it, so there is nothing to return it to.
//!
//! A block is taken only while it fits: when it does not (the window is nearly full), the
//! request is charged on its own, exactly as without leases, until the window ends.
//!
//! Not leased: `max_concurrent` (a slot is held for a request's whole life and must be freed,
//! so a block of slots would hold capacity for as long as the replica is busy, with no window
//! to end it), and the daily and monthly quotas (a block of a month would strand capacity for a
//! month). Token *accounting* is never approximate: usage records are written per request as
//! before; only admission draws on the block.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::{Kind, LimitError, Limiter, RateHeaders, Reservation, refusal, ticket, tighter};
use crate::keys::ApiKey;
use crate::store::{Counter, CounterState, Verdict};

/// `redis.lease`: how big a block a replica takes of a key's `rpm` and `tpm` window.
///
/// A block is `fraction` of the limit, at most `max_requests` (rpm) or `max_tokens` (tpm);
/// `fraction = 0` turns leases off: every request is charged on the store on its own, exactly.
///
/// On by default at 1 %: exact admission on Redis costs every request a round trip and halves
/// a replica's throughput (0.46–0.59× of limits in memory, `benches/results/`), while a block
/// of 1 % strands at most 1 % of a window per replica, and only near the limit. A limit too
/// small for a block to cover a request and one more (`rpm` under 200 at 1 %) stays exact.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseSettings {
    pub fraction: f64,
    pub max_requests: u64,
    pub max_tokens: u64,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            fraction: 0.01,
            max_requests: 1_000,
            max_tokens: 1_000_000,
        }
    }
}

/// A `redis.lease` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseSettingsError {
    /// Past a half, two replicas' blocks cannot both fit in a window: the second would always
    /// be charged exactly, and the first could strand most of the window.
    #[error("must be a number from 0 (leases off) to 0.5, got {0}")]
    Fraction(String),
    #[error("must be from 1 to 1000000000000")]
    Max(&'static str),
}

impl LeaseSettingsError {
    /// The setting at fault, under `redis.lease`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Fraction(_) => "fraction",
            Self::Max(f) => f,
        }
    }
}

/// The largest block a setting may ask for (see [`LeaseSettings::validate`]).
const MAX_BLOCK: u64 = 1_000_000_000_000;

impl LeaseSettings {
    pub fn enabled(&self) -> bool {
        self.fraction > 0.0
    }

    pub fn validate(&self) -> Result<(), LeaseSettingsError> {
        if !(self.fraction.is_finite() && (0.0..=0.5).contains(&self.fraction)) {
            return Err(LeaseSettingsError::Fraction(self.fraction.to_string()));
        }
        // Past 10^12 Redis's Lua (numbers are doubles, printed with 14 digits) would write a
        // block as `1e+17`, which Redis refuses as an integer, failing the whole batch.
        if !(1..=MAX_BLOCK).contains(&self.max_requests) {
            return Err(LeaseSettingsError::Max("max_requests"));
        }
        if !(1..=MAX_BLOCK).contains(&self.max_tokens) {
            return Err(LeaseSettingsError::Max("max_tokens"));
        }
        Ok(())
    }

    /// The block a lease of a counter of `kind` with `limit` takes (0: that counter is never
    /// leased).
    fn block(&self, kind: Kind, limit: u64) -> u64 {
        let cap = match kind {
            Kind::Requests => self.max_requests,
            Kind::Tokens => self.max_tokens,
            Kind::Concurrent | Kind::Daily | Kind::Monthly => return 0,
        };
        // Rounded down: a float product never makes a block larger than its share.
        ((limit as f64 * self.fraction) as u64).min(cap)
    }
}

/// One counter's block on this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Which block: a settlement gives tokens back only to the block they came from.
    pub id: u64,
    /// What is left of the block.
    pub left: u64,
    /// When the block's window ends, on the limiter's clock: read before the store was asked,
    /// plus the time the store said was left, so never later than the store's own end.
    pub ends_at: u64,
    /// The store's count just after the block was charged (for the rate headers).
    pub value: u64,
    /// A block did not fit: charge requests exactly until then (the window's end).
    pub exact_until: u64,
    /// A refill is on its way (its number): meanwhile other requests are charged exactly,
    /// so a replica never has two blocks of one window unspent.
    pub refilling: Option<u64>,
}

/// What to do with one counter of a request: the decision, as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Take the cost from the live block `id`: no store operation.
    Local { id: u64 },
    /// Charge a new block of this size on the store (the request's cost comes out of it).
    Refill { block: u64 },
    /// Charge the request's own cost on the store, as without leases.
    Exact,
}

/// The step for a counter whose request costs `cost`, with blocks of `block`, at `now`.
pub(crate) fn step(lease: Option<&Lease>, now: u64, cost: u64, block: u64) -> Step {
    // A block that cannot cover this request and one more saves nothing.
    if block <= cost {
        return Step::Exact;
    }
    match lease {
        Some(l) if now < l.ends_at && l.left >= cost => Step::Local { id: l.id },
        Some(l) if l.refilling.is_some() || now < l.exact_until => Step::Exact,
        _ => Step::Refill { block },
    }
}

/// A counter's step, with what a local one saw of its block (for the rate headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Planned {
    step: Step,
    /// For [`Step::Local`]: (remaining for the headers, the block's end).
    seen: (u64, u64),
    /// For [`Step::Refill`]: this refill's number.
    refill: u64,
}

/// Tokens of a request that came out of a block: its settlement corrects the block, not the
/// store, while the block lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeasedTokens {
    pub key: String,
    pub id: u64,
    pub ends_at: u64,
    pub scoped: bool,
}

/// What is left of a replaced block, given back to the store with the settlement of the
/// request that replaced it (so a replica never strands more than one block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Returned {
    pub key: String,
    pub amount: u64,
    pub ends_at: u64,
}

/// The blocks this replica holds, per counter.
pub(crate) struct Leases {
    settings: LeaseSettings,
    map: Mutex<FxHashMap<String, Lease>>,
    /// Numbers blocks and refills (unique in the process).
    seq: AtomicU64,
}

impl Leases {
    pub fn new(settings: LeaseSettings) -> Self {
        Self {
            settings,
            map: Mutex::new(FxHashMap::default()),
            seq: AtomicU64::new(1),
        }
    }

    fn with<R>(&self, now: u64, f: impl FnOnce(&mut FxHashMap<String, Lease>) -> R) -> R {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 10_000 {
            map.retain(|_, l| l.ends_at > now || l.exact_until > now || l.refilling.is_some());
        }
        f(&mut map)
    }

    /// Decides each counter's step and takes the local ones from their blocks (and marks the
    /// refills as on their way), in one critical section.
    fn plan(&self, counters: &[Counter], kinds: &[(Kind, &str, bool)], now: u64) -> Vec<Planned> {
        self.with(now, |map| {
            counters
                .iter()
                .zip(kinds)
                .map(|(c, (kind, _, _))| {
                    let block = self.settings.block(*kind, c.limit);
                    let lease = map.get_mut(&c.key);
                    let step = step(lease.as_deref(), now, c.cost, block);
                    let mut p = Planned {
                        step,
                        seen: (0, 0),
                        refill: 0,
                    };
                    match (step, lease) {
                        (Step::Local { .. }, Some(l)) => {
                            l.left -= c.cost;
                            let remaining = c.limit.saturating_sub(l.value).saturating_add(l.left);
                            p.seen = (remaining.min(c.limit), l.ends_at);
                        }
                        (Step::Refill { .. }, lease) => {
                            p.refill = self.seq.fetch_add(1, Ordering::Relaxed);
                            match lease {
                                Some(l) => l.refilling = Some(p.refill),
                                None => {
                                    map.insert(
                                        c.key.clone(),
                                        Lease {
                                            id: 0,
                                            left: 0,
                                            ends_at: 0,
                                            value: 0,
                                            exact_until: 0,
                                            refilling: Some(p.refill),
                                        },
                                    );
                                }
                            }
                        }
                        _ => {}
                    }
                    p
                })
                .collect()
        })
    }

    /// Gives a request's local takes back (it was not admitted after all).
    fn give_back(&self, counters: &[Counter], planned: &[Planned], now: u64) {
        self.with(now, |map| {
            for (c, p) in counters.iter().zip(planned) {
                if let Step::Local { id } = p.step {
                    if let Some(l) = map.get_mut(&c.key).filter(|l| l.id == id) {
                        l.left = l.left.saturating_add(c.cost);
                    }
                }
            }
        });
    }

    /// Ends refill `refill` of `key` without a block; `exact_until`: the block did not fit,
    /// so charge exactly until then.
    fn refill_failed(&self, key: &str, refill: u64, exact_until: Option<u64>, now: u64) {
        self.with(now, |map| {
            if let Some(l) = map.get_mut(key) {
                if l.refilling == Some(refill) {
                    l.refilling = None;
                }
                if let Some(t) = exact_until {
                    l.exact_until = l.exact_until.max(t);
                }
            }
        });
    }

    /// Installs the block of refill `refill` (the request's `cost` already taken from it);
    /// returns its number and what is left of the block it replaces, if that one still lives.
    fn install(
        &self,
        c: &Counter,
        block: u64,
        refill: u64,
        ends_at: u64,
        value: u64,
        now: u64,
    ) -> (u64, Option<Returned>) {
        let id = self.seq.fetch_add(1, Ordering::Relaxed);
        self.with(now, |map| {
            let new = Lease {
                id,
                left: block.saturating_sub(c.cost),
                ends_at,
                value,
                exact_until: 0,
                refilling: None,
            };
            let old = map.insert(c.key.clone(), new);
            let mut returned = None;
            if let Some(old) = old {
                if old.refilling.is_some_and(|r| r != refill) {
                    // Another refill started after ours (ours outlived its guard): it still
                    // owns the flag.
                    if let Some(l) = map.get_mut(&c.key) {
                        l.refilling = old.refilling;
                    }
                }
                if old.left > 0 && now < old.ends_at {
                    returned = Some(Returned {
                        key: c.key.clone(),
                        amount: old.left,
                        ends_at: old.ends_at,
                    });
                }
            }
            (id, returned)
        })
    }

    /// Applies a settlement's `delta` (tokens) to block `id` of `key` while it lives; returns
    /// what the block could not take, for the store (all of it when the block is gone).
    fn settle(&self, key: &str, id: u64, delta: i64, now: u64) -> i64 {
        self.with(now, |map| match map.get_mut(key) {
            Some(l) if l.id == id && now < l.ends_at => {
                if delta < 0 {
                    l.left = l.left.saturating_add(delta.unsigned_abs());
                    0
                } else {
                    let taken = l.left.min(delta.unsigned_abs());
                    l.left -= taken;
                    delta - taken as i64
                }
            }
            _ => delta,
        })
    }

    /// The block of `key`, for tests.
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<Lease> {
        self.with(0, |map| map.get(key).copied())
    }
}

/// Clears the refills a request started if it ends (or is dropped) before they are settled,
/// so a cancelled admission never leaves a counter charged exactly for good.
struct Refills<'a> {
    leases: &'a Leases,
    pending: Vec<(String, u64)>,
}

impl Refills<'_> {
    fn done(&mut self, key: &str) {
        self.pending.retain(|(k, _)| k != key);
    }
}

impl Drop for Refills<'_> {
    fn drop(&mut self) {
        for (key, refill) in std::mem::take(&mut self.pending) {
            self.leases.refill_failed(&key, refill, None, 0);
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Limiter {
    /// [`Limiter::admit`] with leases: counters covered by a live block are charged here; the
    /// rest (refills, exact charges, and every counter that is never leased) go to the store
    /// in one operation, as without leases.
    pub(super) async fn admit_leased(
        &self,
        leases: &Arc<Leases>,
        key: &ApiKey,
        counters: Vec<Counter>,
        kinds: Vec<(Kind, &'static str, bool)>,
        estimate: u64,
    ) -> Result<(Reservation, RateHeaders), LimitError> {
        let admitted_at = (self.clock)();
        let mut planned = leases.plan(&counters, &kinds, admitted_at);
        let mut refills = Refills {
            leases,
            pending: counters
                .iter()
                .zip(&planned)
                .filter(|(_, p)| matches!(p.step, Step::Refill { .. }))
                .map(|(c, p)| (c.key.clone(), p.refill))
                .collect(),
        };
        let ticket = ticket(&key.namespace());
        // The store's state of each counter it was asked about.
        let mut states: Vec<Option<CounterState>> = vec![None; counters.len()];
        loop {
            let sent: Vec<usize> = (0..counters.len())
                .filter(|i| !matches!(planned[*i].step, Step::Local { .. }))
                .collect();
            if sent.is_empty() {
                break;
            }
            let asked: Vec<Counter> = sent
                .iter()
                .map(|i| {
                    let mut c = counters[*i].clone();
                    if let Step::Refill { block } = planned[*i].step {
                        c.cost = block;
                    }
                    c
                })
                .collect();
            let verdict = match self.store.acquire(&ticket, &asked).await {
                Ok(v) => v,
                Err(e) => {
                    leases.give_back(&counters, &planned, (self.clock)());
                    return Err(e.into());
                }
            };
            match verdict {
                Verdict::Admitted(got) => {
                    for (i, s) in sent.iter().zip(got) {
                        states[*i] = Some(s);
                    }
                    break;
                }
                Verdict::Refused { index, state } => {
                    let Some(&i) = sent.get(index) else {
                        leases.give_back(&counters, &planned, (self.clock)());
                        return Err(LimitError::Store(crate::store::StoreError::Unavailable(
                            format!("store refused counter {index} of {}", asked.len()),
                        )));
                    };
                    if matches!(planned[i].step, Step::Refill { .. }) {
                        // The block does not fit in what is left of the window: this request
                        // and the next ones are charged exactly until the window ends.
                        let until = admitted_at.saturating_add(ms(state.reset).max(1_000));
                        leases.refill_failed(
                            &counters[i].key,
                            planned[i].refill,
                            Some(until),
                            admitted_at,
                        );
                        refills.done(&counters[i].key);
                        planned[i].step = Step::Exact;
                        continue;
                    }
                    leases.give_back(&counters, &planned, (self.clock)());
                    let (kind, what, _) = kinds[i];
                    return Err(refusal(key, &counters[i], kind, what, state));
                }
            }
        }
        let mut r = Reservation::none();
        r.ticket = Some(ticket);
        r.estimate = estimate;
        let mut h = RateHeaders::default();
        for (i, (c, (kind, _, scoped))) in counters.into_iter().zip(kinds).enumerate() {
            let p = planned[i];
            // (remaining, reset, the block the tokens came from and its end)
            let (remaining, reset, block) = match (p.step, states[i]) {
                (Step::Local { id }, _) => {
                    let (remaining, ends_at) = p.seen;
                    let reset = Duration::from_millis(ends_at.saturating_sub(admitted_at));
                    (remaining, reset, Some((id, ends_at)))
                }
                (Step::Refill { block }, Some(s)) => {
                    let ends_at = admitted_at.saturating_add(ms(s.reset));
                    let (id, returned) =
                        leases.install(&c, block, p.refill, ends_at, s.value, admitted_at);
                    refills.done(&c.key);
                    r.returns.extend(returned);
                    let remaining = c
                        .limit
                        .saturating_sub(s.value)
                        .saturating_add(block.saturating_sub(c.cost));
                    (remaining.min(c.limit), s.reset, Some((id, ends_at)))
                }
                (_, Some(s)) => (c.limit.saturating_sub(s.value), s.reset, None),
                (_, None) => (c.limit, Duration::ZERO, None),
            };
            let entry = Some((c.limit, remaining, reset));
            match kind {
                Kind::Requests => h.requests = tighter(h.requests, entry),
                Kind::Tokens => h.tokens = tighter(h.tokens, entry),
                _ => {}
            }
            match (kind, block) {
                (Kind::Tokens, Some((id, ends_at))) => r.leased.push(LeasedTokens {
                    key: c.key,
                    id,
                    ends_at,
                    scoped,
                }),
                (Kind::Tokens | Kind::Daily | Kind::Monthly, _) => {
                    r.token_keys.push(c.key);
                    r.model_scoped.push(scoped);
                    let left = states[i].map_or(0, |s| ms(s.reset));
                    r.window_ends.push(admitted_at.saturating_add(left));
                }
                (Kind::Concurrent, _) => r.concurrency_keys.push(c.key),
                (Kind::Requests, _) => {}
            }
        }
        Ok((r, h))
    }

    /// The corrections of a leased reservation the store must still apply: the block takes
    /// what it can while it lives (a refund grows it, an overrun comes out of it), the rest
    /// goes to the store under the same rule as without leases (only into the window that was
    /// charged), and so does what is left of a block this request replaced.
    pub(super) fn settle_leased(
        leases: &Leases,
        reservation: &Reservation,
        actual_tokens: Option<u64>,
        now: u64,
    ) -> Vec<(String, i64)> {
        let margin = super::SETTLE_MARGIN.as_millis() as u64;
        let live = |ends_at: u64| now.saturating_add(margin) < ends_at;
        let mut out = Vec::new();
        for t in &reservation.leased {
            let Some(actual) = reservation.actual_for(t.scoped, actual_tokens) else {
                continue;
            };
            let d = i128::from(actual) - i128::from(reservation.estimate);
            let d = i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX });
            if d == 0 {
                continue;
            }
            let rest = leases.settle(&t.key, t.id, d, now);
            if rest != 0 && live(t.ends_at) {
                out.push((t.key.clone(), rest));
            }
        }
        for ret in &reservation.returns {
            if live(ret.ends_at) {
                let amount = i64::try_from(ret.amount).unwrap_or(i64::MAX);
                out.push((ret.key.clone(), -amount));
            }
        }
        out
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
