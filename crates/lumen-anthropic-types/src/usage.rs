//! Usage of a native Messages answer, for billing: read from `message_start.message.usage`
//! (the prompt, and any cache counts) and `message_delta.usage` (output so far, cumulative;
//! newer servers repeat the input counts there), or from a whole answer's `usage`.
//!
//! Only the usage members are parsed; every other member (the content, which may be large) is
//! skipped without being kept.

use serde::Deserialize;

use crate::Usage;

/// Above this, a count is nonsense (a broken or hostile engine) and treated as absent, as
/// `lumen-openai-types` does for chat usage.
pub const MAX_USAGE_TOKENS: u64 = 1 << 32;

/// Usage seen so far in a native answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NativeUsage {
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<PeekMessage>,
    #[serde(default)]
    usage: Option<PeekUsage>,
}

#[derive(Deserialize)]
struct PeekMessage {
    #[serde(default)]
    usage: Option<PeekUsage>,
}

#[derive(Deserialize, Clone, Copy)]
struct PeekUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl NativeUsage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one stream event's `data:` JSON. Events other than `message_start` and
    /// `message_delta` are skipped; an event that is not JSON is an error (the caller decides
    /// whether that ends the stream).
    pub fn observe_event(&mut self, data: &[u8]) -> Result<(), serde_json::Error> {
        let peek: Peek = serde_json::from_slice(data)?;
        match peek.kind.as_deref() {
            Some("message_start") => {
                if let Some(u) = peek.message.and_then(|m| m.usage) {
                    self.merge(u);
                }
            }
            Some("message_delta") => {
                if let Some(u) = peek.usage {
                    self.merge(u);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The usage of a whole (non-streamed) answer.
    pub fn from_response(body: &[u8]) -> Result<Self, serde_json::Error> {
        let peek: Peek = serde_json::from_slice(body)?;
        let mut out = Self::default();
        if let Some(u) = peek.usage {
            out.merge(u);
        }
        Ok(out)
    }

    /// Each count present replaces the one seen before: `message_delta`'s counts are totals so
    /// far, not increments.
    fn merge(&mut self, p: PeekUsage) {
        let u = self.usage.get_or_insert_with(Usage::default);
        if let Some(n) = p.input_tokens {
            u.input_tokens = n;
        }
        if let Some(n) = p.output_tokens {
            u.output_tokens = n;
        }
        if p.cache_creation_input_tokens.is_some() {
            u.cache_creation_input_tokens = p.cache_creation_input_tokens;
        }
        if p.cache_read_input_tokens.is_some() {
            u.cache_read_input_tokens = p.cache_read_input_tokens;
        }
    }

    /// The usage as reported, when any was.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// (prompt tokens including cache reads and writes, output tokens), `None` when nothing
    /// was reported or a count is implausible.
    pub fn tokens(&self) -> Option<(u64, u64)> {
        let u = self.usage?;
        let prompt = u.prompt_tokens();
        (prompt <= MAX_USAGE_TOKENS && u.output_tokens <= MAX_USAGE_TOKENS)
            .then_some((prompt, u.output_tokens))
    }
}

#[cfg(test)]
mod tests;
