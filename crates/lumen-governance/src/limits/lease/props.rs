//! Property test of block leases: any sequence of admissions on three replicas (limiters on
//! one store), settlements with any usage, and clock steps across windows. After every step:
//! no `rpm` window has admitted more than its limit, and the store's `tpm` count holds at least
//! what the window's admitted requests are charged (their estimate, or their usage once
//! settled) — blocks hide tokens from no one.

use std::collections::HashMap;

use futures::FutureExt;
use proptest::prelude::*;

use super::super::{MemoryLimitStore, SETTLE_MARGIN};
use super::*;
use crate::limits::LimitSpec;
use crate::store::Clock;

#[derive(Debug, Clone)]
enum Op {
    Admit(usize, u64),
    /// Settle the outstanding request at this index (modulo), with this usage.
    Settle(usize, Option<u64>),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..3, prop_oneof![6 => 0u64..200, 1 => 0u64..3_000]).prop_map(|(r, e)| Op::Admit(r, e)),
        3 => (any::<usize>(), proptest::option::of(0u64..400)).prop_map(|(i, a)| Op::Settle(i, a)),
        2 => prop_oneof![0u64..2_000, 0u64..70_000, Just(59_500u64)].prop_map(Op::Advance),
    ]
}

struct Admitted {
    replica: usize,
    reservation: Reservation,
    estimate: u64,
    /// When the rpm and tpm windows it was admitted in end (the store's, read right after).
    rpm_end: u64,
    tpm_end: u64,
    /// The least the store must hold for it in its tpm window.
    charge: u64,
    settled: bool,
}

fn run(ops: Vec<Op>, rpm: u64, tpm: u64, settings: LeaseSettings) -> Result<(), TestCaseError> {
    let t = Arc::new(AtomicU64::new(1_795_521_600_000));
    let c = t.clone();
    let clock: Clock = Arc::new(move || c.load(Ordering::SeqCst));
    let store = Arc::new(MemoryLimitStore::new(clock.clone()));
    let replicas: Vec<Limiter> = (0..3)
        .map(|_| Limiter::new(store.clone(), clock.clone()).with_leases(settings))
        .collect();
    let key = ApiKey {
        name: "k".into(),
        sha256: String::new(),
        models: None,
        limits: LimitSpec {
            rpm: Some(rpm),
            tpm: Some(tpm),
            ..Default::default()
        },
        per_model: Default::default(),
    };
    let margin = SETTLE_MARGIN.as_millis() as u64;
    let read = |now: u64| -> Result<(u64, u64, u64, u64), TestCaseError> {
        let Some(Ok(u)) = replicas[0].usage(&key).now_or_never() else {
            return Err(TestCaseError::fail("usage read failed"));
        };
        let end = |i: usize| now + u[i].reset.as_millis() as u64;
        Ok((u[0].used, end(0), u[1].used, end(1)))
    };
    let mut all: Vec<Admitted> = Vec::new();
    for op in ops {
        let now = t.load(Ordering::SeqCst);
        match op {
            Op::Admit(r, estimate) => {
                let Some(verdict) = replicas[r].admit(&key, "m", estimate).now_or_never() else {
                    return Err(TestCaseError::fail("the memory store must answer at once"));
                };
                match verdict {
                    Ok((reservation, _)) => {
                        let (_, rpm_end, _, tpm_end) = read(now)?;
                        all.push(Admitted {
                            replica: r,
                            reservation,
                            estimate,
                            rpm_end,
                            tpm_end,
                            charge: estimate,
                            settled: false,
                        });
                    }
                    Err(LimitError::RateLimited { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
            Op::Settle(i, actual) => {
                let open: Vec<usize> = (0..all.len()).filter(|j| !all[*j].settled).collect();
                if open.is_empty() {
                    continue;
                }
                let a = &mut all[open[i % open.len()]];
                let settled = replicas[a.replica]
                    .settle(&a.reservation, actual)
                    .now_or_never();
                prop_assert!(matches!(settled, Some(Ok(()))));
                a.settled = true;
                if let Some(actual) = actual {
                    // On time, the window is corrected to the usage; late, a refund may still
                    // go back into the block, an overrun may be lost (as without leases).
                    a.charge = if now + margin < a.tpm_end {
                        actual
                    } else {
                        actual.min(a.estimate)
                    };
                }
            }
            Op::Advance(ms) => {
                t.fetch_add(ms, Ordering::SeqCst);
            }
        }
        let now = t.load(Ordering::SeqCst);
        let (rpm_used, rpm_end, tpm_used, tpm_end) = read(now)?;
        let mut per_window: HashMap<u64, u64> = HashMap::new();
        for a in &all {
            *per_window.entry(a.rpm_end).or_default() += 1;
        }
        for (end, n) in &per_window {
            prop_assert!(*n <= rpm, "{} admitted in the rpm window ending {}", n, end);
        }
        if rpm_end > now {
            let n = per_window.get(&rpm_end).copied().unwrap_or(0);
            prop_assert!(rpm_used >= n, "rpm count {} < {} admitted", rpm_used, n);
        }
        if tpm_end > now {
            let held: u64 = all
                .iter()
                .filter(|a| a.tpm_end == tpm_end)
                .map(|a| a.charge)
                .sum();
            prop_assert!(
                tpm_used >= held,
                "tpm count {} < {} charged",
                tpm_used,
                held
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn blocks_never_admit_past_a_limit_nor_hide_tokens(
        ops in proptest::collection::vec(op(), 1..80),
        rpm in 1u64..40,
        tpm in 1u64..5_000,
        fraction in 0.05f64..=0.5,
        max_requests in 1u64..20,
        max_tokens in 1u64..2_000,
    ) {
        run(ops, rpm, tpm, LeaseSettings { fraction, max_requests, max_tokens })?;
    }
}
