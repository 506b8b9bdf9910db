use super::*;

#[test]
fn statuses_map_to_anthropic_types_and_back() {
    let cases = [
        (400, "invalid_request_error", 400),
        (401, "authentication_error", 401),
        (403, "permission_error", 403),
        (404, "not_found_error", 404),
        (413, "request_too_large", 413),
        (422, "invalid_request_error", 400),
        (429, "rate_limit_error", 429),
        (500, "api_error", 500),
        (502, "api_error", 500),
        (503, "overloaded_error", 529),
        (529, "overloaded_error", 529),
        (504, "timeout_error", 504),
    ];
    for (status, kind, back) in cases {
        let t = ErrorType::from_status(status);
        assert_eq!(t.as_str(), kind, "{status}");
        assert_eq!(t.status(), back, "{status}");
        // `as_str` and serde agree.
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{kind}\""));
    }
}

#[test]
fn the_body_has_anthropics_shape() {
    let body = ErrorBody::for_status(429, "slow down");
    assert_eq!(
        body.to_json(),
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
    );
    let back: ErrorBody = serde_json::from_str(&body.to_json()).unwrap();
    assert_eq!(back, body);
    // Another object's `type` is not an error body.
    assert!(
        serde_json::from_str::<ErrorBody>(
            r#"{"type":"message","error":{"type":"api_error","message":""}}"#
        )
        .is_err()
    );
}

#[test]
fn request_errors_are_400_and_name_the_field() {
    let e = RequestError::unsupported("messages[1].content[0]", "a document block");
    assert_eq!(e.status(), 400);
    assert_eq!(e.field(), Some("messages[1].content[0]"));
    assert_eq!(
        e.to_body().to_json(),
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages[1].content[0]: a document block is not supported by this model's engine"}}"#
    );
}
