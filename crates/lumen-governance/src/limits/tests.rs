use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

fn clock() -> (Arc<AtomicU64>, Clock) {
    // 2026-11-24T12:00:00Z
    let t = Arc::new(AtomicU64::new(1_795_521_600_000));
    let c = t.clone();
    (t, Arc::new(move || c.load(Ordering::SeqCst)))
}

fn key(limits: LimitSpec) -> ApiKey {
    ApiKey {
        name: "team".into(),
        sha256: String::new(),
        models: None,
        limits,
        per_model: Default::default(),
    }
}

#[test]
fn calendar_windows() {
    assert_eq!(civil(0), (1970, 1, 1));
    assert_eq!(civil(20_416), (2025, 11, 24));
    let (day, left) = calendar_day(1_795_521_600_000);
    assert_eq!(
        (day.as_str(), left),
        ("20261124", Duration::from_secs(12 * 3600))
    );
    let (month, left) = calendar_month(1_795_521_600_000);
    assert_eq!(month, "202611");
    assert_eq!(
        left,
        Duration::from_secs((6 * 24 + 12) * 3600),
        "to 2026-12-01"
    );
    assert_eq!(days_from_civil(2026, 12, 1), 20_788);
}

#[tokio::test]
async fn rpm_window_starts_at_the_first_request_and_resets() {
    let (t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    let k = key(LimitSpec {
        rpm: Some(3),
        ..Default::default()
    });
    for i in 0..3 {
        let (_, h) = l.admit(&k, "m", 10).await.unwrap();
        assert_eq!(h.requests.map(|r| r.1), Some(2 - i), "remaining");
    }
    let err = l.admit(&k, "m", 10).await.unwrap_err();
    match &err {
        LimitError::RateLimited {
            what, retry_after, ..
        } => {
            assert_eq!(*what, "requests");
            assert_eq!(*retry_after, Duration::from_secs(60));
        }
        other => panic!("{other:?}"),
    }
    t.fetch_add(59_999, Ordering::SeqCst);
    assert!(l.admit(&k, "m", 10).await.is_err());
    t.fetch_add(1, Ordering::SeqCst);
    assert!(l.admit(&k, "m", 10).await.is_ok(), "a new window");
}

#[tokio::test]
async fn tpm_reserves_the_estimate_and_settles_with_usage() {
    let (_t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    let k = key(LimitSpec {
        tpm: Some(1_000),
        ..Default::default()
    });
    let (r, h) = l.admit(&k, "m", 800).await.unwrap();
    assert_eq!(h.tokens.map(|t| t.1), Some(200));
    assert!(
        l.admit(&k, "m", 300).await.is_err(),
        "800 reserved + 300 > 1000"
    );
    l.settle(&r, Some(100)).await.unwrap();
    let (_, h) = l.admit(&k, "m", 300).await.unwrap();
    assert_eq!(h.tokens.map(|t| t.1), Some(600), "100 used + 300 reserved");
}

#[tokio::test]
async fn concurrency_is_released_on_settle_and_quota_is_a_different_error() {
    let (_t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    let k = key(LimitSpec {
        max_concurrent: Some(1),
        daily_tokens: Some(50),
        ..Default::default()
    });
    let (r, _) = l.admit(&k, "m", 10).await.unwrap();
    assert_eq!(
        l.admit(&k, "m", 10).await.unwrap_err().reason(),
        "concurrent requests"
    );
    l.settle(&r, Some(10)).await.unwrap();
    let (r, _) = l.admit(&k, "m", 10).await.unwrap();
    l.settle(&r, Some(40)).await.unwrap();
    assert!(matches!(
        l.admit(&k, "m", 10).await,
        Err(LimitError::QuotaExceeded {
            period: "daily",
            ..
        })
    ));
}

#[tokio::test]
async fn per_model_limits_apply_on_top() {
    let (_t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    let mut k = key(LimitSpec {
        rpm: Some(100),
        ..Default::default()
    });
    k.per_model.insert(
        "big".into(),
        LimitSpec {
            rpm: Some(1),
            ..Default::default()
        },
    );
    let (_, h) = l.admit(&k, "big", 1).await.unwrap();
    assert_eq!(
        h.requests.map(|r| (r.0, r.1)),
        Some((1, 0)),
        "the tightest scope is reported"
    );
    assert!(l.admit(&k, "big", 1).await.is_err());
    assert!(l.admit(&k, "small", 1).await.is_ok());
}

#[tokio::test]
async fn a_limit_of_zero_suspends_the_key() {
    let (_t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    type Spec = fn(u64) -> LimitSpec;
    let fields: [(&str, Spec); 5] = [
        ("rpm", |v| LimitSpec {
            rpm: Some(v),
            ..Default::default()
        }),
        ("tpm", |v| LimitSpec {
            tpm: Some(v),
            ..Default::default()
        }),
        ("max_concurrent", |v| LimitSpec {
            max_concurrent: Some(v),
            ..Default::default()
        }),
        ("daily_tokens", |v| LimitSpec {
            daily_tokens: Some(v),
            ..Default::default()
        }),
        ("monthly_tokens", |v| LimitSpec {
            monthly_tokens: Some(v),
            ..Default::default()
        }),
    ];
    for (field, spec) in fields {
        let err = l.admit(&key(spec(0)), "m", 0).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Key `team` is suspended: its `{field}` limit is 0."),
        );
        assert_eq!(err.reason(), "suspended");
        assert!(l.admit(&key(spec(1_000)), "m", 1).await.is_ok(), "{field}");
    }
    let mut k = key(LimitSpec::default());
    k.per_model.insert(
        "big".into(),
        LimitSpec {
            rpm: Some(0),
            ..Default::default()
        },
    );
    assert!(l.admit(&k, "small", 1).await.is_ok(), "absent is unlimited");
    assert_eq!(
        l.admit(&k, "big", 1).await.unwrap_err().to_string(),
        "Key `team` is suspended for model `big`: its `rpm` limit is 0."
    );
}

#[tokio::test]
async fn the_memory_store_refuses_any_charge_against_a_limit_of_zero() {
    let (_t, c) = clock();
    let s = MemoryLimitStore::new(c);
    let counter = |limit, cost| Counter {
        key: "k".into(),
        limit,
        cost,
        expiry: Expiry::Window(MINUTE),
    };
    assert!(matches!(
        s.acquire(&ticket("k"), &[counter(0, 1)]).await.unwrap(),
        Verdict::Refused { index: 0, .. }
    ));
    assert!(matches!(
        s.acquire(&ticket("k"), &[counter(1, 1)]).await.unwrap(),
        Verdict::Admitted(_)
    ));
}

#[tokio::test]
async fn a_live_request_keeps_its_slot_by_renewing_it() {
    let (t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    let k = key(LimitSpec {
        max_concurrent: Some(1),
        ..Default::default()
    });
    let (live, _) = l.admit(&k, "m", 1).await.unwrap();
    assert!(live.has_leases());
    for _ in 0..10 {
        t.fetch_add(Limiter::RENEW_EVERY.as_millis() as u64, Ordering::SeqCst);
        l.renew(&live).await.unwrap();
        assert!(l.admit(&k, "m", 1).await.is_err(), "still running");
    }
    l.settle(&live, None).await.unwrap();
    let (after, _) = l.admit(&k, "m", 1).await.unwrap();
    // A renewal that arrives after the end does not bring the slot back.
    l.renew(&live).await.unwrap();
    l.settle(&after, None).await.unwrap();
    assert!(l.admit(&k, "m", 1).await.is_ok());
    let usage = l.usage(&k).await.unwrap();
    assert_eq!(usage[0].used, 1, "{usage:?}");
}

#[tokio::test]
async fn a_lost_release_frees_its_slot_after_the_lease_even_on_a_busy_key() {
    let (t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    let k = key(LimitSpec {
        max_concurrent: Some(2),
        ..Default::default()
    });
    // Admitted, then never settled: its release was lost.
    let (_lost, _) = l.admit(&k, "m", 1).await.unwrap();
    // Others come and go every 5 s, which used to refresh the whole counter's expiry.
    for _ in 0..5 {
        let (r, _) = l.admit(&k, "m", 1).await.unwrap();
        assert!(
            l.admit(&k, "m", 1).await.is_err(),
            "the lost slot still counts"
        );
        l.settle(&r, None).await.unwrap();
        t.fetch_add(5_000, Ordering::SeqCst);
    }
    t.fetch_add(LEASE.as_millis() as u64 - 25_000, Ordering::SeqCst);
    let (_a, _) = l.admit(&k, "m", 1).await.unwrap();
    let (_b, _) = l.admit(&k, "m", 1).await.unwrap();
    assert!(l.admit(&k, "m", 1).await.is_err(), "two live slots");
}

/// Found by `props::reserve_then_settle_matches_the_model`: a refund that arrives after its
/// window ended went into the next window, which held only other requests' charges, so that
/// window admitted past its limit by the refund.
#[tokio::test]
async fn a_refund_never_lowers_a_later_window() {
    let (t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    let k = key(LimitSpec {
        tpm: Some(1_000),
        ..Default::default()
    });
    let (long, _) = l.admit(&k, "m", 1_000).await.unwrap();
    t.fetch_add(61_000, Ordering::SeqCst);
    l.admit(&k, "m", 600).await.unwrap();
    // The long request ends having used nothing: its window is over, nothing to refund.
    l.settle(&long, Some(0)).await.unwrap();
    assert!(
        l.admit(&k, "m", 1_000).await.is_err(),
        "600 charged in this window + 1000 > 1000"
    );
    assert_eq!(l.usage(&k).await.unwrap()[0].used, 600);
}

/// Found by the same property: charges and usage near `u64::MAX` wrapped (a panic in debug
/// builds; in release a wrapped sum admitted the request, and usage above `i64::MAX` became a
/// refund).
#[tokio::test]
async fn huge_estimates_and_usage_saturate() {
    let (_t, c) = clock();
    let l = Limiter::new(Arc::new(MemoryLimitStore::new(c.clone())), c);
    let k = key(LimitSpec {
        tpm: Some(1_000),
        ..Default::default()
    });
    let (r, _) = l.admit(&k, "m", 100).await.unwrap();
    assert!(l.admit(&k, "m", u64::MAX).await.is_err());
    assert!(l.admit(&k, "m", u64::MAX - 50).await.is_err());
    l.settle(&r, Some(u64::MAX)).await.unwrap();
    assert!(
        l.usage(&k).await.unwrap()[0].used >= 1_000,
        "huge usage is a huge charge, not a refund"
    );
    assert!(l.admit(&k, "m", 1).await.is_err());
    let mut big = key(LimitSpec {
        tpm: Some(u64::MAX - 10),
        ..Default::default()
    });
    big.name = "big".into();
    let (r, _) = l.admit(&big, "m", u64::MAX - 11).await.unwrap();
    assert!(
        l.admit(&big, "m", u64::MAX).await.is_err(),
        "saturated, not wrapped"
    );
    l.admit(&big, "m", 1).await.unwrap();
    l.settle(&r, Some(0)).await.unwrap();
    assert_eq!(
        l.usage(&big).await.unwrap()[0].used,
        (u64::MAX - 10) - (1 << 63),
        "a refund is at most i64::MAX + 1 (deltas are i64, as in Redis)"
    );
}
