//! A quick look at what Lumen adds per request: the same non-streamed chat request, sent
//! sequentially on one keep-alive connection, to lumen-sim directly and through Lumen.
//! Run with `cargo bench -p lumen-benches --bench overhead` (release build). Issue 8 adds the
//! full open/closed-loop benchmark; this one answers "how many µs inside Lumen" quickly.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "common.rs"]
mod common;

use common::{latencies, pct};

const PATH: &str = "/v1/chat/completions";
const BODY: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (sim_addr, _sim) = lumen_sim::spawn(lumen_sim::SimConfig {
        models: vec!["m".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let backend = lumen_backend_vllm::VllmBackend::new(lumen_backend_vllm::VllmConfig::new(
        "sim",
        format!("http://{sim_addr}"),
    ))
    .unwrap();
    let gw = lumen_server::Gateway::builder()
        .backend("sim", backend, None)
        .build()
        .unwrap();
    gw.core().discover().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lumen_addr = listener.local_addr().unwrap();
    tokio::spawn(lumen_server::serve(listener, gw, std::future::pending()));

    let n = 20_000;
    latencies(sim_addr, PATH, BODY, &[], 2_000).await; // warm-up
    latencies(lumen_addr, PATH, BODY, &[], 2_000).await;
    let direct = latencies(sim_addr, PATH, BODY, &[], n).await;
    let via = latencies(lumen_addr, PATH, BODY, &[], n).await;
    println!("sequential non-streamed chat, 16 tokens, {n} requests, one keep-alive connection");
    for (name, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        let (d, v) = (pct(&direct, p), pct(&via, p));
        println!(
            "  {name}: direct {d:>7.1} µs   via lumen {v:>7.1} µs   added {:>6.1} µs",
            v - d
        );
    }
}
