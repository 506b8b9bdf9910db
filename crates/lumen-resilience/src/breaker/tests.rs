use super::*;

fn breaker() -> CircuitBreaker {
    CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 3,
        cooldown: Duration::from_secs(10),
        ..BreakerConfig::default()
    })
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_then_probes_then_closes() {
    let b = breaker();
    b.on_failure();
    b.on_failure();
    b.on_success();
    b.on_failure();
    b.on_failure();
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "a success resets the count"
    );
    b.on_failure();
    assert_eq!(b.state(), BreakerState::Open);
    assert!(!b.allows());
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.allows());
    b.on_pick();
    assert!(!b.allows(), "one probe at a time");
    b.on_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.allows());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_another_cooldown() {
    let b = breaker();
    for _ in 0..3 {
        b.on_failure();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    b.on_pick();
    b.on_failure();
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_ratio_over_a_window() {
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        failure_ratio: 0.5,
        min_requests: 10,
        window: Duration::from_secs(10),
        cooldown: Duration::from_secs(1),
    });
    for i in 0..9 {
        if i % 2 == 0 {
            b.on_failure()
        } else {
            b.on_success()
        }
    }
    assert_eq!(b.state(), BreakerState::Closed, "below min_requests");
    b.on_failure();
    assert_eq!(b.state(), BreakerState::Open, "6 of 10 failed");
}

#[tokio::test(start_paused = true)]
async fn a_lost_probe_expires_after_a_cooldown() {
    let b = breaker();
    for _ in 0..3 {
        b.on_failure();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    b.on_pick(); // and the client disconnects: no outcome is ever recorded
    assert!(!b.allows());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(b.allows(), "another probe may go");
}
