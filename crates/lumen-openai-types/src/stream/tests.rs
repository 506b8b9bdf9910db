use super::*;
use crate::{ChatCompletionChunk, CompletionResponse};

const TOKEN: &[u8] = br#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,"finish_reason":null}]}"#;
const USAGE: &[u8] = br#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2}}"#;

#[test]
fn raw_chunks_pass_through_and_parse_lazily() {
    let c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(TOKEN)).unwrap();
    assert_eq!(c.to_json().unwrap().as_ref(), TOKEN, "unchanged bytes");
    assert_eq!(c.tokens(), None);
    assert!(!c.is_usage_only());
    assert!(c.upstream_error().is_none());
    assert_eq!(c.get().choices[0].delta.content.as_deref(), Some("hi"));
}

#[test]
fn usage_chunk_is_recognised_without_a_typed_parse() {
    let c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(USAGE)).unwrap();
    assert_eq!(c.tokens(), Some((3, 2)));
    assert!(c.is_usage_only());
}

#[test]
fn usage_beside_choices_is_not_usage_only_and_bad_json_is_refused() {
    // Some engines put usage on the last token chunk instead of a separate one.
    let last = br#"{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1,"completion_tokens":4,"x":{"y":[1]}}}"#;
    let c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(last)).unwrap();
    assert_eq!(c.tokens(), Some((1, 4)));
    assert!(!c.is_usage_only());
    for odd in [
        &br#"{"choices":null,"usage":{}}"#[..],
        br#"{"choices":{"a":1},"usage":{}}"#,
    ] {
        let c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(odd)).unwrap();
        assert!(!c.is_usage_only());
    }
    for bad in [&br#"{"choices":[1,}"#[..], br#"{"choices":[] "#, b"data"] {
        assert!(Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(bad)).is_err());
    }
}

#[test]
fn mutation_drops_the_original_bytes() {
    let mut c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(TOKEN)).unwrap();
    "alias".clone_into(&mut c.get_mut().model);
    let json = c.to_json().unwrap();
    assert!(
        std::str::from_utf8(&json)
            .unwrap()
            .contains(r#""model":"alias""#)
    );
    assert!(c.raw().is_none());
}

#[test]
fn in_band_errors_in_both_vllm_shapes() {
    for raw in [
        &br#"{"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}"#[..],
        &br#"{"object":"error","message":"boom","type":"InternalServerError","param":null,"code":500}"#[..],
    ] {
        let c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::copy_from_slice(raw)).unwrap();
        assert_eq!(c.upstream_error().map(|e| e.message.as_str()), Some("boom"));
    }
    let ok = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(
        br#"{"error":null,"choices":[]}"#,
    ))
    .unwrap();
    assert!(ok.upstream_error().is_none());
}

#[test]
fn garbage_is_rejected() {
    assert!(
        Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(b"{this is not json")).is_err()
    );
    assert!(Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(b"[1,2]")).is_err());
}

/// The scanner must agree with serde_json on what is a valid JSON object, and find the same
/// members: checked on real chunks, on every truncation of them, and on 20,000 single- and
/// double-byte ASCII mutations.
#[test]
fn the_peek_scanner_agrees_with_serde_json() {
    use super::peek::scan;
    let corpus: Vec<&[u8]> = vec![
        TOKEN,
        USAGE,
        br#"{"error":{"message":"boom \"quoted\" \u00e9","type":"x","param":null,"code":500}}"#,
        br#" { "object" : "error" , "message" : "m" , "n" : -0.5e+10 , "t" : [true,false,null,[],{}] } "#,
        br#"{"choices":[ ],"usage":{"prompt_tokens":1,"completion_tokens":2},"x":1E3}"#,
        br#"{}"#,
        br#"{"choices":[{"delta":{"content":"a long token string, with \"quotes\" and \u00e9 and \\ \/ in it, longer than eight bytes"}}],"id":"chatcmpl-0123456789abcdef"}"#,
    ];
    let members = |v: &serde_json::Value| {
        let get = |k: &str| v.get(k).map(|x| x.to_string());
        (get("error"), get("object"), get("usage"), get("choices"))
    };
    let counts = std::cell::Cell::new((0, 0));
    let check = |input: &[u8]| {
        // Validity as serde sees it when it skips values (as the gateway's own peek did);
        // member values compared when they also parse as `Value` (no out-of-range numbers).
        let serde_ok = serde_json::from_slice::<
            std::collections::HashMap<String, serde::de::IgnoredAny>,
        >(input)
        .is_ok();
        let serde: Option<serde_json::Value> = serde_json::from_slice(input).ok();
        match scan(input) {
            Some(m) => {
                counts.set((counts.get().0 + 1, counts.get().1));
                assert!(
                    serde_ok,
                    "scanner accepted {:?}",
                    String::from_utf8_lossy(input)
                );
                let norm = |x: Option<&[u8]>| {
                    x.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                        .map(|v| v.to_string())
                };
                if let Some(v) = &serde {
                    let mine = (
                        norm(m.error),
                        norm(m.object),
                        norm(m.usage),
                        norm(m.choices),
                    );
                    assert_eq!(mine, members(v));
                }
            }
            None => {
                counts.set((counts.get().0, counts.get().1 + 1));
                assert!(
                    !serde_ok,
                    "scanner refused valid {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    };
    for doc in &corpus {
        check(doc);
        for cut in 0..doc.len() {
            check(&doc[..cut]);
        }
    }
    let alphabet = br#"{}[],:"\ 0123456789.eE+-tfnulrabx/"#;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..20_000 {
        let mut doc = corpus[i % corpus.len()].to_vec();
        for _ in 0..1 + (i % 2) {
            let at = (next() as usize) % doc.len();
            doc[at] = alphabet[(next() as usize) % alphabet.len()];
        }
        check(&doc);
    }
    // Both outcomes were exercised in earnest.
    let (accepted, refused) = counts.get();
    assert!(
        accepted > 2_000 && refused > 2_000,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn invalid_utf8_in_a_string_is_an_invalid_payload() {
    for raw in [
        &b"{\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}"[..],
        b"{\"id\":\"a\xc3\"}",
        b"{\"\xed\xa0\x80\":1}",
    ] {
        assert!(
            Chunk::<crate::ChatCompletionChunk>::from_raw(Bytes::copy_from_slice(raw)).is_err(),
            "{raw:?}"
        );
    }
    let ok = "{\"choices\":[{\"delta\":{\"content\":\"héllo ✓\"}}]}";
    assert!(Chunk::<crate::ChatCompletionChunk>::from_raw(Bytes::from(ok)).is_ok());
}

#[test]
fn absurd_usage_counts_are_treated_as_absent() {
    let max = u64::MAX;
    let big = crate::stream::MAX_USAGE_TOKENS + 1;
    for usage in [
        format!(r#"{{"prompt_tokens":{max},"completion_tokens":1}}"#),
        format!(r#"{{"prompt_tokens":1,"completion_tokens":{big}}}"#),
    ] {
        for raw in [
            format!(r#"{{"choices":[],"usage":{usage}}}"#),
            // Escaped key: unescaped before it is matched.
            format!(r#"{{"\u0063hoices":[],"usage":{usage}}}"#),
        ] {
            let c =
                Chunk::<crate::ChatCompletionChunk>::from_raw(Bytes::from(raw.clone())).unwrap();
            assert_eq!(c.tokens(), None, "{raw}");
            assert!(c.is_usage_only(), "still the usage chunk: {raw}");
            let typed: crate::ChatCompletionChunk = serde_json::from_str(&raw).unwrap();
            assert_eq!(typed.tokens(), None, "{raw}");
        }
    }
    let fine = r#"{"choices":[],"usage":{"prompt_tokens":4294967296,"completion_tokens":7}}"#;
    let c = Chunk::<crate::ChatCompletionChunk>::from_raw(Bytes::from(fine)).unwrap();
    assert_eq!(c.tokens(), Some((1 << 32, 7)));
}

#[test]
fn a_finish_reason_marks_the_answer_complete() {
    let c = |s: &'static str| {
        Chunk::<crate::ChatCompletionChunk>::from_raw(Bytes::from_static(s.as_bytes())).unwrap()
    };
    assert!(c(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#).finishes());
    assert!(c(r#"{"choices":[{"index":0,"finish_reason" : "length"}]}"#).finishes());
    assert!(
        !c(r#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#).finishes()
    );
    assert!(!c(r#"{"choices":[{"index":0,"delta":{"content":"finish_reason"}}]}"#).finishes());
    assert!(!c(r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#).finishes());
}

/// Found by the `peek` fuzz target (the scanner against serde_json): a key written with
/// escapes sent the scanner to a serde fallback that refused duplicate keys, and `object`
/// spelled with an escape hid an in-band error. Both paths now read members alike: keys
/// unescaped, the last of duplicates winning, values compared as serde reads them.
#[test]
fn escaped_keys_and_values_read_as_serde_reads_them() {
    let chunk =
        |s: &str| Chunk::<ChatCompletionChunk>::from_raw(Bytes::copy_from_slice(s.as_bytes()));
    let c = chunk(r#"{"\u0061":1,"usage":null,"usage":{"prompt_tokens":2,"completion_tokens":3}}"#)
        .unwrap();
    assert_eq!(c.tokens(), Some((2, 3)));
    let c = chunk(r#"{"us\u0061ge":{"total_tokens":7},"choices":[]}"#).unwrap();
    assert_eq!(c.tokens(), Some((7, 0)));
    assert!(c.is_usage_only());
    let e = chunk(r#"{"object":"err\u006fr","message":"boom","code":400}"#).unwrap();
    assert_eq!(e.upstream_error().map(|e| e.message.as_str()), Some("boom"));
    let e = chunk(r#"{"\u0065rror":{"message":"m"}}"#).unwrap();
    assert!(e.upstream_error().is_some());
    // A lone surrogate in a key cannot be unescaped: not a valid object for serde either.
    assert!(chunk(r#"{"\ud800":1}"#).is_err());
}

/// Found by the `peek` fuzz target: the scanner accepted one or two more levels of nesting
/// than serde_json parses (it refuses the 128th nested array or object).
#[test]
fn nesting_stops_where_serde_json_stops() {
    let nested = |levels: usize| {
        let inner = levels - 1; // the top-level object is one
        format!(r#"{{"a":{}{}}}"#, "[".repeat(inner), "]".repeat(inner))
    };
    for (levels, ok) in [
        (126, true),
        (127, true),
        (128, false),
        (129, false),
        (2000, false),
    ] {
        let doc = nested(levels);
        assert_eq!(
            Chunk::<ChatCompletionChunk>::from_raw(Bytes::from(doc.clone())).is_ok(),
            ok,
            "{levels} levels"
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&doc).is_ok(), ok);
    }
}

fn outputs<T: serde::de::DeserializeOwned + Default + Serialize>(c: &Chunk<T>) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    c.outputs(|i, n| out.push((i, n)));
    out
}

#[test]
fn outputs_count_the_generated_text_of_each_choice() {
    let chat = |json: &str| {
        outputs(
            &Chunk::<ChatCompletionChunk>::from_raw(Bytes::copy_from_slice(json.as_bytes()))
                .unwrap(),
        )
    };
    assert_eq!(
        chat(r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
        [(0, 0)]
    );
    assert_eq!(
        chat(
            r#"{"choices":[{"delta":{"content":"Hello"},"index":3,"logprobs":{"content":[{"token":"Hello"}]}}]}"#
        ),
        [(3, 5)],
        "logprobs are not output; index may come last"
    );
    // Escapes count as the bytes they stand for: é (2), a surrogate pair (4), \n (1).
    assert_eq!(
        chat(r#"{"choices":[{"index":0,"delta":{"content":"\u00e9\ud83d\ude00\n\"a"}}]}"#),
        [(0, 2 + 4 + 1 + 2)]
    );
    assert_eq!(
        chat(
            r#"{"choices":[{"index":0,"delta":{"content":null,"reasoning_content":"hmm","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}]}}]}"#
        ),
        [(0, 3 + 3 + 7)],
        "reasoning, and a tool call's name and arguments (not its id or type)"
    );
    assert_eq!(
        chat(
            r#"{"choices":[{"index":0,"delta":{"content":"ab"}},{"index":1,"delta":{"content":"cde"}}]}"#
        ),
        [(0, 2), (1, 3)]
    );
    assert!(chat(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#).is_empty());
    assert!(chat(r#"{"object":"chat.completion.chunk"}"#).is_empty());
    let completion = Chunk::<CompletionResponse>::from_raw(Bytes::from_static(
        br#"{"choices":[{"index":0,"text":" once","logprobs":null}]}"#,
    ))
    .unwrap();
    assert_eq!(outputs(&completion), [(0, 5)]);
}

#[test]
fn an_edited_chunk_is_read_the_same_way() {
    let mut c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(
        br#"{"model":"m","choices":[{"index":1,"delta":{"content":"caf\u00e9"}}]}"#,
    ))
    .unwrap();
    assert_eq!(outputs(&c), [(1, 5)]);
    "alias".clone_into(c.get_mut().model_mut());
    assert!(c.raw().is_none());
    assert_eq!(outputs(&c), [(1, 5)]);
}

/// The walk that counts each choice's text is also the validation of `choices`: along every
/// path it reads (a choice, its `delta`, tool calls at any depth, `index`, `text`) it must
/// refuse exactly the nesting serde_json refuses, and nothing else.
#[test]
fn the_counting_walk_validates_choices_as_serde_json_does() {
    // `{}` holds the nested value; the path's own objects and arrays are levels too.
    let paths = [
        r#"{"choices":{}}"#,
        r#"{"choices":[{}]}"#,
        r#"{"choices":[{"index":{}}]}"#,
        r#"{"choices":[{"text":{}}]}"#,
        r#"{"choices":[{"delta":{"content":{}}}]}"#,
        r#"{"choices":[{"delta":{"x":{}}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":{}}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":{}}}]}}]}"#,
    ];
    for path in paths {
        for inner in [100, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 140] {
            for (open, close) in [("[", "]"), (r#"{"name":"#, "}")] {
                let value = format!("{}0{}", open.repeat(inner), close.repeat(inner));
                let doc = path.replace("{}", &value);
                let ours = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from(doc.clone()));
                let serde = serde_json::from_str::<serde_json::Value>(&doc);
                assert_eq!(
                    ours.is_ok(),
                    serde.is_ok(),
                    "{path} with {inner} levels of {open}"
                );
            }
        }
    }
}

#[test]
fn outputs_are_those_of_the_last_choices_member() {
    let c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(
        br#"{"choices":[{"index":0,"delta":{"content":"abc"}}],"choices":[{"index":2,"text":"\u00e9"},7,{"delta":null}]}"#,
    ))
    .unwrap();
    assert_eq!(outputs(&c), [(2, 2), (0, 0)]);
    let c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(
        br#"{"choices":[{"index":0,"delta":{"content":"abc"}}],"choices":null}"#,
    ))
    .unwrap();
    assert!(outputs(&c).is_empty());
}

/// The word-at-a-time search for the end of a string's plain run finds the same byte as a
/// byte-by-byte one: every position in a word and in the tail, next to UTF-8 and 0x7f/0xff
/// bytes and to near misses of each special byte (0x21, 0x23, 0x5b, 0x5d, 0x20, 0x1f).
#[test]
fn the_word_search_finds_the_first_special_byte() {
    use super::peek::special;
    let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
    let fill = [
        b'a', 0x21, 0x23, 0x5b, 0x5d, 0x20, 0x7f, 0x80, 0xc3, 0xa9, 0xff, 0x01,
    ];
    let hits = [b'"', b'\\', 0x00, 0x01, 0x1f, b'\n'];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for len in 0..40 {
        for _ in 0..200 {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    fill[(state % fill.len() as u64) as usize]
                })
                .collect();
            if len > 0 && state % 3 != 0 {
                let at = (state >> 8) as usize % len;
                b[at] = hits[(state >> 20) as usize % hits.len()];
                if state % 5 == 0 {
                    let again = (state >> 32) as usize % len;
                    b[again] = hits[(state >> 40) as usize % hits.len()];
                }
            }
            assert_eq!(special(&b), naive(&b), "{b:02x?}");
        }
    }
}
