//! Test harness: simulators and a Lumen server on `127.0.0.1:0`, plus a plain HTTP client.
//!
//! Everything talks over real TCP. Nothing here sleeps to wait for background work: servers are
//! ready once their listener is bound, and model discovery is awaited before serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lumen_server::{Gateway, GatewayBuilder};
use lumen_sim::{SimConfig, Simulator};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use lumen_sim::Faults;

/// A simulator with recording on, serving `models`.
pub async fn sim(models: &[&str]) -> (String, Simulator) {
    sim_with(SimConfig {
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        ..SimConfig::default()
    })
    .await
}

pub async fn sim_with(mut cfg: SimConfig) -> (String, Simulator) {
    if cfg.record == 0 {
        cfg.record = 1024;
    }
    let (addr, sim) = lumen_sim::spawn(cfg).await.unwrap();
    (format!("http://{addr}"), sim)
}

/// A minimal engine over raw TCP that answers every chat request with `answer`, byte for byte
/// (and `/v1/models` with model `m1`), so tests can see exactly what Lumen forwards.
pub async fn canned_engine(answer: &'static str) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head) = read_request(&mut sock, &mut buf).await else {
                        return;
                    };
                    let body = if head.starts_with("get /v1/models") {
                        r#"{"object":"list","data":[{"id":"m1","object":"model"}]}"#
                    } else {
                        answer
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
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

/// Reads one HTTP/1.1 request (the head, then `content-length` bytes of body) from `sock`,
/// consuming it from `buf`, and returns its head in lower case; `None` once the peer closed.
/// For the raw-TCP engines tests script byte by byte.
pub async fn read_request(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
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
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..head_end + len);
    Some(head)
}

/// An engine whose every stream is endless, written as fast as the socket takes it: what it
/// managed to write, and how many streams it is still writing, show whether Lumen holds it back
/// (a buffering gateway would let it write without end). Serves model `m`.
pub struct Endless {
    pub url: String,
    /// Bytes written to Lumen so far.
    pub written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Streams being written now.
    pub streaming: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Endless {
    /// Lumen in front of this engine (backend `b0`) with `server.write_timeout_ms` at `limit`.
    pub async fn behind_lumen(&self, write_timeout: Duration) -> Lumen {
        Lumen::start(
            builder(&[&self.url])
                .write_timeout(write_timeout)
                .build()
                .unwrap(),
        )
        .await
    }

    /// Waits (up to `limit`) until the engine writes no stream: Lumen closed them all.
    pub async fn all_cut(&self, limit: Duration) {
        let streaming = self.streaming.clone();
        eventually(limit, || {
            streaming.load(std::sync::atomic::Ordering::SeqCst) == 0
        })
        .await;
    }
}

/// Lumen holds no request on backend `b0` (`lumen_backend_in_flight`): every slot was given back.
pub async fn assert_slots_released(lumen: &Lumen, why: &str) {
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert_eq!(
        metric(&metrics, r#"lumen_backend_in_flight{backend="b0"}"#),
        Some(0.0),
        "{why}"
    );
}

const ENDLESS_EVENT: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"more \"},\"finish_reason\":null}]}\n\n";

pub async fn endless_engine() -> Endless {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let streaming = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (w, st) = (written.clone(), streaming.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (written, streaming) = (w.clone(), st.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let Some(head) = read_request(&mut sock, &mut buf).await else {
                    return;
                };
                if head.starts_with("get /v1/models") {
                    let body = r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let events = ENDLESS_EVENT.repeat(32);
                let chunk = format!("{:x}\r\n{events}\r\n", events.len());
                streaming.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while sock.write_all(chunk.as_bytes()).await.is_ok() {
                    written.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::SeqCst);
                }
                streaming.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    Endless {
        url,
        written,
        streaming,
    }
}

/// An engine that writes a whole chat stream, `events` token events and `[DONE]`, in one
/// write: what an engine far ahead of its reader (or a burst of tokens) looks like to Lumen.
/// Serves model `m`.
pub async fn one_write_engine(events: usize) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stream = format!("{}data: [DONE]\n\n", ENDLESS_EVENT.repeat(events));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut sock, &mut buf).await {
                    let (kind, body) = if head.starts_with("get /v1/models") {
                        (
                            "application/json",
                            r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#,
                        )
                    } else {
                        ("text/event-stream", stream.as_str())
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
    url
}

/// A running Lumen. Dropping it stops the server.
pub struct Lumen {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Lumen {
    /// Serves `gateway` on a fresh port after one discovery round.
    pub async fn start(gateway: Gateway) -> Self {
        gateway.core().discover().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let gw = gateway.clone();
        let task = tokio::spawn(async move {
            lumen_server::serve(listener, gw, async {
                let _ = rx.await;
            })
            .await
        });
        Self {
            addr,
            gateway,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Lumen in front of the given engine URLs (models discovered).
    pub async fn in_front_of(urls: &[&str]) -> Self {
        Self::start(builder(urls).build().unwrap()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Triggers graceful shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Triggers shutdown without waiting, returning the serve task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for Lumen {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Background health checks off: tests about health turn them on explicitly.
pub fn no_health_checks() -> lumen_server::config::HealthConfig {
    lumen_server::config::HealthConfig {
        enabled: false,
        ..Default::default()
    }
}

/// A gateway builder with one discovered backend per URL, named `b0`, `b1`, ..., and no
/// background health checks (so a test controls exactly what reaches the engines).
pub fn builder(urls: &[&str]) -> GatewayBuilder {
    let urls: Vec<(&str, bool)> = urls.iter().map(|u| (*u, true)).collect();
    builder_native(&urls)
}

/// Like [`builder`], for engines that do not serve `/v1/messages` (as TGI or Ollama, or the
/// simulator with `messages_api: None`): Messages requests are translated to chat for them.
pub fn translating_builder(urls: &[&str]) -> GatewayBuilder {
    let urls: Vec<(&str, bool)> = urls.iter().map(|u| (*u, false)).collect();
    builder_native(&urls)
}

/// Like [`builder`], each backend (`b0`, `b1`, ...) with whether it serves `/v1/messages`.
pub fn builder_native(urls: &[(&str, bool)]) -> GatewayBuilder {
    // Round robin, so tests of failover and streaming know which backend a request meets
    // first (routing tests set their own policy).
    let mut b = Gateway::builder().health(no_health_checks()).governance(
        lumen_governance::GovernanceConfig {
            policy: lumen_governance::Policy::RoundRobin,
            ..lumen_governance::GovernanceConfig::default()
        },
    );
    for (i, (url, native)) in urls.iter().enumerate() {
        let name = format!("b{i}");
        let mut cfg = lumen_backend_vllm::VllmConfig::new(name.clone(), *url);
        cfg.native_messages = *native;
        let backend = lumen_backend_vllm::VllmBackend::new(cfg).unwrap();
        b = b.backend(name, backend, None);
    }
    b
}

/// Like [`builder`], each backend (`b0`, `b1`, ...) with whether it serves OpenAI's
/// `/v1/responses` itself and keeps its responses (`backends[].native_responses`).
pub fn builder_responses(urls: &[(&str, bool)]) -> GatewayBuilder {
    let mut b = Gateway::builder().health(no_health_checks());
    for (i, (url, native)) in urls.iter().enumerate() {
        let spec = responses_backend(&format!("b{i}"), url, *native, None);
        b = b.shared_backend(spec.name, spec.backend, spec.weight, spec.models);
    }
    b
}

/// One vLLM-kind backend named `name` at `url`, with whether it serves `/v1/responses`
/// itself, and a fixed model list (`None`: discovered), for builders and reloads.
pub fn responses_backend(
    name: &str,
    url: &str,
    native: bool,
    models: Option<Vec<String>>,
) -> lumen_governance::BackendSpec<lumen_backend::SharedBackend> {
    let mut cfg = lumen_backend_vllm::VllmConfig::new(name.to_owned(), url);
    cfg.native_responses = native;
    let backend = lumen_backend_vllm::VllmBackend::new(cfg).unwrap();
    lumen_governance::BackendSpec {
        name: name.to_owned(),
        backend: std::sync::Arc::new(backend) as lumen_backend::SharedBackend,
        weight: 1,
        models,
        key: format!("{url}|{native}"),
    }
}

/// [`builder`] with retries and circuit breakers off, for tests about one upstream answer.
pub fn single_shot(urls: &[&str]) -> GatewayBuilder {
    builder(urls)
        .retry(lumen_server::config::RetryConfig {
            max_attempts: Some(1),
            ..Default::default()
        })
        .breaker(lumen_server::config::BreakerSettings {
            consecutive_failures: 0,
            ..Default::default()
        })
}

/// A buffered HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Reads a whole response (any protocol) into a [`Reply`].
    pub async fn read(resp: http::Response<hyper::body::Incoming>) -> Self {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The SSE `data:` payloads, decoded with Lumen's own decoder.
    pub fn sse_data(&self) -> Vec<String> {
        let mut d = lumen_openai_types::sse::SseDecoder::new();
        d.push(&self.body);
        let mut out = Vec::new();
        while let Some(e) = d.next_event().unwrap() {
            out.push(String::from_utf8(e.data.to_vec()).unwrap());
        }
        assert!(!d.has_partial(), "stream ended mid-event: {}", self.text());
        out
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and buffers the whole response (bounded by a generous timeout so a
/// broken test fails instead of hanging).
pub async fn send(method: Method, url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let fut = async { Reply::read(client().request(req).await.unwrap()).await };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("request timed out")
}

/// Sends a POST and returns the response with its body still streaming.
pub async fn post_streaming(url: &str, body: &str) -> http::Response<hyper::body::Incoming> {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    client().request(req).await.unwrap()
}

pub async fn post(url: &str, body: &str) -> Reply {
    send(Method::POST, url, body, &[]).await
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, "", &[]).await
}

/// Polls `cond` until it holds, failing after `limit` (for effects of background work that
/// cannot be awaited directly, such as an engine noticing a closed connection).
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of one series (name and labels exactly as exposed) in a `/metrics` text, `None`
/// when it is not there.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// A real `redis-server` on a free loopback port, started by the test and killed on drop.
/// (`tests/run.sh` installs it when missing.)
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Self { port, child: None };
        s.spawn().await;
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/run.sh installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.pong().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn pong(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"+PONG\r\n"
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: Redis stalls (accepts bytes, answers nothing) as under a long fork or a swap
    /// storm, until [`RedisServer::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`]: Redis runs what was queued meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Log lines written while a [`capture_logs`] guard lives, as JSON.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Every line so far, parsed (`tracing-subscriber`'s JSON: `target`, `fields`, ...).
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let buf = self.0.lock().unwrap();
        String::from_utf8_lossy(&buf)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The fields of each access line.
    pub fn access(&self) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["target"] == "lumen::access")
            .map(|l| l["fields"].clone())
            .collect()
    }

    /// The fields of each line whose message contains `text`.
    pub fn with_message(&self, text: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .map(|l| l["fields"].clone())
            .collect()
    }
}

thread_local! {
    /// Where log lines written on this thread go, while a [`capture_logs`] guard lives.
    static SINK: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// The global subscriber's writer: this thread's [`Logs`], if it is capturing.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|s| {
            if let Some(logs) = &*s.borrow() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops a [`capture_logs`] capture when dropped.
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        SINK.with(|s| *s.borrow_mut() = None);
    }
}

/// Records Lumen's log lines (info and up) written on this thread while the guard lives: a
/// `#[tokio::test]` runs every task of the test (Lumen's and the simulators') on it.
///
/// One global subscriber (set once) writes each line to the capturing thread's buffer. A
/// per-thread `set_default` would race with other tests: a callsite first hit elsewhere at the
/// wrong moment is cached as uninteresting for every thread.
pub fn capture_logs() -> (Logs, LogGuard) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        lumen_gateway::Text::json_logs();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| ThreadSink)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    // Callsites registered before the subscriber existed are asked again.
    tracing::callsite::rebuild_interest_cache();
    let logs = Logs::default();
    SINK.with(|s| *s.borrow_mut() = Some(logs.clone()));
    (logs, LogGuard(()))
}

/// The `event:` names and JSON payloads of a typed SSE body (Anthropic's and the Responses
/// API's streams), in order.
pub fn sse_events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            let value = serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("event {name} is not JSON ({e}): {data}"));
            (name, value)
        })
        .collect()
}

/// One HTTP/1.1 answer as read off the wire by a raw-TCP test: status, header lines (names
/// lower-cased, values trimmed), the body with its framing removed.
#[derive(Debug)]
pub struct WireAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WireAnswer {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
