//! A parsed request's provenance: the client's bytes, kept beside the typed request so that the
//! engine is sent what the client sent, with only what Lumen changed spliced in place, rather
//! than a re-serialisation (issue 24: a re-serialised 10 MB body held the body, the parsed
//! request and the new copy at once).
//!
//! Chat, completions and embeddings requests keep their bytes ([`Forwardable`]). Lumen changes
//! few things in a request on its way to an engine: `model` (routing resolves aliases to the
//! engine's id), `stream` and `stream_options` (the usage ask on streams), and a few added
//! members (`priority`, continuation's switches). Rather than trusting every caller to say what
//! it changed, [`Source`] remembers what was parsed and [`Source::forward`] compares: members
//! it can splice (those above, and members appended to `extra`) are spliced; anything else
//! changed (the request's bulk, a typed field, an `extra` member rewritten) makes it answer
//! `None`, and the caller serialises the request as before. So a splice is always exactly the
//! request's value.
//!
//! The bulk of each request (chat's `messages`, a completion's `prompt`, embeddings' `input`:
//! [`Splice::HELD`]) is made a slice of the body, so the parse's copy of it is freed and the
//! request holds about the body once.

use std::fmt;
use std::hash::{DefaultHasher, Hasher};
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::RawExtra;
use crate::chat::{ChatCompletionRequest, Messages};
use crate::completions::{CompletionRequest, Prompt};
use crate::embeddings::EmbeddingRequest;
use crate::raw::Key;
use crate::stream::StreamOptions;

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
    /// The range of the request's bulk ([`Splice::HELD`]), which the request holds as this
    /// slice of `body`.
    held_at: Range<usize>,
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

/// A request that keeps the client's bytes when read with
/// [`crate::request::parse_shared`], and is forwarded as them: chat, completions and
/// embeddings requests (sealed: its supertrait `Splice` cannot be named outside this crate).
pub trait Forwardable: Splice + DeserializeOwned + Serialize {
    /// The body to send the engine, when the request was read from one and changed only in
    /// what can be spliced into the client's bytes (`model`, `stream`, `stream_options`,
    /// members added to `extra`): those bytes as pieces that share them, edits in place.
    /// `None`: serialise the request.
    fn forwarded(&self) -> Option<Vec<Bytes>> {
        Source::forward(self)
    }
}

impl Forwardable for ChatCompletionRequest {}
impl Forwardable for CompletionRequest {}
impl Forwardable for EmbeddingRequest {}

/// What [`Source`] reads and sets of a request type. Public only to bound [`Forwardable`]; not
/// reachable outside this crate.
pub trait Splice {
    /// The member held as a slice of the body: the request's bulk, which would otherwise be a
    /// second copy of most of the body.
    const HELD: &'static str;

    /// The members Lumen may change or must not, as they are now.
    fn members(&self) -> Members<'_>;

    /// The held member's text, when it is a slice of a body.
    fn held(&self) -> Option<&Bytes>;

    /// Holds the member as `text` (its value, sliced from the body that was parsed); false
    /// (nothing changed) when it cannot be.
    fn hold(&mut self, text: Bytes) -> bool;

    fn source(&self) -> Option<&Source>;

    fn source_mut(&mut self) -> &mut Option<Source>;
}

/// A request's members as [`Source`] compares them with the parse's.
pub struct Members<'a> {
    pub model: &'a str,
    /// Always `false` for a request that never streams.
    pub stream: bool,
    pub stream_options: Option<&'a StreamOptions>,
    /// A [`digest`] of the typed members Lumen reads but never changes on the way to the
    /// engine (a change to any of them means re-serialising).
    pub fields: u64,
    pub extra: &'a RawExtra,
}

impl Splice for ChatCompletionRequest {
    const HELD: &'static str = "messages";

    fn members(&self) -> Members<'_> {
        Members {
            model: &self.model,
            stream: self.is_stream(),
            stream_options: self.stream_options.as_ref(),
            fields: digest(&(
                self.max_tokens,
                self.max_completion_tokens,
                self.temperature,
                self.top_p,
                self.n,
                self.seed,
                &self.user,
            )),
            extra: &self.extra,
        }
    }

    fn held(&self) -> Option<&Bytes> {
        self.messages.shared_bytes()
    }

    fn hold(&mut self, text: Bytes) -> bool {
        Messages::shared(text).map(|m| self.messages = m).is_some()
    }

    fn source(&self) -> Option<&Source> {
        self.source.as_ref()
    }

    fn source_mut(&mut self) -> &mut Option<Source> {
        &mut self.source
    }
}

impl Splice for CompletionRequest {
    const HELD: &'static str = "prompt";

    fn members(&self) -> Members<'_> {
        Members {
            model: &self.model,
            stream: self.is_stream(),
            stream_options: self.stream_options.as_ref(),
            fields: digest(&(
                self.max_tokens,
                self.temperature,
                self.top_p,
                self.n,
                self.seed,
                &self.user,
            )),
            extra: &self.extra,
        }
    }

    fn held(&self) -> Option<&Bytes> {
        self.prompt.shared_bytes()
    }

    fn hold(&mut self, text: Bytes) -> bool {
        Prompt::shared(text).map(|p| self.prompt = p).is_some()
    }

    fn source(&self) -> Option<&Source> {
        self.source.as_ref()
    }

    fn source_mut(&mut self) -> &mut Option<Source> {
        &mut self.source
    }
}

impl Splice for EmbeddingRequest {
    const HELD: &'static str = "input";

    fn members(&self) -> Members<'_> {
        Members {
            model: &self.model,
            stream: false,
            stream_options: None,
            fields: digest(&(&self.encoding_format, self.dimensions, &self.user)),
            extra: &self.extra,
        }
    }

    fn held(&self) -> Option<&Bytes> {
        self.input.shared_bytes()
    }

    fn hold(&mut self, text: Bytes) -> bool {
        Prompt::shared(text).map(|p| self.input = p).is_some()
    }

    fn source(&self) -> Option<&Source> {
        self.source.as_ref()
    }

    fn source_mut(&mut self) -> &mut Option<Source> {
        &mut self.source
    }
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
#[derive(Default)]
struct Spots<'a> {
    model: Option<&'a RawValue>,
    stream: Option<&'a RawValue>,
    stream_options: Option<&'a RawValue>,
    held: Option<&'a RawValue>,
}

/// Reads [`Spots`]; the request's bulk is the member of this name ([`Splice::HELD`]).
struct FindSpots(&'static str);

impl<'de> DeserializeSeed<'de> for FindSpots {
    type Value = Spots<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Spots<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FindSpots {
    type Value = Spots<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spots<'de>, A::Error> {
        let mut spots = Spots::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let slot = match key.as_str() {
                "model" => &mut spots.model,
                "stream" => &mut spots.stream,
                "stream_options" => &mut spots.stream_options,
                k if k == self.0 => &mut spots.held,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            // Twice (an unknown member the type does not refuse, such as embeddings'
            // `stream`): a splice into one would leave the other, so nothing is spliced.
            if slot.replace(map.next_value()?).is_some() {
                return Err(de::Error::custom("a member appears twice"));
            }
        }
        Ok(spots)
    }
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
    /// Keeps `body` as `r`'s source, and makes `r`'s bulk a slice of it (freeing the copy the
    /// parse made). Leaves `r` without a source when the body cannot be read back (it always
    /// can after a successful parse; then `r` is only ever serialised, as before).
    pub(crate) fn attach<R: Splice>(r: &mut R, body: &Bytes) {
        let mut de = serde_json::Deserializer::from_slice(body);
        let Ok(spots) = FindSpots(R::HELD).deserialize(&mut de) else {
            return;
        };
        let at = |v: Option<&RawValue>| v.and_then(|v| range_in(body, v));
        let (model_at, stream_at, options_at) =
            (at(spots.model), at(spots.stream), at(spots.stream_options));
        // Every member that was there must be found, or a splice could double it.
        let found =
            |spot: Option<&RawValue>, at: &Option<Range<usize>>| spot.is_none() || at.is_some();
        if !(found(spots.model, &model_at)
            && found(spots.stream, &stream_at)
            && found(spots.stream_options, &options_at))
        {
            return;
        }
        let Some(held_at) = at(spots.held) else {
            return;
        };
        if !r.hold(body.slice(held_at.clone())) {
            return;
        }
        let m = r.members();
        let extra = m.extra.raw_json();
        let source = Self {
            body: body.clone(),
            model_at,
            stream_at,
            options_at,
            held_at,
            model: m.model.to_owned(),
            stream: m.stream,
            fields: m.fields,
            options: digest(&m.stream_options),
            extra_len: extra.len(),
            extra_digest: extra
                .get(..extra.len().saturating_sub(1))
                .map_or(0, digest_str),
        };
        *r.source_mut() = Some(source);
    }

    /// The body to send for `r`, as pieces that share the client's bytes: the body itself when
    /// nothing changed, else with the changed members spliced in place (or added first in the
    /// object). `None` when `r` changed in a way a splice cannot carry: serialise it.
    pub(crate) fn forward<R: Splice + ?Sized>(r: &R) -> Option<Vec<Bytes>> {
        let src = r.source()?;
        let held = r.held()?;
        let own = src.body.get(src.held_at.clone())?;
        if held.as_ptr() != own.as_ptr() || held.len() != own.len() {
            return None;
        }
        let m = r.members();
        if m.fields != src.fields {
            return None;
        }
        let added = appended(m.extra.raw_json(), src.extra_len, src.extra_digest)?;
        let mut edits = Edits::default();
        if m.model != src.model {
            edits.set(&src.model_at, "model", serde_json::to_vec(m.model).ok()?);
        }
        if m.stream != src.stream {
            let v: &[u8] = if m.stream { b"true" } else { b"false" };
            edits.set(&src.stream_at, "stream", v.to_vec());
        }
        if digest(&m.stream_options) != src.options {
            // Taken away is not a splice (a member removed); never done today.
            let options = m.stream_options?;
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
