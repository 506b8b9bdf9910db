use bytes::Bytes;
use lumen_openai_types::{ChatCompletionChunk, Chunk, CompletionResponse};

use super::*;

fn chat(json: &str) -> Chunk<ChatCompletionChunk> {
    Chunk::from_raw(Bytes::copy_from_slice(json.as_bytes())).unwrap()
}

fn text(i: u32, t: &str) -> Chunk<ChatCompletionChunk> {
    chat(&format!(
        r#"{{"choices":[{{"index":{i},"delta":{{"content":{}}}}}]}}"#,
        serde_json::to_string(t).unwrap()
    ))
}

#[test]
fn without_engine_counts_a_choice_is_bytes_over_four_but_at_least_a_token_a_chunk() {
    let mut r = Relayed::default();
    r.count(&chat(
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
    ));
    assert_eq!(r.tokens(), 0, "an opening chunk carries no text");
    for t in ["a", "b", "c"] {
        r.count(&text(0, t));
    }
    assert_eq!(r.tokens(), 3, "3 bytes, but three chunks of text");
    r.count(&text(0, "a much longer piece of text"));
    assert_eq!(r.tokens(), 30_u64.div_ceil(4));
    // Rounded up per choice, so n choices of one byte are n tokens, not n/4.
    let mut r = Relayed::default();
    for i in 0..8 {
        r.count(&text(i, "x"));
    }
    assert_eq!(r.tokens(), 8);
}

#[test]
fn the_engines_running_count_wins_where_it_is_sent() {
    let mut r = Relayed::default();
    // Three tokens packed in one chunk: its usage says so.
    r.count(&chat(
        r#"{"choices":[{"index":0,"delta":{"content":"a b c"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
    ));
    r.count(&chat(
        r#"{"choices":[{"index":1,"delta":{"content":"x"}}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
    ));
    r.count(&text(1, "yyyyyyyy"));
    assert_eq!(
        r.tokens(),
        3 + 1,
        "each choice's own count, later text without one kept"
    );
    // The final usage-only chunk is the total, never a choice's count.
    r.count(&chat(
        r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":400,"total_tokens":409}}"#,
    ));
    assert_eq!(r.tokens(), 4);
}

#[test]
fn parts_add_up_and_huge_indexes_share_one_slot() {
    let mut r = Relayed::default();
    r.count(&chat(
        r#"{"choices":[{"index":0,"delta":{"content":"ab"}}],"usage":{"prompt_tokens":1,"completion_tokens":5}}"#,
    ));
    r.next_part();
    r.count(&chat(
        r#"{"choices":[{"index":0,"delta":{"content":"cd"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
    ));
    assert_eq!(r.tokens(), 7, "each part's running count starts from zero");
    let mut r = Relayed::default();
    r.count(&text(u32::MAX, "abcd"));
    r.count(&text(4_000_000, "abcd"));
    assert_eq!(r.choices.len(), MAX_CHOICES);
    assert_eq!(r.tokens(), 2);
    let completion: Chunk<CompletionResponse> = Chunk::from_raw(Bytes::from_static(
        br#"{"choices":[{"index":0,"text":"hello"}]}"#,
    ))
    .unwrap();
    let mut r = Relayed::default();
    r.count(&completion);
    assert_eq!(r.tokens(), 2);
}
