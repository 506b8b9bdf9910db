use super::*;

const ANSWER: &str = r#"{"id":"resp_1","object":"response","model":"engine-m","status":"completed","output":[],"usage":{"input_tokens":12,"output_tokens":5,"total_tokens":17}}"#;

#[test]
fn an_answer_is_read_for_its_id_model_and_usage_and_kept_byte_for_byte() {
    let a = NativeResponse::answer(ANSWER.as_bytes()).unwrap();
    assert_eq!(
        (a.kind(), a.id(), a.model(), a.tokens()),
        ("response", "resp_1", "engine-m", Some((12, 5)))
    );
    assert!(a.is_usage_only());
    assert_eq!(a.json(), ANSWER);
    let mut shown = a.clone();
    "alias".clone_into(shown.model_mut());
    let v: serde_json::Value = serde_json::from_str(&shown.json()).unwrap();
    assert_eq!(v["model"], "alias");
    assert_eq!(v["usage"]["input_tokens"], 12);
}

#[test]
fn a_body_that_is_not_a_response_is_refused() {
    for bad in [
        r#"{"object":"chat.completion"}"#,
        "[]",
        "not json",
        r#"{"type":"message"}"#,
    ] {
        assert!(NativeResponse::answer(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn events_are_read_for_usage_only_at_the_end_and_for_their_text() {
    let created = br#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_9","model":"engine-m","status":"in_progress","usage":null}}"#;
    let e = NativeResponse::event(created).unwrap();
    assert_eq!(
        (e.kind(), e.id(), e.sequence(), e.tokens()),
        ("response.created", "resp_9", Some(0), None)
    );
    assert!(!e.is_usage_only());
    let delta = br#"{"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"h\u00e9llo"}"#;
    let d = NativeResponse::event(delta).unwrap();
    assert_eq!((d.output_bytes(), d.id()), (Some(6), ""));
    let mut aliased = d.clone();
    "alias".clone_into(aliased.model_mut());
    assert_eq!(aliased.json().as_bytes(), delta, "no response object: kept");
    for end in [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ] {
        let data = format!(
            r#"{{"type":"{end}","sequence_number":9,"response":{{"id":"resp_9","model":"engine-m","usage":{{"input_tokens":7,"output_tokens":4,"total_tokens":11}}}}}}"#
        );
        let e = NativeResponse::event(data.as_bytes()).unwrap();
        assert_eq!(e.tokens(), Some((7, 4)), "{end}");
        assert!(e.is_usage_only());
        let mut shown = e.clone();
        "alias".clone_into(shown.model_mut());
        let v: serde_json::Value = serde_json::from_str(&shown.json()).unwrap();
        assert_eq!(v["response"]["model"], "alias");
        assert_eq!(v["sequence_number"], 9);
    }
}

#[test]
fn an_event_without_a_type_or_with_implausible_usage_is_not_billed_from_it() {
    assert!(NativeResponse::event(br#"{"sequence_number":1}"#).is_err());
    assert!(NativeResponse::event(b"{nope").is_err());
    let huge = br#"{"type":"response.completed","response":{"usage":{"input_tokens":18446744073709551615,"output_tokens":1}}}"#;
    assert_eq!(NativeResponse::event(huge).unwrap().tokens(), None);
}

#[test]
fn it_round_trips_through_serde() {
    let a = NativeResponse::answer(ANSWER.as_bytes()).unwrap();
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, ANSWER);
    let back: NativeResponse = serde_json::from_str(&json).unwrap();
    assert_eq!(back.tokens(), Some((12, 5)));
}
