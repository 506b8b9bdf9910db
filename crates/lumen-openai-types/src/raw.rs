//! Request parts kept as the client's raw JSON, and the hand-written `Deserialize` for structs
//! with unknown fields.
//!
//! Why: `#[serde(flatten)]` and `#[serde(untagged)]` buffer every value into serde's private
//! `Content` tree (and `Value`s), 16 to 50 bytes per JSON token: a 10 MB body of zeros in an
//! unknown field took 600 MB. Lumen forwards those parts unchanged and never reads them, so they
//! stay JSON text. Unknown members of one object share one buffer ([`RawExtra`]) rather than a
//! map entry each, so even a body made of tiny unknown keys costs about its own size. serde_json's
//! `RawValue` does not work under `flatten`/`untagged`, hence the map visitor in
//! [`deserialize_object`] instead of the derive.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

/// Unknown members of a request object (engine extras such as `top_k`, `guided_json`,
/// `chat_template_kwargs`), kept as the client's JSON text in arrival order and forwarded
/// unchanged. A key that appears twice keeps both members; [`get`](Self::get) reads the last,
/// as JSON parsers do.
#[derive(Clone, Default)]
pub struct RawExtra {
    /// `{"k":v,...}`, or empty when there are no members. Shared: the attempt loop clones a
    /// request per attempt, and a huge unknown field must not be copied each time (a change
    /// copies it once, on write).
    json: Arc<String>,
}

impl RawExtra {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// Number of members (a repeated key counts each time).
    pub fn len(&self) -> usize {
        self.entries().count()
    }

    /// The raw JSON of the last member named `key`.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.entries()
            .filter(|(k, _)| k.as_ref() == key)
            .last()
            .map(|(_, v)| v)
    }

    /// The member named `key` parsed as `T`; `None` when absent or of another type.
    pub fn get_as<'a, T: Deserialize<'a>>(&'a self, key: &str) -> Option<T> {
        serde_json::from_str(self.get(key)?.get()).ok()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.entries().any(|(k, _)| k.as_ref() == key)
    }

    /// Sets `key` to `value` (serialised now), replacing any member of that name.
    pub fn insert<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        let raw = serde_json::value::to_raw_value(value)?;
        self.remove(key);
        self.push(key, &raw);
        Ok(())
    }

    /// Removes every member named `key`; true when there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        if !self.contains_key(key) {
            return false;
        }
        let mut kept = Self::new();
        for (k, v) in self.entries().filter(|(k, _)| k.as_ref() != key) {
            kept.push(&k, v);
        }
        *self = kept;
        true
    }

    /// The members' JSON as held (`{"k":v,...}`), empty when there are none: what
    /// [`crate::source`] compares with the members as parsed.
    pub(crate) fn raw_json(&self) -> &str {
        &self.json
    }

    /// The members as one JSON object (`{}` when empty).
    pub fn as_json(&self) -> &str {
        if self.json.is_empty() {
            "{}"
        } else {
            &self.json
        }
    }

    /// Every member in arrival order: key (unescaped) and raw value.
    pub fn entries(&self) -> impl Iterator<Item = (Cow<'_, str>, &RawValue)> {
        Members {
            rest: &self.json,
            started: false,
        }
    }

    /// [`push`](Self::push) for a value the parser just copied out: when it is larger than
    /// the members so far, they are moved into its buffer instead of it being copied into
    /// theirs, so a huge unknown member is held once, not twice, while a body is parsed.
    pub(crate) fn push_owned(&mut self, key: &str, value: Box<RawValue>) {
        if value.get().len() <= self.json.len() + 64 {
            return self.push(key, &value);
        }
        let mut head = String::with_capacity(self.json.len() + key.len() + 8);
        match self.json.strip_suffix('}') {
            Some(members) => {
                head.push_str(members);
                head.push(',');
            }
            None => head.push('{'),
        }
        push_json_string(&mut head, key);
        head.push(':');
        let mut json = String::from(Box::<str>::from(value));
        json.reserve_exact(head.len() + 1);
        json.insert_str(0, &head);
        json.push('}');
        self.json = Arc::new(json);
    }

    /// Appends a member without looking for an earlier one of the same name: parsing must not
    /// be quadratic in the number of keys.
    pub(crate) fn push(&mut self, key: &str, value: &RawValue) {
        let json = Arc::make_mut(&mut self.json);
        // All at once: growing for the closing brace after a huge value would double it.
        json.reserve(key.len() + value.get().len() + 8);
        if json.is_empty() {
            json.push('{');
        } else {
            json.pop();
            json.push(',');
        }
        push_json_string(json, key);
        json.push(':');
        json.push_str(value.get());
        json.push('}');
    }
}

/// A JSON value kept as the client's text: the parse's own copy or, once the request keeps the
/// client's body ([`crate::Source`]), a slice of that body. The slice frees the parse's copy
/// (a 10 MB prompt is then held once, as the body) and a clone per attempt costs a reference
/// count. Valid JSON either way.
#[derive(Clone)]
pub struct RawJson(Held);

#[derive(Clone)]
enum Held {
    Parsed(Box<RawValue>),
    /// Valid UTF-8 (checked when made) and one JSON value (a parsed body's member).
    Shared(bytes::Bytes),
}

impl RawJson {
    /// The JSON text.
    pub fn get(&self) -> &str {
        match &self.0 {
            Held::Parsed(r) => r.get(),
            // Checked when made; `null` if that were ever wrong.
            Held::Shared(b) => std::str::from_utf8(b).unwrap_or("null"),
        }
    }

    /// `text`, a member's value sliced from a body that parsed, held without a copy; `None`
    /// when it is not UTF-8 (a parsed body's member always is).
    pub(crate) fn shared(text: bytes::Bytes) -> Option<Self> {
        std::str::from_utf8(&text).ok()?;
        Some(Self(Held::Shared(text)))
    }

    /// The body slice this is, when it is one.
    pub(crate) fn shared_bytes(&self) -> Option<&bytes::Bytes> {
        match &self.0 {
            Held::Shared(b) => Some(b),
            Held::Parsed(_) => None,
        }
    }

    /// The first byte: which JSON type it is (read without checking a shared slice whole).
    pub(crate) fn kind(&self) -> u8 {
        match &self.0 {
            Held::Parsed(r) => kind(r),
            Held::Shared(b) => b.first().copied().unwrap_or(b' '),
        }
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> Self {
        Self(Held::Parsed(raw))
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.get(), f)
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Held::Parsed(r) => r.serialize(s),
            // Borrowed: checks the text, copies nothing.
            Held::Shared(_) => serde_json::from_str::<&RawValue>(self.get())
                .map_err(serde::ser::Error::custom)?
                .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self::from)
    }
}

/// `s` as a JSON string literal. Keys rarely need escapes, so the common case is a plain copy.
fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else if let Ok(escaped) = serde_json::to_string(s) {
        out.push_str(&escaped);
    }
}

impl fmt::Debug for RawExtra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries().map(|(k, v)| (k, v.get())))
            .finish()
    }
}

impl PartialEq for RawExtra {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl Serialize for RawExtra {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.entries() {
            map.serialize_entry(&k, v)?;
        }
        map.end()
    }
}

/// Iterates the members of a JSON object this module wrote (so it is valid), one at a time.
struct Members<'a> {
    rest: &'a str,
    started: bool,
}

impl<'a> Iterator for Members<'a> {
    type Item = (Cow<'a, str>, &'a RawValue);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.trim_start();
        let rest = if self.started {
            rest.strip_prefix(',')?
        } else {
            self.started = true;
            rest.strip_prefix('{')?
        };
        let (key, used) = one::<Key<'a>>(rest)?;
        let rest = rest[used..].trim_start().strip_prefix(':')?;
        let (value, used) = one::<&'a RawValue>(rest)?;
        self.rest = &rest[used..];
        Some((key.into_cow(), value))
    }
}

/// The first JSON value of `s` and the bytes it took (leading whitespace included).
fn one<'a, T: Deserialize<'a>>(s: &'a str) -> Option<(T, usize)> {
    let mut it = serde_json::Deserializer::from_str(s).into_iter::<T>();
    let v = it.next()?.ok()?;
    Some((v, it.byte_offset()))
}

/// Lazily parses the elements of a JSON array held as text, one at a time, so reading a huge
/// array never holds more than one element.
pub(crate) struct Elements<'a, T> {
    rest: &'a str,
    started: bool,
    done: bool,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T> Elements<'a, T> {
    pub(crate) fn new(array: &'a str) -> Self {
        Self {
            rest: array,
            started: false,
            done: false,
            _t: PhantomData,
        }
    }
}

impl<'a, T: Deserialize<'a>> Iterator for Elements<'a, T> {
    type Item = Result<T, serde_json::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut rest = self.rest.trim_start();
        if !self.started {
            self.started = true;
            match rest.strip_prefix('[') {
                Some(r) => rest = r.trim_start(),
                None => return self.fail("expected an array"),
            }
            if let Some(r) = rest.strip_prefix(']') {
                self.rest = r;
                self.done = true;
                return None;
            }
        } else if let Some(r) = rest.strip_prefix(']') {
            self.rest = r;
            self.done = true;
            return None;
        } else {
            match rest.strip_prefix(',') {
                Some(r) => rest = r,
                None => return self.fail("expected `,` or `]`"),
            }
        }
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<T>();
        match it.next() {
            Some(Ok(v)) => {
                self.rest = &rest[it.byte_offset()..];
                Some(Ok(v))
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            None => self.fail("unexpected end of array"),
        }
    }
}

impl<T> Elements<'_, T> {
    fn fail(&mut self, why: &str) -> Option<Result<T, serde_json::Error>> {
        self.done = true;
        Some(Err(de::Error::custom(why)))
    }
}

/// An object key, borrowed from the body when it has no escapes.
pub(crate) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Key<'de> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Borrowed(s) => s,
            Self::Owned(s) => s,
        }
    }

    fn into_cow(self) -> Cow<'de, str> {
        match self {
            Self::Borrowed(s) => Cow::Borrowed(s),
            Self::Owned(s) => Cow::Owned(s),
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s))
            }
        }
        d.deserialize_str(V)
    }
}

/// True when two values serialise to the same JSON (for `PartialEq` on raw parts).
pub(crate) fn same_json<A: Serialize + ?Sized, B: Serialize + ?Sized>(a: &A, b: &B) -> bool {
    match (serde_json::to_string(a), serde_json::to_string(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The first non-whitespace byte of a raw value: which JSON type it is.
pub(crate) fn kind(raw: &RawValue) -> u8 {
    raw.get().bytes().next().unwrap_or(b' ')
}

/// Reads one known field's value; `null_default` treats an explicit `null` like a missing field.
macro_rules! read_field {
    (null_default, $t:ty, $map:ident) => {
        $map.next_value::<Option<$t>>()?.unwrap_or_default()
    };
    ($how:tt, $t:ty, $map:ident) => {
        $map.next_value::<$t>()?
    };
}

/// The value of a known field after the whole object was read.
macro_rules! finish_field {
    (required, $slot:ident, $name:expr) => {
        $slot.ok_or_else(|| serde::de::Error::missing_field($name))?
    };
    (default, $slot:ident, $name:expr) => {
        $slot.unwrap_or_default()
    };
    (null_default, $slot:ident, $name:expr) => {
        $slot.unwrap_or_default()
    };
    ([$default:path], $slot:ident, $name:expr) => {
        $slot.unwrap_or_else($default)
    };
}

/// `Deserialize` for a struct of typed known fields plus `extra: RawExtra`: one pass over the
/// object, known keys parsed into their types, every other member appended to `extra` as raw
/// JSON. Each field says what a missing key means: `required`, `default`, `null_default`
/// (`null` too), or `[function]`. Fields listed after `skip:` are not read from JSON (they
/// start as their default).
macro_rules! deserialize_object {
    ($ty:ident, $expecting:literal, { $( $field:ident : $t:ty = $how:tt ),* $(,)? }
        $(, skip: [ $( $skip:ident ),* ])?) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        $( let mut $field: Option<$t> = None; )*
                        let mut extra = $crate::RawExtra::new();
                        while let Some(key) = map.next_key::<$crate::raw::Key<'de>>()? {
                            match key.as_str() {
                                $( stringify!($field) => {
                                    if $field.is_some() {
                                        return Err(serde::de::Error::duplicate_field(
                                            stringify!($field),
                                        ));
                                    }
                                    $field = Some($crate::raw::read_field!($how, $t, map));
                                } )*
                                other => {
                                    let v: Box<serde_json::value::RawValue> = map.next_value()?;
                                    extra.push_owned(other, v);
                                }
                            }
                        }
                        Ok($ty {
                            $( $field: $crate::raw::finish_field!($how, $field, stringify!($field)), )*
                            $($( $skip: Default::default(), )*)?
                            extra,
                        })
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

pub(crate) use {deserialize_object, finish_field, read_field};

/// The UTF-16 unit of the `\uXXXX` escape whose backslash is at `at` in `raw`, when its four
/// hex digits are there.
pub(crate) fn escape_unit(raw: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(raw.get(at + 2..at + 6)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests;
