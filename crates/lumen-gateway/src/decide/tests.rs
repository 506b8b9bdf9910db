//! One test per branch of the decision, no engine and no clock.

use std::time::Duration;

use lumen_backend::{BackendError, TimeoutKind};
use lumen_openai_types::ErrorObject;
use lumen_resilience::{Backoff, RetryPolicy, StatusSet};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff: Backoff::linear(100 * MS, 50 * MS, 1_000 * MS).unwrap(),
        max_retry_after: Duration::from_secs(5),
        retryable_statuses: StatusSet::default(),
    }
}

fn upstream(status: u16, message: &str, retry_after: Option<Duration>) -> BackendError {
    BackendError::Upstream {
        backend: "b".into(),
        status,
        error: Box::new(ErrorObject::new(message, "error")),
        retry_after,
    }
}

fn left() -> Left {
    Left {
        model_attempt: 1,
        elapsed: Duration::ZERO,
        total: Some(Duration::from_secs(60)),
        context_used: false,
        fallback_left: false,
        continuing: false,
    }
}

#[test]
fn a_retryable_failure_is_retried_after_the_backoff() {
    let next = after_failure(&policy(3), &upstream(503, "busy", None), left(), || 0.0);
    assert_eq!(next, Next::Retry { delay: 100 * MS });
    assert!(next.spends_budget());
    let second = Left {
        model_attempt: 2,
        ..left()
    };
    assert_eq!(
        after_failure(&policy(3), &upstream(503, "busy", None), second, || 0.0),
        Next::Retry { delay: 150 * MS },
        "linear: base + step per attempt"
    );
}

#[test]
fn an_engines_retry_after_is_waited_out_when_longer_than_the_backoff() {
    let e = upstream(429, "slow down", Some(Duration::from_secs(2)));
    assert_eq!(
        after_failure(&policy(3), &e, left(), || 0.0),
        Next::Retry {
            delay: Duration::from_secs(2)
        }
    );
    // Longer than we wait: this model is done; a fallback takes it when there is one.
    let e = upstream(429, "slow down", Some(Duration::from_secs(30)));
    assert_eq!(
        after_failure(&policy(3), &e, left(), || 0.0),
        Next::GiveUp(Why::AttemptsUsed)
    );
    let with_fallback = Left {
        fallback_left: true,
        ..left()
    };
    assert_eq!(
        after_failure(&policy(3), &e, with_fallback, || 0.0),
        Next::Fallback
    );
}

#[test]
fn client_errors_are_never_retried_nor_moved() {
    let with_fallback = Left {
        fallback_left: true,
        ..left()
    };
    for status in [400, 401, 404, 422] {
        let next = after_failure(
            &policy(3),
            &upstream(status, "no", None),
            with_fallback,
            || 0.0,
        );
        assert_eq!(next, Next::GiveUp(Why::NotRetryable), "{status}");
        assert!(!next.spends_budget());
    }
}

#[test]
fn a_status_outside_the_configured_list_is_not_retried() {
    let mut p = policy(3);
    p.retryable_statuses = StatusSet::from_codes(&[503]);
    assert_eq!(
        after_failure(&p, &upstream(500, "oops", None), left(), || 0.0),
        Next::GiveUp(Why::NotRetryable)
    );
}

#[test]
fn used_up_attempts_move_to_a_fallback_in_time_or_give_up() {
    let last = Left {
        model_attempt: 3,
        fallback_left: true,
        ..left()
    };
    let e = BackendError::Timeout {
        kind: TimeoutKind::FirstByte,
    };
    assert_eq!(after_failure(&policy(3), &e, last, || 0.0), Next::Fallback);
    let late = Left {
        elapsed: Duration::from_secs(60),
        ..last
    };
    assert_eq!(
        after_failure(&policy(3), &e, late, || 0.0),
        Next::GiveUp(Why::AttemptsUsed),
        "no fallback once the total deadline has passed"
    );
    let none = Left {
        fallback_left: false,
        ..last
    };
    assert_eq!(
        after_failure(&policy(3), &e, none, || 0.0),
        Next::GiveUp(Why::AttemptsUsed)
    );
}

#[test]
fn a_backoff_that_would_end_past_the_deadline_gives_up_now() {
    let near = Left {
        elapsed: Duration::from_millis(59_950),
        ..left()
    };
    assert_eq!(
        after_failure(&policy(3), &upstream(503, "busy", None), near, || 0.0),
        Next::GiveUp(Why::Deadline)
    );
    let no_deadline = Left {
        total: None,
        elapsed: Duration::from_secs(3_600),
        ..left()
    };
    assert_eq!(
        after_failure(
            &policy(3),
            &upstream(503, "busy", None),
            no_deadline,
            || 0.0
        ),
        Next::Retry { delay: 100 * MS }
    );
}

#[test]
fn too_long_a_prompt_moves_once_to_the_larger_model() {
    let e = upstream(
        400,
        "This model's maximum context length is 100 tokens.",
        None,
    );
    assert_eq!(
        after_failure(&policy(3), &e, left(), || 0.0),
        Next::ContextFallback
    );
    let used = Left {
        context_used: true,
        ..left()
    };
    assert_eq!(
        after_failure(&policy(3), &e, used, || 0.0),
        Next::GiveUp(Why::ContextExhausted)
    );
}

#[test]
fn an_engine_that_refuses_a_continuation_is_skipped_without_budget() {
    let cont = Left {
        continuing: true,
        ..left()
    };
    let next = after_failure(
        &policy(1),
        &upstream(400, "bad prefill", None),
        cont,
        || 0.0,
    );
    assert_eq!(next, Next::Skip);
    assert!(!next.spends_budget());
    // A retryable failure while continuing follows the usual rules.
    assert_eq!(
        after_failure(&policy(3), &upstream(503, "busy", None), cont, || 0.0),
        Next::Retry { delay: 100 * MS }
    );
}

#[test]
fn an_unroutable_pool_falls_back_and_an_unknown_model_is_refused() {
    assert_eq!(when_unroutable(true, false, false), Unroutable::TryFallback);
    assert_eq!(when_unroutable(false, true, true), Unroutable::TryFallback);
    assert_eq!(
        when_unroutable(false, true, false),
        Unroutable::Refuse,
        "a model with no backend is the caller's error when nothing was tried"
    );
    assert_eq!(when_unroutable(false, false, true), Unroutable::Refuse);
}
