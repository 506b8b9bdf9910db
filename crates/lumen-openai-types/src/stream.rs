//! Types shared by streamed responses.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Extra;

pub(crate) mod peek;

/// `stream_options` on chat and completion requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamOptions {
    /// Ask the engine for a final chunk that carries `usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: crate::RawExtra,
}

crate::raw::deserialize_object!(StreamOptions, "a stream options object", {
    include_usage: Option<bool> = default,
});

/// Above this many tokens in one `usage` field, the engine's count is nonsense (a broken or hostile
/// engine, `u64::MAX`): it is treated as absent, so neither metrics nor limits are charged with
/// it. 2^32 is far beyond any context window.
pub const MAX_USAGE_TOKENS: u64 = 1 << 32;

/// (input, output) when both counts are plausible.
fn plausible(input: u64, output: u64) -> Option<(u64, u64)> {
    (input <= MAX_USAGE_TOKENS && output <= MAX_USAGE_TOKENS).then_some((input, output))
}

/// Token accounting, as every OpenAI-compatible engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// `prompt_tokens_details`, `completion_tokens_details` and engine extras.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// (input, output) tokens. An answer that reports only `total_tokens` (rerank) counts it
    /// all as input.
    pub fn tokens(&self) -> (u64, u64) {
        input_output(
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
        )
    }

    /// (input, output) tokens, `None` when a count is above [`MAX_USAGE_TOKENS`].
    pub fn plausible_tokens(&self) -> Option<(u64, u64)> {
        plausible(self.prompt_tokens, self.completion_tokens)
    }
}

/// A whole non-streamed answer, kept the same way as a stream event: the engine's bytes are
/// forwarded unchanged unless the gateway edits the value (an alias shown in `model`), so a
/// proxied answer is peeked at for `usage`, never parsed into a typed value and re-serialised.
/// Backends built in process use [`Chunk::new`].
pub type Reply<T> = Chunk<T>;

/// One stream event (or, as [`Reply`], one whole answer) that remembers the bytes it came from.
///
/// The gateway must look at every chunk (to spot in-band errors, count tokens, rewrite model
/// names) but should pay neither to re-serialise the ones it leaves alone nor to build a typed
/// value it never reads. So [`Chunk::from_raw`] only *peeks*: it validates the JSON and pulls out
/// the error, `usage`, whether `choices` is empty and how much text each choice carries,
/// skipping everything else without allocating. The typed value is parsed on first [`get`](Self::get); after
/// [`get_mut`](Self::get_mut) the original bytes are dropped and the chunk is serialised fresh.
#[derive(Debug, Clone)]
pub struct Chunk<T> {
    /// Boxed: a chunk is moved several times on its way from the engine to the caller (each
    /// stream layer's `Poll`), and the typed value, parsed only when the gateway edits or reads
    /// the chunk, made every move copy it (a 400-byte chunk, about 800 instructions of
    /// `memcpy` per relayed event).
    value: std::sync::OnceLock<Box<T>>,
    raw: Option<Bytes>,
    peek: Option<Peeked>,
}

#[derive(Debug, Clone, PartialEq)]
struct Peeked {
    tokens: Option<(u64, u64)>,
    usage_only: bool,
    /// A choice carries a non-null `finish_reason`: the answer is complete.
    finished: bool,
    /// Boxed for the same reason as [`Chunk::value`]: almost every event has none.
    error: Option<Box<crate::ErrorObject>>,
    /// Each choice's generated text, counted by the same walk that validated `choices`, for
    /// [`Chunk::outputs`] (which runs on every relayed event: a second walk cost about 1,000
    /// instructions an event).
    outputs: peek::Outputs,
}

/// Whether a `choices` array names a `finish_reason` other than `null` (a byte search over this
/// one event's choices: `"finish_reason"`, optional whitespace, `:`, then anything but `null`).
fn names_finish_reason(choices: &[u8]) -> bool {
    const KEY: &[u8] = b"\"finish_reason\"";
    /// Built once: building the searcher cost more than the search, on every event.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    FINDER.find_iter(choices).any(|at| {
        let rest = &choices[at + KEY.len()..];
        let rest = rest.trim_ascii_start();
        rest.strip_prefix(b":")
            .map(<[u8]>::trim_ascii_start)
            .is_some_and(|v| !v.is_empty() && !v.starts_with(b"null"))
    })
}

/// `usage` without [`Usage`]'s flattened extras: `flatten` makes serde buffer every field into
/// an intermediate map, which costs more than the rest of the peek.
#[derive(Deserialize)]
struct PeekUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

impl PeekUsage {
    /// See [`Usage::tokens`].
    fn tokens(&self) -> Option<(u64, u64)> {
        let (i, o) = input_output(
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
        );
        plausible(i, o)
    }
}

/// Rerank and score answers report only `total_tokens`, all of it input.
fn input_output(prompt: u64, completion: u64, total: u64) -> (u64, u64) {
    if prompt == 0 && completion == 0 {
        (total, 0)
    } else {
        (prompt, completion)
    }
}

impl<T> Chunk<T> {
    /// A chunk built in process (for example by a custom backend); serialised when sent.
    pub fn new(value: T) -> Self {
        Self {
            value: std::sync::OnceLock::from(Box::new(value)),
            raw: None,
            peek: None,
        }
    }

    /// Takes an engine's `data:` payload: checks it is a JSON object and peeks at it.
    pub fn from_raw(raw: Bytes) -> Result<Self, serde_json::Error> {
        let Some(m) = peek::scan(&raw) else {
            // serde words the error. What serde skips but the scanner refuses is not an
            // object, has broken UTF-8 in a string, or nests deeper than serde_json parses.
            serde_json::from_slice::<serde::de::IgnoredAny>(&raw)?;
            return Err(serde::de::Error::custom(format!(
                "expected one JSON object, valid UTF-8, nested at most {} deep",
                peek::MAX_NESTING
            )));
        };
        let finished = m.choices.is_some_and(names_finish_reason);
        let usage: Option<PeekUsage> = match m.usage {
            Some(u) => serde_json::from_slice(u)?,
            None => None,
        };
        let failed = m.error.is_some_and(|e| e != b"null")
            || m.object.is_some_and(|o| {
                o == br#""error""#
                    || (o.contains(&b'\\')
                        && serde_json::from_slice::<String>(o).is_ok_and(|s| s == "error"))
            });
        let empty = m.choices.is_some_and(|c| {
            c.iter()
                .filter(|b| !b.is_ascii_whitespace())
                .take(2)
                .eq(b"[]".iter())
        });
        let tokens = usage.as_ref().and_then(PeekUsage::tokens);
        let usage_only = usage.is_some() && empty;
        let peek = Peeked {
            tokens,
            usage_only,
            finished,
            outputs: m.outputs,
            error: if failed {
                crate::ErrorObject::from_upstream(&raw).map(Box::new)
            } else {
                None
            },
        };
        Ok(Self {
            value: std::sync::OnceLock::new(),
            raw: Some(raw),
            peek: Some(peek),
        })
    }

    /// An answer that is not JSON (an audio transcription as `text`, `srt` or `vtt`), passed on
    /// as is: it carries no usage and no in-band error, and reads as `T::default()`.
    pub fn opaque(raw: Bytes) -> Self {
        Self {
            value: std::sync::OnceLock::new(),
            raw: Some(raw),
            peek: Some(Peeked {
                tokens: None,
                usage_only: false,
                finished: true,
                error: None,
                outputs: peek::Outputs::default(),
            }),
        }
    }

    /// True when a choice in this event carries a `finish_reason`: the engine said the answer
    /// is complete (an engine that then ends the stream without `[DONE]` still finished it).
    /// Only known for events read from an engine.
    pub fn finishes(&self) -> bool {
        self.peek.as_ref().is_some_and(|p| p.finished)
    }

    /// The engine's in-band error, when this event is one (`{"error": ...}` or vLLM's older
    /// `{"object": "error", ...}`).
    pub fn upstream_error(&self) -> Option<&crate::ErrorObject> {
        self.peek.as_ref().and_then(|p| p.error.as_deref())
    }

    /// The original payload, if this chunk is still unchanged.
    pub fn raw(&self) -> Option<&Bytes> {
        self.raw.as_ref()
    }
}

impl<T: DeserializeOwned + Default> Chunk<T> {
    fn parse(&self) -> T {
        // A payload that is valid JSON but not the expected shape reads as the default value;
        // it is still forwarded byte for byte.
        self.raw
            .as_ref()
            .and_then(|r| serde_json::from_slice(r).ok())
            .unwrap_or_default()
    }

    /// The typed value, parsed on first use.
    pub fn get(&self) -> &T {
        self.value.get_or_init(|| Box::new(self.parse()))
    }

    /// Mutable access; the original bytes are dropped because they no longer match.
    pub fn get_mut(&mut self) -> &mut T {
        if self.value.get().is_none() {
            let v = self.parse();
            let _ = self.value.set(Box::new(v));
        }
        self.raw = None;
        self.peek = None;
        match self.value.get_mut() {
            Some(v) => v,
            None => unreachable!("the value was set just above"),
        }
    }

    pub fn into_inner(self) -> T {
        let parsed = self.value.get().is_none().then(|| self.parse());
        match (self.value.into_inner(), parsed) {
            (Some(v), _) => *v,
            (None, Some(v)) => v,
            (None, None) => T::default(),
        }
    }

    /// (input, output) tokens when this chunk carries usage.
    pub fn tokens(&self) -> Option<(u64, u64)>
    where
        T: HasUsage,
    {
        match &self.peek {
            Some(p) => p.tokens,
            None => self.get().tokens(),
        }
    }

    /// True for the usage-only chunk that `stream_options.include_usage` adds.
    pub fn is_usage_only(&self) -> bool
    where
        T: HasUsage,
    {
        match &self.peek {
            Some(p) => p.usage_only,
            None => self.get().is_usage_only(),
        }
    }

    /// Calls `f(index, bytes)` for each choice in this event with the bytes of text it
    /// generated here (unescaped): chat's `content`, reasoning and tool-call names and
    /// arguments, completions' `text`. This is what a tokenizer-free count of relayed output is
    /// made of. An edited chunk is serialised to be read the same way.
    pub fn outputs(&self, mut f: impl FnMut(u32, u64))
    where
        T: Serialize,
    {
        if let Some(p) = &self.peek {
            p.outputs.each(&mut f);
            return;
        }
        if let Some(m) = self.to_json().ok().as_deref().and_then(peek::scan) {
            m.outputs.each(&mut f);
        }
    }

    /// The JSON payload to send: the original bytes when unchanged, else a fresh serialisation.
    pub fn to_json(&self) -> Result<Bytes, serde_json::Error>
    where
        T: Serialize,
    {
        match &self.raw {
            Some(raw) => Ok(raw.clone()),
            None => serde_json::to_vec(self.get()).map(Bytes::from),
        }
    }
}

/// A request, response or chunk that names its model: requests are pointed at the engine's id,
/// responses show the caller's (an alias, or what `auto` chose).
pub trait HasModel {
    fn model(&self) -> &str;
    fn model_mut(&mut self) -> &mut String;
}

/// A boxed request is routed by its model like the request: the gateway boxes a streamed
/// request so that the layers of futures that carry it until the first token hold a pointer,
/// not a copy each (issue 24).
impl<T: HasModel + ?Sized> HasModel for Box<T> {
    fn model(&self) -> &str {
        (**self).model()
    }
    fn model_mut(&mut self) -> &mut String {
        (**self).model_mut()
    }
}

macro_rules! has_model {
    ($($t:ty),*) => {$(
        impl HasModel for $t {
            fn model(&self) -> &str {
                &self.model
            }
            fn model_mut(&mut self) -> &mut String {
                &mut self.model
            }
        }
    )*};
}

has_model!(
    crate::ChatCompletionResponse,
    crate::ChatCompletionChunk,
    crate::CompletionResponse,
    crate::EmbeddingResponse,
    crate::ChatCompletionRequest,
    crate::CompletionRequest,
    crate::EmbeddingRequest,
    crate::JsonRequest,
    crate::JsonAnswer
);

/// A response or chunk that may carry token usage, so the gateway can count tokens.
pub trait HasUsage {
    /// (input, output) tokens, when reported.
    fn tokens(&self) -> Option<(u64, u64)>;

    /// True for the final usage-only chunk that `stream_options.include_usage` adds.
    fn is_usage_only(&self) -> bool {
        false
    }

    /// Bytes of text this chunk generated, for chunks that are not OpenAI-shaped (Anthropic's
    /// stream events) and so have no `choices` for [`Chunk::outputs`] to read; `None` for the
    /// OpenAI shapes. What a stream whose usage never arrives is charged is counted from it.
    fn output_bytes(&self) -> Option<u64> {
        None
    }
}

impl HasUsage for crate::ChatCompletionResponse {
    fn tokens(&self) -> Option<(u64, u64)> {
        self.usage.as_ref().and_then(Usage::plausible_tokens)
    }
}

impl HasUsage for crate::ChatCompletionChunk {
    fn tokens(&self) -> Option<(u64, u64)> {
        self.usage.as_ref().and_then(Usage::plausible_tokens)
    }
    fn is_usage_only(&self) -> bool {
        self.choices.is_empty() && self.usage.is_some()
    }
}

/// Also the completion stream chunk type.
impl HasUsage for crate::CompletionResponse {
    fn tokens(&self) -> Option<(u64, u64)> {
        self.usage.as_ref().and_then(Usage::plausible_tokens)
    }
    fn is_usage_only(&self) -> bool {
        self.choices.is_empty() && self.usage.is_some()
    }
}

impl HasUsage for crate::JsonAnswer {
    fn tokens(&self) -> Option<(u64, u64)> {
        self.usage.as_ref().map(Usage::tokens)
    }
}

impl HasUsage for crate::EmbeddingResponse {
    fn tokens(&self) -> Option<(u64, u64)> {
        plausible(self.usage.prompt_tokens, 0)
    }
}

#[cfg(test)]
mod tests;
