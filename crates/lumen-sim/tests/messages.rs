//! Anthropic's Messages API on the simulator, over real TCP: served natively (event order,
//! usage in `message_start` and `message_delta`, errors in Anthropic's shape, `count_tokens`),
//! switched off per model, and the translation path (`lumen-anthropic-types`) against a model
//! without it, compared byte for byte with the native answer.

// The helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use lumen_anthropic_types::event::to_sse;
use lumen_anthropic_types::translate::{
    StreamTranslator, TranslateOptions, reply_from_chat, to_chat,
};
use lumen_anthropic_types::{MessagesRequest, NativeUsage};
use lumen_openai_types::{ChatCompletionChunk, ChatCompletionResponse};
use lumen_sim::{Faults, MessagesApi, SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Status and body of one request (HTTP/1.0: the body is not chunked and ends at EOF).
async fn send(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.0\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, body) = send(addr, path, &body.to_string()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn sim(messages_api: MessagesApi) -> (SocketAddr, Simulator) {
    lumen_sim::spawn(SimConfig {
        models: vec!["sim-model".to_owned(), "chat-only".to_owned()],
        messages_api,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// The `event:` names of a stream.
fn names(sse: &str) -> Vec<&str> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect()
}

/// The `data:` JSON of each event.
fn datas(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 5, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_whole_answer_is_a_message_with_usage() {
    let (addr, _sim) = sim(MessagesApi::All).await;
    let (status, m) = post(addr, "/v1/messages", &ask("sim-model", false)).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["model"], "sim-model");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": lumen_sim::answer(5)}])
    );
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(m["stop_sequence"], Value::Null);
    assert_eq!(m["usage"]["output_tokens"], 5);
    let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 8, "{keys:?}");
    let billed = NativeUsage::from_response(m.to_string().as_bytes()).unwrap();
    assert_eq!(billed.tokens().unwrap().1, 5);
}

#[tokio::test]
async fn a_stream_has_anthropics_event_order_and_usage() {
    let (addr, _sim) = sim(MessagesApi::All).await;
    let (status, sse) = send(addr, "/v1/messages", &ask("sim-model", true).to_string()).await;
    assert_eq!(status, 200, "{sse}");
    assert_eq!(
        names(&sse),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let d = datas(&sse);
    // Each `data:` repeats its event's name as `type`.
    for (name, data) in names(&sse).iter().zip(&d) {
        assert_eq!(data["type"], *name);
    }
    let input = d[0]["message"]["usage"]["input_tokens"].as_u64().unwrap();
    assert!(input > 0);
    let text: String = d[3..8]
        .iter()
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, lumen_sim::answer(5));
    assert_eq!(
        d[9]["delta"],
        json!({"stop_reason": "max_tokens", "stop_sequence": null})
    );
    assert_eq!(
        d[9]["usage"],
        json!({"input_tokens": input, "output_tokens": 5})
    );
    // Billing reads the same.
    let mut usage = NativeUsage::new();
    for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        usage.observe_event(line.as_bytes()).unwrap();
    }
    assert_eq!(usage.tokens(), Some((input, 5)));
}

#[tokio::test]
async fn the_api_is_switched_off_per_model_and_globally() {
    let (addr, sim_) = sim(MessagesApi::Except(vec!["chat-only".to_owned()])).await;
    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        let (status, _) = post(addr, path, &ask("chat-only", false)).await;
        assert_eq!(status, 404, "{path}");
        let (status, body) = post(addr, path, &ask("sim-model", false)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Its chat path still works.
    let (status, _) = post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "chat-only", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    drop(sim_);
    let (addr, _sim) = sim(MessagesApi::None).await;
    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        let (status, body) = post(addr, path, &ask("sim-model", false)).await;
        assert_eq!(status, 404, "{path}");
        // The missing route's body, not an Anthropic error: the engine has no such API.
        assert!(body.get("type").is_none(), "{body}");
    }
}

#[tokio::test]
async fn errors_take_anthropics_shape() {
    let (addr, sim) = sim(MessagesApi::All).await;
    let (status, e) = post(addr, "/v1/messages", &ask("nope", false)).await;
    assert_eq!(status, 404);
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "not_found_error");
    assert!(e["error"]["message"].as_str().unwrap().contains("nope"));
    let mut body = ask("sim-model", false);
    body["sim"] = json!({"status": 429});
    let (status, e) = post(addr, "/v1/messages", &body).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (429, Some("rate_limit_error"))
    );
    sim.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let (status, e) = post(addr, "/v1/messages", &ask("sim-model", false)).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (503, Some("overloaded_error"))
    );
    sim.set_faults(Faults::default());
    let (status, e) = post(
        addr,
        "/v1/messages",
        &json!({"model": "sim-model", "max_tokens": 1}),
    )
    .await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("invalid_request_error")),
        "{e}"
    );
    // Mid-stream: an `error` event, and nothing after it.
    let mut body = ask("sim-model", true);
    body["sim"] = json!({"error_after": 2});
    let (_, sse) = send(addr, "/v1/messages", &body.to_string()).await;
    let n = names(&sse);
    assert_eq!(n.last(), Some(&"error"), "{sse}");
    assert_eq!(n.iter().filter(|e| **e == "content_block_delta").count(), 2);
    assert_eq!(datas(&sse).last().unwrap()["error"]["type"], "api_error");
}

#[tokio::test]
async fn count_tokens_counts_the_prompt() {
    let (addr, sim) = sim(MessagesApi::All).await;
    let base = json!({"model": "sim-model", "messages": [{"role": "user", "content": "Lumen routes every request"}]});
    let (status, c) = post(addr, "/v1/messages/count_tokens", &base).await;
    assert_eq!(status, 200, "{c}");
    let n = c["input_tokens"].as_u64().unwrap();
    assert!(n > 0);
    assert_eq!(c.as_object().unwrap().len(), 1);
    let mut with_system = base.clone();
    with_system["system"] = json!([{"type": "text", "text": "Be brief."}]);
    let (_, c2) = post(addr, "/v1/messages/count_tokens", &with_system).await;
    assert!(c2["input_tokens"].as_u64().unwrap() > n);
    // Never counted as a generation.
    assert_eq!(sim.generation_count(), 0);
}

/// Runs a Messages request through the translation path: to chat, against a model without
/// the API, and back.
async fn translated(addr: SocketAddr, body: &Value, opts: &TranslateOptions) -> String {
    let req = MessagesRequest::parse(body.to_string().as_bytes()).unwrap();
    let t = to_chat(&req, opts).unwrap();
    let chat_body = serde_json::to_string(&t.request).unwrap();
    let (status, raw) = send(addr, "/v1/chat/completions", &chat_body).await;
    assert_eq!(status, 200, "{raw}");
    if !req.stream {
        let resp: ChatCompletionResponse = serde_json::from_str(&raw).unwrap();
        return reply_from_chat(&resp, &t.reply).unwrap().to_json();
    }
    let mut tr = StreamTranslator::new(t.reply);
    let mut events = Vec::new();
    for data in raw.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if data == "[DONE]" {
            break;
        }
        let chunk: ChatCompletionChunk = serde_json::from_str(data).unwrap();
        tr.push(&chunk, &mut events);
    }
    tr.finish(&mut events);
    String::from_utf8(to_sse(&events).to_vec()).unwrap()
}

#[tokio::test]
async fn the_translated_answer_matches_the_native_one_byte_for_byte() {
    // Two engines, one request each (so both answers carry the same ids): one serves Messages,
    // the other only chat.
    let opts = TranslateOptions {
        continuous_usage: true,
        ..TranslateOptions::default()
    };
    for stream in [true, false] {
        let body = json!({"model": "sim-model", "max_tokens": 6, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let (native_addr, _a) = sim(MessagesApi::All).await;
        let (_, native) = send(native_addr, "/v1/messages", &body.to_string()).await;
        let (chat_addr, _b) = sim(MessagesApi::None).await;
        let (status, _) = post(chat_addr, "/v1/messages", &body).await;
        assert_eq!(status, 404);
        let (chat_addr2, _c) = sim(MessagesApi::None).await;
        let via_chat = translated(chat_addr2, &body, &opts).await;
        assert!(native.contains("\"output_tokens\":6"), "{native}");
        assert_eq!(via_chat, native, "stream: {stream}");
    }
}

#[tokio::test]
async fn a_prefilled_answer_is_continued_on_both_paths() {
    let body = json!({"model": "sim-model", "max_tokens": 3, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": lumen_sim::answer(2)}]}
    ]});
    let (addr, _sim) = sim(MessagesApi::All).await;
    let (_, m) = post(addr, "/v1/messages", &body).await;
    let full = lumen_sim::answer(5);
    assert_eq!(
        format!(
            "{}{}",
            lumen_sim::answer(2),
            m["content"][0]["text"].as_str().unwrap()
        ),
        full
    );
}
