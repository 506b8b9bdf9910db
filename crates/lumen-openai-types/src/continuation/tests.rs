use super::*;
use crate::Chunk;
use crate::request::parse;

fn chat(body: &str) -> ChatCompletionRequest {
    parse(body.as_bytes()).unwrap()
}

#[test]
fn a_chat_request_gets_the_partial_answer_as_its_last_message() {
    let req = chat(
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":10,"top_k":3}"#,
    );
    let next = req.with_partial_answer("Hello \"there\"", 4).unwrap();
    let json = serde_json::to_value(&next).unwrap();
    assert_eq!(
        json["messages"],
        serde_json::json!([
            {"role":"system","content":"be brief"},
            {"role":"user","content":"hi"},
            {"role":"assistant","content":"Hello \"there\""}
        ])
    );
    assert_eq!(json["max_tokens"], 6);
    assert_eq!(json["top_k"], 3, "the caller's other fields are kept");
    assert!(json.get("max_completion_tokens").is_none());
}

#[test]
fn what_cannot_be_continued_is_refused() {
    let spent = chat(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":4}"#,
    );
    assert!(
        spent.with_partial_answer("a b c d", 4).is_none(),
        "no tokens left"
    );
    assert_eq!(
        spent
            .with_partial_answer("a b c", 3)
            .unwrap()
            .max_completion_tokens,
        Some(1)
    );
    let several = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#);
    assert!(several.with_partial_answer("x", 1).is_none());
    let prefilled = chat(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Sure:"}]}"#,
    );
    assert!(prefilled.with_partial_answer("x", 1).is_none());
}

#[test]
fn a_typed_chat_request_is_extended_too() {
    let req = ChatCompletionRequest {
        model: "m".into(),
        messages: vec![ChatMessage::new("user", "hi")].into(),
        ..Default::default()
    };
    let next = req.with_partial_answer("Hel", 1).unwrap();
    let msgs = next.messages.to_vec().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].role, "assistant");
    assert_eq!(msgs[1].content.as_ref().unwrap().text(), "Hel");
}

#[test]
fn a_completion_prompt_is_extended_with_the_partial_answer() {
    let req: CompletionRequest =
        parse(br#"{"model":"m","prompt":"Once upon","max_tokens":8}"#).unwrap();
    let next = req.with_partial_answer(" a time", 2).unwrap();
    assert_eq!(
        serde_json::to_value(&next.prompt).unwrap(),
        "Once upon a time"
    );
    assert_eq!(next.max_tokens, Some(6));
    let tokens: CompletionRequest = parse(br#"{"model":"m","prompt":[1,2,3]}"#).unwrap();
    assert!(tokens.with_partial_answer("x", 1).is_none());
    let echo: CompletionRequest = parse(br#"{"model":"m","prompt":"a","echo":true}"#).unwrap();
    assert!(echo.with_partial_answer("x", 1).is_none());
}

fn chunk<T: serde::de::DeserializeOwned + Default>(json: &str) -> Chunk<T> {
    Chunk::from_raw(bytes::Bytes::copy_from_slice(json.as_bytes())).unwrap()
}

#[test]
fn chat_chunks_say_what_they_add_to_the_answer() {
    let piece = |json: &str| {
        let c = chunk::<ChatCompletionChunk>(json);
        format!("{:?}", c.get().piece())
    };
    assert_eq!(
        piece(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
        "Opening"
    );
    assert_eq!(
        piece(r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#),
        r#"Text("Hi")"#
    );
    assert_eq!(
        piece(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#),
        "Other"
    );
    assert_eq!(
        piece(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#),
        "Other"
    );
    assert_eq!(
        piece(r#"{"choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"index":0}]}}]}"#),
        "Unsupported"
    );
    assert_eq!(
        piece(r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}"#),
        "Unsupported"
    );
    assert_eq!(
        piece(r#"{"choices":[{"index":0,"delta":{"content":"a","reasoning_content":null}}]}"#),
        r#"Text("a")"#
    );
    assert_eq!(
        piece(r#"{"choices":[{"index":1,"delta":{"content":"a"}}]}"#),
        "Unsupported"
    );
}

#[test]
fn completion_chunks_say_what_they_add_to_the_answer() {
    let c = chunk::<CompletionResponse>(r#"{"choices":[{"index":0,"text":" once"}]}"#);
    assert_eq!(c.get().piece(), Piece::Text(" once"));
    let c = chunk::<CompletionResponse>(
        r#"{"choices":[{"index":0,"text":"a"},{"index":1,"text":"b"}]}"#,
    );
    assert_eq!(c.get().piece(), Piece::Unsupported);
}

#[test]
fn echo_and_constrained_output_are_never_continued() {
    let base = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true"#;
    let with = |extra: &str| chat(&format!("{base},{extra}}}"));
    for extra in [
        r#""echo":true"#,
        r#""response_format":{"type":"json_object"}"#,
        r#""response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}"#,
        r#""guided_json":{"type":"object"}"#,
        r#""grammar":"root ::= \"a\"""#,
    ] {
        assert!(
            with(extra).with_partial_answer("{\"a\"", 2).is_none(),
            "{extra}"
        );
    }
    for extra in [
        r#""echo":false"#,
        r#""response_format":{"type":"text"}"#,
        r#""guided_json":null"#,
    ] {
        assert!(
            with(extra).with_partial_answer("Hi", 1).is_some(),
            "{extra}"
        );
    }
    let schema: CompletionRequest = parse(
        br#"{"model":"m","prompt":"a","response_format":{"type":"json_schema","json_schema":{}}}"#,
    )
    .unwrap();
    assert!(schema.with_partial_answer("x", 1).is_none());
}

#[test]
fn the_answer_text_of_a_chunk_can_be_replaced() {
    let mut c =
        chunk::<ChatCompletionChunk>(r#"{"choices":[{"index":0,"delta":{"content":"abcdef"}}]}"#);
    c.get_mut().set_text("def");
    assert_eq!(c.get().piece(), Piece::Text("def"));
    let mut c = chunk::<CompletionResponse>(r#"{"choices":[{"index":0,"text":"abc"}]}"#);
    c.get_mut().set_text("");
    assert_eq!(c.get().piece(), Piece::Text(""));
}
