use lumen_openai_types::{ChatMessage, CompletionRequest};

use super::*;

fn chat_req(messages: &[(&str, &str)]) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: "m".into(),
        messages: messages
            .iter()
            .map(|(r, t)| ChatMessage::new(*r, *t))
            .collect::<Vec<_>>()
            .into(),
        ..Default::default()
    }
}

/// The same request as a client sends it: messages stay raw JSON inside Lumen.
fn raw(json: &str) -> ChatCompletionRequest {
    serde_json::from_str(json).unwrap()
}

#[test]
fn raw_and_typed_messages_give_one_key() {
    let cx = RequestContext::new("t");
    let typed = chat(
        &chat_req(&[("system", "be brief"), ("user", "hello there")]),
        &cx,
        1024,
    );
    let from_json = chat(
        &raw(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello there"}]}]}"#,
        ),
        &cx,
        1024,
    );
    assert_eq!(typed, from_json);
}

#[test]
fn tools_belong_to_the_shared_section_wherever_they_appear_in_the_body() {
    let cx = RequestContext::new("t");
    let a = chat(
        &raw(
            r#"{"tools":[{"type":"function","function":{"name":"f"}}],"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}"#,
        ),
        &cx,
        1024,
    );
    let b = chat(
        &raw(
            r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
        ),
        &cx,
        1024,
    );
    let none = chat(&chat_req(&[("system", "s"), ("user", "u")]), &cx, 1024);
    assert_eq!(a, b);
    assert_ne!(a, none);
}

#[test]
fn the_session_hint_is_the_header_then_prompt_cache_key_then_user() {
    let mut req = chat_req(&[("user", "u")]);
    req.user = Some("alice".into());
    req.extra.insert("prompt_cache_key", "conv-7").unwrap();
    let mut cx = RequestContext::new("t");
    assert_eq!(
        session_hint(&cx, &req.extra, req.user.as_ref()).as_deref(),
        Some("conv-7")
    );
    cx.session_id = Some("sess-1".into());
    assert_eq!(
        session_hint(&cx, &req.extra, req.user.as_ref()).as_deref(),
        Some("sess-1")
    );
    req.extra.remove("prompt_cache_key");
    cx.session_id = None;
    assert_eq!(
        session_hint(&cx, &req.extra, req.user.as_ref()).as_deref(),
        Some("alice")
    );
    // A non-string key is not a hint.
    req.user = None;
    req.extra.insert("prompt_cache_key", &42).unwrap();
    assert_eq!(session_hint(&cx, &req.extra, None), None);
    // With a hint, two different prompts share the placement.
    let mut a = chat_req(&[("user", "one")]);
    let mut b = chat_req(&[("user", "two")]);
    a.user = Some("bob".into());
    b.user = Some("bob".into());
    let (ka, kb) = (chat(&a, &cx, 1024), chat(&b, &cx, 1024));
    assert_ne!(ka, kb);
    assert_eq!(ka.placement(false), kb.placement(false));
}

#[test]
fn completion_prompts_are_keyed_by_their_start() {
    let cx = RequestContext::new("t");
    let doc = "lorem ipsum ".repeat(500);
    let req = |q: &str| -> CompletionRequest {
        serde_json::from_str(&format!(r#"{{"model":"m","prompt":"{doc}Q: {q}"}}"#)).unwrap()
    };
    let (a, b) = (req("who?"), req("why?"));
    let ka = completion(&a.prompt, &a.extra, a.user.as_ref(), &cx, 1024);
    let kb = completion(&b.prompt, &b.extra, b.user.as_ref(), &cx, 1024);
    assert_eq!(ka.placement(false), kb.placement(false));
    assert_eq!(
        ka.indexed_len(),
        5000,
        "blocks up to the last boundary in its 6 KB"
    );
}
