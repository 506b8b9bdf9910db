//! Why the core could not serve a request. Typed, so the caller decides what each becomes
//! (the server maps them to HTTP in its `error.rs`, and nowhere else).

use lumen_backend::BackendError;
use lumen_governance::GovernanceError;
use lumen_resilience::AdmissionError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The model could not be resolved, or the caller may not use it.
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    /// The last attempt's failure, after any retries.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The gateway's own queue was full or timed out.
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// A call for something one backend keeps (a native stored response) names a backend
    /// that is no longer configured or discovered.
    #[error("backend {backend} is not configured")]
    BackendGone { backend: String },
}

impl GatewayError {
    /// Whether the same request could succeed later (a client may retry it).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Governance(GovernanceError::NoHealthyBackend { .. })
            | Self::Governance(GovernanceError::ModelNotReady { .. }) => true,
            Self::Governance(_) => false,
            Self::Backend(e) => e.is_retryable(),
            Self::Admission(_) => true,
            Self::BackendGone { .. } => false,
        }
    }

    /// Whether no engine could be asked at all: none was healthy or reachable, or the one
    /// named is gone. For a request bound to one engine, that engine is unavailable.
    pub fn engine_unavailable(&self) -> bool {
        use lumen_backend::TimeoutKind;
        matches!(
            self,
            Self::Governance(GovernanceError::NoHealthyBackend { .. })
                | Self::BackendGone { .. }
                | Self::Backend(
                    BackendError::Connect { .. }
                        | BackendError::Timeout {
                            kind: TimeoutKind::Connect
                        }
                )
        )
    }
}
