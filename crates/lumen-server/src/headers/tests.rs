use super::*;

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
        .collect()
}

#[test]
fn session_is_x_session_id_then_the_agent_clients_headers() {
    assert_eq!(session_id(&map(&[])), None);
    assert_eq!(
        session_id(&map(&[("x-claude-code-session-id", "cc-1")])),
        Some("cc-1")
    );
    assert_eq!(
        session_id(&map(&[("session_id", "codex-1")])),
        Some("codex-1")
    );
    assert_eq!(
        session_id(&map(&[("conversation_id", "codex-old")])),
        Some("codex-old")
    );
    assert_eq!(
        session_id(&map(&[
            ("conversation_id", "c"),
            ("x-claude-code-session-id", "cc"),
            ("x-session-id", "mine"),
        ])),
        Some("mine"),
        "the generic header wins"
    );
    // An empty or oversized value is skipped for the next header, never used.
    let long: &'static str = Box::leak("x".repeat(MAX_REQUEST_ID + 1).into_boxed_str());
    assert_eq!(
        session_id(&map(&[("x-session-id", ""), ("session_id", "s")])),
        Some("s")
    );
    assert_eq!(
        session_id(&map(&[("x-claude-code-session-id", long)])),
        None
    );
}

#[test]
fn anthropic_headers_are_passed_on_and_nothing_else() {
    let mut h = HeaderMap::new();
    h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    h.append("anthropic-beta", HeaderValue::from_static("a-2025"));
    h.append("anthropic-beta", HeaderValue::from_static("b-2025"));
    h.insert("x-api-key", HeaderValue::from_static("secret"));
    h.insert(
        "anthropic-version",
        HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
    );
    let got = super::anthropic(&h);
    assert_eq!(
        got,
        [
            ("anthropic-beta", "a-2025".to_owned()),
            ("anthropic-beta", "b-2025".to_owned())
        ],
        "a value that is not visible text is left out"
    );
}
