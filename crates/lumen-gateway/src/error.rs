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
        }
    }
}
