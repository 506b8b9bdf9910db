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
