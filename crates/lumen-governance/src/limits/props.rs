//! Property tests of the limit arithmetic: any sequence of admissions, settlements (with any
//! usage, huge counts included) and clock steps against a plain model of the windows. The
//! store's counters must equal the model's after every step (so they never wrap or go below
//! zero), and every verdict must be the model's: a request is admitted exactly when each counter
//! fits it, so the limiter never admits past a limit by what it charged.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use proptest::prelude::*;

use super::*;

const MINUTE_MS: u64 = 60_000;
const LEASE_MS: u64 = 30_000;

#[derive(Debug, Clone)]
enum Op {
    Admit(u64),
    /// Settle the outstanding request at this index (modulo), with this usage.
    Settle(usize, Option<u64>),
    Advance(u64),
}

fn tokens() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..400,
        1 => Just(0u64),
        1 => (u64::MAX - 1_000)..=u64::MAX,
        1 => any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => tokens().prop_map(Op::Admit),
        3 => (any::<usize>(), proptest::option::of(tokens())).prop_map(|(i, a)| Op::Settle(i, a)),
        2 => prop_oneof![0u64..2_000, 0u64..70_000, Just(MINUTE_MS)].prop_map(Op::Advance),
    ]
}

/// A window counter as the memory store keeps it: (value, expires at).
#[derive(Debug, Default, Clone, Copy)]
struct Window(Option<(u64, u64)>);

impl Window {
    fn value(&self, now: u64) -> u64 {
        match self.0 {
            Some((v, exp)) if exp > now => v,
            _ => 0,
        }
    }
    /// Charges `cost`; returns the window's expiry.
    fn charge(&mut self, cost: u64, now: u64) -> u64 {
        let (v, exp) = match self.0 {
            Some((v, exp)) if exp > now => (v.saturating_add(cost), exp),
            _ => (cost, now + MINUTE_MS),
        };
        self.0 = Some((v, exp));
        exp
    }
}

struct Outstanding {
    reservation: Reservation,
    estimate: u64,
    /// When the window the estimate was charged in ends.
    window_end: u64,
    slot: u64,
}

struct Model {
    rpm: Window,
    tpm: Window,
    /// Concurrency slots: (request, expires at).
    slots: Vec<(u64, u64)>,
    outstanding: Vec<Outstanding>,
    next: u64,
}

fn run(ops: Vec<Op>, rpm: u64, tpm: u64, conc: u64) -> Result<(), TestCaseError> {
    let t = Arc::new(AtomicU64::new(1_795_521_600_000));
    let c = t.clone();
    let clock: Clock = Arc::new(move || c.load(Ordering::SeqCst));
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(clock.clone())), clock);
    let key = ApiKey {
        name: "k".into(),
        sha256: String::new(),
        models: None,
        limits: LimitSpec {
            rpm: Some(rpm),
            tpm: Some(tpm),
            max_concurrent: Some(conc),
            ..Default::default()
        },
        per_model: Default::default(),
    };
    let mut m = Model {
        rpm: Window::default(),
        tpm: Window::default(),
        slots: Vec::new(),
        outstanding: Vec::new(),
        next: 0,
    };
    for op in ops {
        let now = t.load(Ordering::SeqCst);
        match op {
            Op::Admit(estimate) => {
                m.slots.retain(|(_, exp)| *exp > now);
                let fits = m.rpm.value(now) < rpm
                    && m.tpm.value(now).saturating_add(estimate) <= tpm
                    && (m.slots.len() as u64) < conc;
                let verdict = l.admit(&key, "m", estimate).now_or_never();
                let Some(verdict) = verdict else {
                    return Err(TestCaseError::fail("the memory store must answer at once"));
                };
                match verdict {
                    Ok((reservation, _)) => {
                        prop_assert!(fits, "admitted past a limit (estimate {})", estimate);
                        m.rpm.charge(1, now);
                        let window_end = m.tpm.charge(estimate, now);
                        m.next += 1;
                        m.slots.push((m.next, now + LEASE_MS));
                        m.outstanding.push(Outstanding {
                            reservation,
                            estimate,
                            window_end,
                            slot: m.next,
                        });
                    }
                    Err(LimitError::RateLimited { .. }) => prop_assert!(!fits, "refused in limits"),
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
            Op::Settle(i, actual) => {
                if m.outstanding.is_empty() {
                    continue;
                }
                let o = m.outstanding.remove(i % m.outstanding.len());
                let settled = l.settle(&o.reservation, actual).now_or_never();
                prop_assert!(matches!(settled, Some(Ok(()))));
                m.slots.retain(|(id, exp)| *id != o.slot && *exp > now);
                // Usage corrects the window the estimate was charged in, while that window
                // lasts (with a margin for a remote store's latency); a later window holds
                // other requests' charges, never this one's refund.
                if let Some(a) = actual {
                    if now + (SETTLE_MARGIN.as_millis() as u64) < o.window_end {
                        if let Some((v, exp)) = &mut m.tpm.0 {
                            if *exp == o.window_end {
                                // Deltas travel as i64 (Redis' INCRBY): huge ones clamp.
                                *v = if a >= o.estimate {
                                    v.saturating_add((a - o.estimate).min(i64::MAX as u64))
                                } else {
                                    v.saturating_sub((o.estimate - a).min(1 << 63))
                                };
                            }
                        }
                    }
                }
            }
            Op::Advance(ms) => {
                t.fetch_add(ms, Ordering::SeqCst);
            }
        }
        let now = t.load(Ordering::SeqCst);
        m.slots.retain(|(_, exp)| *exp > now);
        let Some(Ok(usage)) = l.usage(&key).now_or_never() else {
            return Err(TestCaseError::fail("usage read failed"));
        };
        let values: Vec<u64> = usage.iter().map(|u| u.used).collect();
        let expected = vec![m.rpm.value(now), m.tpm.value(now), m.slots.len() as u64];
        prop_assert_eq!(
            values,
            expected,
            "counters (rpm, tpm, concurrency) differ from the model"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Reserve then settle never drives a counter below zero or past what was charged, and
    /// never lets a request in past a limit: the store's counters are the model's.
    #[test]
    fn reserve_then_settle_matches_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        rpm in 1u64..8,
        tpm in prop_oneof![1u64..1_000, Just(u64::MAX)],
        conc in 1u64..4,
    ) {
        run(ops, rpm, tpm, conc)?;
    }
}
