use super::*;

fn parse(v: serde_json::Value) -> Result<MessagesRequest, RequestError> {
    MessagesRequest::parse(v.to_string().as_bytes())
}

#[test]
fn a_claude_code_shaped_request_parses() {
    let r = parse(serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be brief."}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"path": "/a"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "file"}]}
            ]}
        ],
        "tools": [{"name": "Read", "description": "read", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u1"},
        "temperature": 1,
        "anthropic_internal": {"x": 1},
        "chat_template_kwargs": {"enable_thinking": true}
    }))
    .unwrap();
    assert_eq!(r.model, "claude-sonnet-4-5");
    assert_eq!(r.max_tokens, Some(32000));
    assert!(r.stream);
    assert!(matches!(&r.system, Some(System::Blocks(b)) if b.len() == 2));
    assert_eq!(r.messages.len(), 3);
    assert!(matches!(
        &r.messages[1].content,
        MessageContent::Blocks(b) if matches!(&b[1], ContentBlock::ToolUse { id, input, .. } if id == "toolu_01" && input.get() == r#"{"path":"/a"}"#)
    ));
    assert_eq!(
        r.tools[0].input_schema.as_ref().unwrap().get(),
        r#"{"type":"object"}"#
    );
    assert_eq!(
        r.tool_choice,
        Some(ToolChoice::Auto {
            disable_parallel_tool_use: false
        })
    );
    assert_eq!(
        r.thinking,
        Some(Thinking::Enabled {
            budget_tokens: 2048
        })
    );
    assert_eq!(r.user_id.as_deref(), Some("u1"));
    let keys: Vec<&str> = r.extra.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["anthropic_internal", "chat_template_kwargs"]);
    assert_eq!(
        r.extra("chat_template_kwargs").unwrap().get(),
        r#"{"enable_thinking":true}"#
    );
}

#[test]
fn unknown_block_and_source_types_parse_by_name() {
    let r = parse(serde_json::json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
            {"type": "image", "source": {"type": "file", "file_id": "f1"}},
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "search_result", "x": 1}], "is_error": true}
        ]}]
    }))
    .unwrap();
    let MessageContent::Blocks(b) = &r.messages[0].content else {
        panic!("blocks")
    };
    assert!(matches!(&b[0], ContentBlock::Other { kind } if kind == "document"));
    assert!(
        matches!(&b[1], ContentBlock::Image { source: ImageSource::Other { kind } } if kind == "file")
    );
    assert!(matches!(
        &b[2],
        ContentBlock::ToolResult { content: ToolResultContent::Blocks(rb), is_error: true, .. }
            if rb == &[ResultBlock::Other { kind: "search_result".to_owned() }]
    ));
}

#[test]
fn mistakes_name_the_field() {
    let cases = [
        (
            serde_json::json!({"model": "m", "max_tokens": 1}),
            "messages",
        ),
        (
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "messages": []}),
            "messages",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "", "name": "f", "input": {}}]}]}),
            "messages[0].content[0].id",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "x"}]}]}),
            "messages[0].content[0]",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "stop_sequences": ["ok", " "], "messages": [{"role": "user", "content": "x"}]}),
            "stop_sequences[1]",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "tools": [{"name": "bad name", "input_schema": {}}], "messages": [{"role": "user", "content": "x"}]}),
            "tools[0].name",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "tools": [{"name": "f"}], "messages": [{"role": "user", "content": "x"}]}),
            "tools[0].input_schema",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "tool_choice": {"type": "tool", "name": "g"}, "tools": [{"name": "f", "input_schema": {}}], "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice.name",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "tool_choice": {"type": "sometimes"}, "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 100}, "messages": [{"role": "user", "content": "x"}]}),
            "thinking.budget_tokens",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000}, "messages": [{"role": "user", "content": "x"}]}),
            "thinking.budget_tokens",
        ),
        (
            serde_json::json!({"model": "m", "max_tokens": 1, "thinking": {"type": "enabled"}, "messages": [{"role": "user", "content": "x"}]}),
            "thinking.budget_tokens",
        ),
        (
            serde_json::json!({"model": 7, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
    ];
    for (body, field) in cases {
        let err = parse(body.clone()).unwrap_err();
        assert_eq!(err.field(), Some(field), "{body}: {err}");
        assert_eq!(err.status(), 400);
    }
}

#[test]
fn count_tokens_needs_no_max_tokens() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]}"#;
    let r = MessagesRequest::parse_count_tokens(body).unwrap();
    assert_eq!(r.max_tokens, None);
    assert!(MessagesRequest::parse(body).is_err());
}

#[test]
fn hostile_bodies_get_typed_errors() {
    // Deep nesting, inside a tool's input (kept raw) or anywhere else.
    let deep = format!(
        r#"{{"model":"m","max_tokens":1,"messages":[{{"role":"assistant","content":[{{"type":"tool_use","id":"a","name":"f","input":{{"x":{}1{}}}}}]}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(
        MessagesRequest::parse(deep.as_bytes()),
        Err(RequestError::Json { .. })
    ));
    // Too many tools.
    let tool = r#"{"name":"f","input_schema":{}}"#;
    let tools = vec![tool; MAX_TOOLS + 1].join(",");
    let body = format!(
        r#"{{"model":"m","max_tokens":1,"tools":[{tools}],"messages":[{{"role":"user","content":"x"}}]}}"#
    );
    let err = MessagesRequest::parse(body.as_bytes()).unwrap_err();
    assert_eq!(
        err,
        RequestError::TooMany {
            field: "tools".to_owned(),
            limit: MAX_TOOLS
        }
    );
    // Too many unknown top-level members.
    let extras: Vec<String> = (0..=MAX_EXTRA_FIELDS)
        .map(|i| format!(r#""x{i}":1"#))
        .collect();
    let body = format!(
        r#"{{"model":"m","max_tokens":1,{},"messages":[{{"role":"user","content":"x"}}]}}"#,
        extras.join(",")
    );
    assert!(matches!(
        MessagesRequest::parse(body.as_bytes()),
        Err(RequestError::Json { .. })
    ));
    // Not JSON, empty, the wrong top-level type, trailing garbage.
    for body in [
        &b"{"[..],
        b"",
        b"[]",
        b"\"x\"",
        br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]} x"#,
    ] {
        assert!(
            matches!(MessagesRequest::parse(body), Err(RequestError::Json { .. })),
            "{body:?}"
        );
    }
    // A tool result cannot hold another tool result: the inner one is just an unknown block.
    let body = br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"a","content":[{"type":"tool_result","tool_use_id":"b","content":[]}]}]}]}"#;
    let r = MessagesRequest::parse(body).unwrap();
    let MessageContent::Blocks(b) = &r.messages[0].content else {
        panic!("blocks")
    };
    assert!(
        matches!(&b[0], ContentBlock::ToolResult { content: ToolResultContent::Blocks(inner), .. } if inner == &[ResultBlock::Other { kind: "tool_result".to_owned() }])
    );
}
