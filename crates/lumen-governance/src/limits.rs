//! Per-key (and per key and model) limits: requests and tokens per minute, concurrent requests,
//! and token quotas per day and per month.
//!
//! A request reserves an estimate of its tokens at admission (prompt size plus `max_tokens`) and
//! settles with the engine's real usage afterwards. All counters of one request are checked and
//! charged in one atomic store operation — one Redis round trip — so limits are exact across
//! replicas; with block leases on (`redis.lease`, [`LeaseSettings`]) `rpm` and `tpm` are
//! admitted from blocks a replica charged beforehand, never past the limit but with up to a
//! block per replica left unused (see the `lease` module). Minute windows start at a key's
//! first request (no clock-boundary effects between replicas); quotas use calendar days and
//! months (UTC).

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::keys::ApiKey;
pub use crate::spec::LimitSpec;
use crate::store::{Clock, Counter, CounterState, Expiry, LimitStore, StoreError, Ticket, Verdict};

mod lease;

pub use lease::{LeaseSettings, LeaseSettingsError};
use lease::{LeasedTokens, Leases, Returned};

const MINUTE: Duration = Duration::from_secs(60);
/// How long a concurrency slot outlives its last renewal. It bounds how long a slot whose
/// release was lost (a replica died; the store was unreachable at the end and afterwards)
/// keeps a key's capacity: short, because a live request renews its slot every
/// [`Limiter::RENEW_EVERY`].
const LEASE: Duration = Duration::from_secs(30);
/// A settlement corrects only the window its estimate was charged in, and only while that
/// window has at least this long left: a remote store applies it a round trip later, and a
/// correction that lands in the next window would refund that window's requests with
/// another's tokens (letting it admit past its limit). Dropping a late refund errs towards
/// refusing.
const SETTLE_MARGIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requests,
    Tokens,
    Concurrent,
    Daily,
    Monthly,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("Rate limit reached for {what} on key `{key}`: limit {limit}, try again in {}s.", retry_after.as_secs().max(1))]
    RateLimited {
        key: String,
        what: &'static str,
        limit: u64,
        retry_after: Duration,
        headers: RateHeaders,
    },
    #[error("Token quota exhausted for key `{key}` ({period} quota {limit}).")]
    QuotaExceeded {
        key: String,
        period: &'static str,
        limit: u64,
        retry_after: Duration,
    },
    /// A limit of 0: the operator switched the key (or the key on a model) off.
    #[error("Key `{key}` is suspended{}: its `{field}` limit is 0.", for_model(model.as_deref()))]
    Suspended {
        key: String,
        /// `None` for the key's own limits, the model for a `per_model` one.
        model: Option<String>,
        field: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn for_model(model: Option<&str>) -> String {
    model.map_or_else(String::new, |m| format!(" for model `{m}`"))
}

impl LimitError {
    /// Low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::RateLimited { what, .. } => what,
            Self::QuotaExceeded { .. } => "quota",
            Self::Suspended { .. } => "suspended",
            Self::Store(_) => "store",
        }
    }
}

/// OpenAI's `x-ratelimit-*` values for requests and tokens: (limit, remaining, reset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<(u64, u64, Duration)>,
    pub tokens: Option<(u64, u64, Duration)>,
}

/// What must be settled once the request is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// `None` when nothing was charged.
    ticket: Option<Ticket>,
    /// Token counters charged with the estimate.
    token_keys: Vec<String>,
    /// When the window each of `token_keys` was charged in ends (ms on the limiter's clock,
    /// read before the charge, so never later than the store's own end).
    window_ends: Vec<u64>,
    estimate: u64,
    /// For each of `token_keys`: whether it is the per-model scope's (not the key's own).
    model_scoped: Vec<bool>,
    /// A fallback served the request with another model: the per-model token counters of the
    /// model admitted at the door are refunded, as the tokens count against the model that
    /// served (charged through its own reservation).
    moved: bool,
    /// Lease counters holding one slot for this request.
    concurrency_keys: Vec<String>,
    /// Token counters whose estimate came out of a block of this replica (leases on): their
    /// settlement corrects the block while it lives.
    leased: Vec<LeasedTokens>,
    /// What was left of blocks this request replaced, given back to the store when it settles.
    returns: Vec<Returned>,
}

impl Reservation {
    /// Nothing was reserved (no key, or no limits).
    pub fn none() -> Self {
        Self {
            ticket: None,
            token_keys: Vec::new(),
            window_ends: Vec::new(),
            estimate: 0,
            model_scoped: Vec::new(),
            moved: false,
            concurrency_keys: Vec::new(),
            leased: Vec::new(),
            returns: Vec::new(),
        }
    }

    /// Records that another model served the request (see the `moved` field).
    pub fn mark_moved(&mut self) {
        self.moved = true;
    }

    /// The real tokens a counter is settled to: none for the admitted model's own scope when
    /// the request moved to another model.
    fn actual_for(&self, scoped: bool, actual: Option<u64>) -> Option<u64> {
        if scoped && self.moved {
            Some(0)
        } else {
            actual
        }
    }

    /// The corrections that replace the estimate with the real usage, at `now_ms`: one per
    /// token counter whose window is still the one charged (see [`SETTLE_MARGIN`]). Huge
    /// counts saturate rather than wrap.
    pub fn settlement(&self, actual_tokens: Option<u64>, now_ms: u64) -> Vec<(String, i64)> {
        let delta = |actual: Option<u64>| {
            actual.map_or(0, |a| {
                let d = i128::from(a) - i128::from(self.estimate);
                i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
            })
        };
        let margin = SETTLE_MARGIN.as_millis() as u64;
        self.token_keys
            .iter()
            .zip(&self.window_ends)
            .zip(self.model_scoped.iter().chain(std::iter::repeat(&false)))
            .filter(|((_, end), _)| now_ms.saturating_add(margin) < **end)
            .map(|((k, _), scoped)| (k.clone(), delta(self.actual_for(*scoped, actual_tokens))))
            .filter(|(_, d)| *d != 0)
            .collect()
    }

    /// Whether [`Limiter::settle`] has anything to do.
    pub fn needs_settling(&self, actual_tokens: Option<u64>) -> bool {
        let corrects = |s: &bool| {
            self.actual_for(*s, actual_tokens)
                .is_some_and(|a| a != self.estimate)
        };
        self.ticket.is_some()
            && (!self.concurrency_keys.is_empty()
                || self.model_scoped.iter().any(corrects)
                || self.leased.iter().map(|t| &t.scoped).any(corrects)
                || !self.returns.is_empty())
    }

    /// Whether the request holds concurrency slots, which it must renew (every
    /// [`Limiter::RENEW_EVERY`]) for as long as it lives.
    pub fn has_leases(&self) -> bool {
        self.ticket.is_some() && !self.concurrency_keys.is_empty()
    }
}

/// A ticket for one request of the API key `name`: unique across replicas (a random prefix per
/// process and a sequence number), cheap to make.
fn ticket(name: &str) -> Ticket {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        // Without OS randomness, the process id and the wall clock still tell replicas apart.
        getrandom::u64().unwrap_or_else(|_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            now ^ (u64::from(std::process::id()) << 32)
        })
    });
    let id = format!("{prefix:016x}{:x}", SEQ.fetch_add(1, Ordering::Relaxed));
    let key = format!("lumen:rl:{{{name}}}:req:{id}");
    Ticket { id, key }
}

/// Admits requests against a key's limits on a store.
#[derive(Clone)]
pub struct Limiter {
    store: Arc<dyn LimitStore>,
    clock: Clock,
    /// Blocks of `rpm` and `tpm` windows this replica holds; `None` (the default): every
    /// request is charged on the store on its own.
    leases: Option<Arc<Leases>>,
}

impl Limiter {
    /// How often a live request renews its concurrency slots: a third of the lease, so two
    /// renewals in a row can fail before a live request loses its slot.
    pub const RENEW_EVERY: Duration = Duration::from_secs(LEASE.as_secs() / 3);

    pub fn new(store: Arc<dyn LimitStore>, clock: Clock) -> Self {
        Self {
            store,
            clock,
            leases: None,
        }
    }

    /// Admits `rpm` and `tpm` from blocks of their windows taken from the store (see
    /// [`LeaseSettings`]); settings that are off leave the limiter exact. For a shared store:
    /// in memory a block saves nothing.
    pub fn with_leases(mut self, settings: LeaseSettings) -> Self {
        self.leases = settings.enabled().then(|| Arc::new(Leases::new(settings)));
        self
    }

    pub fn store(&self) -> &Arc<dyn LimitStore> {
        &self.store
    }

    /// The counters that apply, and beside them what each one limits.
    /// `whole`: the key's own limits and the model's; otherwise only the model's (a fallback
    /// model, the key's own limits being charged already). Each entry of the second list says
    /// what the counter limits and whether it is the model's scope.
    fn plan(
        &self,
        key: &ApiKey,
        model: &str,
        estimate: u64,
        whole: bool,
    ) -> (Vec<Counter>, Vec<(Kind, &'static str, bool)>) {
        let mut counters = Vec::new();
        let mut kinds = Vec::new();
        let own = whole.then_some(&key.limits);
        let scopes = [("*", own, false), (model, key.per_model.get(model), true)];
        let ns = key.namespace();
        for (scope, spec, scoped) in scopes {
            let Some(spec) = spec.filter(|s| !s.is_empty()) else {
                continue;
            };
            // Braces: a Redis Cluster hash tag, so one key's counters share a slot.
            let base = format!("lumen:rl:{{{ns}}}:{scope}:");
            let mut push = |kind, suffix: &str, limit: Option<u64>, cost, expiry, what| {
                if let Some(limit) = limit {
                    let mut key = String::with_capacity(base.len() + suffix.len());
                    key.push_str(&base);
                    key.push_str(suffix);
                    counters.push(Counter {
                        key,
                        limit,
                        cost,
                        expiry,
                    });
                    kinds.push((kind, what, scoped));
                }
            };
            push(
                Kind::Requests,
                "rpm",
                spec.rpm,
                1,
                Expiry::Window(MINUTE),
                "requests",
            );
            push(
                Kind::Tokens,
                "tpm",
                spec.tpm,
                estimate,
                Expiry::Window(MINUTE),
                "tokens",
            );
            push(
                Kind::Concurrent,
                "conc",
                spec.max_concurrent,
                1,
                Expiry::Lease(LEASE),
                "concurrent requests",
            );
            // Calendar periods only when a quota uses them: formatting dates costs allocations.
            if spec.daily_tokens.is_some() {
                let (day, day_left) = calendar_day((self.clock)());
                push(
                    Kind::Daily,
                    &format!("day:{day}"),
                    spec.daily_tokens,
                    estimate,
                    Expiry::Window(day_left),
                    "daily tokens",
                );
            }
            if spec.monthly_tokens.is_some() {
                let (month, month_left) = calendar_month((self.clock)());
                push(
                    Kind::Monthly,
                    &format!("month:{month}"),
                    spec.monthly_tokens,
                    estimate,
                    Expiry::Window(month_left),
                    "monthly tokens",
                );
            }
        }
        (counters, kinds)
    }

    /// Checks and charges every limit that applies, in one atomic store operation.
    pub async fn admit(
        &self,
        key: &ApiKey,
        model: &str,
        estimate: u64,
    ) -> Result<(Reservation, RateHeaders), LimitError> {
        self.admit_scopes(key, model, estimate, true).await
    }

    /// Checks and charges only the key's limits on `model` (its `per_model` entry): for a
    /// fallback model that takes over a request already admitted, whose key-wide limits were
    /// charged at the door. Nothing to charge (no entry): admitted with no reservation.
    pub async fn admit_model(
        &self,
        key: &ApiKey,
        model: &str,
        estimate: u64,
    ) -> Result<Reservation, LimitError> {
        Ok(self.admit_scopes(key, model, estimate, false).await?.0)
    }

    async fn admit_scopes(
        &self,
        key: &ApiKey,
        model: &str,
        estimate: u64,
        whole: bool,
    ) -> Result<(Reservation, RateHeaders), LimitError> {
        // Refused here, not by the store: no round trip, and the same answer while the store
        // is down (a suspended key stays suspended in fail-open mode).
        let scopes = [
            (None, whole.then_some(&key.limits)),
            (Some(model), key.per_model.get(model)),
        ];
        for (scope, spec) in scopes {
            if let Some(field) = spec.and_then(LimitSpec::zero) {
                return Err(LimitError::Suspended {
                    key: key.name.clone(),
                    model: scope.map(str::to_owned),
                    field,
                });
            }
        }
        let (counters, kinds) = self.plan(key, model, estimate, whole);
        if counters.is_empty() {
            return Ok((Reservation::none(), RateHeaders::default()));
        }
        if let Some(leases) = &self.leases {
            return self
                .admit_leased(leases, key, counters, kinds, estimate)
                .await;
        }
        let ticket = ticket(&key.namespace());
        let admitted_at = (self.clock)();
        let verdict = self.store.acquire(&ticket, &counters).await?;
        let headers = |states: &[CounterState]| {
            let mut h = RateHeaders::default();
            for ((c, (kind, _, _)), s) in counters.iter().zip(&kinds).zip(states) {
                let entry = Some((c.limit, c.limit.saturating_sub(s.value), s.reset));
                match kind {
                    // The tightest scope wins (the per-model one comes second).
                    Kind::Requests => h.requests = tighter(h.requests, entry),
                    Kind::Tokens => h.tokens = tighter(h.tokens, entry),
                    _ => {}
                }
            }
            h
        };
        match verdict {
            Verdict::Admitted(states) => {
                let mut r = Reservation::none();
                r.ticket = Some(ticket);
                r.estimate = estimate;
                let h = headers(&states);
                for ((c, (kind, _, scoped)), s) in counters.into_iter().zip(&kinds).zip(&states) {
                    match kind {
                        Kind::Tokens | Kind::Daily | Kind::Monthly => {
                            r.token_keys.push(c.key);
                            r.model_scoped.push(*scoped);
                            let left = u64::try_from(s.reset.as_millis()).unwrap_or(u64::MAX);
                            r.window_ends.push(admitted_at.saturating_add(left));
                        }
                        Kind::Concurrent => r.concurrency_keys.push(c.key),
                        Kind::Requests => {}
                    }
                }
                Ok((r, h))
            }
            Verdict::Refused { index, state } => {
                let (Some(c), Some((kind, what, _))) = (counters.get(index), kinds.get(index))
                else {
                    return Err(LimitError::Store(StoreError::Unavailable(format!(
                        "store refused counter {index} of {}",
                        counters.len()
                    ))));
                };
                Err(refusal(key, c, *kind, what, state))
            }
        }
    }

    /// Replaces the estimate with real usage and releases concurrency.
    pub async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: Option<u64>,
    ) -> Result<(), StoreError> {
        let Some((ticket, deltas)) = self.settlement_of(reservation, actual_tokens) else {
            return Ok(());
        };
        self.store
            .settle(ticket, &deltas, &reservation.concurrency_keys)
            .await
    }

    /// [`Limiter::settle`] for a request's way out, which does not wait for it: the store
    /// queues it when it can (see [`LimitStore::try_queue_settle`]); otherwise the store
    /// operation is returned, for the caller to run (it owns what it needs).
    pub fn settle_detached(
        &self,
        reservation: &Reservation,
        actual_tokens: Option<u64>,
    ) -> Option<BoxFuture<'static, Result<(), StoreError>>> {
        let (ticket, deltas) = self.settlement_of(reservation, actual_tokens)?;
        let leases = &reservation.concurrency_keys;
        if self.store.try_queue_settle(ticket, &deltas, leases) {
            return None;
        }
        let (store, ticket, leases) = (self.store.clone(), ticket.clone(), leases.clone());
        Some(Box::pin(async move {
            store.settle(&ticket, &deltas, &leases).await
        }))
    }

    /// What settling `reservation` asks of the store: its ticket and the corrections; `None`
    /// when nothing. With leases, the blocks take their share first (once: this is the only
    /// place that applies a settlement to them).
    fn settlement_of<'r>(
        &self,
        reservation: &'r Reservation,
        actual_tokens: Option<u64>,
    ) -> Option<(&'r Ticket, Vec<(String, i64)>)> {
        let ticket = reservation.ticket.as_ref()?;
        if !reservation.needs_settling(actual_tokens) {
            return None;
        }
        let now = (self.clock)();
        let mut deltas = reservation.settlement(actual_tokens, now);
        if let Some(leases) = &self.leases {
            deltas.extend(Self::settle_leased(leases, reservation, actual_tokens, now));
            // What the blocks took needs no store operation (so no task on the request's
            // way out).
            if deltas.is_empty() && reservation.concurrency_keys.is_empty() {
                return None;
            }
        }
        Some((ticket, deltas))
    }

    /// Keeps a live request's concurrency slots from expiring; call every
    /// [`Limiter::RENEW_EVERY`] while it runs.
    pub async fn renew(&self, reservation: &Reservation) -> Result<(), StoreError> {
        match &reservation.ticket {
            Some(ticket) if reservation.has_leases() => {
                self.store
                    .renew(ticket, &reservation.concurrency_keys, LEASE)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Current usage of a key, for `/admin/usage`: the key's own counters, then each
    /// `per_model` entry's (model, counter name, value, limit, reset).
    pub async fn usage(&self, key: &ApiKey) -> Result<Vec<Usage>, StoreError> {
        let mut out = Vec::new();
        let scopes = std::iter::once(None).chain(key.per_model.keys().map(Some));
        for model in scopes {
            let (counters, kinds) = match model {
                None => self.plan(key, "", 0, true),
                Some(m) => self.plan(key, m, 0, false),
            };
            let states = self.store.read(&counters).await?;
            out.extend(counters.into_iter().zip(kinds).zip(states).filter_map(
                |((c, (_, what, scoped)), s)| {
                    // The key's own counters only, on the first pass.
                    (scoped == model.is_some()).then(|| Usage {
                        model: model.cloned(),
                        counter: what,
                        used: s.value,
                        limit: c.limit,
                        reset: s.reset,
                    })
                },
            ));
        }
        Ok(out)
    }
}

/// One counter's state, as `/admin/usage` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// `None` for the key's own limits; the model for a `per_model` entry.
    pub model: Option<String>,
    pub counter: &'static str,
    pub used: u64,
    pub limit: u64,
    pub reset: Duration,
}

/// The error for a request the store refused on counter `c`, which limits `what`.
fn refusal(
    key: &ApiKey,
    c: &Counter,
    kind: Kind,
    what: &'static str,
    state: CounterState,
) -> LimitError {
    let retry_after = if kind == Kind::Concurrent {
        Duration::from_secs(1)
    } else {
        state.reset
    };
    match kind {
        Kind::Daily | Kind::Monthly => LimitError::QuotaExceeded {
            key: key.name.clone(),
            period: if kind == Kind::Daily {
                "daily"
            } else {
                "monthly"
            },
            limit: c.limit,
            retry_after,
        },
        _ => {
            let mut h = RateHeaders::default();
            let entry = Some((c.limit, c.limit.saturating_sub(state.value), state.reset));
            match kind {
                Kind::Requests => h.requests = entry,
                Kind::Tokens => h.tokens = entry,
                _ => {}
            }
            LimitError::RateLimited {
                key: key.name.clone(),
                what,
                limit: c.limit,
                retry_after,
                headers: h,
            }
        }
    }
}

fn tighter(
    a: Option<(u64, u64, Duration)>,
    b: Option<(u64, u64, Duration)>,
) -> Option<(u64, u64, Duration)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.1 < x.1 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

const DAY_MS: u64 = 86_400_000;

/// `(YYYYMMDD, time left in the day)` in UTC.
fn calendar_day(now_ms: u64) -> (String, Duration) {
    let days = now_ms / DAY_MS;
    let (y, m, d) = civil(days as i64);
    (
        format!("{y:04}{m:02}{d:02}"),
        Duration::from_millis(DAY_MS - now_ms % DAY_MS),
    )
}

/// `(YYYYMM, time left in the month)` in UTC.
fn calendar_month(now_ms: u64) -> (String, Duration) {
    let days = (now_ms / DAY_MS) as i64;
    let (y, m, _) = civil(days);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let next = days_from_civil(ny, nm, 1) as u64 * DAY_MS;
    (
        format!("{y:04}{m:02}"),
        Duration::from_millis(next.saturating_sub(now_ms)),
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The embedded default: counters in process memory, with the same semantics as Redis.
pub struct MemoryLimitStore {
    clock: Clock,
    maps: Mutex<Maps>,
}

/// Fx hashing: keys are built by Lumen from configured names, so no caller can choose them to
/// collide, and SipHash was a visible share of each admission.
#[derive(Default)]
struct Maps {
    /// Window counters: (value, expires at).
    windows: FxHashMap<String, (u64, u64)>,
    /// Lease counters: one (ticket id, expires at) per slot.
    leases: FxHashMap<String, Vec<(String, u64)>>,
}

impl MemoryLimitStore {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Maps, u64) -> R) -> R {
        let now = (self.clock)();
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        if maps.windows.len() > 10_000 {
            maps.windows.retain(|_, (_, exp)| *exp > now);
        }
        if maps.leases.len() > 10_000 {
            maps.leases.retain(|_, slots| {
                slots.retain(|(_, exp)| *exp > now);
                !slots.is_empty()
            });
        }
        f(&mut maps, now)
    }
}

fn state(entry: Option<&(u64, u64)>, now: u64) -> CounterState {
    match entry {
        Some((v, exp)) if *exp > now => CounterState {
            value: *v,
            reset: Duration::from_millis(exp - now),
        },
        _ => CounterState {
            value: 0,
            reset: Duration::ZERO,
        },
    }
}

/// Live slots of a lease counter, and the time until the last one expires.
fn lease_state(slots: Option<&Vec<(String, u64)>>, now: u64) -> CounterState {
    let live = slots.into_iter().flatten().filter(|(_, exp)| *exp > now);
    let (value, last) = live.fold((0, now), |(n, last), (_, exp)| (n + 1, last.max(*exp)));
    CounterState {
        value,
        reset: Duration::from_millis(last - now),
    }
}

impl Maps {
    fn state(&self, c: &Counter, now: u64) -> CounterState {
        match c.expiry {
            Expiry::Window(_) => state(self.windows.get(&c.key), now),
            Expiry::Lease(_) => lease_state(self.leases.get(&c.key), now),
        }
    }

    fn charge(&mut self, ticket: &Ticket, c: &Counter, now: u64) -> CounterState {
        match c.expiry {
            Expiry::Lease(d) => {
                let expires = now + d.as_millis() as u64;
                // Clone the key only for a new counter (an allocation per request otherwise).
                if !self.leases.contains_key(&c.key) {
                    self.leases.insert(c.key.clone(), Vec::new());
                }
                let mut value = 0;
                if let Some(slots) = self.leases.get_mut(&c.key) {
                    slots.retain(|(_, exp)| *exp > now);
                    slots.push((ticket.id.clone(), expires));
                    value = slots.len() as u64;
                }
                CounterState { value, reset: d }
            }
            Expiry::Window(d) => {
                let live = state(self.windows.get(&c.key), now);
                let expires = if live.reset.is_zero() {
                    now + d.as_millis() as u64
                } else {
                    now + live.reset.as_millis() as u64
                };
                let value = live.value.saturating_add(c.cost);
                // Overwrite in place: cloning the key for `insert` is an allocation per counter
                // per request.
                match self.windows.get_mut(&c.key) {
                    Some(slot) => *slot = (value, expires),
                    None => {
                        self.windows.insert(c.key.clone(), (value, expires));
                    }
                }
                CounterState {
                    value,
                    reset: Duration::from_millis(expires - now),
                }
            }
        }
    }
}

impl LimitStore for MemoryLimitStore {
    fn acquire<'a>(
        &'a self,
        ticket: &'a Ticket,
        counters: &'a [Counter],
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        let verdict = self.with(|maps, now| {
            for (i, c) in counters.iter().enumerate() {
                let s = maps.state(c, now);
                if c.limit == 0 || s.value.saturating_add(c.cost) > c.limit {
                    return Verdict::Refused { index: i, state: s };
                }
            }
            Verdict::Admitted(
                counters
                    .iter()
                    .map(|c| maps.charge(ticket, c, now))
                    .collect(),
            )
        });
        Box::pin(std::future::ready(Ok(verdict)))
    }

    fn settle<'a>(
        &'a self,
        ticket: &'a Ticket,
        deltas: &'a [(String, i64)],
        leases: &'a [String],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|maps, now| {
            for (k, d) in deltas {
                if let Some((v, exp)) = maps.windows.get_mut(k) {
                    if *exp > now {
                        *v = if *d >= 0 {
                            v.saturating_add(d.unsigned_abs())
                        } else {
                            v.saturating_sub(d.unsigned_abs())
                        };
                    }
                }
            }
            for k in leases {
                if let Some(slots) = maps.leases.get_mut(k) {
                    slots.retain(|(id, exp)| *id != ticket.id && *exp > now);
                    if slots.is_empty() {
                        maps.leases.remove(k);
                    }
                }
            }
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn renew<'a>(
        &'a self,
        ticket: &'a Ticket,
        leases: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|maps, now| {
            for k in leases {
                let slots = maps.leases.get_mut(k).into_iter().flatten();
                for (_, exp) in slots.filter(|(id, exp)| *id == ticket.id && *exp > now) {
                    *exp = now + lease.as_millis() as u64;
                }
            }
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn read<'a>(
        &'a self,
        counters: &'a [Counter],
    ) -> BoxFuture<'a, Result<Vec<CounterState>, StoreError>> {
        let out = self.with(|maps, now| counters.iter().map(|c| maps.state(c, now)).collect());
        Box::pin(std::future::ready(Ok(out)))
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
