//! Routing on what the engines report, end to end: Lumen configured from a TOML file in front
//! of lumen-sim engines (and one raw engine whose `/metrics` a test scripts), over real TCP.
//! Scrapes are triggered by the test (`scrape_signals`) so what the router knows is exact.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lumen_server::Gateway;
use lumen_server::config::{self, Overrides};
use lumen_tests::*;

struct Fleet {
    lumen: Lumen,
    sims: Vec<lumen_sim::Simulator>,
    urls: Vec<String>,
    dir: PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dir() -> PathBuf {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "lumen-routing-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Lumen from a TOML file over `urls`, with `routing` appended to its `[routing]` table,
/// `signals` to `[routing.signals]`, and `extra` tables before them.
async fn lumen(urls: &[String], routing: &str, signals: &str, extra: &str) -> (Lumen, PathBuf) {
    let backends: String = urls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("[[backends]]\nname = \"e{i}\"\nurl = \"{u}\"\n"))
        .collect();
    let d = dir();
    let file = d.join("lumen.toml");
    std::fs::write(
        &file,
        format!(
            "{backends}\n[health]\nenabled = false\n{extra}\n[routing]\n{routing}\n\
             [routing.signals]\ninterval_ms = 60000\nstale_ms = 60000\n{signals}\n"
        ),
    )
    .unwrap();
    let cfg = config::load(Some(&file), &Overrides::default()).unwrap();
    (Lumen::start(Gateway::from_config(&cfg).unwrap()).await, d)
}

async fn fleet(routing: &str) -> Fleet {
    let mut urls = Vec::new();
    let mut sims = Vec::new();
    for _ in 0..3 {
        let (u, s) = sim(&["m"]).await;
        urls.push(u);
        sims.push(s);
    }
    let (lumen, dir) = lumen(&urls, routing, "", "").await;
    Fleet {
        lumen,
        sims,
        urls,
        dir,
    }
}

fn body(messages: &[(&str, String)]) -> String {
    let messages: Vec<serde_json::Value> = messages
        .iter()
        .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
        .collect();
    serde_json::json!({"model": "m", "messages": messages, "max_tokens": 4}).to_string()
}

/// Which engine received the chat requests whose first user message is `first`, in order.
fn engines_of(f: &Fleet, first: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, s) in f.sims.iter().enumerate() {
        for r in s.records() {
            if r.method == "POST" && r.body["messages"][1]["content"] == first {
                out.push((r.at, i));
            }
        }
    }
    out.sort();
    out.into_iter().map(|(_, i)| i).collect()
}

/// Requests to `url` that never end (the engine holds them), until the handles are dropped.
fn hold_on(url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Reply>> {
    (0..n)
        .map(|_| {
            let url = format!("{url}/v1/chat/completions");
            tokio::spawn(async move {
                post(
                    &url,
                    r#"{"model":"m","messages":[{"role":"user","content":"x"}],"sim":{"hang":true}}"#,
                )
                .await
            })
        })
        .collect()
}

#[tokio::test]
async fn prefix_sharing_requests_share_an_engine_and_decoding_elsewhere_does_not_move_them() {
    let f = fleet("policy = \"cache_aware\"").await;
    let url = f.lumen.url("/v1/chat/completions");
    let system = "You are the support assistant of a shipping company. ".repeat(60);
    let mut convs: Vec<Vec<(&str, String)>> = (0..6)
        .map(|c| {
            vec![
                ("system", system.clone()),
                (
                    "user",
                    format!("Conversation {c}: where is my parcel {c}{c}{c}?"),
                ),
            ]
        })
        .collect();
    for conv in &mut convs {
        for turn in 0..3 {
            assert_eq!(post(&url, &body(conv)).await.status, 200);
            conv.push(("assistant", format!("Answer {turn}. ").repeat(40)));
            conv.push(("user", format!("Follow-up {turn}?")));
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for conv in &convs {
        let engines = engines_of(&f, &conv[1].1);
        assert_eq!(engines.len(), 3);
        assert!(
            engines.iter().all(|e| *e == engines[0]),
            "a conversation's turns share its engine's cache: {engines:?}"
        );
        used.insert(engines[0]);
    }
    assert!(
        used.len() >= 2,
        "conversations on one system prompt spread: {used:?}"
    );

    // Another client runs 12 requests on one engine, with no queue: a new prompt there waits
    // behind no prefill of Lumen's and no queue, and the cache saves a conversation's whole
    // history, so every conversation keeps its engine (a queue reported there would move
    // them: `routing::load_aware_avoids_an_engine_reporting_a_queue`, and the governance
    // crate's `cache_aware` tests).
    let busy = *used.iter().next().unwrap();
    let hangs = hold_on(&f.urls[busy], 12);
    eventually(Duration::from_secs(5), || f.sims[busy].running() == 12).await;
    f.lumen.gateway.core().scrape_signals().await;
    for conv in &mut convs {
        assert_eq!(post(&url, &body(conv)).await.status, 200);
    }
    for conv in &convs {
        let engines = engines_of(&f, &conv[1].1);
        assert_eq!(engines.len(), 4);
        assert!(engines.iter().all(|e| *e == engines[0]), "{engines:?}");
    }

    // The figures are visible per backend.
    let health = get(&f.lumen.url("/health/inference")).await.json();
    let engine = &health["backends"][busy]["engine"];
    assert_eq!(engine["running"], 12, "{health}");
    assert_eq!(engine["fresh"], true);
    let metrics = get(&f.lumen.url("/metrics")).await.text();
    assert!(
        metrics.contains(&format!(
            "lumen_engine_requests_running{{backend=\"e{busy}\"}} 12"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("lumen_cache_aware_index_entries"));
    for h in hangs {
        h.abort();
    }
}

#[tokio::test]
async fn load_aware_avoids_an_engine_reporting_a_queue() {
    // e0 reports 8 waiting beyond its batch of 16 (other clients' prompts, which only its
    // report shows); e1 and e2 are idle lumen-sim engines.
    let waiting = Arc::new(AtomicU32::new(8));
    let served = Arc::new(AtomicU32::new(0));
    let queued = queued_engine(waiting.clone(), served.clone()).await;
    let (u1, s1) = sim(&["m"]).await;
    let (u2, s2) = sim(&["m"]).await;
    let (lumen, d) = lumen(&[queued, u1, u2], "policy = \"load_aware\"", "", "").await;
    let _cleanup = scopeguard(d);
    lumen.gateway.core().scrape_signals().await;
    let url = lumen.url("/v1/chat/completions");
    for i in 0..10 {
        let b = body(&[("user", format!("question {i}"))]);
        assert_eq!(post(&url, &b).await.status, 200);
    }
    assert_eq!(served.load(Ordering::SeqCst), 0, "none behind the queue");
    // Nothing queued at the other two: they take turns.
    let (a, b) = (s1.generation_count(), s2.generation_count());
    assert_eq!(a + b, 10);
    assert!(a.abs_diff(b) <= 2, "{a} {b}");
    // The queue gone (next scrape), e0 takes its turn again.
    waiting.store(0, Ordering::SeqCst);
    lumen.gateway.core().scrape_signals().await;
    for i in 0..3 {
        let b = body(&[("user", format!("again {i}"))]);
        assert_eq!(post(&url, &b).await.status, 200);
    }
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn agent_session_headers_keep_a_session_on_one_engine() {
    let f = fleet("policy = \"cache_aware\"").await;
    let url = f.lumen.url("/v1/chat/completions");
    for (header, session) in [
        ("x-claude-code-session-id", "2f0c5a1e-claude"),
        ("session_id", "0197-codex-conversation"),
        ("x-session-id", "mine"),
    ] {
        let before: Vec<u64> = f.sims.iter().map(|s| s.generation_count()).collect();
        for i in 0..6 {
            let b = body(&[("user", format!("unrelated prompt number {i} for {session}"))]);
            let r = send(http::Method::POST, &url, &b, &[(header, session)]).await;
            assert_eq!(r.status, 200);
        }
        let grew: Vec<u64> = f
            .sims
            .iter()
            .zip(&before)
            .map(|(s, b)| s.generation_count() - b)
            .collect();
        assert!(grew.contains(&6), "{header}: {grew:?}");
    }
}

/// A raw engine serving model `m`: `/metrics` reports `waiting` requests in its queue; chat
/// requests are counted and answered at once.
async fn queued_engine(waiting: Arc<AtomicU32>, served: Arc<AtomicU32>) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (waiting, served) = (waiting.clone(), served.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut sock, &mut buf).await {
                    let (kind, body) = if head.starts_with("get /metrics") {
                        let w = waiting.load(Ordering::SeqCst);
                        (
                            "text/plain",
                            format!(
                                "vllm:num_requests_running{{model_name=\"m\",engine=\"0\"}} 16.0\n\
                                 vllm:num_requests_waiting{{model_name=\"m\",engine=\"0\"}} {w}.0\n"
                            ),
                        )
                    } else if head.starts_with("get /v1/models") {
                        (
                            "application/json",
                            r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#.into(),
                        )
                    } else {
                        served.fetch_add(1, Ordering::SeqCst);
                        (
                            "application/json",
                            r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.into(),
                        )
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_saturated_pool_holds_requests_then_answers_503_with_retry_after() {
    let waiting = Arc::new(AtomicU32::new(9));
    let served = Arc::new(AtomicU32::new(0));
    let url = queued_engine(waiting.clone(), served.clone()).await;
    let (lumen, d) = lumen(
        &[url],
        "policy = \"load_aware\"",
        "saturation_queue = 4",
        "[admission]\nqueue_timeout_ms = 300\n",
    )
    .await;
    let _cleanup = scopeguard(d);
    let cfg = lumen.gateway.core().router().config();
    assert_eq!(cfg.signals.saturation_queue, 4);
    lumen.gateway.core().scrape_signals().await;
    let chat = body(&[("user", "hi".to_owned())]);
    let r = post(&lumen.url("/v1/chat/completions"), &chat).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "queue_timeout");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "never piled onto the engine"
    );
    // Room again: the next request goes through.
    waiting.store(0, Ordering::SeqCst);
    lumen.gateway.core().scrape_signals().await;
    let r = post(&lumen.url("/v1/chat/completions"), &chat).await;
    assert_eq!(r.status, 200);
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

/// Removes a test's directory when dropped.
fn scopeguard(d: PathBuf) -> impl Drop {
    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    Guard(d)
}
