use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn linear_backoff_is_base_plus_step() {
    let b = Backoff::linear(50 * MS, 100 * MS, 400 * MS).unwrap();
    let d: Vec<_> = (1..=6).map(|n| b.delay(n, 0.5)).collect();
    assert_eq!(
        d,
        vec![50 * MS, 150 * MS, 250 * MS, 350 * MS, 400 * MS, 400 * MS]
    );
    assert!(Backoff::linear(MS * 10, MS, MS).is_err());
}

#[test]
fn exponential_backoff_with_and_without_jitter() {
    let b = Backoff::exponential(100 * MS, 1_000 * MS, false).unwrap();
    let d: Vec<_> = (1..=5).map(|n| b.delay(n, 0.3)).collect();
    assert_eq!(d, vec![100 * MS, 200 * MS, 400 * MS, 800 * MS, 1_000 * MS]);
    let j = Backoff::exponential(100 * MS, 1_000 * MS, true).unwrap();
    assert_eq!(j.delay(3, 0.5), 200 * MS);
    assert_eq!(j.delay(3, 0.0), Duration::ZERO);
    assert_eq!(j.delay(40, 0.999_999), (1_000 * MS).mul_f64(0.999_999));
}

#[test]
fn policy_honours_retry_after_and_attempt_limit() {
    let p = RetryPolicy {
        retryable_statuses: StatusSet::default(),
        max_attempts: 3,
        backoff: Backoff::linear(50 * MS, 50 * MS, 500 * MS).unwrap(),
        max_retry_after: Duration::from_secs(2),
    };
    assert_eq!(p.next_delay(1, None, 0.0), Some(50 * MS));
    assert_eq!(
        p.next_delay(1, Some(Duration::from_secs(1)), 0.0),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        p.next_delay(1, Some(Duration::from_secs(5)), 0.0),
        None,
        "too long to wait"
    );
    assert_eq!(p.next_delay(2, None, 0.0), Some(100 * MS));
    assert_eq!(p.next_delay(3, None, 0.0), None, "attempts used up");
}

#[test]
fn the_default_statuses_include_an_upstreams_overloaded() {
    let p = RetryPolicy {
        retryable_statuses: StatusSet::default(),
        max_attempts: 3,
        backoff: Backoff::linear(50 * MS, 50 * MS, 500 * MS).unwrap(),
        max_retry_after: Duration::from_secs(2),
    };
    let up = |status| BackendError::Upstream {
        backend: "b".into(),
        status,
        error: Box::default(),
        retry_after: None,
    };
    for s in [429, 500, 502, 503, 504, 529] {
        assert!(p.retries(&up(s)), "{s}");
    }
    for s in [400, 404, 413, 501, 505] {
        assert!(!p.retries(&up(s)), "{s}");
    }
}

#[tokio::test(start_paused = true)]
async fn budget_stops_a_retry_storm_and_refills() {
    let budget = RetryBudget::new(0.2, 1, Duration::from_secs(10));
    // 100 requests, all failing: floor 1/s × 10 s + 20 % × 100 = 30 retries allowed.
    let mut granted = 0;
    for _ in 0..100 {
        budget.deposit();
        if budget.try_withdraw() {
            granted += 1;
        }
    }
    assert_eq!(granted, 30);
    assert_eq!(budget.refused(), 70);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(budget.try_withdraw(), "the window slid past the storm");
}
