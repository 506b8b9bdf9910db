//! Mid-stream continuation: the request that asks another engine to finish a partial answer,
//! and what each stream chunk adds to that answer.
//!
//! Engine-specific switches (vLLM's `continue_final_message`) are the caller's business; this
//! module only builds the OpenAI-shaped parts.

use crate::chat::{ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Messages};
use crate::completions::{CompletionRequest, CompletionResponse, Prompt};
use crate::stream::Usage;

/// A request that can be re-sent with the answer so far, for an engine to continue.
pub trait Resumable: Sized {
    /// The same request with `partial` (the text already streamed to the caller) as the start
    /// of the answer, and its token limit lowered by the `sent` tokens already generated.
    /// `None` when the request cannot be continued that way: several choices, an answer the
    /// caller already prefilled, `echo`, output constrained by a schema or grammar, a prompt
    /// of token ids or of several texts, or a token limit already used up.
    fn with_partial_answer(&self, partial: &str, sent: u32) -> Option<Self>;
}

/// See `HasModel for Box<T>`: a boxed request continues like the request.
impl<T: Resumable> Resumable for Box<T> {
    fn with_partial_answer(&self, partial: &str, sent: u32) -> Option<Self> {
        (**self).with_partial_answer(partial, sent).map(Box::new)
    }
}

/// Engine extras that constrain the output to a grammar (vLLM's guided decoding and
/// structured outputs, llama.cpp's, SGLang's).
const CONSTRAINTS: [&str; 9] = [
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
    "json_schema",
    "grammar",
    "regex",
    "ebnf",
];

/// Whether the output must follow a schema or grammar. Such a stream is not continued: the
/// engine asked to continue it starts the grammar again from the top, so the text after the
/// seam would break the very format the caller asked for.
fn constrained(extra: &crate::RawExtra) -> bool {
    let json_format = extra
        .get_as::<serde_json::Value>("response_format")
        .is_some_and(|f| matches!(f["type"].as_str(), Some("json_object" | "json_schema")));
    json_format
        || CONSTRAINTS
            .iter()
            .any(|k| extra.get(k).is_some_and(|v| v.get() != "null"))
}

/// `echo: true`: the engine would repeat the prompt (or, for chat, the final message), which
/// now holds the partial answer the caller already has.
fn echoes(extra: &crate::RawExtra) -> bool {
    extra.get_as::<bool>("echo") == Some(true)
}

/// A token limit less what was already generated; `None` (cannot continue) once spent.
fn remaining(limit: Option<u32>, sent: u32) -> Option<Option<u32>> {
    match limit {
        None => Some(None),
        Some(max) => max.checked_sub(sent).filter(|left| *left > 0).map(Some),
    }
}

fn single_choice(n: Option<u32>) -> bool {
    n.is_none_or(|n| n == 1)
}

impl Resumable for ChatCompletionRequest {
    fn with_partial_answer(&self, partial: &str, sent: u32) -> Option<Self> {
        if !single_choice(self.n) || echoes(&self.extra) || constrained(&self.extra) {
            return None;
        }
        // A caller's own prefill would need merging with ours; not worth the risk of a wrong
        // answer, so such a stream is not continued.
        if self
            .messages
            .views()
            .last()
            .is_none_or(|m| m.role == "assistant")
        {
            return None;
        }
        let mut req = self.clone();
        req.max_tokens = remaining(self.max_tokens, sent)?;
        req.max_completion_tokens = remaining(self.max_completion_tokens, sent)?;
        req.messages = self
            .messages
            .with_message(&ChatMessage::new("assistant", partial))?;
        Some(req)
    }
}

impl Messages {
    /// These messages and one more at the end (a raw array is extended as text).
    fn with_message(&self, msg: &ChatMessage) -> Option<Messages> {
        let json = serde_json::to_string(msg).ok()?;
        let raw = serde_json::to_string(self).ok()?;
        let open = raw.trim_end().strip_suffix(']')?.trim_end();
        let sep = if open.ends_with('[') { "" } else { "," };
        serde_json::from_str(&format!("{open}{sep}{json}]")).ok()
    }
}

impl Resumable for CompletionRequest {
    fn with_partial_answer(&self, partial: &str, sent: u32) -> Option<Self> {
        if !single_choice(self.n) || echoes(&self.extra) || constrained(&self.extra) {
            return None;
        }
        let prompt = match &self.prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Raw(r) => serde_json::from_str::<String>(r.get()).ok()?,
            Prompt::Texts(_) | Prompt::Tokens(_) | Prompt::TokenBatches(_) => return None,
        };
        let mut req = self.clone();
        req.max_tokens = remaining(self.max_tokens, sent)?;
        req.prompt = Prompt::Text(prompt + partial);
        Some(req)
    }
}

/// What one stream chunk contributes to the answer, as continuation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text of the (single) answer; may be empty.
    Text(&'a str),
    /// Chat's opening chunk: the role and no text yet.
    Opening,
    /// Nothing to the text: a usage-only chunk, or a finish reason alone.
    Other,
    /// Something a continuation could not reproduce: several choices, tool calls, reasoning.
    Unsupported,
}

/// A stream chunk type that continuation can read and edit.
pub trait StreamPiece {
    fn piece(&self) -> Piece<'_>;
    /// Replaces the text of the (single) answer in this chunk: a continuation's copy of the
    /// text already sent is cut off at the seam.
    fn set_text(&mut self, text: &str);
    fn usage_mut(&mut self) -> &mut Option<Usage>;
    /// The stream's `id` and `created`: a continued stream keeps the first engine's.
    fn stream_id(&self) -> (&str, u64);
    fn set_stream_id(&mut self, id: &str, created: u64);
}

/// Delta fields whose content a partial assistant message cannot carry.
const UNSUPPORTED_DELTA: [&str; 4] = [
    "tool_calls",
    "function_call",
    "reasoning_content",
    "reasoning",
];

/// The fields both chunk types name alike.
macro_rules! stream_fields {
    () => {
        fn usage_mut(&mut self) -> &mut Option<Usage> {
            &mut self.usage
        }

        fn stream_id(&self) -> (&str, u64) {
            (&self.id, self.created)
        }

        fn set_stream_id(&mut self, id: &str, created: u64) {
            id.clone_into(&mut self.id);
            self.created = created;
        }
    };
}

impl StreamPiece for ChatCompletionChunk {
    fn piece(&self) -> Piece<'_> {
        let [choice] = self.choices.as_slice() else {
            return if self.choices.is_empty() {
                Piece::Other
            } else {
                Piece::Unsupported
            };
        };
        let delta = &choice.delta;
        let unsupported = UNSUPPORTED_DELTA
            .iter()
            .any(|k| delta.extra.get(*k).is_some_and(|v| !v.is_null()));
        if choice.index != 0 || unsupported {
            return Piece::Unsupported;
        }
        match (&delta.role, delta.content.as_deref()) {
            (Some(_), None | Some("")) => Piece::Opening,
            (_, Some(text)) => Piece::Text(text),
            (None, None) => Piece::Other,
        }
    }

    fn set_text(&mut self, text: &str) {
        if let Some(choice) = self.choices.first_mut() {
            choice.delta.content = Some(text.to_owned());
        }
    }

    stream_fields!();
}

impl StreamPiece for CompletionResponse {
    fn piece(&self) -> Piece<'_> {
        match self.choices.as_slice() {
            [] => Piece::Other,
            [choice] if choice.index == 0 => Piece::Text(&choice.text),
            _ => Piece::Unsupported,
        }
    }

    fn set_text(&mut self, text: &str) {
        if let Some(choice) = self.choices.first_mut() {
            text.clone_into(&mut choice.text);
        }
    }

    stream_fields!();
}

#[cfg(test)]
mod tests;
