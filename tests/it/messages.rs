//! Anthropic's Messages API through Lumen (issue 23): `/v1/messages` and
//! `/v1/messages/count_tokens` on the same pipeline as chat — the key from `x-api-key`, the
//! key's model list, its limits charged on the engine's usage — with answers, streams and errors
//! in Anthropic's shape. The simulator here does not serve `/v1/messages` itself (as TGI or
//! Ollama), so everything goes through the translation to chat completions. Real TCP.

use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::AuthConfig;
use lumen_sim::{MessagesApi, SimConfig};
use lumen_tests::*;
use serde_json::{Value, json};

const KEY: &str = "sk-agent";
const OTHER: &str = "sk-other";
const ADMIN: &str = "sk-admin";

fn auth() -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: Some(to_hex(&digest(ADMIN))),
        keys: vec![
            ApiKey {
                name: "agent".into(),
                sha256: to_hex(&digest(KEY)),
                models: Some(vec!["m".into()]),
                limits: LimitSpec {
                    daily_tokens: Some(1_000_000),
                    ..LimitSpec::default()
                },
                per_model: Default::default(),
            },
            ApiKey {
                name: "other".into(),
                sha256: to_hex(&digest(OTHER)),
                models: Some(vec!["elsewhere".into()]),
                limits: LimitSpec::default(),
                per_model: Default::default(),
            },
        ],
    }
}

async fn setup() -> (Lumen, lumen_sim::Simulator) {
    let (url, sim) = sim_with(SimConfig {
        models: vec!["m".to_owned()],
        messages_api: MessagesApi::None,
        ..SimConfig::default()
    })
    .await;
    let lumen = Lumen::start(builder(&[&url]).auth(auth()).build().unwrap()).await;
    (lumen, sim)
}

async fn messages(lumen: &Lumen, body: &Value, key: &str) -> Reply {
    send(
        http::Method::POST,
        &lumen.url("/v1/messages"),
        &body.to_string(),
        &[("x-api-key", key), ("anthropic-version", "2023-06-01")],
    )
    .await
}

/// The daily tokens the agent key has used, from `/admin/usage`.
async fn used(lumen: &Lumen) -> u64 {
    let r = send(
        http::Method::GET,
        &lumen.url("/admin/usage"),
        "",
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    let v = r.json();
    let agent = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "agent")
        .unwrap()
        .clone();
    agent["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["counter"] == "daily tokens")
        .unwrap()["used"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_message_is_answered_in_anthropics_shape_and_billed_on_its_usage() {
    let (lumen, _sim) = setup().await;
    let body = json!({
        "model": "m",
        "max_tokens": 8,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}]}],
    });
    let r = messages(&lumen, &body, KEY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "m");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{v}");
    assert_eq!(v["content"][0]["type"], "text");
    assert!(!v["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(v["stop_reason"], "max_tokens");
    let input = v["usage"]["input_tokens"].as_u64().unwrap();
    let output = v["usage"]["output_tokens"].as_u64().unwrap();
    assert!(input > 0);
    assert_eq!(output, 8);
    // The key is charged exactly the engine's usage.
    assert_eq!(used(&lumen).await, input + output);
}

#[tokio::test]
async fn a_streamed_message_has_anthropics_event_order_and_usage() {
    let (lumen, _sim) = setup().await;
    let body = json!({
        "model": "m",
        "max_tokens": 6,
        "stream": true,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let r = messages(&lumen, &body, KEY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let evs = sse_events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(deltas >= 1, "{names:?}");
    let start = names
        .iter()
        .position(|n| *n == "content_block_start")
        .unwrap();
    let stop = names
        .iter()
        .position(|n| *n == "content_block_stop")
        .unwrap();
    let delta = names.iter().position(|n| *n == "message_delta").unwrap();
    assert!(start < stop && stop < delta, "{names:?}");
    // Every event's JSON names its own type.
    for (name, v) in &evs {
        assert_eq!(v["type"], name.as_str());
    }
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, v)| v["delta"]["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!text.is_empty());
    let (_, md) = &evs[delta];
    assert_eq!(md["delta"]["stop_reason"], "max_tokens");
    let output = md["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(output, 6);
    let input = md["usage"]["input_tokens"]
        .as_u64()
        .or_else(|| evs[0].1["message"]["usage"]["input_tokens"].as_u64())
        .unwrap();
    // Settled when the stream ended: the engine's usage, not the reservation.
    assert_eq!(used(&lumen).await, input + output);
}

#[tokio::test]
async fn errors_on_the_messages_api_are_in_anthropics_shape() {
    let (lumen, _sim) = setup().await;
    let ok =
        json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});

    let no_key = send(
        http::Method::POST,
        &lumen.url("/v1/messages"),
        &ok.to_string(),
        &[],
    )
    .await;
    assert_eq!(no_key.status, 401);
    assert_eq!(no_key.json()["type"], "error");
    assert_eq!(no_key.json()["error"]["type"], "authentication_error");
    let message = no_key.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("x-api-key"), "{message}");

    // A model outside the key's list is not found, as on chat.
    let r = messages(&lumen, &ok, OTHER).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "not_found_error");

    // The Messages API requires max_tokens.
    let r = messages(
        &lumen,
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    // What a chat completion cannot carry is refused, never dropped.
    let mut server_tool = ok.clone();
    server_tool["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    let r = messages(&lumen, &server_tool, KEY).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    // The OpenAI surface keeps OpenAI's shape.
    let chat = send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(chat.status, 401);
    assert!(chat.json()["error"]["message"].is_string());
    assert!(chat.json().get("type").is_none());
}

#[tokio::test]
async fn count_tokens_uses_the_engines_tokenizer_and_is_not_billed_as_tokens() {
    let (lumen, _sim) = setup().await;
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "count these words please"}],
    });
    let r = send(
        http::Method::POST,
        &lumen.url("/v1/messages/count_tokens"),
        &body.to_string(),
        &[("x-api-key", KEY)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let n = r.json()["input_tokens"].as_u64().unwrap();
    assert!(n > 0, "{}", r.text());
    assert_eq!(
        used(&lumen).await,
        0,
        "count_tokens is never charged tokens"
    );
}

/// What Claude Code sends with its defaults (thinking on): `?beta=true`, the `anthropic-beta`
/// list, `context_management` edits, a thinking budget of `max_tokens - 1`, a JSON string in
/// `metadata.user_id`, its tools. Refusing any of it refuses its first request.
#[tokio::test]
async fn a_claude_code_request_is_served() {
    // An engine whose answers end before `max_tokens`, as Claude Code expects of a model.
    let (url, _sim) = sim_with(SimConfig {
        models: vec!["m".to_owned()],
        messages_api: MessagesApi::None,
        max_model_len: 65_536,
        answer_tokens: Some(8),
        ..SimConfig::default()
    })
    .await;
    let lumen = Lumen::start(builder(&[&url]).auth(auth()).build().unwrap()).await;
    let body = json!({
        "model": "m",
        "max_tokens": 32000,
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "{\"device_id\":\"d\",\"session_id\":\"s\"}"},
        "system": [{"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "say hello"}]}],
        "tools": [{"name": "Bash", "description": "run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}],
    });
    let r = send(
        http::Method::POST,
        &lumen.url("/v1/messages?beta=true"),
        &body.to_string(),
        &[
            ("x-api-key", KEY),
            ("anthropic-version", "2023-06-01"),
            (
                "anthropic-beta",
                "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = sse_events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    let (_, delta) = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    // A finished answer, not one cut at max_tokens (which Claude Code reports as an error).
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 8);
}
