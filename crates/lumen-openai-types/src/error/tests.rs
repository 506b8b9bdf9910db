use super::*;

#[test]
fn parses_openai_shape_with_string_code() {
    let e = ErrorObject::from_upstream(
        br#"{"error":{"message":"bad","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#,
    )
    .unwrap();
    assert_eq!(e.message, "bad");
    assert_eq!(e.kind, "invalid_request_error");
    assert_eq!(e.param.as_deref(), Some("model"));
    assert_eq!(e.code.as_deref(), Some("model_not_found"));
}

#[test]
fn parses_nested_vllm_shape_with_integer_code() {
    let e = ErrorObject::from_upstream(
        br#"{"error":{"message":"max_tokens too large","type":"BadRequestError","param":null,"code":400}}"#,
    )
    .unwrap();
    assert_eq!(e.kind, "BadRequestError");
    assert_eq!(e.param, None);
    assert_eq!(e.code.as_deref(), Some("400"));
}

#[test]
fn parses_flat_vllm_shape() {
    let e = ErrorObject::from_upstream(
        br#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#,
    )
    .unwrap();
    assert_eq!(e.message, "The model `x` does not exist.");
    assert_eq!(e.kind, "NotFoundError");
    assert_eq!(e.code.as_deref(), Some("404"));
}

#[test]
fn parses_tgi_and_ollama_and_fastapi_shapes() {
    let tgi = ErrorObject::from_upstream(
        br#"{"error":"Input validation error","error_type":"validation"}"#,
    )
    .unwrap();
    assert_eq!(
        (tgi.message.as_str(), tgi.kind.as_str()),
        ("Input validation error", "validation")
    );
    let ollama = ErrorObject::from_upstream(br#"{"error":"model \"x\" not found"}"#).unwrap();
    assert_eq!(ollama.message, "model \"x\" not found");
    let fastapi =
        ErrorObject::from_upstream(br#"{"detail":[{"loc":["body"],"msg":"field required"}]}"#)
            .unwrap();
    assert_eq!(fastapi.message, "field required");
    let detail = ErrorObject::from_upstream(br#"{"detail":"Not Found"}"#).unwrap();
    assert_eq!(detail.message, "Not Found");
}

#[test]
fn rejects_non_errors() {
    assert_eq!(ErrorObject::from_upstream(b"<html>502</html>"), None);
    assert_eq!(ErrorObject::from_upstream(br#"{"ok":true}"#), None);
    assert_eq!(ErrorObject::from_upstream(br#"[1,2]"#), None);
}

#[test]
fn serialises_param_and_code_as_null() {
    let body = ErrorObject::new("m", "server_error").into_body();
    assert_eq!(
        serde_json::to_string(&body).unwrap(),
        r#"{"error":{"message":"m","type":"server_error","param":null,"code":null}}"#
    );
}
