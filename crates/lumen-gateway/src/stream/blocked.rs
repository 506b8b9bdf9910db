//! Why a broken stream found no engine to continue it, as a value: the log must name the real
//! reason, not `no_healthy_backend` about backends that are healthy but were ruled out.

use std::sync::Arc;

use super::Avoid;
use crate::upstream::Upstream;

/// Whether `up`, for `engine_model`, is one this stream must not ask again.
pub(crate) fn avoided(avoid: &[Avoid], up: &Upstream, engine_model: &str) -> bool {
    avoid
        .iter()
        .any(|(b, m)| Arc::ptr_eq(b, &up.breaker) && m == engine_model)
}

/// One backend of the model's pool, as a continuation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// In rotation, with its breakers (the backend's and the model's) closed.
    pub(crate) healthy: bool,
    /// Its engine can continue another's answer (`continuation` is not `none`).
    pub(crate) continues: bool,
    /// Its stream of this model broke, or it refused to continue it, for this request.
    pub(crate) avoided: bool,
}

/// Why none of a pool's backends took the continuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Every healthy backend that can continue an answer already broke on (or refused) it.
    AlreadyFailed,
    /// The healthy backends cannot continue an answer (`continuation = "none"`).
    CannotContinue,
    /// No backend of the model is healthy.
    NoHealthyBackend,
}

impl Blocked {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyFailed => "already_failed",
            Self::CannotContinue => "cannot_continue",
            Self::NoHealthyBackend => "no_healthy_backend",
        }
    }

    pub(crate) fn explain(self) -> &'static str {
        match self {
            Self::AlreadyFailed => {
                "every healthy backend of the model that can continue an answer already failed this stream"
            }
            Self::CannotContinue => {
                "the model's healthy backends cannot continue an answer (continuation = \"none\")"
            }
            Self::NoHealthyBackend => "the model has no healthy backend",
        }
    }
}

pub(crate) fn blocked(pool: &[Candidate]) -> Blocked {
    let healthy = || pool.iter().filter(|c| c.healthy);
    if healthy().next().is_none() {
        Blocked::NoHealthyBackend
    } else if healthy().all(|c| !c.continues) {
        Blocked::CannotContinue
    } else {
        Blocked::AlreadyFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn c(healthy: bool, continues: bool, avoided: bool) -> Candidate {
        Candidate {
            healthy,
            continues,
            avoided,
        }
    }

    #[test]
    fn the_reason_names_what_ruled_the_backends_out() {
        assert_eq!(blocked(&[]), Blocked::NoHealthyBackend);
        assert_eq!(blocked(&[c(false, true, false)]), Blocked::NoHealthyBackend);
        assert_eq!(
            blocked(&[c(true, true, true), c(false, true, false)]),
            Blocked::AlreadyFailed,
            "the one that broke is healthy: not a health problem"
        );
        assert_eq!(
            blocked(&[c(true, false, false), c(false, true, false)]),
            Blocked::CannotContinue
        );
        assert_eq!(
            blocked(&[c(true, false, false), c(true, true, true)]),
            Blocked::AlreadyFailed
        );
    }
}
