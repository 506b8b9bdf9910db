use bytes::Bytes;

use crate::request::parse_shared;
use crate::{ChatCompletionRequest, Forwardable, StreamOptions};

fn parsed<T: Forwardable>(s: &str) -> T {
    parse_shared(&Bytes::from(s.to_owned())).unwrap()
}

fn chat(s: &str) -> ChatCompletionRequest {
    parsed(s)
}

/// The pieces joined.
fn sent<T: Forwardable>(r: &T) -> Option<String> {
    r.forwarded()
        .map(|p| String::from_utf8(p.concat()).unwrap())
}

const BODY: &str = r#" { "model" : "a",  "messages":[ {"role":"user","content":"h\u00e9"} ],
  "top_k": 5, "stream": false, "junk": [1, 2.50, {"x":null}] } "#;

#[test]
fn unchanged_is_the_body_itself() {
    let r = chat(BODY);
    let pieces = r.forwarded().unwrap();
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0], BODY.as_bytes());
    // The messages are read from the body, not a copy.
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages.to_vec().unwrap()[0].role, "user");
}

#[test]
fn a_new_model_is_spliced_in_place() {
    let mut r = chat(BODY);
    r.model = "engine/m\"1".into();
    assert_eq!(
        sent(&r).unwrap(),
        BODY.replace(r#""a""#, r#""engine/m\"1""#)
    );
}

#[test]
fn a_model_missing_or_null_is_set_once() {
    let mut r = chat(r#"{"messages":[]}"#);
    r.model = "m".into();
    assert_eq!(sent(&r).unwrap(), r#"{"model":"m","messages":[]}"#);
    let mut r = chat(r#"{"model":null,"messages":[]}"#);
    r.model = "m".into();
    assert_eq!(sent(&r).unwrap(), r#"{"model":"m","messages":[]}"#);
}

#[test]
fn the_usage_ask_and_added_members_are_spliced() {
    let mut r = chat(r#"{"model":"m","stream":true,"messages":[],"top_k":1}"#);
    r.stream_options = Some(StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    r.extra.insert("priority", &3).unwrap();
    let out = sent(&r).unwrap();
    assert_eq!(
        out,
        r#"{"stream_options":{"include_usage":true},"priority":3,"model":"m","stream":true,"messages":[],"top_k":1}"#
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::to_value(&r).unwrap());
    // Present already: replaced in place.
    let mut r = chat(r#"{"model":"m","stream":true,"stream_options":{"x":1},"messages":[]}"#);
    r.stream_options.as_mut().unwrap().include_usage = Some(true);
    assert_eq!(
        sent(&r).unwrap(),
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true,"x":1},"messages":[]}"#
    );
    // A stream asked for on a body without `stream`.
    let mut r = chat(r#"{"model":"m","messages":[]}"#);
    r.stream = Some(true);
    assert_eq!(
        sent(&r).unwrap(),
        r#"{"stream":true,"model":"m","messages":[]}"#
    );
    // `stream: false` dropped is the same request.
    let mut r = chat(BODY);
    r.stream = None;
    assert_eq!(sent(&r).unwrap(), BODY);
}

#[test]
fn other_changes_are_serialised() {
    let cases: [fn(&mut ChatCompletionRequest); 5] = [
        |r| r.max_tokens = Some(3),
        |r| r.messages = vec![crate::ChatMessage::new("user", "x")].into(),
        |r| {
            r.extra.insert("top_k", &6).unwrap();
        },
        |r| {
            r.extra.remove("junk");
        },
        |r| r.user = Some("u".into()),
    ];
    for change in cases {
        let mut r = chat(BODY);
        change(&mut r);
        assert!(r.forwarded().is_none(), "{r:?}");
    }
    // Built in code: no source.
    assert!(ChatCompletionRequest::default().forwarded().is_none());
}

#[test]
fn a_clone_forwards_the_same_bytes_without_copying_them() {
    let r = chat(BODY);
    let mut c = r.clone();
    c.model = "x".into();
    assert_eq!(sent(&c).unwrap(), BODY.replace(r#""a""#, r#""x""#));
    assert_eq!(r, chat(BODY));
    assert_eq!(
        serde_json::to_value(&r).unwrap()["messages"][0]["content"],
        "hé"
    );
}
