use super::*;

#[test]
fn a_call_reads_stream_and_budget_and_keeps_the_body() {
    let body =
        r#"{"model":"m","input":"hi","stream":true,"max_output_tokens":7,"background":true}"#;
    let call = ResponsesCall::read(Bytes::from_static(body.as_bytes())).unwrap();
    assert!(call.stream);
    assert_eq!(call.max_output_tokens, Some(7));
    assert_eq!(call.model(), "m");
    assert!(call.pin.is_none());
    assert_eq!(call.body.to_bytes().as_ref(), body.as_bytes());
    let plain = ResponsesCall::read(Bytes::from_static(br#"{"model":"m","input":"x"}"#)).unwrap();
    assert!(!plain.stream);
    // No model is the blank model (the default one), as everywhere.
    let blank = ResponsesCall::read(Bytes::from_static(br#"{"input":"x"}"#)).unwrap();
    assert_eq!(blank.model(), "");
    for bad in [
        r#"{"model":"m","stream":"yes"}"#,
        r#"{"model":"m","max_output_tokens":-1}"#,
        "[]",
        // vLLM would make it the response's id: another key's id could be named.
        r#"{"model":"m","input":"x","request_id":"resp_of_another_key"}"#,
        r#"{"model":"m","input":"x","request_\u0069d":"resp_of_another_key"}"#,
    ] {
        assert!(
            ResponsesCall::read(Bytes::copy_from_slice(bad.as_bytes())).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn a_pinned_call_needs_its_backend() {
    assert!(matches!(Need::responses(None), Need::NativeResponses));
    assert!(matches!(Need::responses(Some("b1")), Need::Backend("b1")));
}
