//! What the attempt loop does after an attempt fails, as a value.
//!
//! The loop used to decide inline — retry, skip, fall back or give up, each a branch with its
//! own resets and returns — so no decision could be tested without an engine. Here each is a
//! pure function of the failure and of what the request has left (attempts, time, fallbacks);
//! the loop only carries out the [`Next`] it is handed. Side effects that need state the
//! function does not own (the retry budget, the caller's limits on a fallback model) are
//! named in the answer and done by the loop, in the order the answer gives.

use std::time::Duration;

use lumen_backend::BackendError;
use lumen_resilience::RetryPolicy;

/// What the request has left when an attempt fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Left {
    /// Attempts made on the current model (the retry policy's count restarts on a fallback).
    pub model_attempt: u32,
    /// Time since the request was admitted, and its total deadline (if any).
    pub elapsed: Duration,
    pub total: Option<Duration>,
    /// A context fallback was already taken (there is only one).
    pub context_used: bool,
    /// A fallback model the caller may use remains in the chain.
    pub fallback_left: bool,
    /// The loop is finishing another engine's answer (mid-stream continuation).
    pub continuing: bool,
}

/// The next step after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// An engine refused to continue another's answer: never ask it again, try the next one at
    /// once (no backoff, no budget); the caller never sees the refusal.
    Skip,
    /// Too long for this model: move to its larger-context model (once).
    ContextFallback,
    /// Another attempt on the same model after `delay`, if the retry budget allows one.
    Retry { delay: Duration },
    /// Every retryable attempt on this model failed: the next fallback model, if the retry
    /// budget allows one.
    Fallback,
    /// Return the failure to the caller.
    GiveUp(Why),
}

/// Why the loop gives up (for tests and logs; the caller gets the failure either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// Not worth another attempt (a client error, or a status not in the retryable list).
    NotRetryable,
    /// Too long for the model, and its context fallback was used or there is none.
    ContextExhausted,
    /// Attempts used up (or the engine asked for a longer pause than we wait) and no
    /// fallback is left or time is up.
    AttemptsUsed,
    /// The backoff would end past the total deadline.
    Deadline,
}

impl Next {
    /// Whether the loop must withdraw from the retry budget before carrying this out (and
    /// give up when it cannot).
    pub(crate) fn spends_budget(self) -> bool {
        matches!(self, Self::Retry { .. } | Self::Fallback)
    }
}

/// The decision after `err`, given the retry `policy`, what is `left`, and `unit` (draws the
/// backoff's jitter, in [0, 1); called only when a backoff is computed, so the draws stay in
/// step with the retries).
pub(crate) fn after_failure(
    policy: &RetryPolicy,
    err: &BackendError,
    left: Left,
    unit: impl FnOnce() -> f64,
) -> Next {
    if left.continuing && err.is_client_error() {
        return Next::Skip;
    }
    if err.is_context_length_exceeded() {
        // Retrying this model never helps; its larger-context model may, once.
        return if left.context_used {
            Next::GiveUp(Why::ContextExhausted)
        } else {
            Next::ContextFallback
        };
    }
    let retryable = policy.retries(err);
    let delay = retryable
        .then(|| policy.next_delay(left.model_attempt, err.retry_after(), unit()))
        .flatten();
    let Some(delay) = delay else {
        let in_time = left.total.is_none_or(|t| left.elapsed < t);
        return if !retryable {
            Next::GiveUp(Why::NotRetryable)
        } else if in_time && left.fallback_left {
            Next::Fallback
        } else {
            Next::GiveUp(Why::AttemptsUsed)
        };
    };
    if left.total.is_some_and(|t| left.elapsed + delay >= t) {
        return Next::GiveUp(Why::Deadline);
    }
    Next::Retry { delay }
}

/// When the pool cannot serve at all (no backend in rotation, or a fallback model with no
/// backend), whether to move on to a fallback: `unavailable` is the pool being out,
/// `absent` a model with no backend at all, `after_failure` whether an attempt already failed.
pub(crate) fn when_unroutable(unavailable: bool, absent: bool, after_failure: bool) -> Unroutable {
    if unavailable || (absent && after_failure) {
        Unroutable::TryFallback
    } else {
        Unroutable::Refuse
    }
}

/// See [`when_unroutable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unroutable {
    /// Move to the next fallback the caller may use; with none, report the last attempt's
    /// failure (or that the pool is out, when nothing was attempted).
    TryFallback,
    /// The routing error is the answer (an unknown model, a model not ready, ...).
    Refuse,
}

#[cfg(test)]
mod tests;
