//! Peak heap while parsing a request body stays within 3x the body, for the worst shapes:
//! an unknown field holding a huge array, thousands of tiny messages, huge content-part,
//! prompt and embeddings-input arrays, many unknown keys, and bodies that fail to parse (the
//! path-tracking second parse).
//!
//! A counting global allocator (`cap`) records the peak, which cannot be reset, so each case
//! runs in its own child process (this binary re-executed with `LUMEN_ALLOC_CASE`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::alloc::System;
use std::process::Command;

use cap::Cap;
use lumen_openai_types::request::parse;
use lumen_openai_types::{ChatCompletionRequest, CompletionRequest, EmbeddingRequest};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

const MB: usize = 1024 * 1024;
/// Peak heap growth allowed while parsing, as a multiple of the body size.
const BOUND: usize = 3;

/// `head`, then `item` repeated (comma-separated) until the body reaches `size`, then `tail`.
fn repeat(head: &str, item: &str, tail: &str, size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(size + item.len() + tail.len() + 1);
    b.extend_from_slice(head.as_bytes());
    let mut first = true;
    while b.len() + tail.len() < size {
        if !first {
            b.push(b',');
        }
        first = false;
        b.extend_from_slice(item.as_bytes());
    }
    b.extend_from_slice(tail.as_bytes());
    b
}

/// Unique short keys: `"k<n>":0`, the smallest entry that cannot be merged with another.
fn many_keys(head: &str, tail: &str, size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(size + 64);
    b.extend_from_slice(head.as_bytes());
    let mut n = 0u64;
    while b.len() + tail.len() < size {
        b.extend_from_slice(format!("\"{n:x}\":0,").as_bytes());
        n += 1;
    }
    b.extend_from_slice(tail.as_bytes());
    b
}

const HI: &str = r#"{"role":"user","content":"hi"}"#;

fn body(case: &str, size: usize) -> Vec<u8> {
    let chat = |head: String, item: &str, tail: &str| repeat(&head, item, tail, size);
    match case {
        "chat_unknown_field_zeros" => chat(
            format!(r#"{{"model":"m","messages":[{HI}],"junk":["#),
            "0",
            "]}",
        ),
        "chat_unknown_field_empty_objects" => chat(
            format!(r#"{{"model":"m","messages":[{HI}],"junk":["#),
            "{}",
            "]}",
        ),
        "chat_tiny_messages" => chat(
            r#"{"model":"m","messages":["#.into(),
            r#"{"role":"u"}"#,
            "]}",
        ),
        "chat_content_parts" => chat(
            r#"{"model":"m","messages":[{"role":"user","content":["#.into(),
            "0",
            "]}]}",
        ),
        "chat_message_unknown_field" => chat(
            r#"{"model":"m","messages":[{"role":"user","content":"hi","junk":["#.into(),
            "0",
            "]}]}",
        ),
        "chat_stream_options_unknown_field" => chat(
            format!(r#"{{"model":"m","messages":[{HI}],"stream_options":{{"junk":["#),
            "0",
            "]}}",
        ),
        "chat_many_unknown_keys" => many_keys(
            r#"{"model":"m","messages":[{"role":"u"}],"#,
            r#""z":0}"#,
            size,
        ),
        "chat_deep_nesting" => {
            // Nesting past serde_json's recursion limit, then a long tail: refused, bounded.
            chat(
                format!(r#"{{"model":"m","messages":[{HI}],"junk":"#),
                "[",
                "]}",
            )
        }
        "chat_invalid_after_big_field" => chat(
            format!(r#"{{"model":"m","messages":[{HI}],"junk":["#),
            "0",
            r#"],"max_tokens":"many"}"#,
        ),
        "chat_trailing_data_after_big_field" => chat(
            format!(r#"{{"model":"m","messages":[{HI}],"junk":["#),
            "0",
            "]} x",
        ),
        "completion_prompt_tokens" => chat(r#"{"model":"m","prompt":["#.into(), "0", "]}"),
        "completion_prompt_texts" => chat(r#"{"model":"m","prompt":["#.into(), r#""""#, "]}"),
        "embedding_input_token_batches" => chat(r#"{"model":"m","input":["#.into(), "[0]", "]}"),
        "embedding_input_tokens" => chat(r#"{"model":"m","input":["#.into(), "0", "]}"),
        other => panic!("unknown case {other}"),
    }
}

const CASES: &[&str] = &[
    "chat_unknown_field_zeros",
    "chat_unknown_field_empty_objects",
    "chat_tiny_messages",
    "chat_content_parts",
    "chat_message_unknown_field",
    "chat_stream_options_unknown_field",
    "chat_many_unknown_keys",
    "chat_deep_nesting",
    "chat_invalid_after_big_field",
    "chat_trailing_data_after_big_field",
    "completion_prompt_tokens",
    "completion_prompt_texts",
    "embedding_input_token_batches",
    "embedding_input_tokens",
];

/// In the child: build the body, parse and validate it, print the peak growth.
fn run_case(case: &str, size: usize) {
    let body = body(case, size);
    let before = ALLOC.allocated();
    let peak_before = ALLOC.max_allocated();
    assert!(peak_before >= before);
    let ok = if case.starts_with("chat") {
        parse::<ChatCompletionRequest>(&body).map(|r| r.validate().is_ok())
    } else if case.starts_with("completion") {
        parse::<CompletionRequest>(&body).map(|r| r.validate().is_ok())
    } else {
        parse::<EmbeddingRequest>(&body).map(|r| r.validate().is_ok())
    };
    let peak = ALLOC.max_allocated();
    // The body itself was the largest allocation so far, so the peak before parsing is
    // `before` (plus the builder's slack, which only makes the check stricter).
    let growth = peak.saturating_sub(before.max(peak_before));
    println!("{case} {} {growth} {}", body.len(), ok.is_ok());
}

fn main() {
    if let Ok(case) = std::env::var("LUMEN_ALLOC_CASE") {
        let size: usize = std::env::var("LUMEN_ALLOC_SIZE").unwrap().parse().unwrap();
        run_case(&case, size);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for size in [10 * MB, 30 * MB] {
        for case in CASES {
            let out = Command::new(&exe)
                .env("LUMEN_ALLOC_CASE", case)
                .env("LUMEN_ALLOC_SIZE", size.to_string())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let fields: Vec<&str> = text.split_whitespace().collect();
            if !out.status.success() || fields.len() != 4 {
                println!(
                    "{case} {size}: child failed: {}{}",
                    text,
                    String::from_utf8_lossy(&out.stderr)
                );
                failed.push(format!("{case}@{size}"));
                continue;
            }
            let body: usize = fields[1].parse().unwrap();
            let growth: usize = fields[2].parse().unwrap();
            let ratio = growth as f64 / body as f64;
            let verdict = if growth <= BOUND * body { "ok" } else { "OVER" };
            println!(
                "{case:<36} body {:>5.1} MB  peak growth {:>7.1} MB  {ratio:>5.2}x  parsed={}  {verdict}",
                body as f64 / MB as f64,
                growth as f64 / MB as f64,
                fields[3],
            );
            if growth > BOUND * body {
                failed.push(format!("{case}@{size}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "peak heap growth over {BOUND}x the body: {failed:?}"
    );
}
