use super::*;
use crate::ChatCompletionChunk;

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
