//! Micro-benchmarks of the hot path's pieces: request parse and forward, response round trip,
//! stream-chunk peek versus a full parse, and the governance decision at 1 and 100 backends.
//! Run with `cargo bench -p lumen-benches --bench micro`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::hint::black_box;

use bytes::Bytes;
use lumen_governance::{BackendSpec, GovernanceConfig, Policy, RouteRequest, Router};
use lumen_openai_types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Chunk, Reply, request,
};
use tokio::time::Instant;

const REQ: &[u8] = br#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Explain the difference between TCP and UDP in two sentences."}],"max_tokens":256,"temperature":0.7,"top_k":40,"stream":false}"#;
const RESP: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"TCP is a connection-oriented protocol that guarantees ordered, reliable delivery; UDP is connectionless and sends datagrams without delivery guarantees.","tool_calls":[]},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":38,"total_tokens":70,"completion_tokens":32},"prompt_logprobs":null}"#;
const CHUNK: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":" datagrams"},"logprobs":null,"finish_reason":null}]}"#;

fn time(name: &str, n: u32, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{name:<52} {ns:>9.0} ns");
}

fn router(backends: usize, policy: Policy) -> Router<usize> {
    let specs = (0..backends)
        .map(|i| BackendSpec {
            name: format!("b{i}"),
            backend: i,
            weight: 1,
            models: Some(vec!["m".into()]),
            key: format!("b{i}"),
        })
        .collect();
    let cfg = GovernanceConfig {
        policy,
        seed: Some(1),
        ..GovernanceConfig::default()
    };
    Router::new(cfg, specs).unwrap()
}

fn main() {
    let n = 200_000;
    time("request: parse (typed, extras kept)", n, || {
        black_box(request::parse::<ChatCompletionRequest>(black_box(REQ)).unwrap());
    });
    time("request: parse + serialise for the engine", n, || {
        let r: ChatCompletionRequest = request::parse(black_box(REQ)).unwrap();
        black_box(serde_json::to_vec(&r).unwrap());
    });
    time("response: peek, forward the engine bytes", n, || {
        let r = Reply::<ChatCompletionResponse>::from_raw(Bytes::from_static(RESP)).unwrap();
        black_box(r.to_json().unwrap());
    });
    time("response: parse + serialise (before)", n, || {
        let r: ChatCompletionResponse = serde_json::from_slice(black_box(RESP)).unwrap();
        black_box(serde_json::to_vec(&r).unwrap());
    });
    time("stream chunk: peek (what the gateway does)", n, || {
        black_box(Chunk::<ChatCompletionChunk>::from_raw(Bytes::from_static(CHUNK)).unwrap());
    });
    time("stream chunk: full typed parse (for comparison)", n, || {
        black_box(serde_json::from_slice::<ChatCompletionChunk>(black_box(CHUNK)).unwrap());
    });
    for backends in [1, 100] {
        for policy in [
            Policy::RoundRobin,
            Policy::LeastInFlight,
            Policy::PowerOfTwo,
            Policy::SessionAffinity,
            Policy::PrefixAffinity,
        ] {
            let r = router(backends, policy);
            let prefix = b"system: You are a helpful assistant.\nuser: Explain".as_slice();
            time(
                &format!(
                    "route decision, {backends:>3} backends, {}",
                    policy.as_str()
                ),
                n,
                || {
                    let route = r
                        .route(&RouteRequest {
                            model: "m",
                            session: Some("user-42"),
                            prefix: Some(prefix),
                            exclude: &[],
                            ..RouteRequest::default()
                        })
                        .unwrap();
                    black_box(route);
                },
            );
        }
    }
}
