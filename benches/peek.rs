//! The stream-chunk peek (`Chunk::from_raw`, a hand-written one-pass scanner) against the same
//! job done by plain serde_json (a derived struct borrowing the four members the gateway reads
//! as raw JSON, every other member skipped), on a typical chunk, a usage chunk and a full
//! answer. ARCHITECTURE.md keeps the scanner only while these numbers justify it.
//! Run with `cargo bench -p lumen-benches --bench peek`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

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
        let scanner = time(&format!("{label}: Chunk::from_raw (scanner)"), n, || {
            black_box(Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(body)).unwrap());
        });
        let serde = time(
            &format!("{label}: members by serde_json (derived)"),
            n,
            || {
                let m: Members<'_> = serde_json::from_slice(black_box(body)).unwrap();
                black_box((m.error, m.object, m.usage, m.choices));
            },
        );
        println!("{label}: serde / scanner = {:.2}", serde / scanner);
    }
    let scanner = time("answer: Reply::from_raw (scanner)", n, || {
        black_box(Reply::<ChatCompletionResponse>::from_raw(Bytes::from_static(RESP)).unwrap());
    });
    let serde = time("answer: members by serde_json (derived)", n, || {
        let m: Members<'_> = serde_json::from_slice(black_box(RESP)).unwrap();
        black_box((m.error, m.object, m.usage, m.choices));
    });
    println!("answer: serde / scanner = {:.2}", serde / scanner);
}
