//! Micro-benchmarks of the hot path's pieces: request parse and forward, response round trip,
//! stream-chunk peek versus a full parse, the governance decision at 1 and 100 backends, and
//! the routing on engine signals: one `cache_aware` / `load_aware` decision at 16 backends with
//! 100,000 prompts indexed, the index's memory, reading a prompt's key, and parsing a vLLM
//! `/metrics` exposition. Run with `cargo bench -p lumen-benches --bench micro`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::hint::black_box;

use bytes::Bytes;
use lumen_governance::load::EngineReport;
use lumen_governance::{
    BackendSpec, GovernanceConfig, Policy, PromptHasher, PromptKey, RouteRequest, Router,
};
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

/// Filler text of `n` bytes that differs by `seed`.
fn words(n: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut s = String::with_capacity(n + 8);
    while s.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(["alpha ", "beta ", "gamma ", "delta ", "eps ", "zeta "][(x % 6) as usize]);
    }
    s.truncate(n);
    s
}

/// A conversation: one of a few long system prompts, its own first message (a pasted
/// document: long enough to give it indexed blocks of its own), `turns` turns.
fn conversation(c: u64, turns: usize) -> PromptKey {
    let mut h = PromptHasher::new(256 * 1024, 1024);
    h.shared("system", words(4000, c % 8).as_bytes());
    h.message("user", words(3000, 1_000_000 + c).as_bytes());
    for t in 0..turns {
        h.message("assistant", words(500, c * 100 + t as u64).as_bytes());
        h.message("user", words(100, c * 1000 + t as u64).as_bytes());
    }
    h.finish(None)
}

/// Resident memory of this process, from /proc (0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn signal_routing() {
    const BACKENDS: usize = 16;
    const PREFIXES: u64 = 100_000;
    let specs: Vec<BackendSpec<usize>> = (0..BACKENDS)
        .map(|i| BackendSpec {
            name: format!("b{i}"),
            backend: i,
            weight: 1,
            models: Some(vec!["m".into()]),
            key: format!("b{i}"),
        })
        .collect();
    let mut cfg = GovernanceConfig {
        policy: Policy::CacheAware,
        seed: Some(1),
        ..GovernanceConfig::default()
    };
    cfg.cache_aware.max_entries = 1 << 21;
    let r = Router::new(cfg, specs).unwrap();
    let now = 1_000;
    for (i, slot) in r.slots().iter().enumerate() {
        let report = EngineReport {
            running: 20.0 + i as f64,
            waiting: (i % 3) as f64,
            kv_usage: Some(0.5),
        };
        slot.engine().record(&report, 0, now);
    }
    let rss_before = rss_bytes();
    let route = |p: &PromptKey| {
        r.route(&RouteRequest {
            model: "m",
            prompt: Some(p),
            now_ms: now,
            ..RouteRequest::default()
        })
        .unwrap()
    };
    for c in 0..PREFIXES {
        drop(route(&conversation(c, (c % 3) as usize)));
    }
    let entries = r.indexed_entries();
    let grew = rss_bytes().saturating_sub(rss_before);
    println!(
        "cache_aware index: {PREFIXES} prompts, {entries} entries, RSS +{:.1} MiB ({:.0} B/entry)",
        grew as f64 / 1048576.0,
        grew as f64 / entries as f64
    );
    // Later turns of indexed conversations: the lookup walks their blocks to the end.
    let next: Vec<PromptKey> = (0..1000).map(|c| conversation(c * 97, 4)).collect();
    let mut i = 0;
    time(
        "route decision, 16 backends, cache_aware, 100k indexed",
        200_000,
        || {
            i = (i + 1) % next.len();
            black_box(route(&next[i]));
        },
    );
    let load = {
        let specs = (0..BACKENDS)
            .map(|i| BackendSpec {
                name: format!("b{i}"),
                backend: i,
                weight: 1,
                models: Some(vec!["m".into()]),
                key: format!("b{i}"),
            })
            .collect();
        let cfg = GovernanceConfig {
            policy: Policy::LoadAware,
            ..GovernanceConfig::default()
        };
        Router::new(cfg, specs).unwrap()
    };
    for slot in load.slots() {
        slot.engine().record(&EngineReport::default(), 0, now);
    }
    time("route decision, 16 backends, load_aware", 200_000, || {
        black_box(
            load.route(&RouteRequest {
                model: "m",
                now_ms: now,
                ..RouteRequest::default()
            })
            .unwrap(),
        );
    });
    let system = words(4000, 3);
    let turns: Vec<String> = (0..10).map(|t| words(800, 50 + t)).collect();
    time(
        "prompt key of a 12 KB chat (8 turns, 4 KB system)",
        20_000,
        || {
            let mut h = PromptHasher::new(256 * 1024, 1024);
            h.shared("system", system.as_bytes());
            for (k, t) in turns.iter().enumerate() {
                h.message(if k % 2 == 0 { "user" } else { "assistant" }, t.as_bytes());
            }
            black_box(h.finish(None));
        },
    );
    let exposition = include_str!("../crates/lumen-gateway/src/signals/fixtures/vllm.txt");
    time(
        &format!(
            "parse a vLLM /metrics exposition ({} KB)",
            exposition.len() / 1024
        ),
        20_000,
        || {
            black_box(lumen_gateway::signals::parse(black_box(exposition)));
        },
    );
}

fn main() {
    signal_routing();
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
