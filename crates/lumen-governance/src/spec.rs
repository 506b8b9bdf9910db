//! What a key may spend: plain data shared by keys (which carry it) and limits (which enforce
//! it), in its own file so neither has to import the other for it.

use serde::{Deserialize, Serialize};

/// Limits of a key (or of a key on one model). Absent means unlimited; 0 suspends the key
/// (every request is refused), so an operator can switch a key off without deleting it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSpec {
    pub rpm: Option<u64>,
    /// Prompt plus completion tokens per minute.
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u64>,
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
}

impl LimitSpec {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The first limit set to 0 (its field name, as operators write it), which suspends the
    /// key.
    pub(crate) fn zero(&self) -> Option<&'static str> {
        [
            (self.rpm, "rpm"),
            (self.tpm, "tpm"),
            (self.max_concurrent, "max_concurrent"),
            (self.daily_tokens, "daily_tokens"),
            (self.monthly_tokens, "monthly_tokens"),
        ]
        .into_iter()
        .find(|(limit, _)| *limit == Some(0))
        .map(|(_, field)| field)
    }
}
