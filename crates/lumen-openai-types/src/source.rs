//! A parsed request's provenance: the client's bytes, kept beside the typed request so that the
//! engine is sent what the client sent, with only what Lumen changed spliced in place, rather
//! than a re-serialisation (issue 24: a re-serialised 10 MB body held the body, the parsed
//! request and the new copy at once).
//!
//! Lumen changes few things in a request on its way to an engine: `model` (routing resolves
//! aliases to the engine's id), `stream` and `stream_options` (the usage ask on streams), and a
//! few added members (`priority`). Rather than trusting every caller to say what it changed,
//! [`Source`] remembers what was parsed and [`Source::forward_chat`] compares: members it can
//! splice (those above, and members appended to `extra`) are spliced; anything else changed
//! (the messages, a typed field, an `extra` member rewritten) makes it answer `None`, and the
//! caller serialises the request as before. So a splice is always exactly the request's value.

use std::fmt;
use std::hash::{DefaultHasher, Hasher};
use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::chat::{ChatCompletionRequest, Messages};

/// The client's body and where in it are the members Lumen may change. Cheap to clone (the
/// body is shared).
#[derive(Clone, Default)]
pub struct Source {
    body: Bytes,
    /// Value ranges (in `body`) of the top-level members that may be spliced; `None` when
    /// the body has no such member.
    model_at: Option<Range<usize>>,
    stream_at: Option<Range<usize>>,
    options_at: Option<Range<usize>>,
    messages_at: Option<Range<usize>>,
    /// The values as parsed.
    model: String,
    stream: bool,
    /// Digests of the typed members (other than those above) and of `stream_options`.
    fields: u64,
    options: u64,
    /// `extra`'s JSON as parsed: its length, and a digest of all but its closing brace, so
    /// members appended since are told from members changed.
    extra_len: usize,
    extra_digest: u64,
}

/// Provenance, not value: two requests with the same members are equal however they came.
impl PartialEq for Source {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({} bytes)", self.body.len())
    }
}

/// Where the members are: a second pass over the body, borrowing, skipping everything else
/// (no allocation). `null` counts as present (a `model: null` must be replaced, not doubled).
#[derive(Deserialize)]
struct Spots<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    messages: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Where `text` (borrowed from `body`) lies in it.
fn range_in(body: &[u8], text: &RawValue) -> Option<Range<usize>> {
    let text = text.get();
    let start = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(text.len())?;
    (end <= body.len()).then_some(start..end)
}

/// A hasher fed by `serde_json::to_writer`, so a value is digested without being written out.
struct Digest(DefaultHasher);

impl std::io::Write for Digest {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn digest<T: Serialize + ?Sized>(v: &T) -> u64 {
    let mut d = Digest(DefaultHasher::new());
    // A failure leaves a digest that cannot match a successful one's by design of the caller:
    // both sides digest the same way, so a value that cannot serialise compares as itself.
    let _ = serde_json::to_writer(&mut d, v);
    d.0.finish()
}

fn digest_str(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(s.as_bytes());
    h.finish()
}

/// The chat members Lumen reads but never changes on the way to the engine (a change to any of
/// them means re-serialising).
fn chat_fields(r: &ChatCompletionRequest) -> u64 {
    digest(&(
        r.max_tokens,
        r.max_completion_tokens,
        r.temperature,
        r.top_p,
        r.n,
        r.seed,
        &r.user,
    ))
}

/// `extra` as held now against `extra` as parsed: the members appended since (`""` for none),
/// or `None` when a member parsed was changed or removed.
fn appended(json: &str, len: usize, parsed: u64) -> Option<&str> {
    if len == 0 {
        if json.is_empty() {
            return Some("");
        }
        return json.strip_prefix('{')?.strip_suffix('}');
    }
    let kept = json.get(..len - 1)?;
    if digest_str(kept) != parsed {
        return None;
    }
    if json.len() == len {
        return Some("");
    }
    json.get(len - 1..)?.strip_prefix(',')?.strip_suffix('}')
}

impl Source {
    /// Keeps `body` as `r`'s source, and makes `r.messages` a slice of it (freeing the copy the
    /// parse made). Leaves `r` without a source when the body cannot be read back (it always
    /// can after a successful parse; then `r` is only ever serialised, as before).
    pub(crate) fn attach_chat(r: &mut ChatCompletionRequest, body: &Bytes) {
        let Ok(spots) = serde_json::from_slice::<Spots<'_>>(body) else {
            return;
        };
        let at = |v: Option<&RawValue>| v.and_then(|v| range_in(body, v));
        let (model_at, stream_at, options_at, messages_at) = (
            at(spots.model),
            at(spots.stream),
            at(spots.stream_options),
            at(spots.messages),
        );
        // Every member that was there must be found, or a splice could double it.
        let found =
            |spot: Option<&RawValue>, at: &Option<Range<usize>>| spot.is_none() || at.is_some();
        if !(found(spots.model, &model_at)
            && found(spots.stream, &stream_at)
            && found(spots.stream_options, &options_at)
            && messages_at.is_some())
        {
            return;
        }
        if let Some(range) = &messages_at {
            let Some(messages) = Messages::shared(body.slice(range.clone())) else {
                return;
            };
            r.messages = messages;
        }
        let extra = r.extra.raw_json();
        r.source = Some(Self {
            body: body.clone(),
            model_at,
            stream_at,
            options_at,
            messages_at,
            model: r.model.clone(),
            stream: r.is_stream(),
            fields: chat_fields(r),
            options: digest(&r.stream_options),
            extra_len: extra.len(),
            extra_digest: extra
                .get(..extra.len().saturating_sub(1))
                .map_or(0, digest_str),
        });
    }

    /// The body to send for `r`, as pieces that share the client's bytes: the body itself when
    /// nothing changed, else with the changed members spliced in place (or added first in the
    /// object). `None` when `r` changed in a way a splice cannot carry: serialise it.
    pub(crate) fn forward_chat(r: &ChatCompletionRequest) -> Option<Vec<Bytes>> {
        let src = r.source.as_ref()?;
        let messages = r.messages.shared_bytes()?;
        let at = src.messages_at.clone()?;
        let own = src.body.get(at)?;
        if messages.as_ptr() != own.as_ptr() || messages.len() != own.len() {
            return None;
        }
        if chat_fields(r) != src.fields {
            return None;
        }
        let added = appended(r.extra.raw_json(), src.extra_len, src.extra_digest)?;
        let mut edits = Edits::default();
        if r.model != src.model {
            edits.set(&src.model_at, "model", serde_json::to_vec(&r.model).ok()?);
        }
        if r.is_stream() != src.stream {
            let v: &[u8] = if r.is_stream() { b"true" } else { b"false" };
            edits.set(&src.stream_at, "stream", v.to_vec());
        }
        if digest(&r.stream_options) != src.options {
            // Taken away is not a splice (a member removed); never done today.
            let options = r.stream_options.as_ref()?;
            edits.set(
                &src.options_at,
                "stream_options",
                serde_json::to_vec(options).ok()?,
            );
        }
        edits.apply(&src.body, added)
    }
}

/// The members to change in a body: values replaced in place, members added.
#[derive(Default)]
struct Edits {
    replace: Vec<(Range<usize>, Vec<u8>)>,
    /// `"key":value` members, comma-separated.
    add: Vec<u8>,
}

impl Edits {
    fn set(&mut self, at: &Option<Range<usize>>, key: &str, value: Vec<u8>) {
        match at {
            Some(range) => self.replace.push((range.clone(), value)),
            None => {
                if !self.add.is_empty() {
                    self.add.push(b',');
                }
                self.add.push(b'"');
                self.add.extend_from_slice(key.as_bytes());
                self.add.extend_from_slice(b"\":");
                self.add.extend_from_slice(&value);
            }
        }
    }

    /// The body with the edits made, as pieces: added members first in the object (with
    /// `extra`'s appended members), then the body with its replaced values.
    fn apply(mut self, body: &Bytes, appended: &str) -> Option<Vec<Bytes>> {
        if !appended.is_empty() {
            if !self.add.is_empty() {
                self.add.push(b',');
            }
            self.add.extend_from_slice(appended.as_bytes());
        }
        if self.add.is_empty() && self.replace.is_empty() {
            return Some(vec![body.clone()]);
        }
        let open = body.iter().position(|b| *b == b'{')?;
        let mut pieces = vec![body.slice(..=open)];
        let mut at = open + 1;
        if !self.add.is_empty() {
            let empty = body
                .get(at..)?
                .trim_ascii_start()
                .first()
                .is_none_or(|b| *b == b'}');
            if !empty {
                self.add.push(b',');
            }
            pieces.push(Bytes::from(self.add));
        }
        self.replace.sort_by_key(|(r, _)| r.start);
        for (range, value) in self.replace {
            if range.start < at || range.end > body.len() {
                return None;
            }
            pieces.push(body.slice(at..range.start));
            pieces.push(Bytes::from(value));
            at = range.end;
        }
        pieces.push(body.slice(at..));
        pieces.retain(|p| !p.is_empty());
        Some(pieces)
    }
}

#[cfg(test)]
mod tests;
