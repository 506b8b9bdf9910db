use serde_json::{Value, json};

use super::*;
use crate::chat::{ChatCompletionChunk, ChatCompletionResponse};
use crate::request::parse;

fn req(body: &str) -> ResponsesRequest {
    parse(body.as_bytes()).unwrap()
}

fn chat_json(body: &str) -> Value {
    serde_json::to_value(to_chat(&req(body), &[]).unwrap()).unwrap()
}

fn refused(body: &str) -> ResponsesError {
    to_chat(&req(body), &[]).unwrap_err()
}

fn chunk(v: Value) -> ChatCompletionChunk {
    serde_json::from_value(v).unwrap()
}

fn text_chunk(text: &str) -> ChatCompletionChunk {
    chunk(json!({"choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]}))
}

fn finish_chunk(reason: &str) -> ChatCompletionChunk {
    chunk(json!({"choices":[{"index":0,"delta":{},"finish_reason":reason}]}))
}

fn usage_chunk() -> ChatCompletionChunk {
    chunk(
        json!({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9,
        "prompt_tokens_details":{"cached_tokens":3}}}),
    )
}

fn started(body: &str) -> Response {
    Response::start(&req(body), "s1", 1_700_000_000)
}

fn sse(events: &[ResponseEvent]) -> String {
    events
        .iter()
        .map(|e| String::from_utf8(e.to_sse().to_vec()).unwrap())
        .collect()
}

// ---- parsing ----

#[test]
fn a_string_input_is_one_user_message() {
    let chat = chat_json(r#"{"model":"m","input":"hi"}"#);
    assert_eq!(chat["model"], "m");
    assert_eq!(chat["messages"], json!([{"role":"user","content":"hi"}]));
}

#[test]
fn every_item_kind_parses_and_serialises_back() {
    let body = json!({"model":"m","input":[
        {"role":"user","content":"short form"},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","image_url":"data:x","detail":"low"}]},
        {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"s"}],"content":[{"type":"reasoning_text","text":"r"}]},
        {"type":"function_call","id":"fc_1","call_id":"c1","name":"f","arguments":"{}"},
        {"type":"function_call_output","call_id":"c1","output":"42"},
        {"type":"item_reference","id":"x"}
    ]});
    let r = req(&body.to_string());
    let Input::Items(items) = &r.input else {
        panic!("items expected")
    };
    assert_eq!(items.len(), 6);
    assert!(matches!(&items[0], InputItem::Message(m) if m.role == "user"));
    assert!(matches!(&items[2], InputItem::Reasoning(r) if r.content[0].text == "r"));
    assert!(matches!(&items[5], InputItem::Other { kind } if kind == "item_reference"));
    // Serialised and parsed again, the items are the same.
    let again: Vec<InputItem> =
        serde_json::from_value(serde_json::to_value(items).unwrap()).unwrap();
    assert_eq!(&again, items);
}

#[test]
fn unknown_fields_are_kept_and_forwarded_to_chat() {
    let r = req(r#"{"model":"m","input":"x","top_k":5,"chat_template_kwargs":{"a":1}}"#);
    assert_eq!(r.extra.len(), 2);
    let chat = serde_json::to_value(to_chat(&r, &[]).unwrap()).unwrap();
    assert_eq!(chat["top_k"], 5);
    assert_eq!(chat["chat_template_kwargs"], json!({"a":1}));
}

#[test]
fn wrong_types_are_request_errors_naming_the_field() {
    for (body, param) in [
        (r#"{"model":"m","input":5}"#, "input"),
        (
            r#"{"model":"m","input":[{"type":"function_call","name":"f"}]}"#,
            "input[0]",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":7}]}"#,
            "input[0].content",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"function"}]}"#,
            "tools[0]",
        ),
        (
            r#"{"model":"m","input":"x","max_output_tokens":-1}"#,
            "max_output_tokens",
        ),
        (
            r#"{"model":"m","input":"x","tool_choice":3}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"text":"no type"}]}]}"#,
            "input[0].content[0].type",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text"}]}]}"#,
            "input[0].content[0]",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"reasoning_text","text":"x"}]}]}"#,
            "input[0]",
        ),
    ] {
        let err = parse::<ResponsesRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some(param), "{body}: {err}");
    }
}

// ---- request mapping ----

#[test]
fn instructions_become_a_leading_system_message_and_developer_is_system() {
    let chat = chat_json(
        r#"{"model":"m","instructions":"be brief","input":[{"role":"developer","content":"d"},{"role":"user","content":"u"}]}"#,
    );
    assert_eq!(
        chat["messages"],
        json!([{"role":"system","content":"be brief"},{"role":"system","content":"d"},{"role":"user","content":"u"}])
    );
}

#[test]
fn sampling_fields_map_to_their_chat_names() {
    let chat = chat_json(
        r#"{"model":"m","input":"x","max_output_tokens":64,"temperature":0.5,"top_p":0.9,"user":"u1",
            "parallel_tool_calls":false,"reasoning":{"effort":"low","summary":"auto"},"text":{"verbosity":"low"},
            "store":false,"metadata":{"k":"v"},"previous_response_id":null}"#,
    );
    assert_eq!(chat["max_tokens"], 64);
    assert_eq!(chat["temperature"], 0.5);
    assert_eq!(chat["top_p"], 0.9);
    assert_eq!(chat["user"], "u1");
    assert_eq!(chat["parallel_tool_calls"], false);
    assert_eq!(chat["reasoning_effort"], "low");
    assert_eq!(chat["verbosity"], "low");
    for absent in [
        "store",
        "metadata",
        "max_output_tokens",
        "reasoning",
        "text",
        "stream",
    ] {
        assert!(
            chat.get(absent).is_none(),
            "{absent} must not reach the engine"
        );
    }
}

#[test]
fn a_stream_asks_the_engine_for_usage() {
    let chat = chat_json(
        r#"{"model":"m","input":"x","stream":true,"stream_options":{"include_obfuscation":false}}"#,
    );
    assert_eq!(chat["stream"], true);
    assert_eq!(chat["stream_options"], json!({"include_usage":true}));
}

#[test]
fn function_tools_and_tool_choice_map_to_chat_functions() {
    let chat = chat_json(
        r#"{"model":"m","input":"x","tools":[{"type":"function","name":"get","description":"d",
            "parameters":{"type":"object","properties":{}},"strict":true}],
            "tool_choice":{"type":"function","name":"get"}}"#,
    );
    assert_eq!(
        chat["tools"],
        json!([{"type":"function","function":{"name":"get","description":"d",
            "parameters":{"type":"object","properties":{}},"strict":true}}])
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type":"function","function":{"name":"get"}})
    );
    for mode in ["auto", "none", "required"] {
        let chat = chat_json(&format!(
            r#"{{"model":"m","input":"x","tool_choice":"{mode}"}}"#
        ));
        assert_eq!(chat["tool_choice"], mode);
    }
}

#[test]
fn text_format_maps_to_response_format() {
    let chat = chat_json(
        r#"{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"},"strict":true}}}"#,
    );
    assert_eq!(
        chat["response_format"],
        json!({"type":"json_schema","json_schema":{"name":"out","schema":{"type":"object"},"strict":true}})
    );
    let chat = chat_json(r#"{"model":"m","input":"x","text":{"format":{"type":"json_object"}}}"#);
    assert_eq!(chat["response_format"], json!({"type":"json_object"}));
    let chat = chat_json(r#"{"model":"m","input":"x","text":{"format":{"type":"text"}}}"#);
    assert!(chat.get("response_format").is_none());
}

#[test]
fn tool_round_trips_become_assistant_tool_calls_and_tool_messages() {
    let chat = chat_json(
        r#"{"model":"m","input":[
            {"role":"user","content":"weather in Paris and Rome?"},
            {"type":"reasoning","id":"rs_1","summary":[],"content":[{"type":"reasoning_text","text":"two calls"}]},
            {"type":"function_call","call_id":"c1","name":"w","arguments":"{\"city\":\"Paris\"}"},
            {"type":"function_call","call_id":"c2","name":"w","arguments":""},
            {"type":"function_call_output","call_id":"c1","output":"sunny"},
            {"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"rain"}]}
        ]}"#,
    );
    assert_eq!(
        chat["messages"],
        json!([
            {"role":"user","content":"weather in Paris and Rome?"},
            {"role":"assistant","content":null,"reasoning_content":"two calls","tool_calls":[
                {"id":"c1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"c2","type":"function","function":{"name":"w","arguments":"{}"}}]},
            {"role":"tool","content":"sunny","tool_call_id":"c1"},
            {"role":"tool","content":"rain","tool_call_id":"c2"}
        ])
    );
}

/// Codex's `view_image`: a tool's output that holds an image. Chat's tool messages carry text
/// only, so the tool message says where the image went and the images of the whole run of
/// tool results follow it as one user message, after the last tool message (templates want
/// an assistant's tool results together).
#[test]
fn images_in_tool_outputs_follow_the_tool_results_as_a_user_message() {
    let chat = chat_json(
        r#"{"model":"m","input":[
            {"role":"user","content":"look at both"},
            {"type":"function_call","call_id":"c1","name":"view_image","arguments":"{\"path\":\"a.png\"}"},
            {"type":"function_call","call_id":"c2","name":"view_image","arguments":"{\"path\":\"b.png\"}"},
            {"type":"function_call_output","call_id":"c1","output":[{"type":"input_image","image_url":"data:image/png;base64,AAAA"}]},
            {"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"b.png:"},{"type":"input_image","image_url":"data:image/png;base64,BBBB","detail":"low"}]},
            {"role":"user","content":"which is bigger?"}
        ]}"#,
    );
    let msgs = chat["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 6, "{msgs:#?}");
    assert_eq!(
        msgs[2],
        json!({"role":"tool","content":"(1 image returned, shown in the next message)","tool_call_id":"c1"})
    );
    assert_eq!(
        msgs[3],
        json!({"role":"tool","content":"b.png:","tool_call_id":"c2"})
    );
    assert_eq!(
        msgs[4],
        json!({"role":"user","content":[
            {"type":"text","text":super::to_chat::TOOL_IMAGES_TEXT},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,BBBB","detail":"low"}}
        ]})
    );
    assert_eq!(msgs[5], json!({"role":"user","content":"which is bigger?"}));
    // At the end of the input too (the usual case: the model is asked to go on).
    let chat = chat_json(
        r#"{"model":"m","input":[
            {"type":"function_call","call_id":"c1","name":"view_image","arguments":"{}"},
            {"type":"function_call_output","call_id":"c1","output":[{"type":"input_image","image_url":"https://x/i.png"}]}
        ]}"#,
    );
    let msgs = chat["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(msgs[2]["content"][1]["image_url"]["url"], "https://x/i.png");
    // An image by file id in a tool output is refused as anywhere else.
    let err = super::to_chat(
        &crate::request::parse(
            br#"{"model":"m","input":[{"type":"function_call_output","call_id":"c1","output":[{"type":"input_image","file_id":"f"}]}]}"#,
        )
        .unwrap(),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("file id"), "{err}");
}

#[test]
fn assistant_text_then_a_call_is_one_assistant_message() {
    let chat = chat_json(
        r#"{"model":"m","input":[{"role":"user","content":"q"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"let me look"}]},
            {"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}]}"#,
    );
    assert_eq!(chat["messages"][1]["content"], "let me look");
    assert_eq!(chat["messages"][1]["tool_calls"][0]["id"], "c1");
    assert_eq!(chat["messages"].as_array().unwrap().len(), 2);
}

#[test]
fn images_become_image_url_parts_and_text_parts_stay_parts_for_users() {
    let chat = chat_json(
        r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"what is"},
            {"type":"input_image","image_url":"https://x/i.png","detail":"high"}]},
            {"role":"user","content":[{"type":"input_text","text":"one"}]},
            {"role":"system","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]}]}"#,
    );
    assert_eq!(
        chat["messages"][0]["content"],
        json!([{"type":"text","text":"what is"},{"type":"image_url","image_url":{"url":"https://x/i.png","detail":"high"}}])
    );
    assert_eq!(chat["messages"][1]["content"], "one");
    assert_eq!(chat["messages"][2]["content"], "a\nb");
}

#[test]
fn unsupported_features_are_refused_naming_the_field() {
    for (body, param) in [
        (
            r#"{"model":"m","input":"x","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}"#,
            "tools[1].type",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"file_search","vector_store_ids":[]}]}"#,
            "tools[0].type",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"mcp","server_label":"s"}]}"#,
            "tools[0].type",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"code_interpreter"}]}"#,
            "tools[0].type",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"computer_use_preview"}]}"#,
            "tools[0].type",
        ),
        (
            r#"{"model":"m","input":"x","background":true}"#,
            "background",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}"#,
            "input[0].content[0].type",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"f"}]}]}"#,
            "input[0].content[0].file_id",
        ),
        (
            r#"{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}"#,
            "input[0].type",
        ),
        (
            r#"{"model":"m","input":[{"type":"web_search_call","id":"w"}]}"#,
            "input[0].type",
        ),
        (
            r#"{"model":"m","input":[{"role":"assistant","content":[{"type":"input_image","image_url":"u"}]}]}"#,
            "input[0].content[0]",
        ),
        (
            r#"{"model":"m","input":"x","include":["reasoning.encrypted_content","message.output_text.logprobs"]}"#,
            "include[1]",
        ),
        (
            r#"{"model":"m","input":"x","truncation":"auto"}"#,
            "truncation",
        ),
        (r#"{"model":"m","input":"x","prompt":{"id":"p"}}"#, "prompt"),
        (
            r#"{"model":"m","input":"x","conversation":"conv_1"}"#,
            "conversation",
        ),
        (
            r#"{"model":"m","input":"x","top_logprobs":3}"#,
            "top_logprobs",
        ),
        (
            r#"{"model":"m","input":"x","tool_choice":{"type":"web_search"}}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"m","input":"x","tool_choice":{"type":"allowed_tools","mode":"auto","tools":[]}}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"m","input":"x","text":{"format":{"type":"grammar"}}}"#,
            "text.format.type",
        ),
    ] {
        let e = refused(body);
        assert!(
            matches!(e, ResponsesError::Unsupported { .. }),
            "{body}: {e:?}"
        );
        assert_eq!(e.param(), param, "{body}");
        let as_request: crate::RequestError = e.into();
        assert_eq!(as_request.param.as_deref(), Some(param));
    }
}

#[test]
fn requests_that_make_no_sense_are_invalid() {
    for (body, param) in [
        (r#"{"model":"m","input":[]}"#, "input"),
        (
            r#"{"model":"m","input":"x","max_output_tokens":0}"#,
            "max_output_tokens",
        ),
        (
            r#"{"model":"m","input":[{"role":"tool","content":"x"}]}"#,
            "input[0].role",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}"#,
            "tool_choice.name",
        ),
        (
            r#"{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"n"}}}"#,
            "text.format.schema",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"function","name":""}]}"#,
            "tools[0].name",
        ),
    ] {
        let e = refused(body);
        assert!(matches!(e, ResponsesError::Invalid { .. }), "{body}: {e:?}");
        assert_eq!(e.param(), param, "{body}");
    }
}

#[test]
fn accepted_hints_are_not_forwarded_and_null_refusable_fields_pass() {
    let chat = chat_json(
        r#"{"model":"m","input":"x","service_tier":"auto","prompt_cache_key":"k","safety_identifier":"s",
            "include":["reasoning.encrypted_content"],"truncation":"disabled","top_logprobs":0,"prompt":null}"#,
    );
    for absent in [
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "include",
        "truncation",
    ] {
        assert!(chat.get(absent).is_none(), "{absent}");
    }
}

#[test]
fn a_client_copy_of_a_mapped_field_is_replaced_not_duplicated() {
    let chat = serde_json::to_string(
        &to_chat(&req(r#"{"model":"m","input":"x","reasoning_effort":"high","reasoning":{"effort":"low"}}"#), &[]).unwrap(),
    )
    .unwrap();
    assert_eq!(chat.matches("reasoning_effort").count(), 1, "{chat}");
    assert!(chat.contains(r#""reasoning_effort":"low""#));
}

/// The shape Codex sends on a second turn (stateless: `store: false`, the whole conversation in
/// `input`, encrypted reasoning asked for), translated whole.
#[test]
fn a_codex_style_turn_translates() {
    let body = json!({
        "model":"gpt-oss-20b","instructions":"You are Codex.","stream":true,"store":false,
        "tool_choice":"auto","parallel_tool_calls":false,
        "reasoning":{"effort":"medium","summary":"auto"},
        "include":["reasoning.encrypted_content"],"prompt_cache_key":"0199-uuid",
        "tools":[{"type":"function","name":"shell","description":"Runs a command","strict":false,
            "parameters":{"type":"object","properties":{"command":{"type":"array","items":{"type":"string"}}},"required":["command"]}}],
        "input":[
            {"type":"message","role":"user","content":[{"type":"input_text","text":"<environment_context>cwd</environment_context>"}]},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"list files"}]},
            {"type":"reasoning","id":"rs_1","summary":[],"content":null,"encrypted_content":null},
            {"type":"function_call","id":"fc_1","name":"shell","arguments":"{\"command\":[\"ls\"]}","call_id":"call_1","status":"completed"},
            {"type":"function_call_output","call_id":"call_1","output":"a.txt"}
        ]
    });
    let chat = chat_json(&body.to_string());
    assert_eq!(
        chat["messages"],
        json!([
            {"role":"system","content":"You are Codex."},
            {"role":"user","content":"<environment_context>cwd</environment_context>"},
            {"role":"user","content":"list files"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
                "function":{"name":"shell","arguments":"{\"command\":[\"ls\"]}"}}]},
            {"role":"tool","content":"a.txt","tool_call_id":"call_1"}
        ])
    );
    assert_eq!(chat["tools"][0]["function"]["name"], "shell");
    assert_eq!(chat["tool_choice"], "auto");
    assert_eq!(chat["parallel_tool_calls"], false);
    assert_eq!(chat["reasoning_effort"], "medium");
    assert_eq!(chat["stream_options"], json!({"include_usage":true}));
    assert!(chat.get("prompt_cache_key").is_none());
}

// ---- previous_response_id ----

#[test]
fn a_stored_conversation_comes_before_the_new_input() {
    let first = req(
        r#"{"model":"m","instructions":"old","input":"weather?","tools":[{"type":"function","name":"w"}]}"#,
    );
    let chat = chat_answer(
        json!({"role":"assistant","content":null,"tool_calls":[
        {"id":"call_9","type":"function","function":{"name":"w","arguments":"{}"}}]}),
        "tool_calls",
    );
    let answer = response_from_chat(
        Response::start(&first, "t1", 1),
        &chat,
        ReasoningStyle::Text,
    );
    let history = history_items(&first.input, &answer);

    let second = req(
        r#"{"model":"m","instructions":"new","previous_response_id":"resp_t1",
            "input":[{"type":"function_call_output","call_id":"call_9","output":"sunny"}]}"#,
    );
    let chat = serde_json::to_value(to_chat(&second, &history).unwrap()).unwrap();
    assert_eq!(
        chat["messages"],
        json!([
            {"role":"system","content":"new"},
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"call_9","type":"function","function":{"name":"w","arguments":"{}"}}]},
            {"role":"tool","content":"sunny","tool_call_id":"call_9"}
        ])
    );
}

#[test]
fn a_refused_item_in_the_history_names_previous_response_id() {
    let history = vec![InputItem::Other {
        kind: "web_search_call".to_owned(),
    }];
    let e = to_chat(&req(r#"{"model":"m","input":"x"}"#), &history).unwrap_err();
    assert_eq!(e.param(), "previous_response_id.type");
}

// ---- whole answers ----

fn chat_answer(message: Value, finish: &str) -> ChatCompletionResponse {
    serde_json::from_value(json!({
        "id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
        "choices":[{"index":0,"message":message,"finish_reason":finish}],
        "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,
            "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}
    }))
    .unwrap()
}

#[test]
fn a_text_answer_is_a_completed_response_with_usage() {
    let r = response_from_chat(
        started(r#"{"model":"m","input":"x"}"#),
        &chat_answer(
            json!({"role":"assistant","content":"Hello","reasoning_content":"think"}),
            "stop",
        ),
        ReasoningStyle::Text,
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["id"], "resp_s1");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["incomplete_details"], Value::Null);
    assert_eq!(
        v["output"],
        json!([
            {"type":"reasoning","id":"rs_s1_0","status":"completed","summary":[],
             "content":[{"type":"reasoning_text","text":"think"}]},
            {"type":"message","id":"msg_s1_1","status":"completed","role":"assistant",
             "content":[{"type":"output_text","text":"Hello","annotations":[],"logprobs":[]}]}
        ])
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":5,
               "output_tokens_details":{"reasoning_tokens":2},"total_tokens":15})
    );
}

#[test]
fn a_tool_call_answer_has_function_call_items_and_no_empty_message() {
    let r = response_from_chat(
        started(r#"{"model":"m","input":"x"}"#),
        &chat_answer(
            json!({"role":"assistant","content":"","tool_calls":[
                {"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}},
                {"type":"function","function":{"name":"g","arguments":{"y":2}}}]}),
            "tool_calls",
        ),
        ReasoningStyle::Text,
    );
    assert_eq!(r.status, Status::Completed);
    let v = serde_json::to_value(&r.output).unwrap();
    assert_eq!(
        v,
        json!([
            {"type":"function_call","id":"fc_s1_0","status":"completed","call_id":"call_a","name":"f","arguments":"{\"x\":1}"},
            {"type":"function_call","id":"fc_s1_1","status":"completed","call_id":"call_s1_2","name":"g","arguments":"{\"y\":2}"}
        ])
    );
}

#[test]
fn length_is_incomplete_with_max_output_tokens() {
    let r = response_from_chat(
        started(r#"{"model":"m","input":"x","max_output_tokens":5}"#),
        &chat_answer(json!({"role":"assistant","content":"Hel"}), "length"),
        ReasoningStyle::Text,
    );
    assert_eq!(r.status, Status::Incomplete);
    assert_eq!(
        r.incomplete_details.as_ref().unwrap().reason,
        "max_output_tokens"
    );
    assert!(matches!(
        r.output[0],
        OutputItem::Message {
            status: ItemStatus::Incomplete,
            ..
        }
    ));
    assert_eq!(r.max_output_tokens, Some(5));
}

#[test]
fn an_answer_without_choices_is_a_failed_response() {
    let chat: ChatCompletionResponse = serde_json::from_str(r#"{"id":"x","choices":[]}"#).unwrap();
    let r = response_from_chat(
        started(r#"{"model":"m","input":"x"}"#),
        &chat,
        ReasoningStyle::Text,
    );
    assert_eq!(r.status, Status::Failed);
    assert_eq!(r.error.as_ref().unwrap().code, "server_error");
}

#[test]
fn the_response_echoes_the_request_settings() {
    let r = started(
        r#"{"model":"m","input":"x","instructions":"i","tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],
            "tool_choice":"required","temperature":0.2,"store":false,"metadata":{"a":"b"},"text":{"format":{"type":"json_object"}}}"#,
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["instructions"], "i");
    assert_eq!(
        v["tools"],
        json!([{"type":"function","name":"f","parameters":{"type":"object"}}])
    );
    assert_eq!(v["tool_choice"], "required");
    assert_eq!(v["temperature"], 0.2);
    assert_eq!(v["store"], false);
    assert_eq!(v["metadata"], json!({"a":"b"}));
    assert_eq!(v["text"], json!({"format":{"type":"json_object"}}));
    assert_eq!(v["status"], "in_progress");
    assert_eq!(v["truncation"], "disabled");
    assert_eq!(v["parallel_tool_calls"], true);
}

#[test]
fn a_response_round_trips_through_json() {
    let r = response_from_chat(
        started(
            r#"{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"f"}}"#,
        ),
        &chat_answer(
            json!({"role":"assistant","content":"a","reasoning":"r","tool_calls":[
                {"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}),
            "tool_calls",
        ),
        ReasoningStyle::Text,
    );
    let text = serde_json::to_string(&r).unwrap();
    let back: Response = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
}

// ---- streams ----

#[test]
fn a_streamed_text_answer_is_byte_exact() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    let mut events = t.start();
    events.extend(t.push(&chunk(json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}))));
    events.extend(t.push(&text_chunk("Hel")));
    events.extend(t.push(&text_chunk("lo")));
    events.extend(t.push(&finish_chunk("stop")));
    events.extend(t.push(&usage_chunk()));
    events.extend(t.finish());
    let resp = |status: &str, output: &str, usage: &str| {
        format!(
            r#"{{"id":"resp_s1","object":"response","created_at":1700000000,"status":"{status}","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"m","output":[{output}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{{}},"store":true,"temperature":null,"text":{{"format":{{"type":"text"}}}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","usage":{usage},"user":null,"metadata":{{}}}}"#
        )
    };
    let part = |text: &str| {
        format!(r#"{{"type":"output_text","text":"{text}","annotations":[],"logprobs":[]}}"#)
    };
    let done_item = format!(
        r#"{{"type":"message","id":"msg_s1_0","status":"completed","role":"assistant","content":[{}]}}"#,
        part("Hello")
    );
    let usage = r#"{"input_tokens":7,"input_tokens_details":{"cached_tokens":3},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":9}"#;
    let expected = [
        format!("event: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{}}}\n\n", resp("in_progress", "", "null")),
        format!("event: response.in_progress\ndata: {{\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{}}}\n\n", resp("in_progress", "", "null")),
        r#"event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"type":"message","id":"msg_s1_0","status":"in_progress","role":"assistant","content":[]}}

"#.to_owned(),
        format!("event: response.content_part.added\ndata: {{\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_s1_0\",\"output_index\":0,\"content_index\":0,\"part\":{}}}\n\n", part("")),
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_s1_0\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hel\",\"logprobs\":[]}\n\n".to_owned(),
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_s1_0\",\"output_index\":0,\"content_index\":0,\"delta\":\"lo\",\"logprobs\":[]}\n\n".to_owned(),
        "event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_s1_0\",\"output_index\":0,\"content_index\":0,\"text\":\"Hello\",\"logprobs\":[]}\n\n".to_owned(),
        format!("event: response.content_part.done\ndata: {{\"type\":\"response.content_part.done\",\"sequence_number\":7,\"item_id\":\"msg_s1_0\",\"output_index\":0,\"content_index\":0,\"part\":{}}}\n\n", part("Hello")),
        format!("event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":8,\"output_index\":0,\"item\":{done_item}}}\n\n"),
        format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{}}}\n\n", resp("completed", &done_item, usage)),
    ]
    .concat();
    assert_eq!(sse(&events), expected);
}

#[test]
fn a_streamed_tool_call_is_byte_exact() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi","tools":[{"type":"function","name":"get"}]}"#),
        ReasoningStyle::Text,
    );
    let mut events = Vec::new();
    events.extend(t.push(&chunk(json!({"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[
        {"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]},"finish_reason":null}]}))));
    events.extend(
        t.push(&chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
        {"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":null}]}))),
    );
    events.extend(
        t.push(&chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
        {"index":0,"function":{"arguments":"1}"}}]},"finish_reason":null}]}))),
    );
    events.extend(t.push(&finish_chunk("tool_calls")));
    events.extend(t.push(&usage_chunk()));
    events.extend(t.finish());
    // The created/in_progress/completed frames are covered by the text test; here the items.
    let frames = sse(&events[2..events.len() - 1]);
    let expected = concat!(
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"type\":\"function_call\",\"id\":\"fc_s1_0\",\"status\":\"in_progress\",\"call_id\":\"call_1\",\"name\":\"get\",\"arguments\":\"\"}}\n\n",
        "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":3,\"item_id\":\"fc_s1_0\",\"output_index\":0,\"delta\":\"{\\\"a\\\":\"}\n\n",
        "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":4,\"item_id\":\"fc_s1_0\",\"output_index\":0,\"delta\":\"1}\"}\n\n",
        "event: response.function_call_arguments.done\ndata: {\"type\":\"response.function_call_arguments.done\",\"sequence_number\":5,\"item_id\":\"fc_s1_0\",\"output_index\":0,\"name\":\"get\",\"arguments\":\"{\\\"a\\\":1}\"}\n\n",
        "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"sequence_number\":6,\"output_index\":0,\"item\":{\"type\":\"function_call\",\"id\":\"fc_s1_0\",\"status\":\"completed\",\"call_id\":\"call_1\",\"name\":\"get\",\"arguments\":\"{\\\"a\\\":1}\"}}\n\n",
    );
    assert_eq!(frames, expected);
    let last = events.last().unwrap();
    assert_eq!(last.event_type(), "response.completed");
    assert_eq!(last.sequence_number(), 7);
    let ResponseEvent::Completed { response, .. } = last else {
        panic!()
    };
    assert_eq!(response.usage.as_ref().unwrap().input_tokens, 7);
    assert_eq!(response.output.len(), 1);
}

#[test]
fn reasoning_then_text_then_two_calls_get_their_own_items_in_order() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    let mut events = Vec::new();
    events.extend(t.push(&chunk(
        json!({"choices":[{"index":0,"delta":{"reasoning_content":"hm"}}]}),
    )));
    events.extend(t.push(&chunk(
        json!({"choices":[{"index":0,"delta":{"reasoning":" ok"}}]}),
    )));
    events.extend(t.push(&text_chunk("Sure.")));
    events.extend(
        t.push(&chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
        {"index":0,"id":"a","function":{"name":"f","arguments":"{}"}},
        {"index":1,"id":"b","function":{"name":"g","arguments":""}}]}}]}))),
    );
    events.extend(t.push(&finish_chunk("tool_calls")));
    events.extend(t.finish());
    let kinds: Vec<_> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.output_item.added",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.sequence_number(), i as u64);
    }
    let out = &t.response().output;
    assert!(matches!(&out[0], OutputItem::Reasoning { content, .. } if content[0].text == "hm ok"));
    assert!(
        matches!(&out[2], OutputItem::FunctionCall { call_id, arguments, .. } if call_id == "a" && arguments == "{}")
    );
    assert!(
        matches!(&out[3], OutputItem::FunctionCall { call_id, arguments, .. } if call_id == "b" && arguments == "{}")
    );
    // No usage chunk: the response says so rather than inventing zeros.
    assert_eq!(t.response().usage, None);
}

#[test]
fn the_streamed_response_equals_the_whole_answer_translation() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    t.push(&chunk(
        json!({"choices":[{"index":0,"delta":{"reasoning_content":"think"}}]}),
    ));
    t.push(&text_chunk("Hel"));
    t.push(&text_chunk("lo"));
    t.push(&finish_chunk("stop"));
    t.push(&chunk(json!({"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,
        "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}})));
    t.finish();
    let whole = response_from_chat(
        started(r#"{"model":"m","input":"hi"}"#),
        &chat_answer(
            json!({"role":"assistant","content":"Hello","reasoning_content":"think"}),
            "stop",
        ),
        ReasoningStyle::Text,
    );
    assert_eq!(t.response(), &whole);
}

#[test]
fn a_stream_cut_by_length_ends_incomplete() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    t.push(&text_chunk("Hel"));
    let closing = t.push(&finish_chunk("length"));
    assert!(matches!(
        closing.last(),
        Some(ResponseEvent::OutputItemDone {
            item: OutputItem::Message {
                status: ItemStatus::Incomplete,
                ..
            },
            ..
        })
    ));
    let end = t.finish();
    let [
        ResponseEvent::Incomplete {
            response,
            sequence_number,
        },
    ] = end.as_slice()
    else {
        panic!("{end:?}")
    };
    assert_eq!(*sequence_number, 8);
    assert_eq!(response.status, Status::Incomplete);
    assert_eq!(
        response.incomplete_details.as_ref().unwrap().reason,
        "max_output_tokens"
    );
}

#[test]
fn fail_ends_the_stream_with_response_failed_and_nothing_after() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    t.push(&text_chunk("Hel"));
    let end = t.fail("engine went away");
    let [ResponseEvent::Failed { response, .. }] = end.as_slice() else {
        panic!("{end:?}")
    };
    assert_eq!(response.status, Status::Failed);
    assert_eq!(response.error.as_ref().unwrap().message, "engine went away");
    assert!(t.is_ended());
    assert!(t.push(&text_chunk("more")).is_empty());
    assert!(t.finish().is_empty());
    assert!(t.fail("again").is_empty());
}

#[test]
fn a_stream_that_stops_without_finish_reason_fails() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    t.push(&text_chunk("Hel"));
    let end = t.finish();
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].event_type(), "response.failed");
}

#[test]
fn fail_before_any_chunk_still_sends_created_first() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    let kinds: Vec<_> = t.fail("no engine").iter().map(|e| e.event_type()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
}

#[test]
fn content_after_the_finish_and_other_choices_are_ignored() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    t.push(&text_chunk("a"));
    t.push(&finish_chunk("stop"));
    assert!(t.push(&text_chunk("late")).is_empty());
    assert!(
        t.push(&chunk(
            json!({"choices":[{"index":1,"delta":{"content":"other"}}]})
        ))
        .is_empty()
    );
    let end = t.finish();
    let ResponseEvent::Completed { response, .. } = &end[0] else {
        panic!()
    };
    assert!(
        matches!(&response.output[0], OutputItem::Message { content, .. } if content[0].text == "a")
    );
}

#[test]
fn every_event_round_trips_and_names_its_type_twice() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    let mut events = t.push(&chunk(
        json!({"choices":[{"index":0,"delta":{"reasoning_content":"r","content":"t",
        "tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{}"}}]}}]}),
    ));
    events.extend(t.push(&finish_chunk("stop")));
    events.extend(t.finish());
    for e in &events {
        let frame = String::from_utf8(e.to_sse().to_vec()).unwrap();
        let (head, data) = frame.split_once('\n').unwrap();
        assert_eq!(head, format!("event: {}", e.event_type()));
        let data = data
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], e.event_type());
        assert_eq!(v, serde_json::to_value(e).unwrap());
        if let Some(r) = v.get("response") {
            let back: Response = serde_json::from_str(&r.to_string()).unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), *r);
        }
    }
}

// ---- usage for billing ----

#[test]
fn usage_is_read_from_a_native_answer_and_terminal_events_only() {
    let u = json!({"input_tokens":12,"input_tokens_details":{"cached_tokens":2},"output_tokens":3,
        "output_tokens_details":{"reasoning_tokens":1},"total_tokens":15});
    let answer = json!({"id":"resp_1","object":"response","output":[{"type":"message","content":[]}],"usage":u});
    let got = usage_of_answer(answer.to_string().as_bytes()).unwrap();
    assert_eq!(got.plausible_tokens(), Some((12, 3)));
    assert_eq!(got.input_tokens_details.cached_tokens, 2);
    assert_eq!(got.output_tokens_details.reasoning_tokens, 1);
    for kind in [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ] {
        let ev = json!({"type":kind,"sequence_number":9,"response":{"id":"r","usage":u}});
        assert_eq!(
            usage_of_event(ev.to_string().as_bytes()),
            Some(got.clone()),
            "{kind}"
        );
    }
    let created = json!({"type":"response.created","sequence_number":0,"response":{"usage":u}});
    assert_eq!(usage_of_event(created.to_string().as_bytes()), None);
    assert_eq!(
        usage_of_event(br#"{"type":"response.completed","response":{"usage":null}}"#),
        None
    );
    assert_eq!(usage_of_answer(b"not json"), None);
    assert_eq!(usage_of_event(b"[DONE]"), None);
    let huge = json!({"usage":{"input_tokens":u64::MAX,"output_tokens":1}});
    assert_eq!(
        usage_of_answer(huge.to_string().as_bytes())
            .unwrap()
            .plausible_tokens(),
        None
    );
}

#[test]
fn translated_stream_usage_is_readable_by_the_native_reader() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    t.push(&text_chunk("a"));
    t.push(&finish_chunk("stop"));
    t.push(&usage_chunk());
    let end = t.finish();
    let frame = end[0].to_sse();
    let data = std::str::from_utf8(&frame)
        .unwrap()
        .split_once("data: ")
        .unwrap()
        .1
        .trim_end();
    assert_eq!(
        usage_of_event(data.as_bytes()).unwrap().plausible_tokens(),
        Some((7, 2))
    );
}

// ---- hostile input ----

#[test]
fn deep_nesting_is_refused_before_it_is_parsed() {
    let body = format!(
        r#"{{"model":"m","input":"x","metadata":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(parse::<ResponsesRequest>(body.as_bytes()).is_err());
    let nested_schema = format!(
        r#"{{"model":"m","input":"x","tools":[{{"type":"function","name":"f","parameters":{}{}}}]}}"#,
        "[".repeat(120),
        "]".repeat(120)
    );
    // Within the depth cap: parsed and translated without overflowing the stack.
    let r = req(&nested_schema);
    assert!(to_chat(&r, &[]).is_ok());
}

#[test]
fn huge_tool_lists_and_unknown_field_floods_are_capped() {
    let tools: Vec<Value> = (0..MAX_TOOLS + 1)
        .map(|i| json!({"type":"function","name":format!("t{i}")}))
        .collect();
    let body = json!({"model":"m","input":"x","tools":tools}).to_string();
    assert_eq!(
        refused(&body),
        ResponsesError::TooMany {
            param: "tools",
            max: MAX_TOOLS,
            got: MAX_TOOLS + 1
        }
    );
    let ok = json!({"model":"m","input":"x","tools":tools[..MAX_TOOLS]}).to_string();
    assert!(to_chat(&req(&ok), &[]).is_ok());

    let mut flood = serde_json::Map::new();
    flood.insert("model".into(), json!("m"));
    flood.insert("input".into(), json!("x"));
    for i in 0..=MAX_UNKNOWN_FIELDS {
        flood.insert(format!("x{i}"), json!(1));
    }
    let e = refused(&Value::Object(flood).to_string());
    assert!(
        matches!(
            e,
            ResponsesError::TooMany {
                max: MAX_UNKNOWN_FIELDS,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn garbage_chunks_never_panic_the_translator() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Text,
    );
    for v in [
        json!({}),
        json!({"choices":[{"index":0,"delta":{"tool_calls":"nope"}}]}),
        json!({"choices":[{"index":0,"delta":{"tool_calls":[{"function":null}]}}]}),
        json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":4000000000u64,"function":{"arguments":"x"}}]}}]}),
        json!({"choices":[{"index":0,"delta":{"reasoning_content":5,"content":null}}]}),
        json!({"choices":[{"index":0,"delta":{"tool_calls":null}}]}),
    ] {
        t.push(&chunk(v));
    }
    t.push(&finish_chunk("stop"));
    let end = t.finish();
    assert_eq!(
        end.last().map(ResponseEvent::event_type),
        Some("response.completed")
    );
    let ResponseEvent::Completed { response, .. } = &end[0] else {
        panic!("{end:?}")
    };
    // The call without an id got a derived one; its arguments were kept.
    assert!(
        response
            .output
            .iter()
            .any(|i| matches!(i, OutputItem::FunctionCall { arguments, .. } if arguments == "x"))
    );
}

#[test]
fn summary_style_streams_reasoning_as_openai_summary_events() {
    let mut t = StreamTranslator::new(
        started(r#"{"model":"m","input":"hi"}"#),
        ReasoningStyle::Summary,
    );
    let mut events = t.push(&chunk(
        json!({"choices":[{"index":0,"delta":{"reasoning_content":"a"}}]}),
    ));
    events.extend(t.push(&chunk(
        json!({"choices":[{"index":0,"delta":{"reasoning_content":"b"}}]}),
    )));
    events.extend(t.push(&text_chunk("x")));
    events.extend(t.push(&finish_chunk("stop")));
    events.extend(t.finish());
    let frames = sse(&events[2..8]);
    let expected = concat!(
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"type\":\"reasoning\",\"id\":\"rs_s1_0\",\"status\":\"in_progress\",\"summary\":[],\"content\":[]}}\n\n",
        "event: response.reasoning_summary_part.added\ndata: {\"type\":\"response.reasoning_summary_part.added\",\"sequence_number\":3,\"item_id\":\"rs_s1_0\",\"output_index\":0,\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}}\n\n",
        "event: response.reasoning_summary_text.delta\ndata: {\"type\":\"response.reasoning_summary_text.delta\",\"sequence_number\":4,\"item_id\":\"rs_s1_0\",\"output_index\":0,\"summary_index\":0,\"delta\":\"a\"}\n\n",
        "event: response.reasoning_summary_text.delta\ndata: {\"type\":\"response.reasoning_summary_text.delta\",\"sequence_number\":5,\"item_id\":\"rs_s1_0\",\"output_index\":0,\"summary_index\":0,\"delta\":\"b\"}\n\n",
        "event: response.reasoning_summary_text.done\ndata: {\"type\":\"response.reasoning_summary_text.done\",\"sequence_number\":6,\"item_id\":\"rs_s1_0\",\"output_index\":0,\"summary_index\":0,\"text\":\"ab\"}\n\n",
        "event: response.reasoning_summary_part.done\ndata: {\"type\":\"response.reasoning_summary_part.done\",\"sequence_number\":7,\"item_id\":\"rs_s1_0\",\"output_index\":0,\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"ab\"}}\n\n",
    );
    assert_eq!(frames, expected);
    // The streamed response equals the whole-answer translation in the same style.
    let whole = response_from_chat(
        started(r#"{"model":"m","input":"hi"}"#),
        &chat_answer(
            json!({"role":"assistant","content":"x","reasoning_content":"ab"}),
            "stop",
        ),
        ReasoningStyle::Summary,
    );
    assert_eq!(t.response().output, whole.output);
    assert!(
        matches!(&whole.output[0], OutputItem::Reasoning { summary, content, .. }
        if summary[0].text == "ab" && content.is_empty())
    );
}

/// Whatever an engine streams (any mix and order of reasoning, text, tool-call pieces, usage,
/// finish reasons and junk, ended by `finish` or `fail`), the events form a well-nested
/// stream: sequence numbers 0, 1, 2, ...; created and in_progress first; one terminal event,
/// last; each item added once and, unless the response failed, done once after all of its
/// deltas; and the final response's text and arguments are exactly what the deltas said.
mod stream_invariants {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::{chunk, started};
    use crate::responses::{OutputItem, ReasoningStyle, ResponseEvent, StreamTranslator};

    fn step() -> impl Strategy<Value = Value> {
        let text = prop_oneof![Just(""), Just("a"), Just("é✓"), Just("\"q\"\n")];
        prop_oneof![
            text.clone()
                .prop_map(|t| json!({"choices":[{"index":0,"delta":{"reasoning_content":t}}]})),
            text.clone()
                .prop_map(|t| json!({"choices":[{"index":0,"delta":{"content":t}}]})),
            (
                0u32..3,
                proptest::option::of(Just("call_x")),
                proptest::option::of(Just("f")),
                text
            )
                .prop_map(|(i, id, name, args)| json!({"choices":[{"index":0,"delta":{
                    "tool_calls":[{"index":i,"id":id,"function":{"name":name,"arguments":args}}]}}]})),
            prop_oneof![Just("stop"), Just("length"), Just("tool_calls")]
                .prop_map(|r| json!({"choices":[{"index":0,"delta":{},"finish_reason":r}]})),
            Just(json!({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}})),
            Just(json!({"choices":[{"index":1,"delta":{"content":"other choice"}}]})),
            Just(json!({"choices":[{"index":0,"delta":{"tool_calls":"junk"}}]})),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_chunk_sequence_gives_a_well_nested_stream(
            steps in proptest::collection::vec(step(), 0..24),
            fail in any::<bool>(),
            summary in any::<bool>(),
        ) {
            let style = if summary { ReasoningStyle::Summary } else { ReasoningStyle::Text };
            let mut t = StreamTranslator::new(started(r#"{"model":"m","input":"hi"}"#), style);
            let mut events = Vec::new();
            for s in steps {
                events.extend(t.push(&chunk(s)));
            }
            events.extend(if fail { t.fail("boom") } else { t.finish() });

            prop_assert!(events.len() >= 3);
            prop_assert_eq!(events[0].event_type(), "response.created");
            prop_assert_eq!(events[1].event_type(), "response.in_progress");
            for (i, e) in events.iter().enumerate() {
                prop_assert_eq!(e.sequence_number(), i as u64);
                prop_assert_eq!(e.is_terminal(), i == events.len() - 1);
            }
            let (final_response, failed) = match events.last() {
                Some(ResponseEvent::Completed { response, .. })
                | Some(ResponseEvent::Incomplete { response, .. }) => (response, false),
                Some(ResponseEvent::Failed { response, .. }) => (response, true),
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };

            let mut added: HashMap<u32, String> = HashMap::new();
            let mut done: HashMap<u32, usize> = HashMap::new();
            let mut text: HashMap<String, String> = HashMap::new();
            for e in &events {
                match e {
                    ResponseEvent::OutputItemAdded { output_index, item, .. } => {
                        prop_assert!(added.insert(*output_index, item.id().to_owned()).is_none());
                    }
                    ResponseEvent::OutputItemDone { output_index, .. } => {
                        prop_assert!(added.contains_key(output_index));
                        *done.entry(*output_index).or_default() += 1;
                    }
                    ResponseEvent::OutputTextDelta { item_id, output_index, delta, .. }
                    | ResponseEvent::ReasoningTextDelta { item_id, output_index, delta, .. }
                    | ResponseEvent::ReasoningSummaryTextDelta { item_id, output_index, delta, .. }
                    | ResponseEvent::FunctionCallArgumentsDelta { item_id, output_index, delta, .. }
                    | ResponseEvent::CustomToolCallInputDelta { item_id, output_index, delta, .. } => {
                        prop_assert_eq!(added.get(output_index), Some(item_id));
                        prop_assert!(!done.contains_key(output_index), "delta after done");
                        text.entry(item_id.clone()).or_default().push_str(delta);
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(added.len(), final_response.output.len());
            for (i, item) in final_response.output.iter().enumerate() {
                prop_assert_eq!(added.get(&(i as u32)).map(String::as_str), Some(item.id()));
                if !failed {
                    prop_assert_eq!(done.get(&(i as u32)), Some(&1));
                }
                let streamed = text.get(item.id()).cloned().unwrap_or_default();
                match item {
                    OutputItem::Message { content, .. } => {
                        prop_assert_eq!(&content[0].text, &streamed);
                    }
                    OutputItem::Reasoning { content, summary, .. } => {
                        let parts = if summary.is_empty() { content } else { summary };
                        prop_assert_eq!(&parts[0].text, &streamed);
                    }
                    OutputItem::FunctionCall { arguments, .. } => {
                        if !streamed.trim().is_empty() {
                            prop_assert_eq!(arguments, &streamed);
                        } else if !failed {
                            prop_assert_eq!(arguments, "{}");
                        }
                    }
                    OutputItem::CustomToolCall { input, .. } => {
                        prop_assert_eq!(input, &streamed);
                    }
                    // Shown whole when done: nothing streamed.
                    OutputItem::ToolSearchCall { .. } => prop_assert_eq!(&streamed, ""),
                }
            }
        }
    }
}

/// Codex groups its sub-agent tools in a `namespace` tool: each is offered as a function tool,
/// and `client_metadata` (its installation and session ids) stays with Lumen.
#[test]
fn namespace_tools_are_offered_one_by_one_and_client_metadata_stays_behind() {
    let req: ResponsesRequest = crate::request::parse(
        serde_json::json!({
            "model": "m",
            "input": "hi",
            "client_metadata": {"installation_id": "i", "session_id": "s"},
            "tools": [
                {"type": "function", "name": "shell", "parameters": {"type": "object"}},
                {"type": "namespace", "name": "multi_agent_v1", "description": "sub-agents", "tools": [
                    {"type": "function", "name": "close_agent", "parameters": {"type": "object"}},
                    {"type": "function", "name": "send_input", "description": "d"}
                ]}
            ],
            "tool_choice": {"type": "function", "name": "send_input"}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let chat = serde_json::to_value(to_chat(&req, &[]).unwrap()).unwrap();
    let names: Vec<&str> = chat["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shell", "close_agent", "send_input"]);
    assert_eq!(chat["tool_choice"]["function"]["name"], "send_input");
    assert!(chat.get("client_metadata").is_none(), "{chat}");
    // Echoed back as the client sent it.
    let echoed = serde_json::to_value(&req.tools.as_ref().unwrap()[1]).unwrap();
    assert_eq!(echoed["type"], "namespace");
    assert_eq!(echoed["tools"][1]["name"], "send_input");
}

// ---- custom tools (Codex's freeform apply_patch) ----

const APPLY_PATCH: &str = r#"{"type":"custom","name":"apply_patch","description":"Edit files.",
    "format":{"type":"grammar","syntax":"lark","definition":"start: begin_patch hunk+ end_patch"}}"#;

#[test]
fn a_custom_tool_is_a_function_of_one_string_with_its_grammar_described() {
    let body = format!(
        r#"{{"model":"m","input":"x","tools":[{APPLY_PATCH}],"tool_choice":{{"type":"custom","name":"apply_patch"}}}}"#
    );
    let chat = chat_json(&body);
    let f = &chat["tools"][0]["function"];
    assert_eq!(chat["tools"][0]["type"], "function");
    assert_eq!(f["name"], "apply_patch");
    assert_eq!(f["description"], "Edit files.");
    assert_eq!(f["parameters"]["required"], json!(["input"]));
    assert_eq!(f["parameters"]["properties"]["input"]["type"], "string");
    let described = f["parameters"]["properties"]["input"]["description"]
        .as_str()
        .unwrap();
    assert!(described.contains("lark grammar"), "{described}");
    assert!(
        described.ends_with("start: begin_patch hunk+ end_patch"),
        "{described}"
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type":"function","function":{"name":"apply_patch"}})
    );
    // The response echoes the tool and the choice as the client sent them.
    let echoed = serde_json::to_value(started(&body)).unwrap();
    assert_eq!(echoed["tools"][0]["type"], "custom");
    assert_eq!(echoed["tools"][0]["format"]["syntax"], "lark");
    assert_eq!(
        echoed["tool_choice"],
        json!({"type":"custom","name":"apply_patch"})
    );
}

#[test]
fn custom_tool_mistakes_are_refused_naming_the_field() {
    for (body, param) in [
        (
            r#"{"model":"m","input":"x","tools":[{"type":"custom","name":"p","format":{"type":"regexish"}}]}"#,
            "tools[0].format.type",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"custom","name":"p","format":{"type":"grammar","syntax":"lark"}}]}"#,
            "tools[0].format.definition",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"custom","name":""}]}"#,
            "tools[0].name",
        ),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"function","name":"p"}],"tool_choice":{"type":"custom","name":"p"}}"#,
            "tool_choice.name",
        ),
    ] {
        assert_eq!(refused(body).param(), param, "{body}");
    }
    // A custom tool without a name does not parse at all.
    assert!(
        crate::request::parse::<ResponsesRequest>(
            br#"{"model":"m","input":"x","tools":[{"type":"custom"}]}"#
        )
        .is_err()
    );
}

#[test]
fn custom_tool_calls_and_outputs_round_trip_as_tool_calls_and_tool_messages() {
    let body = json!({"model":"m","input":[
        {"role":"user","content":"fix it"},
        {"type":"custom_tool_call","id":"ctc_1","call_id":"call_1","name":"apply_patch",
         "input":"*** Begin Patch\n*** End Patch"},
        {"type":"custom_tool_call_output","call_id":"call_1","output":"Done!"}
    ]});
    let r = req(&body.to_string());
    // Stored and read back (the input_items of a response) as the same items.
    let Input::Items(items) = &r.input else {
        panic!("{:?}", r.input)
    };
    let InputItem::CustomToolCall(c) = &items[1] else {
        panic!("{items:?}")
    };
    assert_eq!(c.input, "*** Begin Patch\n*** End Patch");
    let again = serde_json::to_value(&r.input).unwrap();
    assert_eq!(again[1]["type"], "custom_tool_call");
    assert_eq!(again[2]["type"], "custom_tool_call_output");
    let chat = serde_json::to_value(to_chat(&r, &[]).unwrap()).unwrap();
    assert_eq!(
        chat["messages"][1],
        json!({"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{
            "name":"apply_patch","arguments":"{\"input\":\"*** Begin Patch\\n*** End Patch\"}"}}]})
    );
    assert_eq!(
        chat["messages"][2],
        json!({"role":"tool","content":"Done!","tool_call_id":"call_1"})
    );
}

#[test]
fn a_call_of_a_custom_tool_is_answered_as_a_custom_tool_call_item() {
    let body = format!(r#"{{"model":"m","input":"x","tools":[{APPLY_PATCH}]}}"#);
    let r = response_from_chat(
        started(&body),
        &chat_answer(
            json!({"role":"assistant","content":null,"tool_calls":[
                {"id":"call_a","type":"function","function":{"name":"apply_patch",
                 "arguments":"{\"input\":\"*** Begin Patch\\n*** End Patch\"}"}},
                {"id":"call_b","type":"function","function":{"name":"apply_patch",
                 "arguments":"not json at all"}}]}),
            "tool_calls",
        ),
        ReasoningStyle::Text,
    );
    let v = serde_json::to_value(&r.output).unwrap();
    assert_eq!(
        v,
        json!([
            {"type":"custom_tool_call","id":"ctc_s1_0","status":"completed","call_id":"call_a",
             "name":"apply_patch","input":"*** Begin Patch\n*** End Patch"},
            {"type":"custom_tool_call","id":"ctc_s1_1","status":"completed","call_id":"call_b",
             "name":"apply_patch","input":"not json at all"}
        ])
    );
    // The next turn sees the call as it was made.
    let InputItem::CustomToolCall(c) = &r.output_as_input()[0] else {
        panic!()
    };
    assert_eq!(c.input, "*** Begin Patch\n*** End Patch");
}

#[test]
fn a_streamed_custom_tool_call_is_byte_exact() {
    let body = format!(r#"{{"model":"m","input":"x","tools":[{APPLY_PATCH}]}}"#);
    let mut t = StreamTranslator::new(started(&body), ReasoningStyle::Text);
    let mut events = Vec::new();
    events.extend(t.push(&chunk(json!({"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[
        {"index":0,"id":"call_1","type":"function","function":{"name":"apply_patch","arguments":""}}]},"finish_reason":null}]}))));
    for piece in ["{\"input\":", "\"*** Begin", " Patch\"}"] {
        events.extend(
            t.push(&chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
            {"index":0,"function":{"arguments":piece}}]},"finish_reason":null}]}))),
        );
    }
    events.extend(t.push(&finish_chunk("tool_calls")));
    events.extend(t.finish());
    let frames = sse(&events[2..events.len() - 1]);
    let expected = concat!(
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"type\":\"custom_tool_call\",\"id\":\"ctc_s1_0\",\"status\":\"in_progress\",\"call_id\":\"call_1\",\"name\":\"apply_patch\",\"input\":\"\"}}\n\n",
        "event: response.custom_tool_call_input.delta\ndata: {\"type\":\"response.custom_tool_call_input.delta\",\"sequence_number\":3,\"item_id\":\"ctc_s1_0\",\"output_index\":0,\"delta\":\"*** Begin Patch\"}\n\n",
        "event: response.custom_tool_call_input.done\ndata: {\"type\":\"response.custom_tool_call_input.done\",\"sequence_number\":4,\"item_id\":\"ctc_s1_0\",\"output_index\":0,\"input\":\"*** Begin Patch\"}\n\n",
        "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"sequence_number\":5,\"output_index\":0,\"item\":{\"type\":\"custom_tool_call\",\"id\":\"ctc_s1_0\",\"status\":\"completed\",\"call_id\":\"call_1\",\"name\":\"apply_patch\",\"input\":\"*** Begin Patch\"}}\n\n",
    );
    assert_eq!(frames, expected);
    let ResponseEvent::Completed { response, .. } = events.last().unwrap() else {
        panic!("{:?}", events.last())
    };
    assert!(matches!(
        &response.output[0],
        OutputItem::CustomToolCall { input, .. } if input == "*** Begin Patch"
    ));
}

// ---- client-executed tool search (Codex's tool_search over its deferred tools) ----

/// The tool as Codex 0.171 sends it (description shortened).
const TOOL_SEARCH_TOOL: &str = r#"{"type":"tool_search","execution":"client","description":"Searches over deferred tool metadata.",
    "parameters":{"type":"object","properties":{"limit":{"type":"number"},"query":{"type":"string"}},"required":["query"],"additionalProperties":false}}"#;

#[test]
fn a_client_tool_search_is_offered_as_a_function_and_a_hosted_one_refused() {
    let body = format!(
        r#"{{"model":"m","input":"x","tools":[{{"type":"function","name":"exec_command"}},{TOOL_SEARCH_TOOL}]}}"#
    );
    let chat = chat_json(&body);
    assert_eq!(
        chat["tools"][1],
        json!({"type":"function","function":{"name":"tool_search",
            "description":"Searches over deferred tool metadata.",
            "parameters":{"type":"object","properties":{"limit":{"type":"number"},"query":{"type":"string"}},
                "required":["query"],"additionalProperties":false}}})
    );
    // Echoed as the client sent it.
    let echoed = serde_json::to_value(started(&body)).unwrap();
    assert_eq!(echoed["tools"][1]["type"], "tool_search");
    assert_eq!(echoed["tools"][1]["execution"], "client");
    assert_eq!(
        echoed["tools"][1]["parameters"]["required"],
        json!(["query"])
    );
    // Without a schema, the model is offered a query.
    let chat = chat_json(
        r#"{"model":"m","input":"x","tools":[{"type":"tool_search","execution":"client"}]}"#,
    );
    assert_eq!(
        chat["tools"][0]["function"]["parameters"]["required"],
        json!(["query"])
    );
    // A hosted search (OpenAI runs it) is refused like every built-in tool.
    for hosted in [
        r#"{"type":"tool_search"}"#,
        r#"{"type":"tool_search","execution":"server"}"#,
    ] {
        let body = format!(r#"{{"model":"m","input":"x","tools":[{hosted}]}}"#);
        assert_eq!(refused(&body).param(), "tools[0].type", "{body}");
    }
    // Another tool of that name would make its calls ambiguous.
    let body = format!(
        r#"{{"model":"m","input":"x","tools":[{TOOL_SEARCH_TOOL},{{"type":"function","name":"tool_search"}}]}}"#
    );
    assert_eq!(refused(&body).param(), "tools[1].name");
}

#[test]
fn tool_search_calls_and_outputs_round_trip_and_the_loaded_tools_join_tools() {
    let tool_search: Value = serde_json::from_str(TOOL_SEARCH_TOOL).unwrap();
    let body = json!({"model":"m","tools":[{"type":"function","name":"exec_command"}, tool_search],"input":[
        {"role":"user","content":"what is on my calendar?"},
        {"type":"tool_search_call","id":"tsc_1","call_id":"call_1","execution":"client","status":"completed",
         "arguments":{"query":"calendar"}},
        {"type":"tool_search_output","id":"tso_1","call_id":"call_1","execution":"client","status":"completed",
         "tools":[
            {"type":"namespace","name":"mcp__calendar__","description":"Calendar","tools":[
                {"type":"function","name":"mcp__calendar__list","description":"List events","parameters":{"type":"object","properties":{}}}]},
            {"type":"function","name":"exec_command"}]}
    ]});
    let r = req(&body.to_string());
    let Input::Items(items) = &r.input else {
        panic!("{:?}", r.input)
    };
    let InputItem::ToolSearchCall(c) = &items[1] else {
        panic!("{items:?}")
    };
    assert_eq!(
        (c.call_id.as_str(), c.arguments.get()),
        ("call_1", r#"{"query":"calendar"}"#)
    );
    let InputItem::ToolSearchOutput(o) = &items[2] else {
        panic!("{items:?}")
    };
    assert_eq!(o.tools.len(), 2);
    // Stored and read back (input_items, previous_response_id) as the same items.
    let again = serde_json::to_value(&r.input).unwrap();
    assert_eq!(
        again[1],
        json!({"type":"tool_search_call","id":"tsc_1","call_id":"call_1","arguments":{"query":"calendar"},"execution":"client"})
    );
    assert_eq!(again[2]["type"], "tool_search_output");
    assert_eq!(
        again[2]["tools"][0]["tools"][0]["name"],
        "mcp__calendar__list"
    );
    let reread: Input = serde_json::from_value(again).unwrap();
    assert_eq!(reread, r.input);

    let chat = serde_json::to_value(to_chat(&r, &[]).unwrap()).unwrap();
    assert_eq!(
        chat["messages"][1],
        json!({"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{
            "name":"tool_search","arguments":"{\"query\":\"calendar\"}"}}]})
    );
    assert_eq!(chat["messages"][2]["role"], "tool");
    assert_eq!(chat["messages"][2]["tool_call_id"], "call_1");
    let shown: Value =
        serde_json::from_str(chat["messages"][2]["content"].as_str().unwrap()).unwrap();
    assert_eq!(shown[0]["tools"][0]["name"], "mcp__calendar__list");
    // The loaded function joins the request's tools; exec_command is not offered twice.
    let names: Vec<&str> = chat["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["exec_command", "tool_search", "mcp__calendar__list"]
    );

    // A hosted search's items are not the client's to replay.
    let hosted = json!({"model":"m","input":[
        {"type":"tool_search_call","id":"tsc_1","call_id":"c","execution":"server","arguments":{}}]});
    assert_eq!(refused(&hosted.to_string()).param(), "input[0].type");
}

#[test]
fn a_call_of_tool_search_is_answered_as_a_tool_search_call_item() {
    let body = format!(r#"{{"model":"m","input":"x","tools":[{TOOL_SEARCH_TOOL}]}}"#);
    let answer = chat_answer(
        json!({"role":"assistant","content":null,"tool_calls":[
            {"id":"call_a","type":"function","function":{"name":"tool_search",
             "arguments":"{\"query\":\"calendar\",\"limit\":3}"}}]}),
        "tool_calls",
    );
    let r = response_from_chat(started(&body), &answer, ReasoningStyle::Text);
    assert_eq!(
        serde_json::to_value(&r.output).unwrap(),
        json!([{"type":"tool_search_call","id":"tsc_s1_0","status":"completed","call_id":"call_a",
                "arguments":{"query":"calendar","limit":3},"execution":"client"}])
    );
    // The next turn sees the call as it was made.
    let InputItem::ToolSearchCall(c) = &r.output_as_input()[0] else {
        panic!("{:?}", r.output_as_input())
    };
    assert_eq!(
        serde_json::from_str::<Value>(c.arguments.get()).unwrap(),
        json!({"query":"calendar","limit":3})
    );
    // Without the tool search tool, a function of that name is a function.
    let plain = response_from_chat(
        started(r#"{"model":"m","input":"x","tools":[{"type":"function","name":"tool_search"}]}"#),
        &answer,
        ReasoningStyle::Text,
    );
    assert!(
        matches!(&plain.output[0], OutputItem::FunctionCall { name, .. } if name == "tool_search")
    );
}

#[test]
fn a_streamed_tool_search_call_is_shown_whole_when_done() {
    let body = format!(r#"{{"model":"m","input":"x","tools":[{TOOL_SEARCH_TOOL}]}}"#);
    let mut t = StreamTranslator::new(started(&body), ReasoningStyle::Text);
    let mut events = Vec::new();
    events.extend(t.push(&chunk(json!({"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[
        {"index":0,"id":"call_1","type":"function","function":{"name":"tool_search","arguments":""}}]},"finish_reason":null}]}))));
    for piece in ["{\"query\":", "\"calendar\"}"] {
        events.extend(
            t.push(&chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
            {"index":0,"function":{"arguments":piece}}]},"finish_reason":null}]}))),
        );
    }
    events.extend(t.push(&finish_chunk("tool_calls")));
    events.extend(t.finish());
    let frames = sse(&events[2..events.len() - 1]);
    let expected = concat!(
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"type\":\"tool_search_call\",\"id\":\"tsc_s1_0\",\"status\":\"in_progress\",\"call_id\":\"call_1\",\"arguments\":{},\"execution\":\"client\"}}\n\n",
        "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"sequence_number\":3,\"output_index\":0,\"item\":{\"type\":\"tool_search_call\",\"id\":\"tsc_s1_0\",\"status\":\"completed\",\"call_id\":\"call_1\",\"arguments\":{\"query\":\"calendar\"},\"execution\":\"client\"}}\n\n",
    );
    assert_eq!(frames, expected);
    let ResponseEvent::Completed { response, .. } = events.last().unwrap() else {
        panic!("{:?}", events.last())
    };
    assert!(matches!(
        &response.output[0],
        OutputItem::ToolSearchCall { arguments, .. } if arguments["query"] == "calendar"
    ));
}
