//! Every client-visible error is OpenAI-shaped JSON with the right status: golden checks.

use std::time::Duration;

use lumen_tests::*;
use serde_json::{Value, json};

const CHAT: &str = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}]}"#;

fn golden(r: &Reply, status: u16, want: Value) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.header("x-request-id").is_some(),
        "every response carries the request id"
    );
    assert_eq!(r.json(), json!({ "error": want }));
}

/// One engine, no retries and no breaker: each test sees exactly one upstream answer mapped.
async fn lumen_with_sim() -> (Lumen, lumen_sim::Simulator) {
    let (url, sim) = sim(&["m1"]).await;
    (
        Lumen::start(single_shot(&[&url]).build().unwrap()).await,
        sim,
    )
}

#[tokio::test]
async fn bad_json_is_400_without_param() {
    let (lumen, _) = lumen_with_sim().await;
    let r = post(&lumen.url("/v1/chat/completions"), "{\"model\": ").await;
    assert_eq!(r.status, 400);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], Value::Null);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("We could not parse the JSON body")
    );
}

#[tokio::test]
async fn missing_and_invalid_fields_are_400_with_param() {
    let (lumen, sim) = lumen_with_sim().await;
    let r = post(&lumen.url("/v1/chat/completions"), r#"{"model":"m1"}"#).await;
    golden(
        &r,
        400,
        json!({
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error", "param": "messages", "code": "missing_required_parameter"
        }),
    );
    let r = post(
        &lumen.url("/v1/chat/completions"),
        r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"temperature":5}"#,
    )
    .await;
    golden(
        &r,
        400,
        json!({
            "message": "5 is not in the range [0, 2] - 'temperature'",
            "type": "invalid_request_error", "param": "temperature", "code": null
        }),
    );
    let r = post(
        &lumen.url("/v1/chat/completions"),
        r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"max_tokens":"many"}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    let r = post(&lumen.url("/v1/embeddings"), r#"{"model":"m1"}"#).await;
    assert_eq!(r.json()["error"]["param"], "input");
    assert_eq!(
        sim.generation_count(),
        0,
        "invalid requests never reach the engine"
    );
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let (lumen, _) = lumen_with_sim().await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    golden(
        &r,
        404,
        json!({
            "message": "The model `gpt-9` does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": "model", "code": "model_not_found"
        }),
    );
    let r = get(&lumen.url("/v1/models/gpt-9")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let (lumen, _) = lumen_with_sim().await;
    let r = post(&lumen.url("/v1/chat/complete"), CHAT).await;
    golden(
        &r,
        404,
        json!({
            "message": "Invalid URL (POST /v1/chat/complete)",
            "type": "invalid_request_error", "param": null, "code": "unknown_url"
        }),
    );
    let r = get(&lumen.url("/v1/chat/completions")).await;
    golden(
        &r,
        405,
        json!({
            "message": "Method GET is not allowed for /v1/chat/completions; use POST.",
            "type": "invalid_request_error", "param": null, "code": "method_not_allowed"
        }),
    );
    assert_eq!(r.header("allow"), Some("POST"));
}

/// A request to no endpoint is logged with what it asked for (Claude Code's `HEAD /`, a wrong
/// base URL), its path cut short, and never becomes a metric label.
#[tokio::test]
async fn an_unknown_route_is_named_in_the_access_line_only() {
    let (lumen, _) = lumen_with_sim().await;
    let (logs, _guard) = capture_logs();
    let long = format!("/v2/{}", "x".repeat(1_000));
    assert_eq!(
        send(http::Method::HEAD, &lumen.url("/"), "", &[])
            .await
            .status,
        404
    );
    assert_eq!(
        post(&lumen.url("/v1/chat/complete"), CHAT).await.status,
        404
    );
    assert_eq!(get(&lumen.url(&long)).await.status, 404);
    // A request id with spaces and quotes is logged as sent: JSON escapes it once.
    let odd = r#"a "b" c\d"#;
    let r = send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        CHAT,
        &[("x-request-id", odd)],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-request-id")),
        (200, Some(odd))
    );
    let routes: Vec<(Value, Value)> = logs
        .access()
        .iter()
        .map(|l| (l["method"].clone(), l["path"].clone()))
        .collect();
    assert_eq!(
        logs.access().last().map(|l| l["id"].clone()),
        Some(json!(odd)),
        "not quoted a second time"
    );
    let cut = format!("{}…", &long[..256]);
    assert_eq!(
        routes,
        [
            (json!("HEAD"), json!("/")),
            (json!("POST"), json!("/v1/chat/complete")),
            (json!("GET"), json!(cut)),
            (Value::Null, Value::Null)
        ],
        "a served request's line has neither"
    );
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(!metrics.contains("complete\""), "no path in a label");
    assert!(!metrics.contains("xxxx"), "no path in a label");
}

#[tokio::test]
async fn body_over_the_limit_is_413_declared_or_not() {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::start(builder(&[&url]).max_body_bytes(1024).build().unwrap()).await;
    let big = format!(
        r#"{{"model":"m1","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let want = json!({
        "message": "Request body is larger than the 1024-byte limit.",
        "type": "invalid_request_error", "param": null, "code": "request_too_large"
    });
    golden(
        &post(&lumen.url("/v1/chat/completions"), &big).await,
        413,
        want.clone(),
    );

    // Chunked, no content-length, and far more than the limit: refused without reading it all.
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>(4);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let req = http::Request::post(lumen.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let feeder = tokio::spawn(async move {
        let mut sent = 0usize;
        for _ in 0..1_000 {
            let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
            if tx.send(Ok(http_body::Frame::data(chunk))).await.is_err() {
                break;
            }
            sent += 64 * 1024;
        }
        sent
    });
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 413);
    let sent = feeder.await.unwrap();
    assert!(
        sent < 64 * 1024 * 1_000,
        "the server stopped reading early ({sent} bytes sent)"
    );
    assert_eq!(sim.generation_count(), 0);
}

fn tokio_stream_from<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn engine_unreachable_is_502() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = lumen_server::Gateway::builder()
        .health(no_health_checks())
        .backend(
            "down",
            lumen_backend_vllm::VllmBackend::new(lumen_backend_vllm::VllmConfig::new(
                "down",
                format!("http://127.0.0.1:{port}"),
            ))
            .unwrap(),
            Some(vec!["m1".into()]),
        )
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    golden(
        &r,
        502,
        json!({
            "message": "The inference backend could not be reached.",
            "type": "server_error", "param": null, "code": "upstream_unreachable"
        }),
    );
    assert!(
        !r.text().contains("127.0.0.1"),
        "backend addresses are not echoed"
    );
}

#[tokio::test]
async fn engine_5xx_maps_to_502_503_504() {
    let (lumen, _) = lumen_with_sim().await;
    let body = |status: u16| {
        format!(
            r#"{{"model":"m1","messages":[{{"role":"user","content":"x"}}],"sim":{{"status":{status}}}}}"#
        )
    };
    golden(
        &post(&lumen.url("/v1/chat/completions"), &body(500)).await,
        502,
        json!({
            "message": "The inference backend failed (HTTP 500).",
            "type": "server_error", "param": null, "code": "upstream_error"
        }),
    );
    let r = post(&lumen.url("/v1/chat/completions"), &body(503)).await;
    golden(
        &r,
        503,
        json!({
            "message": "The inference backend is overloaded or not ready.",
            "type": "server_error", "param": null, "code": "upstream_unavailable"
        }),
    );
    assert_eq!(
        r.header("retry-after"),
        Some("1"),
        "the engine's Retry-After is passed on"
    );
    // 529, an upstream's "overloaded", is the 503 it means (after its retries).
    golden(
        &post(&lumen.url("/v1/chat/completions"), &body(529)).await,
        503,
        json!({
            "message": "The inference backend is overloaded or not ready.",
            "type": "server_error", "param": null, "code": "upstream_unavailable"
        }),
    );
    golden(
        &post(&lumen.url("/v1/chat/completions"), &body(504)).await,
        504,
        json!({
            "message": "The inference backend timed out.",
            "type": "server_error", "param": null, "code": "timeout"
        }),
    );
    let r = post(&lumen.url("/v1/chat/completions"), &body(429)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn engine_4xx_passes_its_message_in_both_vllm_shapes() {
    let (lumen, _) = lumen_with_sim().await;
    for flat in [false, true] {
        let body = format!(
            r#"{{"model":"m1","messages":[{{"role":"user","content":"x"}}],"max_tokens":999999,"sim":{{"flat_error":{flat}}}}}"#
        );
        golden(
            &post(&lumen.url("/v1/chat/completions"), &body).await,
            400,
            json!({
                "message": "This model's maximum context length is 8192 tokens. However, you requested 999999 tokens.",
                "type": "invalid_request_error", "param": null, "code": null
            }),
        );
    }
}

#[tokio::test]
async fn engine_rejecting_the_gateway_key_is_502_not_401() {
    let (url, _sim) = sim_with(lumen_sim::SimConfig {
        models: vec!["m1".into()],
        api_key: Some("right".into()),
        ..Default::default()
    })
    .await;
    let gw = lumen_server::Gateway::builder()
        .health(no_health_checks())
        .backend(
            "b",
            lumen_backend_vllm::VllmBackend::new(lumen_backend_vllm::VllmConfig::new("b", &url))
                .unwrap(),
            Some(vec!["m1".into()]),
        )
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    golden(
        &post(&lumen.url("/v1/chat/completions"), CHAT).await,
        502,
        json!({
            "message": "The inference backend rejected the gateway's credentials.",
            "type": "server_error", "param": null, "code": "upstream_auth"
        }),
    );
}

#[tokio::test]
async fn engine_hang_is_504_under_the_total_deadline() {
    let (url, _sim) = sim(&["m1"]).await;
    let gw = builder(&[&url])
        .timeouts(lumen_resilience::Timeouts {
            first_byte: None,
            idle: None,
            total: Some(Duration::from_millis(300)),
        })
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"sim":{"hang":true}}"#,
    )
    .await;
    golden(
        &r,
        504,
        json!({
            "message": "Timed out waiting for the response.",
            "type": "server_error", "param": null, "code": "timeout"
        }),
    );
}

/// A body must be exactly one JSON value: trailing bytes after it (`{...} xyz`, two objects
/// back to back) are a client mistake, not something to forward with the tail cut off.
#[tokio::test]
async fn trailing_data_after_the_body_is_400() {
    let (lumen, sim) = lumen_with_sim().await;
    for body in [
        format!("{CHAT} xyz"),
        format!("{CHAT}{CHAT}"),
        format!("{CHAT} {{}}"),
        format!("{CHAT}]"),
    ] {
        let r = post(&lumen.url("/v1/chat/completions"), &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        assert_eq!(e["param"], Value::Null, "{body}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.starts_with("We could not parse the JSON body"),
            "{body}: {message}"
        );
    }
    for (path, body) in [
        (
            "/v1/completions",
            r#"{"model":"m1","prompt":"hi"} {"model":"m1","prompt":"hi"}"#,
        ),
        ("/v1/embeddings", r#"{"model":"m1","input":"hi"} 1"#),
    ] {
        let r = post(&lumen.url(path), body).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    // Trailing whitespace is still fine.
    let r = post(&lumen.url("/v1/chat/completions"), &format!("{CHAT} \n")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sim.generation_count(), 1, "no bad body reached the engine");
}
