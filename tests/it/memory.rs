//! Memory bounds a client can reach: the budget for request bodies in flight, and the response
//! cache's size in `/metrics`. Over real TCP, with raw sockets where a test must hold a body
//! half-sent.

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
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: lumen\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
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
