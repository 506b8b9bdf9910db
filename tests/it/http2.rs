//! HTTP/2 from clients (issue 24): h2c with prior knowledge and ALPN `h2` over TLS, with
//! hyper's own HTTP/2 client and with curl. The same answers as over HTTP/1.1, a thousand
//! streams on one connection, admission's answers as HTTP answers (never stream resets), and a
//! client that stops reading bounded by flow control and the deadlines, never by memory.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lumen_server::config::{AdmissionConfig, Http2Config};
use lumen_tests::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":8}"#;
const STREAM_BODY: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":8,"stream":true}"#;

type Conn = JoinHandle<Result<(), hyper::Error>>;

/// An HTTP/2 connection over `io` (prior knowledge), its driver spawned.
async fn h2_over<T>(io: T) -> (SendRequest<Full<Bytes>>, Conn)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    (send, tokio::spawn(conn))
}

async fn h2c(addr: SocketAddr) -> (SendRequest<Full<Bytes>>, Conn) {
    h2_over(TcpStream::connect(addr).await.unwrap()).await
}

fn chat(addr: SocketAddr, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{CHAT}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Sends one request on `send` and buffers the answer.
async fn h2_send(send: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    let fut = async {
        send.ready().await.unwrap();
        Reply::read(send.send_request(req).await.unwrap()).await
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("HTTP/2 request timed out")
}

/// An answer with what differs between any two answers (ids, timestamps) taken out.
fn normalized(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("created");
    }
    v
}

fn normalized_events(reply: &Reply) -> Vec<serde_json::Value> {
    reply
        .sse_data()
        .into_iter()
        .map(|d| match serde_json::from_str(&d) {
            Ok(v) => normalized(v),
            Err(_) => serde_json::Value::String(d),
        })
        .collect()
}

#[tokio::test]
async fn h2c_with_prior_knowledge_serves_chat_and_streams_as_http1_does() {
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let (mut send, _conn) = h2c(lumen.addr).await;

    let h1 = post(&lumen.url(CHAT), BODY).await;
    let h2 = h2_send(&mut send, chat(lumen.addr, BODY)).await;
    assert_eq!(h1.status, 200, "{}", h1.text());
    assert_eq!(h2.status, 200, "{}", h2.text());
    assert_eq!(normalized(h2.json()), normalized(h1.json()));
    assert_eq!(h2.header("content-type"), h1.header("content-type"));
    assert!(h2.header("x-request-id").is_some());
    // Connection-specific headers are HTTP/1's: none may reach an HTTP/2 answer.
    for name in ["connection", "transfer-encoding", "keep-alive"] {
        assert!(h2.headers.get(name).is_none(), "{name} over HTTP/2");
    }

    let h1 = post(&lumen.url(CHAT), STREAM_BODY).await;
    let h2 = h2_send(&mut send, chat(lumen.addr, STREAM_BODY)).await;
    assert_eq!(h2.status, 200, "{}", h2.text());
    assert_eq!(h2.header("content-type"), Some("text/event-stream"));
    let (e1, e2) = (normalized_events(&h1), normalized_events(&h2));
    assert!(e2.len() > 3, "{}", h2.text());
    assert_eq!(e2, e1);
    assert_eq!(h2.sse_data().last().map(String::as_str), Some("[DONE]"));

    // Errors keep their shape: an unknown route, an unknown model.
    let missing = h2_send(
        &mut send,
        Request::get(format!("http://{}/v1/nope", lumen.addr))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]["message"].is_string());
    let unknown = h2_send(
        &mut send,
        chat(lumen.addr, &BODY.replace(r#""m""#, r#""nope""#)),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(unknown.json()["error"]["code"], "model_not_found");
}

/// A thousand streams at once on one connection, each held 50 ms by the engine: all answered
/// 200 together (one after another they would take 50 s).
#[tokio::test]
async fn one_http2_connection_carries_a_thousand_concurrent_streams() {
    const STREAMS: usize = 1_000;
    let (url, sim) = sim_with(lumen_sim::SimConfig {
        models: vec!["m".into()],
        ttft: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let lumen = Lumen::start(
        builder(&[&url])
            .admission(AdmissionConfig {
                max_concurrent: Some(2 * STREAMS),
                queue_size: Some(2 * STREAMS),
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let (send, _conn) = h2c(lumen.addr).await;
    let started = tokio::time::Instant::now();
    let replies = futures::future::join_all((0..STREAMS).map(|i| {
        let mut send = send.clone();
        let body = if i % 2 == 0 { BODY } else { STREAM_BODY };
        let req = chat(lumen.addr, body);
        async move { h2_send(&mut send, req).await }
    }))
    .await;
    let took = started.elapsed();
    let failed: Vec<_> = replies
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| format!("{} {}", r.status, r.text()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..3.min(failed.len())]
    );
    assert!(replies[1].sse_data().last().is_some_and(|d| d == "[DONE]"));
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(sim.request_count() >= STREAMS as u64);
    println!("{STREAMS} streams on one HTTP/2 connection in {took:?}");
}

/// Over admission, streams get admission's HTTP answers (429 `queue_full`, 503), like as many
/// HTTP/1.1 connections would, never a reset stream or a broken connection.
#[tokio::test]
async fn streams_over_admission_get_http_answers_not_resets() {
    const STREAMS: usize = 300;
    let (url, _sim) = sim_with(lumen_sim::SimConfig {
        models: vec!["m".into()],
        ttft: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let lumen = Lumen::start(
        builder(&[&url])
            .admission(AdmissionConfig {
                max_concurrent: Some(8),
                queue_size: Some(8),
                queue_timeout_ms: Some(5_000),
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let (send, conn) = h2c(lumen.addr).await;
    let replies = futures::future::join_all((0..STREAMS).map(|_| {
        let mut send = send.clone();
        let req = chat(lumen.addr, BODY);
        async move { h2_send(&mut send, req).await }
    }))
    .await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = replies.iter().filter(|r| r.status != 200).collect();
    assert!(ok >= 8, "{ok} served");
    assert!(!refused.is_empty());
    for r in refused {
        assert!(
            r.status == StatusCode::TOO_MANY_REQUESTS
                || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "{} {}",
            r.status,
            r.text()
        );
        assert!(r.json()["error"]["code"].is_string(), "{}", r.text());
    }
    // The connection is still up and serves the next request.
    let mut send = send.clone();
    let next = h2_send(&mut send, chat(lumen.addr, BODY)).await;
    assert_eq!(next.status, 200);
    assert!(!conn.is_finished());
}

/// A socket whose reads can be stopped: the client that stops reading, as far as the server
/// can tell (its window and the kernel's buffers fill, its pings go unanswered).
struct Stoppable {
    io: TcpStream,
    stopped: Arc<AtomicBool>,
}

impl AsyncRead for Stoppable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stopped.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stoppable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

const LONG_STREAM: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":true}"#;
const STALLED_STREAMS: usize = 32;

/// Events that are ready together (here a whole stream the engine wrote at once) reach the
/// client as one DATA frame, not one frame each: fewer writes for Lumen, and no flood of small
/// frames for a client that reads late (h2 clients count those against the connection).
#[tokio::test]
async fn events_ready_together_go_out_in_one_data_frame() {
    let url = one_write_engine(40).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let (mut send, _conn) = h2c(lumen.addr).await;
    send.ready().await.unwrap();
    let resp = send
        .send_request(chat(lumen.addr, STREAM_BODY))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let (mut frames, mut text) = (0, Vec::new());
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            text.extend_from_slice(&data);
        }
    }
    let text = String::from_utf8(text).unwrap();
    assert_eq!(
        text.matches("data: ").count(),
        41,
        "40 events and [DONE]: {text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    // The commit point reads the first event on its own; the rest were ready together.
    assert!(frames <= 3, "{frames} DATA frames for 41 events");
}

/// Opens [`STALLED_STREAMS`] long streams on one HTTP/2 connection, waits for each answer's
/// head, then stops reading; returns the connection (its sender, which keeps it open, and its
/// task) and the answers.
async fn stalled_client(
    addr: SocketAddr,
) -> (
    SendRequest<Full<Bytes>>,
    Conn,
    Vec<Response<hyper::body::Incoming>>,
) {
    let stopped = Arc::new(AtomicBool::new(false));
    let io = Stoppable {
        io: TcpStream::connect(addr).await.unwrap(),
        stopped: stopped.clone(),
    };
    let (send, conn) = h2_over(io).await;
    let heads = futures::future::join_all((0..STALLED_STREAMS).map(|_| {
        let mut send = send.clone();
        async move {
            send.ready().await.unwrap();
            send.send_request(chat(addr, LONG_STREAM)).await.unwrap()
        }
    }))
    .await;
    for h in &heads {
        assert_eq!(h.status(), 200);
    }
    // The bodies are never polled: the client grants no window beyond its initial one.
    stopped.store(true, Ordering::Release);
    (send, conn, heads)
}

/// The child process's report line.
const HEAP_LINE: &str = "HTTP2_STALLED_HEAP_GROWTH ";

/// In the child process: a client that opened [`STALLED_STREAMS`] long streams and stopped
/// reading; prints Lumen's heap growth over two seconds of that. A no-op unless
/// `HTTP2_STALLED_CHILD` is set.
#[tokio::test]
#[allow(clippy::print_stdout)]
async fn stalled_reader_child() {
    if std::env::var("HTTP2_STALLED_CHILD").is_err() {
        return;
    }
    let engine = endless_engine().await;
    let (url, _sim) = sim(&["other"]).await;
    let lumen = Lumen::start(
        builder(&[&engine.url, &url])
            // No pings: only flow control holds the streams back.
            .http2(Http2Config {
                keep_alive_interval_ms: 0,
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let start = crate::ALLOC.allocated();
    let (_send, conn, _heads) = stalled_client(lumen.addr).await;
    // Everything in between fills (windows, socket buffers), then nothing moves.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let before = engine.written.load(Ordering::SeqCst);
    let base = crate::ALLOC.allocated();
    let mut peak = base;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(crate::ALLOC.allocated());
    }
    let growth = peak - base;
    let after = engine.written.load(Ordering::SeqCst);
    assert_eq!(engine.streaming.load(Ordering::SeqCst), STALLED_STREAMS);
    // The engine is held back too: a gateway that buffered would let it write on.
    assert!(
        after - before < 1024 * 1024,
        "the engine wrote {} more bytes while the client read nothing",
        after - before
    );
    if conn.is_finished() {
        panic!("the connection ended: {:?}", conn.await);
    }
    println!(
        "engine held back after {:.1} MiB in all ({:.0} KiB a stream, in windows and socket \
         buffers); heap {:.1} MiB above its level before the streams",
        after as f64 / 1048576.0,
        after as f64 / 1024.0 / STALLED_STREAMS as f64,
        base.saturating_sub(start) as f64 / 1048576.0
    );
    // Another client is served meanwhile.
    let other = post(&lumen.url(CHAT), &BODY.replace(r#""m""#, r#""other""#)).await;
    assert_eq!(other.status, 200, "{}", other.text());
    println!("{HEAP_LINE}{growth}");
}

/// Issue 24: an HTTP/2 client that stops reading cannot grow memory. Flow control holds each
/// stream (the client's window, Lumen's per-stream send buffer), the engine is held back in
/// turn, and Lumen's heap stays flat while 32 long streams wait; measured in a process of
/// its own (the counting allocator is global).
#[tokio::test]
#[allow(clippy::print_stdout)]
async fn an_http2_client_that_stops_reading_cannot_grow_memory() {
    const BOUND: usize = 4 * 1024 * 1024;
    let exe = std::env::current_exe().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "--exact",
                "http2::stalled_reader_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("HTTP2_STALLED_CHILD", "1")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let growth = stdout
        .lines()
        .find_map(|l| l.split(HEAP_LINE).nth(1))
        .and_then(|g| g.trim().parse::<usize>().ok());
    let Some(growth) = growth.filter(|_| out.status.success()) else {
        panic!(
            "the child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    println!(
        "heap growth over 2 s of {STALLED_STREAMS} stalled streams: {:.1} KiB",
        growth as f64 / 1024.0
    );
    assert!(
        growth < BOUND,
        "heap grew {growth} bytes while the client read nothing"
    );
}

/// A client that stops reading altogether cannot answer pings: its connection ends at the
/// keep-alive deadline, and with it its streams, their engine requests and admission slots.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_keep_alive_deadline() {
    let engine = endless_engine().await;
    let (url, _sim) = sim(&["other"]).await;
    let lumen = Lumen::start(
        builder(&[&engine.url, &url])
            .http2(Http2Config {
                // Wide enough that a slow machine opens all the streams well within one
                // deadline (at 200/300 ms a loaded run saw the cut before the check below, and
                // at 1 s/1 s beside the thousand-stream test on a machine at load 6).
                keep_alive_interval_ms: 2_500,
                keep_alive_timeout_ms: 2_500,
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let (_send, _conn, _heads) = stalled_client(lumen.addr).await;
    assert_eq!(engine.streaming.load(Ordering::SeqCst), STALLED_STREAMS);
    // Another client is served while they stall.
    let (mut send, _c) = h2c(lumen.addr).await;
    let other = chat(lumen.addr, &BODY.replace(r#""m""#, r#""other""#));
    assert_eq!(h2_send(&mut send, other).await.status, 200);
    engine.all_cut(Duration::from_secs(15)).await;
    assert_slots_released(&lumen, "slots released").await;
}

/// A client that keeps reading the socket (and answers pings) but never grants its streams
/// window: Lumen's socket writes never wait, so only the window watchdog can tell. Once a
/// stream has had data its window would not take for `server.write_timeout_ms`, the
/// connection is cut, and with it the streams, their engine requests and admission slots.
#[tokio::test]
async fn a_client_that_grants_no_window_is_cut_at_the_write_deadline() {
    let engine = endless_engine().await;
    let lumen = engine.behind_lumen(Duration::from_secs(2)).await;
    // Small windows: h2's flood guard charges the client for every unread DATA frame under
    // 256 bytes (an SSE event each), and with larger windows it would end the connection
    // itself (GOAWAY `too_many_data_frames`) before any deadline could.
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(4 * 1024)
        .initial_connection_window_size(64 * 1024)
        .handshake(TokioIo::new(TcpStream::connect(lumen.addr).await.unwrap()))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let heads = futures::future::join_all((0..4).map(|_| {
        let mut send = send.clone();
        async move {
            send.ready().await.unwrap();
            send.send_request(chat(lumen.addr, LONG_STREAM))
                .await
                .unwrap()
        }
    }))
    .await;
    for h in &heads {
        assert_eq!(h.status(), 200);
    }
    // The bodies are never polled: the client's window for each stream is never renewed.
    let start = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(engine.streaming.load(Ordering::SeqCst), 4, "held, not cut");
    engine.all_cut(Duration::from_secs(20)).await;
    assert!(
        start.elapsed() >= Duration::from_millis(1_900),
        "cut before the deadline: {:?}",
        start.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "the connection was left open");
    assert_slots_released(&lumen, "slots released").await;
    drop((send, heads));
}

/// An HTTP/2 connection with no stream in progress past `server.idle_timeout_ms` is closed
/// gracefully (GOAWAY): the client's connection ends without an error.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_with_goaway() {
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::start(
        builder(&[&url])
            .idle_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .await;
    let (mut send, conn) = h2c(lumen.addr).await;
    assert_eq!(h2_send(&mut send, chat(lumen.addr, BODY)).await.status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("still open long after the idle deadline")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    assert!(send.is_closed());
}

/// Graceful shutdown over HTTP/2: a stream in progress finishes, the connection then closes.
#[tokio::test]
async fn shutdown_lets_an_http2_stream_finish() {
    let (url, _sim) = sim_with(lumen_sim::SimConfig {
        models: vec!["m".into()],
        itl: Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let mut lumen = Lumen::in_front_of(&[&url]).await;
    let (mut send, conn) = h2c(lumen.addr).await;
    let addr = lumen.addr;
    let stream = tokio::spawn(async move {
        let body = STREAM_BODY.replace(r#""max_tokens":8"#, r#""max_tokens":20"#);
        h2_send(&mut send, chat(addr, &body)).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let serve = lumen.begin_shutdown();
    let reply = stream.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.sse_data().last().map(String::as_str), Some("[DONE]"));
    serve.await.unwrap().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the connection outlived the server");
}

/// `curl --http2-prior-knowledge`, a non-streamed chat and a stream; skipped (with a note)
/// where curl or its HTTP/2 support is missing.
#[tokio::test]
#[allow(clippy::print_stdout)]
async fn curl_speaks_http2_with_prior_knowledge() {
    let has_h2 = std::process::Command::new("curl")
        .arg("-V")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"));
    if !has_h2 {
        println!("skipped: no curl with HTTP/2 on this machine");
        return;
    }
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let target = lumen.url(CHAT);
    let curl = |body: &'static str| {
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args([
                    "-sS",
                    "--http2-prior-knowledge",
                    "-N",
                    "--max-time",
                    "20",
                    "-H",
                    "content-type: application/json",
                    "-d",
                    body,
                    "-w",
                    "\n%{http_version} %{http_code}",
                    &target,
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let plain = curl(BODY).await.unwrap();
    let (body, status) = plain.rsplit_once('\n').unwrap();
    assert_eq!(status, "2 200", "{plain}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["object"], "chat.completion");

    let streamed = curl(STREAM_BODY).await.unwrap();
    let (body, status) = streamed.rsplit_once('\n').unwrap();
    assert_eq!(status, "2 200", "{streamed}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
}
