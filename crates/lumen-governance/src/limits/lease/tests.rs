use std::sync::atomic::AtomicBool;

use futures::future::BoxFuture;

use super::super::MemoryLimitStore;
use super::*;
use crate::store::{Clock, LimitStore, StoreError, Ticket};

const T0: u64 = 1_795_521_600_000;

fn clock() -> (Arc<AtomicU64>, Clock) {
    let t = Arc::new(AtomicU64::new(T0));
    let c = t.clone();
    (t, Arc::new(move || c.load(Ordering::SeqCst)))
}

fn key(limits: crate::limits::LimitSpec) -> ApiKey {
    ApiKey {
        name: "team".into(),
        sha256: String::new(),
        models: None,
        limits,
        per_model: Default::default(),
    }
}

fn rpm(n: u64) -> ApiKey {
    key(crate::limits::LimitSpec {
        rpm: Some(n),
        ..Default::default()
    })
}

fn settings(fraction: f64) -> LeaseSettings {
    LeaseSettings {
        fraction,
        ..Default::default()
    }
}

/// A store that counts its operations and can be made to fail, around the memory store.
struct Flaky {
    inner: MemoryLimitStore,
    down: AtomicBool,
    acquires: AtomicU64,
    settles: AtomicU64,
}

impl Flaky {
    fn new(clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryLimitStore::new(clock),
            down: AtomicBool::new(false),
            acquires: AtomicU64::new(0),
            settles: AtomicU64::new(0),
        })
    }

    fn fail(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("down".into()))
        } else {
            Ok(())
        }
    }
}

impl LimitStore for Flaky {
    fn acquire<'a>(
        &'a self,
        ticket: &'a Ticket,
        counters: &'a [Counter],
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        self.acquires.fetch_add(1, Ordering::SeqCst);
        match self.fail() {
            Ok(()) => self.inner.acquire(ticket, counters),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
    fn settle<'a>(
        &'a self,
        ticket: &'a Ticket,
        deltas: &'a [(String, i64)],
        leases: &'a [String],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.settles.fetch_add(1, Ordering::SeqCst);
        match self.fail() {
            Ok(()) => self.inner.settle(ticket, deltas, leases),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
    fn renew<'a>(
        &'a self,
        ticket: &'a Ticket,
        leases: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.renew(ticket, leases, lease)
    }
    fn read<'a>(
        &'a self,
        counters: &'a [Counter],
    ) -> BoxFuture<'a, Result<Vec<CounterState>, StoreError>> {
        self.inner.read(counters)
    }
}

fn lease(left: u64, ends_at: u64) -> Lease {
    Lease {
        id: 7,
        left,
        ends_at,
        value: 0,
        exact_until: 0,
        refilling: None,
    }
}

#[test]
fn the_step_is_local_while_the_block_covers_the_cost_and_lives() {
    assert_eq!(step(None, 0, 1, 10), Step::Refill { block: 10 });
    assert_eq!(
        step(None, 0, 10, 10),
        Step::Exact,
        "a block must cover more"
    );
    assert_eq!(step(Some(&lease(1, 100)), 99, 1, 10), Step::Local { id: 7 });
    assert_eq!(
        step(Some(&lease(1, 100)), 100, 1, 10),
        Step::Refill { block: 10 },
        "the window ended"
    );
    assert_eq!(
        step(Some(&lease(0, 100)), 50, 1, 10),
        Step::Refill { block: 10 }
    );
    let refilling = Lease {
        refilling: Some(3),
        ..lease(0, 100)
    };
    assert_eq!(step(Some(&refilling), 50, 1, 10), Step::Exact);
    let full = Lease {
        exact_until: 100,
        ..lease(2, 100)
    };
    assert_eq!(step(Some(&full), 50, 1, 10), Step::Local { id: 7 });
    assert_eq!(step(Some(&full), 50, 3, 10), Step::Exact);
    assert_eq!(step(Some(&full), 100, 3, 10), Step::Refill { block: 10 });
}

#[test]
fn settings_are_checked_and_size_the_block() {
    assert!(LeaseSettings::default().enabled(), "on by default");
    assert_eq!(LeaseSettings::default().fraction, 0.01);
    assert_eq!(LeaseSettings::default().validate(), Ok(()));
    assert!(!settings(0.0).enabled(), "fraction 0: exact");
    for bad in [-0.1, 0.6, f64::NAN, f64::INFINITY] {
        let e = settings(bad).validate().unwrap_err();
        assert_eq!(e.field(), "fraction", "{bad}");
    }
    let s = LeaseSettings {
        max_requests: 0,
        ..settings(0.1)
    };
    assert_eq!(s.validate().unwrap_err().field(), "max_requests");
    // Blocks Redis's Lua would print in exponent form (found by attack: the whole write batch
    // then failed, other keys' usage records with it).
    for huge in [1_000_000_000_001, u64::MAX] {
        let s = LeaseSettings {
            max_tokens: huge,
            ..settings(0.5)
        };
        assert_eq!(s.validate().unwrap_err().field(), "max_tokens", "{huge}");
    }
    let s = LeaseSettings {
        max_requests: 1_000_000_000_000,
        max_tokens: 1_000_000_000_000,
        ..settings(0.5)
    };
    assert_eq!(s.validate(), Ok(()));
    let s = LeaseSettings {
        fraction: 0.1,
        max_requests: 50,
        max_tokens: 5_000,
    };
    assert_eq!(s.block(Kind::Requests, 100), 10);
    assert_eq!(s.block(Kind::Requests, 1_000_000), 50);
    assert_eq!(s.block(Kind::Tokens, 1_000_000), 5_000);
    assert_eq!(s.block(Kind::Requests, 5), 0, "rounded down");
    assert_eq!(s.block(Kind::Concurrent, 1_000), 0, "never leased");
    assert_eq!(s.block(Kind::Daily, 1_000), 0, "never leased");
}

#[tokio::test]
async fn a_block_admits_without_the_store_until_spent() {
    let (_t, c) = clock();
    let store = Flaky::new(c.clone());
    let l = Limiter::new(store.clone(), c).with_leases(settings(0.1));
    let k = rpm(100);
    for i in 0..10 {
        let (_, h) = l.admit(&k, "m", 1).await.unwrap();
        assert_eq!(h.requests.map(|r| r.1), Some(99 - i), "remaining");
    }
    assert_eq!(store.acquires.load(Ordering::SeqCst), 1, "one block of 10");
    l.admit(&k, "m", 1).await.unwrap();
    assert_eq!(store.acquires.load(Ordering::SeqCst), 2, "the next block");
    assert_eq!(
        l.usage(&k).await.unwrap()[0].used,
        20,
        "both blocks charged"
    );
}

/// Two replicas on one store, requests interleaved at random over several windows: a window
/// never admits more than the limit (blocks are charged before they are spent), and refuses at
/// most one block per replica that an exact limiter would have admitted.
#[tokio::test]
async fn two_replicas_never_admit_past_the_limit() {
    let (t, c) = clock();
    let store = Arc::new(MemoryLimitStore::new(c.clone()));
    let s = LeaseSettings {
        fraction: 0.1,
        max_requests: 7,
        max_tokens: 1_000,
    };
    let replicas = [
        Limiter::new(store.clone(), c.clone()).with_leases(s),
        Limiter::new(store.clone(), c.clone()).with_leases(s),
    ];
    let (limit, block) = (100, 7);
    let k = rpm(limit);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for window in 0..5 {
        let mut admitted = 0;
        for _ in 0..400 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let r = &replicas[(rng % 2) as usize];
            match r.admit(&k, "m", 1).await {
                Ok(_) => admitted += 1,
                Err(LimitError::RateLimited { .. }) => {}
                Err(e) => panic!("{e}"),
            }
            t.fetch_add(50, Ordering::SeqCst);
        }
        assert!(admitted <= limit, "window {window}: {admitted} > {limit}");
        assert!(
            admitted >= limit - 2 * block,
            "window {window}: {admitted} < {limit} - 2 blocks"
        );
        // 400 × 50 ms = 20 s: on to the next window.
        t.fetch_add(41_000, Ordering::SeqCst);
    }
}

/// The same with token blocks and settlements that refund and overrun: the store's count never
/// falls below what the admitted requests really used in the window, and the window never
/// admits an estimate past the limit.
#[tokio::test]
async fn token_blocks_settle_without_losing_tokens() {
    let (_t, c) = clock();
    let store = Flaky::new(c.clone());
    let s = LeaseSettings {
        fraction: 0.1,
        max_requests: 1_000,
        max_tokens: 1_000,
    };
    let replicas = [
        Limiter::new(store.clone(), c.clone()).with_leases(s),
        Limiter::new(store.clone(), c.clone()).with_leases(s),
    ];
    let k = key(crate::limits::LimitSpec {
        tpm: Some(10_000),
        ..Default::default()
    });
    let mut used = 0;
    let mut admissions = 0;
    // (admitted, store admissions) when the window first refused.
    let mut at_first_refusal = None;
    let mut rng = 12_345_u64;
    for _ in 0..300 {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let estimate = 50 + (rng >> 33) % 150;
        let actual = (rng >> 20) % 250;
        let r = &replicas[((rng >> 40) % 2) as usize];
        match r.admit(&k, "m", estimate).await {
            Ok((res, _)) => {
                admissions += 1;
                r.settle(&res, Some(actual)).await.unwrap();
                used += actual;
            }
            Err(LimitError::RateLimited { .. }) => {
                at_first_refusal.get_or_insert((admissions, store.acquires.load(Ordering::SeqCst)));
            }
            Err(e) => panic!("{e}"),
        }
        let charged = r.usage(&k).await.unwrap()[0].used;
        assert!(charged >= used, "store {charged} < used {used}");
    }
    let (admitted, acquires) = at_first_refusal.unwrap();
    assert!(
        acquires * 2 < admitted,
        "most admissions came from blocks: {acquires} store operations for {admitted}"
    );
}

#[tokio::test]
async fn a_refund_grows_the_block_and_needs_no_store_operation() {
    let (_t, c) = clock();
    let store = Flaky::new(c.clone());
    let l = Limiter::new(store.clone(), c).with_leases(settings(0.1));
    let k = key(crate::limits::LimitSpec {
        tpm: Some(10_000),
        ..Default::default()
    });
    let (r, _) = l.admit(&k, "m", 100).await.unwrap();
    let tpm = "lumen:rl:{team#}:*:tpm";
    let leases = l.leases.clone().unwrap();
    assert_eq!(leases.get(tpm).map(|l| l.left), Some(900));
    l.settle(&r, Some(40)).await.unwrap();
    assert_eq!(leases.get(tpm).map(|l| l.left), Some(960), "60 back");
    let (r, _) = l.admit(&k, "m", 100).await.unwrap();
    l.settle(&r, Some(180)).await.unwrap();
    assert_eq!(leases.get(tpm).map(|l| l.left), Some(780), "80 more");
    assert_eq!(store.settles.load(Ordering::SeqCst), 0);
    assert_eq!(store.acquires.load(Ordering::SeqCst), 1);
    // An overrun the block cannot cover goes to the store.
    let (r, _) = l.admit(&k, "m", 100).await.unwrap();
    l.settle(&r, Some(2_000)).await.unwrap();
    assert_eq!(leases.get(tpm).map(|l| l.left), Some(0));
    assert_eq!(store.settles.load(Ordering::SeqCst), 1);
    assert_eq!(
        l.usage(&k).await.unwrap()[0].used,
        1_000 + 2_000 - 100 - 680,
        "the block, plus what it could not cover"
    );
}

/// Under `tokio::time::pause`, with the limiter's clock on Tokio's: a block is never spent
/// after its window, and the next window starts with a new block.
#[tokio::test(start_paused = true)]
async fn a_block_ends_with_its_window() {
    let start = tokio::time::Instant::now();
    let c: Clock = Arc::new(move || T0 + start.elapsed().as_millis() as u64);
    let store = Flaky::new(c.clone());
    let l = Limiter::new(store.clone(), c).with_leases(settings(0.1));
    let k = rpm(100);
    l.admit(&k, "m", 1).await.unwrap();
    tokio::time::advance(Duration::from_millis(59_999)).await;
    l.admit(&k, "m", 1).await.unwrap();
    assert_eq!(store.acquires.load(Ordering::SeqCst), 1, "same window");
    tokio::time::advance(Duration::from_millis(1)).await;
    let (_, h) = l.admit(&k, "m", 1).await.unwrap();
    assert_eq!(store.acquires.load(Ordering::SeqCst), 2, "a new block");
    assert_eq!(h.requests.map(|r| r.1), Some(99), "in a new window");
    assert_eq!(l.usage(&k).await.unwrap()[0].used, 10);
}

/// Near the end of a window the block no longer fits: requests are charged exactly (to the
/// last one the limit allows), and the replica does not try a block again until the window
/// ends.
#[tokio::test]
async fn a_block_that_does_not_fit_falls_back_to_exact() {
    let (t, c) = clock();
    let store = Flaky::new(c.clone());
    let s = LeaseSettings {
        fraction: 0.4,
        ..Default::default()
    };
    let a = Limiter::new(store.clone(), c.clone()).with_leases(s);
    let b = Limiter::new(store.clone(), c.clone()).with_leases(s);
    let k = rpm(10);
    b.admit(&k, "m", 1).await.unwrap();
    for _ in 0..4 {
        a.admit(&k, "m", 1).await.unwrap();
    }
    assert_eq!(a.usage(&k).await.unwrap()[0].used, 8, "two blocks of 4");
    let before = store.acquires.load(Ordering::SeqCst);
    a.admit(&k, "m", 1).await.unwrap();
    assert_eq!(
        store.acquires.load(Ordering::SeqCst) - before,
        2,
        "a refused block, then the request alone"
    );
    a.admit(&k, "m", 1).await.unwrap();
    assert_eq!(store.acquires.load(Ordering::SeqCst) - before, 3, "exact");
    assert!(matches!(
        a.admit(&k, "m", 1).await,
        Err(LimitError::RateLimited { .. })
    ));
    for _ in 0..3 {
        b.admit(&k, "m", 1).await.unwrap();
    }
    assert!(
        b.admit(&k, "m", 1).await.is_err(),
        "10 admitted, 10 charged"
    );
    t.fetch_add(60_000, Ordering::SeqCst);
    let before = store.acquires.load(Ordering::SeqCst);
    a.admit(&k, "m", 1).await.unwrap();
    a.admit(&k, "m", 1).await.unwrap();
    assert_eq!(
        store.acquires.load(Ordering::SeqCst) - before,
        1,
        "blocks again"
    );
}

/// Redis going away mid-block: what the block holds is still admitted (it was charged), then
/// the store's error reaches the caller exactly as without leases (which then fails open or
/// closed), and a failed request gives back what it took.
#[tokio::test]
async fn the_store_failing_mid_block_fails_like_without_leases() {
    let (_t, c) = clock();
    let store = Flaky::new(c.clone());
    let l = Limiter::new(store.clone(), c).with_leases(settings(0.1));
    let mut k = rpm(100);
    k.limits.tpm = Some(1_000_000);
    l.admit(&k, "m", 10).await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    for _ in 0..9 {
        let (r, _) = l.admit(&k, "m", 10).await.unwrap();
        l.settle(&r, Some(10)).await.unwrap();
    }
    assert!(matches!(
        l.admit(&k, "m", 10).await,
        Err(LimitError::Store(StoreError::Unavailable(_)))
    ));
    let leases = l.leases.clone().unwrap();
    let tpm = leases.get("lumen:rl:{team#}:*:tpm").unwrap();
    assert_eq!(
        tpm.left,
        100_000 - 100,
        "the failed request gave its tokens back"
    );
    assert_eq!(tpm.refilling, None);
    store.down.store(false, Ordering::SeqCst);
    l.admit(&k, "m", 10).await.unwrap();
}

/// A store that never answers, so an admission can be dropped mid-refill.
struct Stuck;

impl LimitStore for Stuck {
    fn acquire<'a>(
        &'a self,
        _: &'a Ticket,
        _: &'a [Counter],
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        Box::pin(std::future::pending())
    }
    fn settle<'a>(
        &'a self,
        _: &'a Ticket,
        _: &'a [(String, i64)],
        _: &'a [String],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn renew<'a>(
        &'a self,
        _: &'a Ticket,
        _: &'a [String],
        _: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn read<'a>(
        &'a self,
        _: &'a [Counter],
    ) -> BoxFuture<'a, Result<Vec<CounterState>, StoreError>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

#[tokio::test]
async fn a_dropped_refill_does_not_leave_the_counter_exact() {
    let (_t, c) = clock();
    let l = Limiter::new(Arc::new(Stuck), c).with_leases(settings(0.1));
    let k = rpm(100);
    let admit = l.admit(&k, "m", 1);
    assert!(futures::FutureExt::now_or_never(admit).is_none());
    let lease = l.leases.as_ref().unwrap().get("lumen:rl:{team#}:*:rpm");
    assert_eq!(lease.map(|l| l.refilling), Some(None));
}

/// Leases off: the limiter behaves as it always did (the same reservations, headers and
/// errors as one built without the setting).
#[tokio::test]
async fn leases_off_is_the_exact_limiter() {
    let (t, c) = clock();
    let plain = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c.clone());
    let off = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c.clone())
        .with_leases(settings(0.0));
    assert!(off.leases.is_none());
    let k = key(crate::limits::LimitSpec {
        rpm: Some(20),
        tpm: Some(2_000),
        max_concurrent: Some(3),
        ..Default::default()
    });
    for i in 0..30_u64 {
        let (a, b) = (plain.admit(&k, "m", 90).await, off.admit(&k, "m", 90).await);
        // The tickets are unique: everything else must match.
        let strip = |r: &mut Result<(Reservation, RateHeaders), LimitError>| {
            if let Ok((res, _)) = r {
                res.ticket = None;
            }
        };
        let (mut a, mut b) = (a, b);
        strip(&mut a);
        strip(&mut b);
        assert_eq!(a, b, "request {i}");
        t.fetch_add(700, Ordering::SeqCst);
    }
}
