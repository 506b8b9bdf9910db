use super::JsonBody;
use crate::HasModel;

fn body(s: &str) -> JsonBody {
    JsonBody::parse(bytes::Bytes::from(s.to_owned())).unwrap()
}

#[test]
fn an_unchanged_model_sends_the_clients_bytes() {
    let raw = r#"{ "max_tokens": 5,  "model" : "m",
        "messages": [] }"#;
    let b = body(raw);
    assert_eq!(b.model(), "m");
    assert_eq!(b.to_bytes(), raw.as_bytes());
}

#[test]
fn a_new_model_is_spliced_where_the_old_one_was() {
    let raw = r#"{ "max_tokens": 5,  "model" : "alias",
        "messages": [{"model": "inner"}] }"#;
    let mut b = body(raw);
    *b.model_mut() = "engine/\"id\"".to_owned();
    let out = b.to_bytes();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{ "max_tokens": 5,  "model" : "engine/\"id\"",
        "messages": [{"model": "inner"}] }"#
    );
}

#[test]
fn an_escaped_model_is_read_and_replaced_whole() {
    let mut b = body(r#"{"model":"a\u0062c","x":1}"#);
    assert_eq!(b.model(), "abc");
    assert_eq!(b.to_bytes(), r#"{"model":"a\u0062c","x":1}"#.as_bytes());
    "abd".clone_into(b.model_mut());
    assert_eq!(b.to_bytes(), r#"{"model":"abd","x":1}"#.as_bytes());
}

#[test]
fn a_body_without_a_model_gets_one_first() {
    let mut b = body(r#" {"x": 1}"#);
    "m".clone_into(b.model_mut());
    assert_eq!(b.to_bytes(), r#" {"model":"m","x": 1}"#.as_bytes());
    let mut b = body("{ }");
    "m".clone_into(b.model_mut());
    assert_eq!(b.to_bytes(), r#"{"model":"m" }"#.as_bytes());
}

#[test]
fn a_model_that_is_not_a_string_is_refused() {
    assert!(JsonBody::parse(bytes::Bytes::from_static(br#"{"model": 5}"#)).is_err());
    assert!(JsonBody::parse(bytes::Bytes::from_static(b"[1]")).is_err());
    assert_eq!(body(r#"{"model": null}"#).model(), "");
}
