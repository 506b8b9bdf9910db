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
