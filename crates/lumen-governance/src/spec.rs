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
    /// The key's share of the admission queue against other keys while the engines are
    /// saturated (default 1): a key of weight 2 is let through twice as often as one of 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The class its requests are admitted in: `interactive`, `standard` (the default) or
    /// `batch`. Higher classes are let through first; within a class, keys share fairly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// The highest class a request of the key may ask for with `x-lumen-priority` (default:
    /// `priority`, so a key cannot raise its own class unless allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_priority: Option<String>,
}

/// A priority class's rank, lower first (vLLM's `priority` order): `interactive` (or `0`),
/// `standard` (`1`), `batch` (`2`); `None` for anything else.
pub fn class_rank(name: &str) -> Option<u8> {
    match name.trim() {
        c if c.eq_ignore_ascii_case("interactive") || c == "0" => Some(0),
        c if c.eq_ignore_ascii_case("standard") || c == "1" => Some(1),
        c if c.eq_ignore_ascii_case("batch") || c == "2" => Some(2),
        _ => None,
    }
}

impl LimitSpec {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The first limit set to 0 (its field name, as operators write it), which suspends the
    /// key.
    /// The class rank a request of this key is admitted in: the one it asks for (`x-lumen-
    /// priority`), never above the key's `max_priority`; else the key's own class.
    pub fn rank(&self, asked: Option<&str>) -> u8 {
        let own = self.priority.as_deref().and_then(class_rank).unwrap_or(1);
        let highest = self
            .max_priority
            .as_deref()
            .and_then(class_rank)
            .unwrap_or(own);
        asked.and_then(class_rank).map_or(own, |r| r.max(highest))
    }

    /// Why the fairness settings cannot be used (a zero weight, a class no one knows).
    pub(crate) fn fairness_error(&self) -> Option<(&'static str, &'static str)> {
        if self.weight == Some(0) {
            return Some(("weight", "must be at least 1"));
        }
        for (field, v) in [
            ("priority", &self.priority),
            ("max_priority", &self.max_priority),
        ] {
            if v.as_deref().is_some_and(|c| class_rank(c).is_none()) {
                return Some((field, "must be interactive, standard or batch"));
            }
        }
        None
    }

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
