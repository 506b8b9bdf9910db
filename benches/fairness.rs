//! Fair admission under a flood (issue 25), measured over real TCP: lumen-sim as an engine that
//! takes 100 ms a request, Lumen capped at 4 requests at once (40 requests a second), key A
//! sending at 45 requests a second (more than the fleet serves) and key B at a tenth of that.
//! B's latency is measured alone, with A flooding through the fair queue (each key its own
//! flow), and with A flooding through one shared flow (first come, first served: what every
//! request met before). Then an interactive key under a batch flood. Open loop: requests are
//! sent on a fixed schedule whatever the answers do.
//!
//! `cargo bench -p lumen-benches --bench fairness` (release build; about 2 minutes).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use tokio::time::Instant;

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;
const SECONDS: u64 = 20;
const ADMIN: &str = "bench-admin";

/// What one key's answered requests cost, as the engine reported it in each answer's `usage`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Billed {
    requests: u64,
    input: u64,
    output: u64,
}

impl std::ops::AddAssign for Billed {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.input += o.input;
        self.output += o.output;
    }
}

/// Today's usage history of `keys`, summed over models, from `/admin/usage/history`.
async fn history(addr: SocketAddr, keys: &[&str]) -> Billed {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://{addr}/admin/usage/history"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = client
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut out = Billed::default();
    for row in v["data"].as_array().into_iter().flatten() {
        if keys.contains(&row["key"].as_str().unwrap_or_default()) {
            let n = |f: &str| row[f].as_u64().unwrap_or(0);
            out += Billed {
                requests: n("requests"),
                input: n("input_tokens"),
                output: n("output_tokens"),
            };
        }
    }
    out
}

fn key(name: &str, priority: &str) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: to_hex(&digest(name)),
        models: None,
        limits: LimitSpec {
            priority: Some(priority.into()),
            ..LimitSpec::default()
        },
        per_model: Default::default(),
    }
}

/// A fresh Lumen in front of `sim`; `headroom` is `admission.headroom` (the slot above the
/// cap for a key with nothing running or waiting).
async fn lumen(sim: SocketAddr, headroom: usize) -> SocketAddr {
    let backend = lumen_backend_vllm::VllmBackend::new(lumen_backend_vllm::VllmConfig::new(
        "sim",
        format!("http://{sim}"),
    ))
    .unwrap();
    let gw = lumen_server::Gateway::builder()
        .backend("sim", backend, None)
        .admission(lumen_server::config::AdmissionConfig {
            max_concurrent: Some(4),
            queue_size: Some(100_000),
            queue_timeout_ms: Some(120_000),
            headroom: Some(headroom),
            ..Default::default()
        })
        .auth(lumen_server::config::AuthConfig {
            enabled: true,
            admin_key_sha256: Some(to_hex(&digest(ADMIN))),
            keys: vec![
                key("team-a", "standard"),
                key("team-b", "standard"),
                key("batch", "batch"),
                key("chat", "interactive"),
            ],
        })
        .build()
        .unwrap();
    gw.core().discover().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lumen_server::serve(listener, gw, std::future::pending()));
    addr
}

/// Sends `rate` requests a second for `SECONDS` with key `secret`; returns each latency, and
/// what the engine reported the answers cost.
async fn flow(addr: SocketAddr, secret: &'static str, rate: f64) -> (Vec<Duration>, Billed) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = Arc::new(client);
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(every);
    let end = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {secret}"))
                .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                .unwrap();
            let start = Instant::now();
            let resp = client.request(req).await.unwrap();
            let ok = resp.status().is_success();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let elapsed = start.elapsed();
            ok.then(|| {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let n = |f: &str| v["usage"][f].as_u64().unwrap_or(0);
                let billed = Billed {
                    requests: 1,
                    input: n("prompt_tokens"),
                    output: n("completion_tokens"),
                };
                (elapsed, billed)
            })
        }));
    }
    let mut out = Vec::new();
    let mut billed = Billed::default();
    for t in tasks {
        if let Some((d, b)) = t.await.unwrap() {
            out.push(d);
            billed += b;
        }
    }
    out.sort();
    (out, billed)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn row(what: &str, v: &[Duration]) {
    println!(
        "| {what} | {} | {:.0} | {:.0} | {:.0} |",
        v.len(),
        pct(v, 0.5),
        pct(v, 0.99),
        pct(v, 1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (sim, _sim) = lumen_sim::spawn(lumen_sim::SimConfig {
        models: vec!["m".into()],
        ttft: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    println!("| B's requests | answered | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---:|---:|---:|---:|");
    // Each run on a fresh Lumen, so no queue is left from the one before.
    let (alone, _) = flow(lumen(sim, 1).await, "team-b", 4.5).await;
    row("B alone (4.5/s)", &alone);
    let addr = lumen(sim, 0).await;
    let (_, (exact, _)) = tokio::join!(flow(addr, "team-a", 45.0), flow(addr, "team-b", 4.5));
    row(
        "B with A at 45/s, fair queue, no headroom (`admission.headroom = 0`)",
        &exact,
    );
    let addr = lumen(sim, 1).await;
    let ((_, billed_a), (fair, billed_b)) =
        tokio::join!(flow(addr, "team-a", 45.0), flow(addr, "team-b", 4.5));
    let mut engines = billed_a;
    engines += billed_b;
    let recorded = history(addr, &["team-a", "team-b"]).await;
    row(
        "B with A at 45/s, fair queue, headroom 1 (the default)",
        &fair,
    );
    let addr = lumen(sim, 1).await;
    // One key for both: one flow, first come first served, as before fair admission.
    let (_, (fifo, _)) = tokio::join!(flow(addr, "team-a", 45.0), flow(addr, "team-a", 4.5));
    row("B with A at 45/s, one shared flow (FIFO)", &fifo);
    let addr = lumen(sim, 0).await;
    let (_, (interactive0, _)) = tokio::join!(flow(addr, "batch", 45.0), flow(addr, "chat", 4.5));
    row(
        "interactive key under a batch key's flood, no headroom",
        &interactive0,
    );
    let addr = lumen(sim, 1).await;
    let (_, (interactive, _)) = tokio::join!(flow(addr, "batch", 45.0), flow(addr, "chat", 4.5));
    row(
        "interactive key under a batch key's flood, headroom 1",
        &interactive,
    );
    // The queue wait is the latency over the engine's own time, which B alone shows.
    let service = pct(&alone, 0.0);
    let wait = |v: &[Duration], q: f64| (pct(v, q) - service).max(0.0);
    println!(
        "\nB's p99 with A flooding over B's p99 alone: fair {:.2}x (no headroom {:.2}x), \
         FIFO {:.2}x",
        pct(&fair, 0.99) / pct(&alone, 0.99),
        pct(&exact, 0.99) / pct(&alone, 0.99),
        pct(&fifo, 0.99) / pct(&alone, 0.99)
    );
    println!(
        "B's p99 queue wait (latency over the fastest answer alone, {service:.0} ms): alone \
         {:.1} ms, fair {:.1} ms (no headroom {:.1} ms), FIFO {:.1} ms; interactive under \
         batch {:.1} ms (no headroom {:.1} ms)",
        wait(&alone, 0.99),
        wait(&fair, 0.99),
        wait(&exact, 0.99),
        wait(&fifo, 0.99),
        wait(&interactive, 0.99),
        wait(&interactive0, 0.99),
    );
    println!(
        "usage history of the fair run (A and B, headroom 1) against the engines' answers: \
         requests {} / {}, input tokens {} / {}, output tokens {} / {}: {}",
        recorded.requests,
        engines.requests,
        recorded.input,
        engines.input,
        recorded.output,
        engines.output,
        if recorded == engines {
            "equal, token for token"
        } else {
            "DIFFERENT"
        }
    );
}
