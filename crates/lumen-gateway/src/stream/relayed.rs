//! What a stream relayed, in tokens, without a tokenizer: what a broken or abandoned stream is
//! charged when the engine's usage never arrives, and how many tokens a continuation has
//! already spent.
//!
//! The estimator, per choice: the engine's own running count when its chunks carry one (vLLM's
//! and SGLang's `continuous_usage_stats`, which Lumen asks for on models it may continue);
//! otherwise the bytes of text the choice generated divided by four, rounded up, and never less
//! than one token per chunk that carried text (an engine streams at least one token a chunk).
//! Four bytes a token is about right for English with the usual tokenizers and over-counts the
//! simulator's words; it under-counts scripts that take a token a character, which the
//! one-token-a-chunk floor bounds.

use lumen_openai_types::{Chunk, HasUsage};
use serde::Serialize;

/// Choices counted apart. A server caps `n` far below; an engine's larger index (a hostile
/// one's `4294967295`) shares the last slot rather than growing the counter.
const MAX_CHOICES: usize = 1024;

/// One choice's output so far.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Choice {
    bytes: u64,
    /// Chunks that carried some of its text.
    chunks: u64,
    /// The engine's running count of this choice's tokens, when its chunks carry one.
    engine: Option<u64>,
}

impl Choice {
    fn tokens(&self) -> u64 {
        self.engine
            .unwrap_or_else(|| self.bytes.div_ceil(4).max(self.chunks))
    }
}

/// The output tokens a stream has relayed, per choice and over its parts.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    choices: Vec<Choice>,
    /// Tokens relayed by the parts before this one (a continued stream).
    earlier: u64,
}

impl Relayed {
    /// Counts a chunk on its way to the caller: each choice's text, and the engine's running
    /// count when the chunk carries usage for its one choice (a usage-only chunk is the
    /// answer's total, not a running count).
    pub(crate) fn count<T>(&mut self, chunk: &Chunk<T>)
    where
        T: Serialize + HasUsage + serde::de::DeserializeOwned + Default,
    {
        // An event that is not OpenAI-shaped (Anthropic's) says how much text it carries
        // itself; its answer's final usage is the engine's count of everything relayed.
        if chunk.raw().is_none() {
            if let Some(bytes) = chunk.get().output_bytes() {
                let c = self.slot(0);
                if bytes > 0 {
                    c.bytes = c.bytes.saturating_add(bytes);
                    c.chunks += 1;
                }
                if let Some((_, output)) = chunk.tokens().filter(|_| chunk.is_usage_only()) {
                    c.engine = Some(c.engine.map_or(output, |e| e.max(output)));
                }
                return;
            }
        }
        let (mut seen, mut last) = (0u32, 0u32);
        chunk.outputs(|index, bytes| {
            let c = self.slot(index);
            if bytes > 0 {
                c.bytes = c.bytes.saturating_add(bytes);
                c.chunks += 1;
            }
            seen += 1;
            last = index;
        });
        if seen == 1 && !chunk.is_usage_only() {
            if let Some((_, output)) = chunk.tokens() {
                let c = self.slot(last);
                c.engine = Some(c.engine.map_or(output, |e| e.max(output)));
            }
        }
    }

    fn slot(&mut self, index: u32) -> &mut Choice {
        let i = (index as usize).min(MAX_CHOICES - 1);
        if self.choices.len() <= i {
            self.choices.resize(i + 1, Choice::default());
        }
        &mut self.choices[i]
    }

    /// Output tokens relayed so far, over every choice and part.
    pub(crate) fn tokens(&self) -> u64 {
        self.choices
            .iter()
            .map(Choice::tokens)
            .fold(self.earlier, u64::saturating_add)
    }

    /// A continuation's part begins: the engine's running counts start again from zero.
    pub(crate) fn next_part(&mut self) {
        self.earlier = self.tokens();
        self.choices.clear();
    }
}

#[cfg(test)]
mod tests;
