use super::*;

#[test]
fn base_url_is_normalised() {
    for (input, want) in [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("https://gpu.internal/vllm/v1/", "https://gpu.internal/vllm"),
    ] {
        assert_eq!(normalize_base("b", input).unwrap(), want);
    }
    for bad in [
        "127.0.0.1:8000",
        "ftp://x",
        "http://",
        "http://x/?a=1",
        "not a url",
    ] {
        assert!(normalize_base("b", bad).is_err(), "{bad}");
    }
}

#[test]
fn api_key_is_redacted_in_debug() {
    let mut cfg = VllmConfig::new("b", "http://127.0.0.1:1");
    cfg.api_key = Some("sk-secret".into());
    assert!(!format!("{cfg:?}").contains("sk-secret"));
}

#[tokio::test]
async fn refused_connection_is_a_retryable_connect_error() {
    // Bind then drop a listener so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = VllmBackend::new(VllmConfig::new("b", format!("http://127.0.0.1:{port}"))).unwrap();
    let err = b.models(&RequestContext::default()).await.unwrap_err();
    assert!(matches!(err, BackendError::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(!b.health().await.is_healthy());
}

/// An engine over raw TCP that answers every request with `status` and `body`, and records
/// each request line.
async fn fixed_engine(
    status: &'static str,
    body: &'static str,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                log.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_owned());
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn metrics_is_the_engines_prometheus_text() {
    let text = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3.0\n";
    let (url, seen) = fixed_engine("200 OK", text).await;
    let b = VllmBackend::new(VllmConfig::new("b", format!("{url}/v1"))).unwrap();
    let got = b.metrics(&RequestContext::default()).await.unwrap();
    assert_eq!(got.as_deref(), Some(text));
    assert_eq!(seen.lock().unwrap().as_slice(), ["GET /metrics HTTP/1.1"]);
}

#[tokio::test]
async fn metrics_an_engine_does_not_serve_is_an_error() {
    // llama.cpp without `--metrics` answers 501; Ollama has no such path (404).
    let (url, _) = fixed_engine("501 Not Implemented", "").await;
    let b = VllmBackend::new(VllmConfig::new("b", url)).unwrap();
    let err = b.metrics(&RequestContext::default()).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Upstream { status: 501, .. }),
        "{err:?}"
    );
}

/// Anthropic's event stream ends at `message_stop` (no `[DONE]`); each event keeps its bytes.
#[tokio::test]
async fn a_native_messages_stream_ends_at_message_stop() {
    use futures::StreamExt;
    let events = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":2}}}\n\nevent: message_stop\ndata: {\"type\": \"message_stop\"}\n\n";
    let (url, seen) = fixed_engine("200 OK", events).await;
    let b = VllmBackend::new(VllmConfig::new("b", url)).unwrap();
    assert!(lumen_backend::Backend::native_messages(&b));
    let body = JsonBody::parse(r#"{"model":"m","stream":true}"#.into()).unwrap();
    let stream =
        lumen_backend::Backend::call_stream(&b, "/v1/messages", body, &RequestContext::default())
            .await
            .unwrap();
    let got: Vec<_> = stream.collect().await;
    assert_eq!(got.len(), 2, "{got:?}");
    let last = got[1].as_ref().unwrap();
    assert_eq!(
        last.raw().map(|r| r.as_ref()),
        Some(&b"{\"type\": \"message_stop\"}"[..])
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["POST /v1/messages HTTP/1.1"]
    );
}

/// A body that ends before `message_stop` was cut short; an in-band `error` event is the
/// engine's failure.
#[tokio::test]
async fn a_native_messages_stream_cut_or_failed_is_an_error() {
    use futures::StreamExt;
    for events in [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n",
    ] {
        let (url, _) = fixed_engine("200 OK", events).await;
        let b = VllmBackend::new(VllmConfig::new("b", url)).unwrap();
        let body = JsonBody::parse(r#"{"model":"m"}"#.into()).unwrap();
        let stream = lumen_backend::Backend::call_stream(
            &b,
            "/v1/messages",
            body,
            &RequestContext::default(),
        )
        .await
        .unwrap();
        let got: Vec<_> = stream.collect().await;
        let Some(Err(BackendError::StreamInterrupted { message, .. })) = got.last() else {
            panic!("{got:?}");
        };
        assert!(
            message.contains("message_stop") || message.contains("busy"),
            "{message}"
        );
    }
}

/// A native engine's error status is the usual typed error, with its Anthropic-shaped message.
#[tokio::test]
async fn a_native_messages_error_status_is_typed() {
    let (url, _) = fixed_engine(
        "529 Overloaded",
        r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
    )
    .await;
    let b = VllmBackend::new(VllmConfig::new("b", url)).unwrap();
    let body = JsonBody::parse(r#"{"model":"m"}"#.into()).unwrap();
    let err =
        lumen_backend::Backend::call_body(&b, "/v1/messages", body, &RequestContext::default())
            .await
            .unwrap_err();
    let BackendError::Upstream { status, error, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*status, error.message.as_str()), (529, "busy"));
}

/// A Responses stream ends at its terminal event (no `[DONE]`); a body that ends before one
/// was cut short. Off by default: no engine kind keeps responses unless told to.
#[tokio::test]
async fn a_native_responses_stream_ends_at_its_terminal_event() {
    use futures::StreamExt;
    let done = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":1}\n\n";
    let (url, seen) = fixed_engine("200 OK", done).await;
    let b = VllmBackend::new(VllmConfig::new("b", url)).unwrap();
    assert!(!lumen_backend::Backend::native_responses(&b));
    let body = JsonBody::parse(r#"{"model":"m","stream":true}"#.into()).unwrap();
    let stream =
        lumen_backend::Backend::call_stream(&b, "/v1/responses", body, &RequestContext::default())
            .await
            .unwrap();
    let got: Vec<_> = stream.collect().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["POST /v1/responses HTTP/1.1"]
    );
    let cut =
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n";
    let (url, _) = fixed_engine("200 OK", cut).await;
    let b = VllmBackend::new(VllmConfig::new("b", url)).unwrap();
    let body = JsonBody::parse(r#"{"model":"m","stream":true}"#.into()).unwrap();
    let stream =
        lumen_backend::Backend::call_stream(&b, "/v1/responses", body, &RequestContext::default())
            .await
            .unwrap();
    let got: Vec<_> = stream.collect().await;
    let Some(Err(BackendError::StreamInterrupted { message, .. })) = got.last() else {
        panic!("{got:?}");
    };
    assert!(message.contains("response.completed"), "{message}");
}

/// A stored response's calls go to the engine path with the method asked, and its answer (or
/// its error status) comes back as the engine sent it.
#[tokio::test]
async fn call_at_sends_the_method_and_path() {
    let (url, seen) = fixed_engine("200 OK", r#"{"id":"resp_1","deleted":true}"#).await;
    let b = VllmBackend::new(VllmConfig::new("b", url)).unwrap();
    let reply = lumen_backend::Backend::call_at(
        &b,
        lumen_backend::EngineMethod::Delete,
        "/v1/responses/resp_1".to_owned(),
        &RequestContext::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.to_json().unwrap().as_ref(),
        br#"{"id":"resp_1","deleted":true}"#
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["DELETE /v1/responses/resp_1 HTTP/1.1"]
    );
    let (url, _) = fixed_engine("404 Not Found", r#"{"error":{"message":"gone"}}"#).await;
    let b = VllmBackend::new(VllmConfig::new("b", url)).unwrap();
    let err = lumen_backend::Backend::call_at(
        &b,
        lumen_backend::EngineMethod::Get,
        "/v1/responses/resp_1".to_owned(),
        &RequestContext::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BackendError::Upstream { status: 404, .. }),
        "{err:?}"
    );
}
