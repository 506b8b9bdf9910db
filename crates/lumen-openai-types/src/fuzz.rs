//! Bodies of the fuzz targets over this crate (`fuzz/fuzz_targets/{sse,peek}.rs`), as plain
//! functions so that an ordinary test replays their corpora (`fuzz/corpus/<target>/`) on stable
//! Rust without a fuzzer. Each panics when a property breaks; returning means the input passed.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::sse::{DEFAULT_MAX_EVENT_BYTES, Event, SseDecoder, SseError};
use crate::stream::peek::{MAX_NESTING, scan};

/// Splits `data` into pieces whose lengths come from a small generator seeded by `seed`: many
/// one-byte pieces (every boundary inside a CRLF, a BOM or a UTF-8 character gets hit), some
/// longer ones.
pub fn pieces(seed: u64, data: &[u8]) -> Vec<&[u8]> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = match state % 4 {
            0 => 1,
            1 => 2 + (state >> 8) as usize % 7,
            2 => 1 + (state >> 8) as usize % 64,
            _ => 0, // an empty push must change nothing
        };
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// What a decoder produced from a whole input.
#[derive(Debug, PartialEq)]
pub(crate) struct Decoded {
    events: Vec<Event>,
    /// The first error; decoding stops there (the backend ends the stream on it).
    error: Option<SseError>,
    /// Bytes of an unfinished event were left (only meaningful without an error).
    partial: bool,
}

pub(crate) fn decode(max: usize, chunks: &[&[u8]]) -> Decoded {
    let mut d = SseDecoder::with_max_event_bytes(max);
    let mut events = Vec::new();
    for c in chunks {
        d.push(c);
        loop {
            match d.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        events,
                        error: Some(e),
                        partial: false,
                    };
                }
            }
        }
    }
    Decoded {
        events,
        error: None,
        partial: d.has_partial(),
    }
}

/// A line-at-a-time reading of the WHATWG event-stream rules over the whole input, written
/// independently of [`SseDecoder`] (no buffering, no incremental state), with the same cap.
pub(crate) fn reference(max: usize, input: &[u8]) -> Decoded {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut events = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    let mut event: Option<String> = None;
    let mut id: Option<String> = None;
    let mut rest = input;
    let too_large = |events| Decoded {
        events,
        error: Some(SseError::EventTooLarge { limit: max }),
        partial: false,
    };
    loop {
        let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
            if rest.len() > max {
                return too_large(events);
            }
            return Decoded {
                events,
                error: None,
                partial: !rest.is_empty() || data.is_some(),
            };
        };
        let line = &rest[..end];
        let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if line.len() > max {
            return too_large(events);
        }
        if line.is_empty() {
            let name = event.take();
            if let Some(d) = data.take() {
                events.push(Event {
                    event: name,
                    data: Bytes::from(d),
                    id: id.clone(),
                });
            }
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => match &mut data {
                None => data = Some(value.to_vec()),
                Some(d) => {
                    if d.len() + 1 + value.len() > max {
                        return too_large(events);
                    }
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
            },
            b"event" => event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" if !value.contains(&0) => id = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
}

/// `sse`: the first byte picks the event cap and the split pattern, the rest is the stream.
/// Fed whole, fed in pieces, and read by the reference, it must give the same events, the same
/// error and the same leftover.
pub fn sse(data: &[u8]) {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let max = match ctl & 3 {
        0 => 8,
        1 => 64,
        2 => 1024,
        _ => DEFAULT_MAX_EVENT_BYTES,
    };
    let whole = decode(max, &[input]);
    let split = decode(max, &pieces(u64::from(ctl >> 2), input));
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(whole, split, "split changed the result");
    assert_eq!(
        whole,
        decode(max, &bytewise),
        "byte-at-a-time changed the result"
    );
    assert_eq!(
        whole,
        reference(max, input),
        "decoder and reference disagree"
    );
    for e in &whole.events {
        assert!(e.data.len() <= max, "event over the cap");
    }
}

/// What the reference reads of a top-level object: the last value of each member the scanner
/// looks for, as serde_json's own raw slice (keys unescaped by serde).
#[derive(Debug, Default)]
struct Members<'a> {
    error: Option<&'a [u8]>,
    object: Option<&'a [u8]>,
    usage: Option<&'a [u8]>,
    choices: Option<&'a [u8]>,
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut m = Members::default();
                while let Some(key) = map.next_key::<String>()? {
                    let value = Some(map.next_value::<&'de RawValue>()?.get().as_bytes());
                    match key.as_str() {
                        "error" => m.error = value,
                        "object" => m.object = value,
                        "usage" => m.usage = value,
                        "choices" => m.choices = value,
                        _ => {}
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// `usage` as the peek reads it.
#[derive(Deserialize)]
struct RefUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

/// The deepest nesting of arrays and objects in a valid JSON document (strings skipped).
fn nesting(raw: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in raw {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `peek`: the stream-chunk scanner against serde_json. They must agree on whether the bytes
/// are one valid JSON object (as serde_json reads a map of raw values: keys parsed, values
/// skipped, UTF-8 checked; within the nesting serde_json parses) and on the raw value of each
/// member the scanner reads; the whole peek ([`crate::Chunk::from_raw`]) must then agree with
/// serde_json on validity, tokens, the usage-only chunk and the in-band error.
pub fn peek(data: &[u8]) {
    let reference = serde_json::from_slice::<Members<'_>>(data)
        .ok()
        .filter(|_| nesting(data) <= MAX_NESTING);
    match (scan(data), &reference) {
        (Some(m), Some(r)) => {
            assert_eq!(m.error, r.error, "error differs");
            assert_eq!(m.object, r.object, "object differs");
            assert_eq!(m.usage, r.usage, "usage differs");
            assert_eq!(m.choices, r.choices, "choices differs");
        }
        (None, None) => {}
        (Some(_), None) => panic!("the scanner accepted what serde_json refuses"),
        (None, Some(_)) => panic!("the scanner refused what serde_json accepts"),
    }

    let chunk = crate::Chunk::<crate::ChatCompletionChunk>::from_raw(Bytes::copy_from_slice(data));
    let expected = reference.and_then(|r| {
        let usage = match r.usage {
            None => None,
            Some(u) => serde_json::from_slice::<Option<RefUsage>>(u).ok()?,
        };
        Some((r, usage))
    });
    match (chunk, expected) {
        (Err(_), None) => {}
        (Ok(_), None) => panic!("from_raw accepted what serde_json refuses"),
        (Err(e), Some(_)) => panic!("from_raw refused what serde_json accepts: {e}"),
        (Ok(chunk), Some((r, usage))) => {
            let tokens = usage.as_ref().and_then(|u| {
                let (i, o) = if u.prompt_tokens == 0 && u.completion_tokens == 0 {
                    (u.total_tokens, 0)
                } else {
                    (u.prompt_tokens, u.completion_tokens)
                };
                (i <= crate::stream::MAX_USAGE_TOKENS && o <= crate::stream::MAX_USAGE_TOKENS)
                    .then_some((i, o))
            });
            assert_eq!(chunk.tokens(), tokens, "tokens differ");
            let empty_choices = r
                .choices
                .and_then(|c| serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(c).ok())
                .is_some_and(|c| c.is_empty());
            assert_eq!(
                chunk.is_usage_only(),
                usage.is_some() && empty_choices,
                "usage-only differs"
            );
            let object = r
                .object
                .and_then(|o| serde_json::from_slice::<String>(o).ok());
            let failed =
                r.error.is_some_and(|e| e != b"null") || object.as_deref() == Some("error");
            let in_band = failed
                .then(|| crate::ErrorObject::from_upstream(data))
                .flatten();
            assert_eq!(
                chunk.upstream_error(),
                in_band.as_ref(),
                "in-band error differs"
            );
            // The output walk never fails on what was accepted, and never counts more text
            // than the payload holds.
            let mut text = 0u64;
            chunk.outputs(|_, n| text += n);
            assert!(text <= data.len() as u64, "outputs count {text} bytes");
        }
    }
}
