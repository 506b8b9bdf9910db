//! Memory bounds a client can reach: the budget for request bodies in flight, the response
//! cache's size in `/metrics`, and the whole request path's peak heap for a large body (with
//! the bodies reaching the engine as the client sent them). Over real TCP, with raw sockets
//! where a test must hold a body half-sent or see exactly what the engine got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lumen_tests::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

/// A chat request of exactly `len` bytes (the content pads it).
fn chat_of(len: usize) -> Vec<u8> {
    let head = r#"{"model":"m1","max_tokens":2,"messages":[{"role":"user","content":""#;
    let tail = r#""}]}"#;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(head.as_bytes());
    out.resize(len - tail.len(), b'x');
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Connects and sends a chat request's head declaring `len` body bytes.
async fn start_post(lumen: &Lumen, len: usize) -> TcpStream {
    start_post_to(lumen, CHAT, len).await
}

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";
const EMBEDDINGS: &str = "/v1/embeddings";

/// Connects and sends the head of a request to `path` declaring `len` body bytes.
async fn start_post_to(lumen: &Lumen, path: &str, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: lumen\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// One response: status, head (lower case) and body.
async fn response(s: &mut (impl AsyncRead + Unpin)) -> (u16, String, Vec<u8>) {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    let status = head[9..12].parse().unwrap();
                    return (status, head, buf[end + 4..end + 4 + len].to_vec());
                }
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a whole response");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("no response")
}

/// A whole request of `len` bytes; the body is written alongside reading the answer, so a
/// server that answers before reading the body (and closes) is seen answering, not as a
/// failed write.
async fn post_whole(lumen: &Lumen, len: usize) -> (u16, String, Vec<u8>) {
    let mut s = start_post(lumen, len).await;
    let (mut rd, mut wr) = s.split();
    let body = chat_of(len);
    let write = async move {
        let _ = wr.write_all(&body).await;
    };
    let (_, r) = tokio::join!(write, response(&mut rd));
    r
}

async fn metrics(lumen: &Lumen) -> String {
    get(&lumen.url("/metrics")).await.text()
}

/// Issue 20, item 8. Two bodies of 4 MiB, each half-sent, hold the whole 8 MiB budget; four
/// more large bodies at once wait (bounded), then get 503 `body_budget_exhausted` with
/// `Retry-After`, unread; so does a small one. Bodiless requests are still served, and once
/// the holders finish (one completes, one hangs up) the budget is back to zero and a large
/// body is served again.
#[tokio::test]
async fn bodies_beyond_the_budget_get_503_and_the_budget_comes_back() {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::start(
        builder(&[&url])
            .max_body_bytes(4 * MIB)
            .body_budget_bytes(8 * MIB as u64)
            .body_budget_wait(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .await;
    let body = chat_of(4 * MIB);
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = start_post(&lumen, 4 * MIB).await;
        s.write_all(&body[..2 * MIB]).await.unwrap();
        holders.push(s);
    }
    let gw = lumen.gateway.clone();
    eventually(Duration::from_secs(10), || {
        gw.body_bytes_in_flight() == 8 * MIB as u64
    })
    .await;
    assert_eq!(
        metric(&metrics(&lumen).await, "lumen_request_body_bytes"),
        Some((8 * MIB) as f64)
    );

    let refused = futures::future::join_all((0..4).map(|_| post_whole(&lumen, 3 * MIB))).await;
    let small = post_whole(&lumen, 1024).await;
    for (status, head, body) in refused.iter().chain([&small]) {
        assert_eq!(*status, 503, "{head}");
        assert!(head.contains("retry-after: 1\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["error"]["code"], "body_budget_exhausted", "{v}");
        assert_eq!(v["error"]["type"], "server_error", "{v}");
    }
    assert_eq!(gw.body_bytes_in_flight(), 8 * MIB as u64, "never grew");
    assert_eq!(
        get(&lumen.url("/v1/models")).await.status,
        200,
        "still serving"
    );
    let text = metrics(&lumen).await;
    assert_eq!(
        metric(&text, r#"lumen_rejected_total{reason="body_budget"}"#),
        Some(5.0)
    );
    assert_eq!(sim.generation_count(), 0);

    // One holder sends the rest and is answered; the other hangs up.
    let mut first = holders.remove(0);
    first.write_all(&body[2 * MIB..]).await.unwrap();
    let (status, head, _) = response(&mut first).await;
    assert_eq!(status, 200, "{head}");
    drop(holders);
    eventually(Duration::from_secs(10), || gw.body_bytes_in_flight() == 0).await;
    assert_eq!(
        metric(&metrics(&lumen).await, "lumen_request_body_bytes"),
        Some(0.0)
    );
    let (status, head, _) = post_whole(&lumen, 4 * MIB).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(gw.body_bytes_in_flight(), 0);
}

/// The budget is released when the request ends, however it ends: an engine error, a stream
/// (at commit), a request refused by validation. Otherwise each would leak its share.
#[tokio::test]
async fn every_way_out_of_a_request_gives_its_share_back() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::start(builder(&[&url]).build().unwrap()).await;
    let chat = lumen.url("/v1/chat/completions");
    let stream = r#"{"model":"m1","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = post_streaming(&chat, stream).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        lumen.gateway.body_bytes_in_flight(),
        0,
        "a committed stream no longer holds its body"
    );
    drop(resp);
    for body in [
        r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"m1","messages":"#,
        r#"{"model":"m1","n":100000,"messages":[{"role":"user","content":"hi"}]}"#,
    ] {
        assert_ne!(post(&chat, body).await.status, 200, "{body}");
        assert_eq!(lumen.gateway.body_bytes_in_flight(), 0, "{body}");
    }
}

/// Issue 20, item 17: `/metrics` counts what the in-memory cache holds.
#[tokio::test]
async fn cached_bytes_are_a_gauge() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::start(
        builder(&[&url])
            .cache(lumen_server::config::CacheConfig {
                enabled: true,
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    assert_eq!(
        metric(&metrics(&lumen).await, "lumen_cache_bytes"),
        Some(0.0)
    );
    let chat = lumen.url("/v1/chat/completions");
    let mut total = 0;
    for i in 0..3 {
        let body = format!(
            r#"{{"model":"m1","temperature":0,"max_tokens":{},"messages":[{{"role":"user","content":"hi"}}]}}"#,
            5 + i
        );
        let r = post(&chat, &body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-lumen-cache"), Some("miss"));
        total += r.body.len() + 64;
        assert_eq!(
            metric(&metrics(&lumen).await, "lumen_cache_bytes"),
            Some(total as f64),
            "answer bytes plus 64 per entry, as cache.max_bytes counts them"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 24, "Bodies": the whole request path's peak heap for a large body, and bodies reaching
// the engine as the client sent them.

/// A raw-TCP engine for large bodies: reads each request's body in small pieces and discards
/// it (so the engine adds nothing to the heap the test measures), except the first `keep`
/// bytes, which it records for the byte-for-byte tests. Answers `/v1/models` with `m1`, and a
/// chat, completion or embeddings request with a small answer of its kind (a small SSE stream
/// with a usage chunk when the body asked for a stream). Returns its URL and the bodies it
/// kept.
async fn sink_engine(keep: usize) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    sink_engine_cutting(keep, false).await
}

/// [`sink_engine`]; with `cut`, a stream is broken off after its first event (the connection
/// closed with the rest of the declared length unsent), for continuation to finish elsewhere.
async fn sink_engine_cutting(keep: usize, cut: bool) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let kept = Arc::new(Mutex::new(Vec::new()));
    let seen = kept.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some((head, body, stream)) = sink_one(&mut sock, &mut buf, keep).await
                    else {
                        return;
                    };
                    if !head.starts_with("get /v1/models") {
                        seen.lock().unwrap().push(body);
                    }
                    let (kind, events) = sink_answer(&head, stream);
                    let b = events.concat();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n",
                        b.len()
                    );
                    if cut && stream {
                        let _ = sock.write_all((resp + events[0]).as_bytes()).await;
                        return;
                    }
                    if sock.write_all((resp + &b).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, kept)
}

/// The sink engine's answer to a request with `head`: its content type and body, in events
/// for a stream.
fn sink_answer(head: &str, stream: bool) -> (&'static str, Vec<&'static str>) {
    const JSON: &str = "application/json";
    const SSE: &str = "text/event-stream";
    let path = head.split(' ').nth(1).unwrap_or_default();
    match (path, stream) {
        ("/v1/models", _) => (
            JSON,
            vec![r#"{"object":"list","data":[{"id":"m1","object":"model"}]}"#],
        ),
        (EMBEDDINGS, _) => (
            JSON,
            vec![
                r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],"model":"m1","usage":{"prompt_tokens":5,"total_tokens":5}}"#,
            ],
        ),
        (COMPLETIONS, true) => (
            SSE,
            vec![
                "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"text\":\"ok\",\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\n",
                "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n",
                "data: [DONE]\n\n",
            ],
        ),
        (COMPLETIONS, false) => (
            JSON,
            vec![
                r#"{"id":"c","object":"text_completion","created":1,"model":"m1","choices":[{"index":0,"text":"ok","finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
            ],
        ),
        (_, true) => (
            SSE,
            vec![
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\n",
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n",
                "data: [DONE]\n\n",
            ],
        ),
        (_, false) => (
            JSON,
            vec![
                r#"{"id":"c","object":"chat.completion","created":1,"model":"m1","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
            ],
        ),
    }
}

/// One request read from `sock`: its head (lower case), the first `keep` bytes of its body,
/// and whether the body holds `"stream":true` (looked for across read boundaries).
async fn sink_one(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    keep: usize,
) -> Option<(String, Vec<u8>, bool)> {
    const STREAM: &[u8] = b"\"stream\":true";
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let mut left: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    let mut body = Vec::new();
    let mut stream = false;
    let mut tail: Vec<u8> = Vec::new();
    let mut take = |data: &[u8], body: &mut Vec<u8>| {
        let room = keep.saturating_sub(body.len()).min(data.len());
        body.extend_from_slice(&data[..room]);
        tail.extend_from_slice(data);
        stream |= tail.windows(STREAM.len()).any(|w| w == STREAM);
        let cut = tail.len().saturating_sub(STREAM.len());
        tail.drain(..cut);
    };
    let first = buf.len().saturating_sub(head_end).min(left);
    take(&buf[head_end..head_end + first], &mut body);
    buf.drain(..head_end + first);
    left -= first;
    let mut chunk = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(chunk.len());
        match sock.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => {
                take(&chunk[..n], &mut body);
                left -= n;
            }
        }
    }
    Some((head, body, stream))
}

/// `head`, then `item` repeated (comma-separated) up to `size` bytes, then `tail`.
fn repeated(head: &str, item: &str, tail: &str, size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(size + item.len() + tail.len() + 1);
    b.extend_from_slice(head.as_bytes());
    let mut first = true;
    while b.len() + item.len() + tail.len() < size {
        if !first {
            b.push(b',');
        }
        first = false;
        b.extend_from_slice(item.as_bytes());
    }
    b.extend_from_slice(tail.as_bytes());
    b
}

/// The shapes of a large body: chat, unless named for completions or embeddings; `alias`
/// ones name the model by an alias (Lumen rewrites it), `stream` ones ask for a stream (Lumen
/// adds its usage ask).
const BODY_SHAPES: &[&str] = &[
    "unknown_array",
    "long_message",
    "many_messages",
    "escaped_strings",
    "long_message_stream",
    "alias_long_message",
    "alias_unknown_array",
    "completions_long_prompt",
    "completions_token_prompt",
    "completions_long_prompt_stream",
    "alias_completions_long_prompt",
    "embeddings_input_array",
    "embeddings_long_input",
    "alias_embeddings_input_array",
];

/// A body of about `size` bytes in `shape`, and the path it is posted to.
fn shaped_body(shape: &str, size: usize) -> (&'static str, Vec<u8>) {
    const HI: &str = r#"{"role":"user","content":"hi"}"#;
    let model = if shape.starts_with("alias") {
        "a"
    } else {
        "m1"
    };
    let stream = if shape.ends_with("stream") {
        r#""stream":true,"#
    } else {
        ""
    };
    let head = format!(r#"{{"model":"{model}",{stream}"max_tokens":2,"#);
    let chat = |head: &str, item: &str, tail: &str| (CHAT, repeated(head, item, tail, size));
    match shape
        .trim_start_matches("alias_")
        .trim_end_matches("_stream")
    {
        "unknown_array" => chat(&format!(r#"{head}"messages":[{HI}],"junk":["#), "0", "]}"),
        "long_message" => chat(
            &format!(r#"{head}"messages":[{{"role":"user","content":""#),
            "xxxxxxxxxxxxxxx",
            r#""}]}"#,
        ),
        "many_messages" => chat(&format!(r#"{head}"messages":["#), HI, "]}"),
        "escaped_strings" => chat(
            &format!(r#"{head}"messages":[{{"role":"user","content":""#),
            r#"\"\\\n\u00e9"#,
            r#""}]}"#,
        ),
        "completions_long_prompt" => (
            COMPLETIONS,
            repeated(
                &format!(r#"{head}"prompt":""#),
                "xxxxxxxxxxxxxxx",
                r#""}"#,
                size,
            ),
        ),
        "completions_token_prompt" => (
            COMPLETIONS,
            repeated(&format!(r#"{head}"prompt":["#), "12345", "]}", size),
        ),
        "embeddings_input_array" => (
            EMBEDDINGS,
            repeated(
                &format!(r#"{{"model":"{model}","input":["#),
                r#""hello world""#,
                "]}",
                size,
            ),
        ),
        "embeddings_long_input" => (
            EMBEDDINGS,
            repeated(
                &format!(r#"{{"model":"{model}","input":""#),
                "xxxxxxxxxxxxxxx",
                r#""}"#,
                size,
            ),
        ),
        other => panic!("unknown shape {other}"),
    }
}

/// In the child process: one shaped 10 MB body through a real Lumen (real TCP) to an engine
/// that discards it; prints the peak heap growth while the request was served. A no-op unless
/// `MEMORY_BODY_SHAPE` names a shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)]
async fn body_path_child() {
    let Ok(shape) = std::env::var("MEMORY_BODY_SHAPE") else {
        return;
    };
    let (url, _) = sink_engine(0).await;
    let mut gov = lumen_governance::GovernanceConfig::default();
    gov.aliases.insert("a".into(), "m1".into());
    let lumen = Lumen::start(builder(&[&url]).governance(gov).build().unwrap()).await;
    // Warm up: connections, buffers and lazy statics, on the same shape at a small size.
    let (path, small) = shaped_body(&shape, 64 * 1024);
    let (status, head, _) = post_bytes(&lumen, path, &small).await;
    assert_eq!(status, 200, "{head}");
    let (path, body) = shaped_body(&shape, 10 * MIB);
    let base = crate::ALLOC.allocated();
    let (status, head, answer) = post_bytes(&lumen, path, &body).await;
    let growth = crate::ALLOC.max_allocated().saturating_sub(base);
    assert_eq!(status, 200, "{head}: {}", String::from_utf8_lossy(&answer));
    println!("MEMORY_BODY_GROWTH {} {growth}", body.len());
}

/// A whole request to `path` with `body`, over raw TCP, and its answer.
async fn post_bytes(lumen: &Lumen, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = start_post_to(lumen, path, body.len()).await;
    let (mut rd, mut wr) = s.split();
    let write = async move {
        let _ = wr.write_all(body).await;
    };
    let (_, r) = tokio::join!(write, response(&mut rd));
    r
}

/// Issue 24: peak heap growth of the whole request path (Lumen's read of the body, parse,
/// routing, the engine call, the answer) for a 10 MB body of each shape, each in its own
/// process (the counting allocator's peak cannot be reset). The engine discards what it reads
/// and the client's body is allocated before the measure starts, so the growth is Lumen's.
#[tokio::test]
#[allow(clippy::print_stdout)]
async fn a_large_body_costs_lumen_a_bounded_multiple_of_itself() {
    let exe = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for shape in BODY_SHAPES {
        let exe = exe.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(exe)
                .args([
                    "--exact",
                    "memory::body_path_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("MEMORY_BODY_SHAPE", shape)
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let figures = stdout
            .lines()
            .find_map(|l| l.split("MEMORY_BODY_GROWTH ").nth(1))
            .map(|f| {
                f.split_whitespace()
                    .filter_map(|n| n.parse::<usize>().ok())
                    .collect::<Vec<_>>()
            });
        match figures.as_deref() {
            Some(&[body, growth]) if out.status.success() => {
                let ratio = growth as f64 / body as f64;
                // Forwarded unchanged but for `model` (spliced in place): 2.5x at most;
                // anything Lumen must rebuild, 3x.
                let bound = 2.5;
                println!(
                    "{shape:<30} body {:>5.1} MiB  peak heap growth {:>6.1} MiB  {ratio:>5.2}x (bound {bound}x)",
                    body as f64 / MIB as f64,
                    growth as f64 / MIB as f64,
                );
                if ratio > bound {
                    failed.push(format!("{shape}: {ratio:.2}x the body, over {bound}x"));
                }
            }
            _ => failed.push(format!(
                "{shape}: the child failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Issue 24: a chat body Lumen does not need to change reaches the engine as the client sent
/// it, byte for byte: whitespace, key order, number spellings, escapes, unknown and repeated
/// unknown members, `"stream": false`.
#[tokio::test]
async fn a_body_forwarded_unchanged_reaches_the_engine_byte_for_byte() {
    let (url, kept) = sink_engine(MIB).await;
    let lumen = Lumen::start(builder(&[&url]).build().unwrap()).await;
    let body = concat!(
        "{ \"top_k\" : 5,\n  \"model\":\"m1\", \"temperature\": 0.50, \"stream\" : false,\n",
        "  \"messages\": [ {\"role\":\"system\",\"content\":\"b\\u00e9 \\\"q\\\" \\n\"},\n",
        "    {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}],\"name\":\"x\"} ],\n",
        "  \"guided_json\": {\"b\": 1e2, \"a\": [true, null]}, \"x\": 1, \"x\": 2 }\n"
    );
    let r = post(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = kept.lock().unwrap().pop().unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), body);
}

/// Issue 24: an alias is rewritten to the engine's model in place; every other byte is the
/// client's.
#[tokio::test]
async fn an_alias_rewrites_only_the_model() {
    let (url, kept) = sink_engine(MIB).await;
    let mut gov = lumen_governance::GovernanceConfig::default();
    gov.aliases.insert("a".into(), "m1".into());
    let lumen = Lumen::start(builder(&[&url]).governance(gov).build().unwrap()).await;
    let body = r#"{"messages" : [{"role":"user","content":"model \"a\""}], "max_tokens":2,  "model" : "a" , "z":{"model":"a"}}"#;
    let r = post(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "a", "the answer names the alias");
    let got = String::from_utf8(kept.lock().unwrap().pop().unwrap()).unwrap();
    assert_eq!(
        got,
        r#"{"messages" : [{"role":"user","content":"model \"a\""}], "max_tokens":2,  "model" : "m1" , "z":{"model":"a"}}"#
    );
}

/// Issue 24: on a stream, Lumen's usage ask is the one member added to the client's bytes
/// (first in the object); the usage chunk the client did not ask for is not relayed.
#[tokio::test]
async fn a_stream_adds_only_the_usage_ask() {
    let (url, kept) = sink_engine(MIB).await;
    let lumen = Lumen::start(builder(&[&url]).build().unwrap()).await;
    let body =
        r#"{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}], "top_k" :1}"#;
    let r = post(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().all(|e| !e.contains("usage")), "{events:?}");
    let got = String::from_utf8(kept.lock().unwrap().pop().unwrap()).unwrap();
    assert_eq!(
        got,
        format!(
            r#"{{"stream_options":{{"include_usage":true}},{}"#,
            &body[1..]
        )
    );
}

/// `body` posted to `path` through `lumen`: Lumen's answer, and the body the sink engine
/// behind it kept (the last it received).
async fn through(
    lumen: &Lumen,
    kept: &Mutex<Vec<Vec<u8>>>,
    path: &str,
    body: &str,
) -> (Reply, String) {
    let r = post(&lumen.url(path), body).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let got = kept.lock().unwrap().pop().unwrap();
    (r, String::from_utf8(got).unwrap())
}

/// Issue 24: completions and embeddings bodies Lumen does not need to change reach the engine
/// as the client sent them, byte for byte: whitespace, key order, number spellings, escapes,
/// unknown and repeated unknown members, `"stream": false`.
#[tokio::test]
async fn a_completion_or_embedding_unchanged_reaches_the_engine_byte_for_byte() {
    let (url, kept) = sink_engine(MIB).await;
    let lumen = Lumen::start(builder(&[&url]).build().unwrap()).await;
    let completion = concat!(
        "{ \"top_k\" : 5,\n  \"model\":\"m1\", \"temperature\": 0.50, \"stream\" : false,\n",
        "  \"prompt\": \"b\\u00e9 \\\"q\\\" \\n\\ud83d\\ude00\",  \"max_tokens\" :2,\n",
        "  \"logit_bias\": {\"50256\": -1e2}, \"x\": 1, \"x\": 2 }\n"
    );
    let (_, got) = through(&lumen, &kept, COMPLETIONS, completion).await;
    assert_eq!(got, completion);
    let tokens = "{\"prompt\":[ 1,2 ,\n3 ],\"model\" :\"m1\",\"echo\":false}";
    let (_, got) = through(&lumen, &kept, COMPLETIONS, tokens).await;
    assert_eq!(got, tokens);
    let embedding = concat!(
        "{\"input\" : [ \"h\\u00e9llo\", \"w\\/orld\" ] ,\n \"model\":\"m1\",",
        " \"encoding_format\":\"float\", \"truncate_prompt_tokens\": 1.0e1,",
        " \"x\":{\"b\":1,\"a\":[true,null]}, \"x\": 2 }"
    );
    let (r, got) = through(&lumen, &kept, EMBEDDINGS, embedding).await;
    assert_eq!(got, embedding);
    assert_eq!(r.json()["data"][0]["embedding"][0], 0.5);
    let long_text = "{\"model\":\"m1\",\n\"input\":\"one \\t long\\u0020text\"}";
    let (_, got) = through(&lumen, &kept, EMBEDDINGS, long_text).await;
    assert_eq!(got, long_text);
}

/// Issue 24: an alias in a completions or embeddings body is rewritten to the engine's model in
/// place (the top-level `model` only); every other byte is the client's.
#[tokio::test]
async fn an_alias_rewrites_only_the_model_of_a_completion_or_embedding() {
    let (url, kept) = sink_engine(MIB).await;
    let mut gov = lumen_governance::GovernanceConfig::default();
    gov.aliases.insert("a".into(), "m1".into());
    let lumen = Lumen::start(builder(&[&url]).governance(gov).build().unwrap()).await;
    for (path, body) in [
        (
            COMPLETIONS,
            r#"{"prompt" : "model \"a\"", "max_tokens":2,  "model" : "a" , "z":{"model":"a"}}"#,
        ),
        (
            EMBEDDINGS,
            r#"{"input" : ["model", "a"],  "model" :"a" , "z":{"model":"a"}, "dimensions": 4}"#,
        ),
    ] {
        let (r, got) = through(&lumen, &kept, path, body).await;
        assert_eq!(r.json()["model"], "a", "{path}: the answer names the alias");
        assert_eq!(
            got,
            body.replacen(r#""model" : "a""#, r#""model" : "m1""#, 1)
                .replacen(r#""model" :"a""#, r#""model" :"m1""#, 1),
            "{path}"
        );
        assert_ne!(got, body, "{path}");
    }
}

/// Issue 24: on a completions stream, Lumen's usage ask is the one member added to the client's
/// bytes (first in the object); the usage chunk the client did not ask for is not relayed.
#[tokio::test]
async fn a_completions_stream_adds_only_the_usage_ask() {
    let (url, kept) = sink_engine(MIB).await;
    let lumen = Lumen::start(builder(&[&url]).build().unwrap()).await;
    let body = r#"{"model":"m1","stream":true,"prompt":["hi \u00e9"], "top_k" :1}"#;
    let (r, got) = through(&lumen, &kept, COMPLETIONS, body).await;
    let events = r.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().all(|e| !e.contains("usage")), "{events:?}");
    assert_eq!(
        got,
        format!(
            r#"{{"stream_options":{{"include_usage":true}},{}"#,
            &body[1..]
        )
    );
}

/// Issue 24: a completions stream cut mid-answer is still continued on another engine. The
/// first engine got the client's bytes (the usage asks spliced in); the continuation rewrites
/// the prompt (the partial answer appended) and lowers `max_tokens`, which no splice can carry,
/// so it is serialised, every other member kept.
#[tokio::test]
async fn a_continued_completions_stream_is_serialised_with_its_prompt_extended() {
    let (cut, cut_kept) = sink_engine_cutting(MIB, true).await;
    let (whole, whole_kept) = sink_engine(MIB).await;
    let gov = lumen_governance::GovernanceConfig {
        stream_continuation: true,
        // The first request goes to the engine that cuts; its continuation to the next.
        policy: lumen_governance::Policy::RoundRobin,
        ..lumen_governance::GovernanceConfig::default()
    };
    let lumen = Lumen::start(builder(&[&cut, &whole]).governance(gov).build().unwrap()).await;
    let body = r#"{ "prompt" : "Once upon a time", "model":"m1", "max_tokens" : 50,"stream":true, "top_k":3 }"#;
    let r = post(&lumen.url(COMPLETIONS), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.sse_data();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(events.iter().all(|e| !e.contains("error")), "{events:?}");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert!(text.starts_with("ok"), "{text:?}");

    let first = String::from_utf8(cut_kept.lock().unwrap().pop().unwrap()).unwrap();
    assert_eq!(
        first,
        format!(
            r#"{{"stream_options":{{"include_usage":true,"continuous_usage_stats":true}},{}"#,
            &body[1..]
        )
    );
    let cont = String::from_utf8(whole_kept.lock().unwrap().pop().unwrap()).unwrap();
    assert!(
        cont.starts_with(r#"{"model":"m1","prompt":"Once upon a timeok","stream":true,"#),
        "serialised, in the request's own order: {cont}"
    );
    let cont: serde_json::Value = serde_json::from_str(&cont).unwrap();
    let left = cont["max_tokens"].as_u64().unwrap();
    assert!(0 < left && left < 50, "{cont}");
    assert_eq!(cont["top_k"], 3);
    assert_eq!(cont["stream_options"]["include_usage"], true);
    assert!(cont.get("continue_final_message").is_none(), "{cont}");
}
