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
