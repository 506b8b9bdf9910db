//! Shared by the benchmarks: keep-alive clients that measure latencies (sequential) and
//! throughput (a closed loop over several connections).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

/// One keep-alive HTTP/1.1 connection to `addr`, `TCP_NODELAY` on.
async fn connect(addr: std::net::SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// One POST of `body` on `sender`, its answer read whole; panics on anything but a 200.
async fn post<K: AsRef<str>, V: AsRef<str>>(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    body: &'static str,
    headers: &[(K, V)],
) {
    let mut req = http::Request::post(path)
        .header("host", "bench")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(k.as_ref(), v.as_ref());
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

/// `n` sequential POSTs of `body` to `path` on one keep-alive connection; sorted latencies.
pub async fn latencies(
    addr: std::net::SocketAddr,
    path: &str,
    body: &'static str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<Duration> {
    let mut sender = connect(addr).await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        post(&mut sender, path, body, headers).await;
        out.push(start.elapsed());
    }
    out.sort();
    out
}

pub fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

/// Closed loop: `conns` keep-alive connections, each sending the next POST as soon as the last
/// answer is read, for `secs` seconds; answers per second over all of them.
#[allow(
    dead_code,
    reason = "not every bench that includes this file runs a closed loop"
)]
pub async fn throughput(
    addr: std::net::SocketAddr,
    path: &'static str,
    body: &'static str,
    headers: &[(&str, &str)],
    conns: usize,
    secs: u64,
) -> f64 {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let end = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let headers = headers.clone();
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut done = 0u64;
                while Instant::now() < end {
                    post(&mut sender, path, body, &headers).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs as f64
}
