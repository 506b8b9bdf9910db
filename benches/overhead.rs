//! A quick look at what Lumen adds per request: the same non-streamed chat request, sent
//! sequentially on one keep-alive connection, to lumen-sim directly and through Lumen.
//! Run with `cargo bench -p lumen-benches --bench overhead` (release build). Issue 8 adds the
//! full open/closed-loop benchmark; this one answers "how many µs inside Lumen" quickly.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

const BODY: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}"#;

async fn latencies(addr: std::net::SocketAddr, n: usize) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let req = http::Request::post("/v1/chat/completions")
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap();
        let start = Instant::now();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        out.push(start.elapsed());
    }
    out.sort();
    out
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

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
    gw.discover().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lumen_addr = listener.local_addr().unwrap();
    tokio::spawn(lumen_server::serve(listener, gw, std::future::pending()));

    let n = 20_000;
    latencies(sim_addr, 2_000).await; // warm-up
    latencies(lumen_addr, 2_000).await;
    let direct = latencies(sim_addr, n).await;
    let via = latencies(lumen_addr, n).await;
    println!("sequential non-streamed chat, 16 tokens, {n} requests, one keep-alive connection");
    for (name, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        let (d, v) = (pct(&direct, p), pct(&via, p));
        println!(
            "  {name}: direct {d:>7.1} µs   via lumen {v:>7.1} µs   added {:>6.1} µs",
            v - d
        );
    }
}
