//! Liveness and graceful shutdown.

use std::time::Duration;

use http_body_util::BodyExt;
use lumen_tests::*;

#[tokio::test]
async fn health_is_cheap_and_touches_no_engine() {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = send(
        http::Method::GET,
        &lumen.url("/health"),
        "",
        &[("x-request-id", "liveness-1")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("liveness-1"));
    assert!(
        sim.records()
            .iter()
            .all(|rec| rec.header("x-request-id") != Some("liveness-1")),
        "liveness never reaches an engine"
    );
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish_and_refuses_new_connections() {
    let (url, _sim) = sim(&["m1"]).await;
    let mut lumen = Lumen::in_front_of(&[&url]).await;
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"max_tokens":20,"stream":true,"sim":{"itl_ms":10}}"#;
    let resp = post_streaming(&lumen.url("/v1/chat/completions"), body).await;
    let mut stream = resp.into_body();
    let first = stream.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());

    let serving = lumen.begin_shutdown();
    let rest = tokio::time::timeout(Duration::from_secs(30), stream.collect())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(rest.to_bytes().to_vec()).unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the stream ran to completion: {text}"
    );
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(lumen.addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn shutdown_grace_bounds_the_drain() {
    let (url, _sim) = sim(&["m1"]).await;
    let gw = builder(&[&url])
        .shutdown_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut lumen = Lumen::start(gw).await;
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"max_tokens":1000,"stream":true,"sim":{"itl_ms":50}}"#;
    let resp = post_streaming(&lumen.url("/v1/chat/completions"), body).await;
    let mut stream = resp.into_body();
    stream.frame().await.unwrap().unwrap();
    let serving = lumen.begin_shutdown();
    // A 50-second stream cannot finish; serve must still return soon after the grace period.
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A stream whose client reads nothing while Lumen shuts down cannot be sent its end: it is
/// cut once the shutdown grace and the end's grace are over, and its access line says
/// `shutdown`, not that the client left.
#[tokio::test]
async fn a_stream_cut_by_shutdown_is_logged_as_shutdown() {
    let (logs, _guard) = capture_logs();
    let engine = endless_engine().await;
    let gw = builder(&[&engine.url])
        .shutdown_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut lumen = Lumen::start(gw).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut client = sock.connect(lumen.addr).await.unwrap();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: l\r\nx-request-id: stalled-at-shutdown\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
        .await
        .unwrap();
    // The engine is held back: Lumen's writes to the client wait on a full socket.
    let written = engine.written.clone();
    eventually(Duration::from_secs(10), || {
        written.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let serving = lumen.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let lines: Vec<_> = logs
        .access()
        .into_iter()
        .filter(|l| l["id"] == "stalled-at-shutdown")
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "shutdown", "{lines:?}");
    drop(client);
}

/// A burst of connections larger than tokio's default backlog (1,024) all complete their
/// handshake while nothing accepts them: they wait in the kernel's queue of `server.backlog`
/// (capped by `net.core.somaxconn`), not in SYN retransmits a second later.
#[tokio::test]
async fn a_burst_of_connections_waits_in_the_listen_backlog() {
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(128);
    let listener = lumen_server::bind("127.0.0.1:0".parse().unwrap(), 4_096).unwrap();
    let addr = listener.local_addr().unwrap();
    // More than tokio's default when the kernel allows it; never more than the kernel keeps.
    let burst = somaxconn.min(2_000).saturating_sub(8).max(1);
    let connects = (0..burst).map(|_| tokio::net::TcpStream::connect(addr));
    let all = futures::future::join_all(connects);
    // No retransmit: a SYN that found the queue full would wait a second before its retry.
    let done = tokio::time::timeout(Duration::from_millis(900), all)
        .await
        .expect("a connection waited for a SYN retransmit");
    assert!(
        done.iter().all(Result::is_ok),
        "every connection was queued"
    );
    assert_eq!(done.len(), burst);
    drop(listener);
}
