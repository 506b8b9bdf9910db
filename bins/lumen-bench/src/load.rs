//! Load patterns: closed loop, open loop at a fixed rate (latency from the scheduled send time,
//! so queueing shows), concurrent streams, and a long soak.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::Mutex;
use tokio::time::Instant;

const CHAT: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}"#;
const STREAM: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":64,"stream":true,"sim":{"itl_ms":1}}"#;

/// Latencies of successful requests, sorted, plus counts.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub lat: Vec<Duration>,
}

impl Stats {
    pub fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        self.lat[((self.lat.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
    }

    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Results of several timed turns: counts and latencies pooled, durations added.
    pub fn merge_turns(turns: Vec<Stats>) -> Stats {
        let elapsed = turns.iter().map(|t| t.elapsed).sum();
        Self::merge(turns, elapsed)
    }

    fn merge(parts: Vec<Stats>, elapsed: Duration) -> Stats {
        let mut out = Stats {
            elapsed,
            ..Stats::default()
        };
        for p in parts {
            out.ok += p.ok;
            out.errors += p.errors;
            out.lat.extend(p.lat);
        }
        out.lat.sort();
        out
    }
}

struct Conn {
    addr: SocketAddr,
    /// For streams: hyper, which frames chunked SSE bodies.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// For non-streamed calls: a raw keep-alive socket (see [`Conn::call`]).
    raw: Option<tokio::net::TcpStream>,
    wire: Vec<u8>,
    buf: bytes::BytesMut,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            sender: None,
            raw: None,
            wire: Vec::new(),
            buf: bytes::BytesMut::with_capacity(8192),
        }
    }

    async fn send(
        &mut self,
        body: &'static str,
        headers: &[(&str, &str)],
    ) -> Option<hyper::Response<Incoming>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut()?;
        sender.ready().await.ok()?;
        let mut req = http::Request::post("/v1/chat/completions")
            .header("host", "bench")
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .ok()?;
        match sender.send_request(req).await {
            Ok(r) => Some(r),
            Err(_) => {
                self.sender = None;
                None
            }
        }
    }

    /// One non-streamed request, read to the end; true for a 200.
    ///
    /// The load generator shares the 2-core machine with the engine and the gateway, so every
    /// microsecond it spends is taken from them. This path is a bare HTTP/1.1 client: the
    /// request bytes are built once, one write, reads until the head (httparse) and the
    /// `content-length` body are in, no per-connection task. Both the direct and the Lumen runs
    /// use it; its CPU per request is reported beside theirs.
    async fn call(&mut self, headers: &[(&str, &str)]) -> bool {
        match self.call_raw(headers).await {
            Some(ok) => ok,
            None => {
                self.raw = None;
                false
            }
        }
    }

    async fn call_raw(&mut self, headers: &[(&str, &str)]) -> Option<bool> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.wire.is_empty() {
            let mut w = String::from(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n",
            );
            for (k, v) in headers {
                w.push_str(&format!("{k}: {v}\r\n"));
            }
            w.push_str(&format!("content-length: {}\r\n\r\n{CHAT}", CHAT.len()));
            self.wire = w.into_bytes();
        }
        if self.raw.is_none() {
            let stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
            let _ = stream.set_nodelay(true);
            self.raw = Some(stream);
        }
        let io = self.raw.as_mut()?;
        io.write_all(&self.wire).await.ok()?;
        self.buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp.parse(&self.buf).ok()? {
                let status = resp.code?;
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse().ok())?;
                while self.buf.len() < head + len {
                    if io.read_buf(&mut self.buf).await.ok()? == 0 {
                        return None;
                    }
                }
                return Some(status == 200);
            }
            if io.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }
}

/// `conns` connections, each sending back to back, for `d`.
pub async fn closed(
    addr: SocketAddr,
    headers: &'static [(&'static str, &'static str)],
    conns: usize,
    d: Duration,
) -> Stats {
    let start = Instant::now();
    let end = start + d;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Conn::new(addr);
                let mut s = Stats::default();
                while Instant::now() < end {
                    let t = Instant::now();
                    if c.call(headers).await {
                        s.ok += 1;
                        s.lat.push(t.elapsed());
                    } else {
                        s.errors += 1;
                    }
                }
                s
            })
        })
        .collect();
    let mut parts = Vec::new();
    for t in tasks {
        parts.extend(t.await.ok());
    }
    Stats::merge(parts, start.elapsed())
}

/// `rate` requests per second to each target for `d`, each timed from when it was scheduled to
/// be sent (so queueing shows: no coordinated omission).
///
/// The targets are measured in the same window, interleaved: sends alternate between them half a
/// period apart. Run one after the other, the two would see different machine conditions (other
/// tenants, frequency, the kernel's mood) and their difference, which is the figure that
/// matters, would carry that noise. (Streams are not interleaved: switching between targets
/// synchronises all streams into bursts, which distorts time to first byte more than drift.)
pub async fn open(
    targets: [(SocketAddr, &'static [(&'static str, &'static str)]); 2],
    rate: u64,
    d: Duration,
) -> [Stats; 2] {
    let mut senders = Vec::new();
    let mut pools = Vec::new();
    for (addr, headers) in targets {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        senders.push(tx);
        let rx = Arc::new(Mutex::new(rx));
        let workers: Vec<_> = (0..64)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut c = Conn::new(addr);
                    let mut s = Stats::default();
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(scheduled) = next else {
                            return s;
                        };
                        if c.call(headers).await {
                            s.ok += 1;
                            s.lat.push(scheduled.elapsed());
                        } else {
                            s.errors += 1;
                        }
                    }
                })
            })
            .collect();
        pools.push(workers);
    }
    let start = Instant::now();
    let n = rate * d.as_secs();
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    // A dedicated OS thread paces the sends: nanosleep is accurate to tens of microseconds,
    // where the async timer wheel rounds to a millisecond and would inflate every latency.
    let pacer = std::thread::spawn(move || {
        for i in 0..n * 2 {
            let at = start + gap * (i / 2) as u32 + (gap / 2) * (i % 2) as u32;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if senders[(i % 2) as usize].send(at).is_err() {
                return;
            }
        }
    });
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    let elapsed = start.elapsed();
    let mut out = [Stats::default(), Stats::default()];
    for (slot, workers) in out.iter_mut().zip(pools) {
        let mut parts = Vec::new();
        for w in workers {
            parts.extend(w.await.ok());
        }
        *slot = Stats::merge(parts, elapsed);
    }
    out
}

/// Stream results: time to first byte, total time, events per stream.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub ttfb: Stats,
    pub total: Stats,
    pub events: Vec<u64>,
}

/// `n` concurrent streams of 64 tokens at 1 ms between tokens, repeated for `d`.
pub async fn streams(
    addr: SocketAddr,
    headers: &'static [(&'static str, &'static str)],
    n: usize,
    d: Duration,
) -> StreamStats {
    let start = Instant::now();
    let end = start + d;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Conn::new(addr);
                let (mut ttfb, mut total, mut events) =
                    (Stats::default(), Stats::default(), Vec::new());
                while Instant::now() < end {
                    let t = Instant::now();
                    let Some(resp) = c.send(STREAM, headers).await else {
                        ttfb.errors += 1;
                        continue;
                    };
                    let mut body = resp.into_body();
                    let mut first = None;
                    let mut count = 0u64;
                    while let Some(frame) = body.frame().await {
                        let Ok(frame) = frame else { break };
                        if let Some(data) = frame.data_ref() {
                            if first.is_none() && !data.is_empty() {
                                first = Some(t.elapsed());
                            }
                            count += data.windows(6).filter(|w| w == b"data: ").count() as u64;
                        }
                    }
                    if let Some(f) = first {
                        ttfb.ok += 1;
                        ttfb.lat.push(f);
                        total.ok += 1;
                        total.lat.push(t.elapsed());
                        events.push(count);
                    }
                }
                (ttfb, total, events)
            })
        })
        .collect();
    let (mut ttfb, mut total, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        if let Ok((a, b, e)) = t.await {
            ttfb.push(a);
            total.push(b);
            events.extend(e);
        }
    }
    let elapsed = start.elapsed();
    StreamStats {
        ttfb: Stats::merge(ttfb, elapsed),
        total: Stats::merge(total, elapsed),
        events,
    }
}

/// `n` streams, each on a new connection of its own, all sent at once: each one's time to
/// first byte from the burst's start (so the listen queue and SYN retransmits count). A stream
/// that is refused, not a 200, or cut before its end is an error.
pub async fn burst(addr: SocketAddr, body: &'static str, n: usize) -> Stats {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Conn::new(addr);
                let resp = c.send(body, &[]).await?;
                if resp.status() != 200 {
                    return None;
                }
                let mut body = resp.into_body();
                let mut first = None;
                let mut done = false;
                while let Some(frame) = body.frame().await {
                    let frame = frame.ok()?;
                    if let Some(data) = frame.data_ref() {
                        if first.is_none() && !data.is_empty() {
                            first = Some(start.elapsed());
                        }
                        done |= data.windows(12).any(|w| w == b"data: [DONE]");
                    }
                }
                first.filter(|_| done)
            })
        })
        .collect();
    let mut out = Stats::default();
    for t in tasks {
        match t.await {
            Ok(Some(f)) => {
                out.ok += 1;
                out.lat.push(f);
            }
            _ => out.errors += 1,
        }
    }
    out.elapsed = start.elapsed();
    out.lat.sort();
    out
}

/// `total` requests through `conns` connections, sampling RSS every tenth of the way.
pub async fn soak(
    addr: SocketAddr,
    headers: &'static [(&'static str, &'static str)],
    conns: usize,
    total: u64,
    rss: impl Fn() -> u64,
) -> Vec<(u64, u64)> {
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut c = Conn::new(addr);
                while done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    c.call(headers).await;
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut next = total / 10;
    while done.load(std::sync::atomic::Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = done.load(std::sync::atomic::Ordering::Relaxed).min(total);
        if n >= next {
            samples.push((n, rss()));
            next += total / 10;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    samples.push((total, rss()));
    samples
}
