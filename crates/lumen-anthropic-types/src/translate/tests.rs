use lumen_openai_types::{ChatCompletionChunk, ChatCompletionResponse};
use serde_json::{Value, json};

use super::*;
use crate::event::to_sse;
use crate::{MessagesRequest, StreamEvent, ids};

fn req(v: Value) -> MessagesRequest {
    MessagesRequest::parse(v.to_string().as_bytes()).unwrap()
}

fn chat(v: Value) -> Value {
    chat_with(v, &TranslateOptions::default())
}

fn chat_with(v: Value, opts: &TranslateOptions) -> Value {
    let t = to_chat(&req(v), opts).unwrap();
    serde_json::to_value(&t.request).unwrap()
}

fn refused(v: Value) -> crate::RequestError {
    to_chat(&req(v), &TranslateOptions::default()).unwrap_err()
}

#[test]
fn system_strings_blocks_and_system_messages_lead() {
    let c = chat(json!({
        "model": "m", "max_tokens": 5,
        "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "C"},
            {"role": "assistant", "content": "yo"}
        ]
    }));
    assert_eq!(
        c["messages"],
        json!([
            {"role": "system", "content": "A\nB\nC"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"}
        ])
    );
    assert_eq!(c["max_tokens"], 5);
    assert_eq!(c["model"], "m");
    assert!(c.get("stream").is_none());
    let c = chat(
        json!({"model": "m", "max_tokens": 5, "system": "S", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(c["messages"][0], json!({"role": "system", "content": "S"}));
}

#[test]
fn text_and_images_become_parts() {
    let c = chat(json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "only"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
        ]}
    ]}));
    assert_eq!(c["messages"][0], json!({"role": "user", "content": "only"}));
    assert_eq!(
        c["messages"][2]["content"],
        json!([
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
        ])
    );
}

#[test]
fn tool_use_and_results_round_trip_with_stable_ids() {
    let c = chat(json!({"model": "m", "max_tokens": 50,
    "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}, "cache_control": {"type": "ephemeral"}}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
    "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "use the tool", "signature": "lumen-unsigned"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_01Anthropic", "name": "get_weather", "input": {}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_01Anthropic", "is_error": true, "content": [
                {"type": "text", "text": "timeout"}, {"type": "text", "text": "retry later"},
                {"type": "image", "source": {"type": "url", "url": "https://x/e.png"}}
            ]},
            {"type": "text", "text": "and tomorrow?"}
        ]}
    ]}));
    assert_eq!(
        c["messages"],
        json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Checking.", "reasoning_content": "use the tool", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "01Anthropic", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ]},
            {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
            {"role": "tool", "content": "Error: timeout\nretry later", "tool_call_id": "01Anthropic"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/e.png"}}]},
            {"role": "user", "content": "and tomorrow?"}
        ])
    );
    assert_eq!(
        c["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    );
    assert_eq!(c["tool_choice"], "required");
    assert_eq!(c["parallel_tool_calls"], false);

    // The engine's call id comes back as the client's, and the client's as the engine's.
    let resp: ChatCompletionResponse = serde_json::from_value(json!({
        "id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]}}]
    }))
    .unwrap();
    let m = reply_from_chat(&resp, &ReplyContext::default()).unwrap();
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["content"][0]["id"], "toolu_call_1");
    assert_eq!(
        ids::to_engine(v["content"][0]["id"].as_str().unwrap()),
        "call_1"
    );
}

#[test]
fn tool_choice_maps_each_way() {
    let base = |choice: Value| {
        chat(
            json!({"model": "m", "max_tokens": 5, "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": choice, "messages": [{"role": "user", "content": "x"}]}),
        )
    };
    assert_eq!(base(json!({"type": "auto"}))["tool_choice"], "auto");
    assert_eq!(base(json!({"type": "none"}))["tool_choice"], "none");
    assert_eq!(
        base(json!({"type": "tool", "name": "f"}))["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert!(
        base(json!({"type": "auto"}))
            .get("parallel_tool_calls")
            .is_none()
    );
}

#[test]
fn sampling_stop_stream_and_extras_carry_over() {
    let c = chat(
        json!({"model": "m", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
        "stop_sequences": ["END", "\n\nHuman:"], "stream": true, "metadata": {"user_id": "u-1"},
        "chat_template_kwargs": {"foo": 1}, "service_tier": "auto", "cache_control": {"type": "ephemeral"},
        "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(c["temperature"], 0.5);
    assert_eq!(c["top_p"], 0.9);
    assert_eq!(c["top_k"], 40);
    assert_eq!(c["stop"], json!(["END", "\n\nHuman:"]));
    assert_eq!(c["stream"], true);
    assert_eq!(c["stream_options"], json!({"include_usage": true}));
    assert_eq!(c["user"], "u-1");
    assert_eq!(c["chat_template_kwargs"], json!({"foo": 1}));
    assert!(c.get("service_tier").is_none());
    assert!(c.get("cache_control").is_none());
    let opts = TranslateOptions {
        continuous_usage: true,
        ..TranslateOptions::default()
    };
    let c = chat_with(
        json!({"model": "m", "max_tokens": 7, "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        &opts,
    );
    assert_eq!(
        c["stream_options"],
        json!({"include_usage": true, "continuous_usage_stats": true})
    );
}

#[test]
fn thinking_budget_is_clamped_and_styled() {
    let body = json!({"model": "m", "max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 6000},
        "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(chat(body.clone())["reasoning_effort"], "medium");
    let kwargs = TranslateOptions {
        thinking: ThinkingStyle::TemplateKwargs,
        max_thinking_budget: Some(4096),
        ..TranslateOptions::default()
    };
    let c = chat_with(body.clone(), &kwargs);
    assert_eq!(c["chat_template_kwargs"], json!({"enable_thinking": true}));
    assert_eq!(c["thinking_token_budget"], 4096);
    let c = chat_with(
        json!({"model": "m", "max_tokens": 8000, "thinking": {"type": "disabled"},
        "messages": [{"role": "user", "content": "x"}]}),
        &kwargs,
    );
    assert_eq!(c["chat_template_kwargs"], json!({"enable_thinking": false}));
    assert!(c.get("thinking_token_budget").is_none());
    let refuse = TranslateOptions {
        thinking: ThinkingStyle::Refuse,
        ..TranslateOptions::default()
    };
    let err = to_chat(&req(body), &refuse).unwrap_err();
    assert_eq!(err.field(), Some("thinking"));
}

#[test]
fn what_chat_cannot_express_is_refused_by_field() {
    let user = |block: Value| json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]});
    let cases = [
        (
            user(
                json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "x"}}),
            ),
            "messages[0].content[0]",
        ),
        (
            user(json!({"type": "image", "source": {"type": "file", "file_id": "f"}})),
            "messages[0].content[0].source",
        ),
        (
            user(
                json!({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "search_result", "source": "s"}]}),
            ),
            "messages[0].content[0].content[0]",
        ),
        (
            user(json!({"type": "tool_use", "id": "t", "name": "f", "input": {}})),
            "messages[0].content[0]",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "system": [{"type": "image", "source": {"type": "url", "url": "u"}}], "messages": [{"role": "user", "content": "x"}]}),
            "system[0]",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}], "messages": [{"role": "user", "content": "x"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "mcp_servers": [], "messages": [{"role": "user", "content": "x"}]}),
            "mcp_servers",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "container": "c", "messages": [{"role": "user", "content": "x"}]}),
            "container",
        ),
    ];
    for (body, field) in cases {
        let err = refused(body.clone());
        assert_eq!(err.field(), Some(field), "{body}: {err}");
        assert!(
            matches!(err, crate::RequestError::Unsupported { .. }),
            "{err}"
        );
    }
}

#[test]
fn count_tokens_keeps_the_prompt_only() {
    let r = MessagesRequest::parse_count_tokens(
        br#"{"model":"m","system":"S","tools":[{"name":"f","input_schema":{}}],"messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    let c = serde_json::to_value(count_tokens_to_chat(&r).unwrap()).unwrap();
    assert_eq!(
        c["messages"],
        json!([{"role": "system", "content": "S"}, {"role": "user", "content": "x"}])
    );
    assert_eq!(c["tools"][0]["function"]["name"], "f");
    assert!(c.get("max_tokens").is_none());
}

fn response(v: Value) -> ChatCompletionResponse {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_whole_answer_translates_with_reasoning_usage_and_stop_reasons() {
    let ctx = ReplyContext {
        model: "claude-alias".into(),
        stop_sequences: vec!["END".into()],
    };
    let r = response(
        json!({"id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "engine-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "reasoning_content": "think"},
            "finish_reason": "stop", "stop_reason": "END"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 4}}}),
    );
    let m = reply_from_chat(&r, &ctx).unwrap();
    assert_eq!(
        m.to_json(),
        r#"{"id":"msg_abc","type":"message","role":"assistant","model":"claude-alias","content":[{"type":"thinking","thinking":"think","signature":"lumen-unsigned"},{"type":"text","text":"Hello"}],"stop_reason":"stop_sequence","stop_sequence":"END","usage":{"input_tokens":6,"cache_read_input_tokens":4,"output_tokens":3}}"#
    );
    let reason = |finish: Value, extra: Value| {
        let mut choice = json!({"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish});
        if let (Some(c), Some(e)) = (choice.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let r = response(json!({"id": "x", "choices": [choice]}));
        let m = reply_from_chat(&r, &ctx).unwrap();
        (m.stop_reason, m.stop_sequence)
    };
    assert_eq!(
        reason(json!("stop"), json!({})),
        (Some(StopReason::EndTurn), None)
    );
    assert_eq!(
        reason(json!("length"), json!({})),
        (Some(StopReason::MaxTokens), None)
    );
    assert_eq!(
        reason(json!("tool_calls"), json!({})),
        (Some(StopReason::ToolUse), None)
    );
    assert_eq!(
        reason(json!("content_filter"), json!({})),
        (Some(StopReason::Refusal), None)
    );
    // A matched stop the client did not ask for (an EOS token id, a template's stop) is end_turn.
    assert_eq!(
        reason(json!("stop"), json!({"stop_reason": "<|im_end|>"})),
        (Some(StopReason::EndTurn), None)
    );
    assert_eq!(
        reason(Value::Null, json!({})),
        (Some(StopReason::EndTurn), None)
    );
}

#[test]
fn tool_arguments_empty_missing_and_broken() {
    let call = |args: Value, id: Value| {
        response(
            json!({"id": "x", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "", "tool_calls": [{"id": id, "type": "function", "function": {"name": "f", "arguments": args}}]}}]}),
        )
    };
    let ctx = ReplyContext::default();
    let m = reply_from_chat(&call(json!(""), json!("call:9")), &ctx).unwrap();
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": ids::to_anthropic("call:9"), "name": "f", "input": {}}])
    );
    // `stop` with a tool call is still a tool call (Ollama, older llama.cpp).
    assert_eq!(v["stop_reason"], "tool_use");
    let m = reply_from_chat(&call(Value::Null, Value::Null), &ctx).unwrap();
    assert_eq!(
        serde_json::to_value(&m).unwrap()["content"][0]["id"],
        "toolu_call_0"
    );
    assert!(matches!(
        reply_from_chat(&call(json!("{\"a\":"), json!("c")), &ctx),
        Err(ReplyError::ToolArguments { .. })
    ));
    assert!(matches!(
        reply_from_chat(&call(json!("[1]"), json!("c")), &ctx),
        Err(ReplyError::ToolArguments { .. })
    ));
    assert_eq!(
        reply_from_chat(&response(json!({"id": "x", "choices": []})), &ctx).unwrap_err(),
        ReplyError::NoChoice
    );
}

fn chunk(v: Value) -> ChatCompletionChunk {
    serde_json::from_value(v).unwrap()
}

fn delta(d: Value, finish: Value) -> ChatCompletionChunk {
    chunk(
        json!({"id": "chatcmpl-s1", "model": "engine", "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}),
    )
}

fn run(chunks: &[ChatCompletionChunk], ctx: ReplyContext) -> String {
    let mut t = StreamTranslator::new(ctx);
    let mut out = Vec::new();
    for c in chunks {
        t.push(c, &mut out);
    }
    t.finish(&mut out);
    String::from_utf8(to_sse(&out).to_vec()).unwrap()
}

fn names(sse: &str) -> Vec<&str> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect()
}

#[test]
fn a_text_stream_follows_anthropics_order_byte_for_byte() {
    let chunks = [
        delta(json!({"role": "assistant", "content": ""}), Value::Null),
        delta(json!({"content": "Hello"}), Value::Null),
        delta(json!({"content": " world"}), json!("stop")),
        chunk(
            json!({"id": "chatcmpl-s1", "model": "engine", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
        ),
    ];
    let sse = run(
        &chunks,
        ReplyContext {
            model: "claude".into(),
            stop_sequences: vec![],
        },
    );
    let expected = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_s1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":9,\"output_tokens\":2}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    assert_eq!(sse, expected);
}

#[test]
fn thinking_then_text_then_tools_stream_as_separate_blocks() {
    let chunks = [
        delta(json!({"role": "assistant"}), Value::Null),
        delta(json!({"reasoning_content": "Let me"}), Value::Null),
        delta(json!({"reasoning": " think"}), Value::Null),
        delta(json!({"content": "Sure."}), Value::Null),
        delta(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            Value::Null,
        ),
        delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":"}}]}),
            Value::Null,
        ),
        delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            Value::Null,
        ),
        delta(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": ""}}]}),
            Value::Null,
        ),
        delta(json!({}), json!("tool_calls")),
        chunk(
            json!({"id": "chatcmpl-s1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}}),
        ),
    ];
    let sse = run(&chunks, ReplyContext::default());
    assert_eq!(
        names(&sse),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for needle in [
        r#""index":0,"content_block":{"type":"thinking","thinking":"","signature":""}"#,
        r#""delta":{"type":"thinking_delta","thinking":" think"}"#,
        r#""index":0,"delta":{"type":"signature_delta","signature":"lumen-unsigned"}"#,
        r#""index":1,"delta":{"type":"text_delta","text":"Sure."}"#,
        r#""index":2,"content_block":{"type":"tool_use","id":"toolu_call_a","name":"f","input":{}}"#,
        r#""index":2,"delta":{"type":"input_json_delta","partial_json":"{\"x\":"}"#,
        r#""index":3,"content_block":{"type":"tool_use","id":"toolu_call_b","name":"g","input":{}}"#,
        r#""delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":5,"output_tokens":20}"#,
        r#""model":"engine""#,
    ] {
        assert!(sse.contains(needle), "{needle} not in {sse}");
    }
}

#[test]
fn continuous_usage_fills_message_start_and_a_matched_stop_is_reported() {
    let u = |c| json!({"prompt_tokens": 7, "completion_tokens": c, "total_tokens": 7 + c});
    let chunks = [
        chunk(
            json!({"id": "chatcmpl-z", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": u(0)}),
        ),
        chunk(
            json!({"id": "chatcmpl-z", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop", "stop_reason": "END"}], "usage": u(1)}),
        ),
        chunk(json!({"id": "chatcmpl-z", "choices": [], "usage": u(1)})),
    ];
    let sse = run(
        &chunks,
        ReplyContext {
            model: String::new(),
            stop_sequences: vec!["END".into()],
        },
    );
    assert!(
        sse.contains(r#""usage":{"input_tokens":7,"output_tokens":0}}}"#),
        "{sse}"
    );
    assert!(sse.contains(r#""delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"input_tokens":7,"output_tokens":1}"#), "{sse}");
}

#[test]
fn an_engine_that_stops_without_finish_reason_or_usage() {
    // No finish reason: the client gets an error, not an answer that looks complete.
    let sse = run(
        &[delta(json!({"content": "cut"}), Value::Null)],
        ReplyContext::default(),
    );
    assert_eq!(
        names(&sse),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "error"
        ]
    );
    assert!(sse.contains(r#"{"type":"error","error":{"type":"api_error","message":"the engine ended the answer without a finish reason"}}"#));
    // A finish reason but no usage chunk (include_usage ignored): ends at [DONE], counts 0.
    let sse = run(
        &[delta(json!({"content": "x"}), json!("length"))],
        ReplyContext::default(),
    );
    assert_eq!(
        names(&sse)[4..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(sse.contains(r#""stop_reason":"max_tokens""#));
    // Nothing at all.
    let sse = run(&[], ReplyContext::default());
    assert_eq!(names(&sse), ["error"]);
    // An empty answer still pings before it ends.
    let sse = run(
        &[delta(
            json!({"role": "assistant", "content": ""}),
            json!("stop"),
        )],
        ReplyContext::default(),
    );
    assert_eq!(
        names(&sse),
        ["message_start", "ping", "message_delta", "message_stop"]
    );
}

#[test]
fn failures_and_hostile_engines_end_with_an_error_event() {
    let mut t = StreamTranslator::new(ReplyContext::default());
    let mut out = Vec::new();
    t.push(&delta(json!({"content": "a"}), Value::Null), &mut out);
    t.fail(503, "engine gone", &mut out);
    assert!(t.is_ended());
    t.push(&delta(json!({"content": "ignored"}), Value::Null), &mut out);
    t.finish(&mut out);
    let sse = String::from_utf8(to_sse(&out).to_vec()).unwrap();
    assert!(sse.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"engine gone\"}}\n\n"), "{sse}");
    assert!(!sse.contains("ignored"));

    // Tool indexes far apart cost nothing; more calls than the cap end the stream.
    let mut calls: Vec<ChatCompletionChunk> = (0..=stream::MAX_TOOL_CALLS as u32)
        .map(|i| delta(json!({"tool_calls": [{"index": i * 1_000_000, "id": format!("c{i}"), "function": {"name": "f", "arguments": "{}"}}]}), Value::Null))
        .collect();
    calls.push(delta(json!({}), json!("tool_calls")));
    let sse = run(&calls, ReplyContext::default());
    assert!(
        sse.contains("more than 256 tool calls"),
        "{}",
        &sse[sse.len() - 300..]
    );
    assert_eq!(*names(&sse).last().unwrap(), "error");

    // Going back to an earlier call after another block began.
    let sse = run(
        &[
            delta(
                json!({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]}),
                Value::Null,
            ),
            delta(json!({"content": "text"}), Value::Null),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
                Value::Null,
            ),
        ],
        ReplyContext::default(),
    );
    assert_eq!(*names(&sse).last().unwrap(), "error");
    // Malformed tool_calls.
    let sse = run(
        &[delta(json!({"tool_calls": "nope"}), Value::Null)],
        ReplyContext::default(),
    );
    assert_eq!(*names(&sse).last().unwrap(), "error");
}

#[test]
fn a_call_whose_name_comes_late_keeps_its_arguments() {
    let chunks = [
        delta(
            json!({"tool_calls": [{"index": 0, "id": "a", "function": {"arguments": "{\"k\""}}]}),
            Value::Null,
        ),
        delta(
            json!({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ":1}"}}]}),
            Value::Null,
        ),
        delta(json!({}), json!("tool_calls")),
    ];
    let sse = run(&chunks, ReplyContext::default());
    assert!(sse.contains(r#""partial_json":"{\"k\":1}""#), "{sse}");
}

#[test]
fn engine_errors_take_anthropics_shape() {
    let body = error_from_chat(
        400,
        br#"{"error":{"message":"too long","type":"BadRequestError","param":null,"code":400}}"#,
    );
    assert_eq!(
        body.to_json(),
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"too long"}}"#
    );
    let body = error_from_chat(503, b"<html>");
    assert_eq!(body.error.kind, crate::ErrorType::OverloadedError);
    assert_eq!(
        ReplyError::NoChoice.to_body().error.kind,
        crate::ErrorType::ApiError
    );
    let _: Option<StreamEvent> = None;
}

/// Claude Code's request with thinking on (its default): `context_management` edits, a
/// `metadata.user_id` holding a JSON string, a thinking budget of `max_tokens - 1`. The edits
/// are accepted and not sent to the engine (refusing them refused Claude Code's first request).
#[test]
fn claude_codes_context_edits_are_accepted_and_not_forwarded() {
    let c = chat(json!({
        "model": "m",
        "max_tokens": 32000,
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "{\"device_id\":\"d\",\"session_id\":\"s\"}"},
        "system": [{"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "say hello"}]}],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]
    }));
    assert!(c.get("context_management").is_none(), "{c}");
    assert_eq!(c["max_tokens"], 32000);
    assert_eq!(c["tools"][0]["function"]["name"], "Bash");
    assert_eq!(
        c["messages"][1],
        json!({"role": "user", "content": "say hello"})
    );
}
