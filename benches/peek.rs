//! The stream-chunk peek (`Chunk::from_raw`, a hand-written one-pass scanner) against plain
//! serde_json, on a typical chunk, a usage chunk and a full answer. Two serde figures:
//!
//! - "members only": a derived struct borrowing the four members the gateway reads as raw JSON,
//!   every other member skipped. Less than the scanner's job (no usage read, no finish
//!   reason, no text count): the comparison made before the relayed-output count existed.
//! - "same job": what `from_raw` + `outputs` give the gateway per relayed event, done by serde:
//!   UTF-8 checked over the payload (serde does not check the strings it skips), the members
//!   borrowed, `usage` read, each choice's `finish_reason` and text (borrowed `Cow<str>`,
//!   owned only when escaped) deserialised. Still a lower bound for serde: it reads tool-call
//!   text at one fixed place only, and refuses duplicate keys rather than taking the last.
//!
//! ARCHITECTURE.md keeps the scanner only while these numbers justify it.
//! Run with `cargo bench -p lumen-benches --bench peek`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::borrow::Cow;
use std::hint::black_box;

use bytes::Bytes;
use lumen_openai_types::{ChatCompletionChunk, ChatCompletionResponse, Chunk, Reply};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

const CHUNK: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":" datagrams"},"logprobs":null,"finish_reason":null}]}"#;
const USAGE: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":38,"total_tokens":70,"completion_tokens":32}}"#;
const RESP: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"TCP is a connection-oriented protocol that guarantees ordered, reliable delivery; UDP is connectionless and sends datagrams without delivery guarantees.","tool_calls":[]},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":38,"total_tokens":70,"completion_tokens":32},"prompt_logprobs":null}"#;

/// What the scanner finds, found by serde instead.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<&'a RawValue>,
}

/// The scanner's whole job, by serde.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

fn len(s: &Option<Cow<'_, str>>) -> u64 {
    s.as_ref().map_or(0, |s| s.len() as u64)
}

/// (tokens, usage-only, finished, failed, bytes of text): what the gateway reads of an event.
fn serde_job(raw: &[u8]) -> (Option<(u64, u64)>, bool, bool, bool, u64) {
    let text = std::str::from_utf8(raw).unwrap();
    let e: Event<'_> = serde_json::from_str(text).unwrap();
    let tokens = e
        .usage
        .as_ref()
        .map(|u| (u.prompt_tokens, u.completion_tokens.max(u.total_tokens)));
    let choices = e.choices.unwrap_or_default();
    let usage_only = tokens.is_some() && choices.is_empty();
    let failed = e.error.is_some_and(|e| e.get() != "null") || e.object.as_deref() == Some("error");
    let mut finished = false;
    let mut bytes = 0;
    for c in &choices {
        finished |= c.finish_reason.is_some_and(|f| f.get() != "null");
        let mut n = len(&c.text);
        if let Some(d) = &c.delta {
            n += len(&d.content) + len(&d.reasoning_content) + len(&d.reasoning);
            for t in d.tool_calls.iter().flatten() {
                if let Some(f) = &t.function {
                    n += len(&f.name) + len(&f.arguments);
                }
            }
        }
        black_box(c.index);
        bytes += n;
    }
    (tokens, usage_only, finished, failed, bytes)
}

fn time(name: &str, n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{name:<58} {ns:>8.0} ns");
    ns
}

fn main() {
    let n = 300_000;
    for (label, body) in [("chunk", CHUNK), ("usage chunk", USAGE)] {
        let scanner = time(&format!("{label}: from_raw + outputs (scanner)"), n, || {
            let c = Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(body)).unwrap();
            let mut bytes = 0;
            c.outputs(|_, b| bytes += b);
            black_box((&c, bytes));
        });
        let members = time(&format!("{label}: members only (serde_json)"), n, || {
            let m: Members<'_> = serde_json::from_slice(black_box(body)).unwrap();
            black_box((m.error, m.object, m.usage, m.choices));
        });
        let same = time(&format!("{label}: same job (serde_json)"), n, || {
            black_box(serde_job(black_box(body)));
        });
        println!(
            "{label}: members only / scanner = {:.2}, same job / scanner = {:.2}",
            members / scanner,
            same / scanner
        );
    }
    let scanner = time("answer: Reply::from_raw (scanner)", n, || {
        black_box(Reply::<ChatCompletionResponse>::from_raw(Bytes::from_static(RESP)).unwrap());
    });
    let members = time("answer: members only (serde_json)", n, || {
        let m: Members<'_> = serde_json::from_slice(black_box(RESP)).unwrap();
        black_box((m.error, m.object, m.usage, m.choices));
    });
    println!("answer: members only / scanner = {:.2}", members / scanner);
}
