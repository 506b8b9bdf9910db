use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

const DAY_MS: u64 = 86_400_000;

fn day(s: &str) -> Day {
    s.parse().unwrap()
}

/// A clock the test moves, starting at noon of `start`.
fn clock(start: &str) -> (Clock, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(
        day(start).days_since_epoch() as u64 * DAY_MS + DAY_MS / 2,
    ));
    let n = now.clone();
    (Arc::new(move || n.load(Ordering::Relaxed)), now)
}

fn store(start: &str, retention_days: u32, max_rows: usize) -> (MemoryUsageStore, Arc<AtomicU64>) {
    let (clock, now) = clock(start);
    let s = MemoryUsageStore::new(
        clock,
        UsageBounds {
            retention_days,
            max_rows,
        },
    );
    (s, now)
}

fn delta<'a>(key: &'a str, model: &'a str, on: &str, tokens: u64) -> UsageDelta<'a> {
    UsageDelta {
        key,
        model,
        requested: None,
        day: day(on),
        counts: Counts {
            requests: 1,
            input_tokens: tokens,
            output_tokens: 2 * tokens,
            cached_tokens: tokens / 2,
            errors: 0,
        },
    }
}

fn all(from: &str, to: &str) -> UsageQuery {
    UsageQuery::new(day(from), day(to)).unwrap()
}

async fn rows(
    s: &MemoryUsageStore,
    q: &UsageQuery,
) -> Vec<(String, String, String, Option<String>, u64)> {
    s.query(q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.day.to_string(),
                r.key,
                r.model,
                r.requested,
                r.counts.requests,
            )
        })
        .collect()
}

fn owned(
    day: &str,
    key: &str,
    model: &str,
    requested: Option<&str>,
    n: u64,
) -> (String, String, String, Option<String>, u64) {
    (
        day.into(),
        key.into(),
        model.into(),
        requested.map(Into::into),
        n,
    )
}

#[tokio::test]
async fn deltas_add_up_per_day_key_model_and_requested() {
    let (s, _) = store("2025-03-02", 30, 100);
    s.record(delta("a", "m", "2025-03-01", 10)).await.unwrap();
    s.record(delta("a", "m", "2025-03-01", 5)).await.unwrap();
    s.record(delta("a", "m", "2025-03-02", 1)).await.unwrap();
    s.record(delta("b", "m", "2025-03-01", 1)).await.unwrap();
    let fallback = UsageDelta {
        requested: Some("big"),
        ..delta("a", "m", "2025-03-01", 7)
    };
    s.record(fallback).await.unwrap();
    // Requested the serving model: the plain row.
    s.record(UsageDelta {
        requested: Some("m"),
        ..delta("a", "m", "2025-03-01", 0)
    })
    .await
    .unwrap();
    let errored = UsageDelta {
        counts: Counts {
            requests: 1,
            errors: 1,
            ..Counts::default()
        },
        ..delta("a", "m", "2025-03-01", 0)
    };
    s.record(errored).await.unwrap();
    // Nothing to add: no row.
    s.record(UsageDelta {
        counts: Counts::default(),
        ..delta("c", "m", "2025-03-01", 0)
    })
    .await
    .unwrap();

    let got = s.query(&all("2025-03-01", "2025-03-02")).await.unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(s.len(), 4);
    let first = &got[0];
    assert_eq!(
        (first.key.as_str(), first.requested.as_deref()),
        ("a", None)
    );
    assert_eq!(
        first.counts,
        Counts {
            requests: 4,
            input_tokens: 15,
            output_tokens: 30,
            cached_tokens: 7,
            errors: 1
        }
    );
    assert_eq!(
        rows(&s, &all("2025-03-01", "2025-03-02")).await,
        [
            owned("2025-03-01", "a", "m", None, 4),
            owned("2025-03-01", "a", "m", Some("big"), 1),
            owned("2025-03-01", "b", "m", None, 1),
            owned("2025-03-02", "a", "m", None, 1),
        ]
    );
}

#[tokio::test]
async fn queries_filter_by_range_key_and_served_model() {
    let (s, _) = store("2025-03-31", 90, 1_000);
    for (k, m, d) in [
        ("a", "m1", "2025-02-28"),
        ("a", "m1", "2025-03-01"),
        ("a", "m2", "2025-03-15"),
        ("b", "m1", "2025-03-31"),
    ] {
        s.record(delta(k, m, d, 1)).await.unwrap();
    }
    s.record(UsageDelta {
        requested: Some("m1"),
        ..delta("b", "m2", "2025-03-02", 1)
    })
    .await
    .unwrap();
    let march = all("2025-03-01", "2025-03-31");
    assert_eq!(rows(&s, &march).await.len(), 4);
    assert_eq!(
        rows(&s, &march.clone().with_key("a")).await,
        [
            owned("2025-03-01", "a", "m1", None, 1),
            owned("2025-03-15", "a", "m2", None, 1)
        ]
    );
    assert_eq!(
        rows(&s, &march.clone().with_model("m1")).await,
        [
            owned("2025-03-01", "a", "m1", None, 1),
            owned("2025-03-31", "b", "m1", None, 1)
        ],
        "the filter is on the serving model"
    );
    assert_eq!(
        rows(&s, &march.clone().with_key("b").with_model("m2")).await,
        [owned("2025-03-02", "b", "m2", Some("m1"), 1)]
    );
    assert!(rows(&s, &march.with_key("nobody")).await.is_empty());
    assert_eq!(
        rows(&s, &all("2025-02-28", "2025-02-28")).await,
        [owned("2025-02-28", "a", "m1", None, 1)]
    );
}

#[tokio::test]
async fn days_past_the_retention_expire_and_late_deltas_for_them_are_dropped() {
    let (s, now) = store("2025-03-10", 3, 100);
    for d in ["2025-03-08", "2025-03-09", "2025-03-10"] {
        s.record(delta("a", "m", d, 1)).await.unwrap();
    }
    // Before the retention: dropped, not stored for a moment.
    s.record(delta("a", "m", "2025-03-07", 1)).await.unwrap();
    let range = all("2025-03-01", "2025-03-31");
    assert_eq!(rows(&s, &range).await.len(), 3);
    assert_eq!(s.len(), 3);

    // Midnight: 03-08 is now four days old.
    now.fetch_add(DAY_MS / 2, Ordering::Relaxed);
    let left: Vec<String> = rows(&s, &range).await.into_iter().map(|r| r.0).collect();
    assert_eq!(left, ["2025-03-09", "2025-03-10"]);
    assert_eq!(s.len(), 2);

    now.fetch_add(10 * DAY_MS, Ordering::Relaxed);
    assert!(rows(&s, &range).await.is_empty());
    assert!(s.is_empty());
}

#[tokio::test]
async fn when_full_the_oldest_day_goes_whole_but_never_the_current_one() {
    let (s, _) = store("2025-03-10", 30, 4);
    s.record(delta("a", "m", "2025-03-08", 1)).await.unwrap();
    s.record(delta("b", "m", "2025-03-08", 1)).await.unwrap();
    s.record(delta("a", "m", "2025-03-09", 1)).await.unwrap();
    s.record(delta("a", "m", "2025-03-10", 1)).await.unwrap();
    // Existing rows still take deltas when full.
    s.record(delta("a", "m", "2025-03-08", 1)).await.unwrap();
    assert_eq!(s.len(), 4);

    // A new row: 03-08 (two rows) goes whole.
    s.record(delta("b", "m", "2025-03-10", 1)).await.unwrap();
    let range = all("2025-03-01", "2025-03-31");
    assert_eq!(
        rows(&s, &range).await,
        [
            owned("2025-03-09", "a", "m", None, 1),
            owned("2025-03-10", "a", "m", None, 1),
            owned("2025-03-10", "b", "m", None, 1),
        ]
    );
    s.record(delta("c", "m", "2025-03-10", 1)).await.unwrap();
    assert_eq!(s.len(), 4);
    // Then 03-09; then nothing older is left, and a new row of today is refused, loudly.
    s.record(delta("d", "m", "2025-03-10", 1)).await.unwrap();
    let err = s.record(delta("e", "m", "2025-03-10", 1)).await;
    assert!(matches!(err, Err(StoreError::Unavailable(_))), "{err:?}");
    // A late delta for an older day does not evict today.
    let err = s.record(delta("z", "m", "2025-03-09", 1)).await;
    assert!(err.is_err());
    assert_eq!(s.len(), 4);
    let today: Vec<String> = rows(&s, &range).await.into_iter().map(|r| r.1).collect();
    assert_eq!(today, ["a", "b", "c", "d"]);
    // ...and existing rows keep counting.
    s.record(delta("a", "m", "2025-03-10", 1)).await.unwrap();
    assert_eq!(rows(&s, &range).await[0].4, 2);
}

#[test]
fn concurrent_records_sum_exactly() {
    let (s, _) = store("2025-03-10", 30, 1_000);
    let s = Arc::new(s);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                // A runtime per OS thread, so the records really race on the lock.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let key = format!("k{}", t % 2);
                for i in 0..5_000u64 {
                    let model = if i % 3 == 0 { "m0" } else { "m1" };
                    let f = s.record(delta(&key, model, "2025-03-10", i % 7));
                    rt.block_on(f).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = rt
        .block_on(s.query(&all("2025-03-10", "2025-03-10")))
        .unwrap();
    assert_eq!(got.len(), 4);
    let mut total = Counts::default();
    for r in &got {
        total.add(&r.counts);
    }
    let per_thread_tokens: u64 = (0..5_000u64).map(|i| i % 7).sum();
    assert_eq!(total.requests, 8 * 5_000);
    assert_eq!(total.input_tokens, 8 * per_thread_tokens);
    assert_eq!(total.output_tokens, 16 * per_thread_tokens);
    let m0_requests: u64 = got
        .iter()
        .filter(|r| r.model == "m0")
        .map(|r| r.counts.requests)
        .sum();
    assert_eq!(
        m0_requests,
        8 * (0..5_000).filter(|i| i % 3 == 0).count() as u64
    );
}
