//! Anthropic's Messages API through Lumen (issue 23): `/v1/messages` and
//! `/v1/messages/count_tokens` on the same pipeline as chat — the key from `x-api-key`, the
//! key's model list, its limits charged on the engine's usage — with answers, streams and errors
//! in Anthropic's shape. The first tests use a simulator that does not serve `/v1/messages`
//! itself (as TGI or Ollama), so everything goes through the translation to chat completions;
//! the later ones an engine that does (as vLLM, SGLang and llama.cpp), which gets the client's
//! body and whose answer the client gets as it was sent. Real TCP.

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
    let lumen = Lumen::start(translating_builder(&[&url]).auth(auth()).build().unwrap()).await;
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
    let lumen = Lumen::start(translating_builder(&[&url]).auth(auth()).build().unwrap()).await;
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

// === Engines that serve /v1/messages themselves ===

/// A whole answer as an engine that serves the Messages API sends it (spacing and member
/// order its own, so a re-serialised copy would show).
const NATIVE_MESSAGE: &str = r#"{"id":"msg_native","type":"message","role":"assistant", "model":"m","content":[{"type":"text","text":"Hi there"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"cache_read_input_tokens":4,"output_tokens":3}}"#;

/// The same answer streamed, framed as Anthropic frames it.
const NATIVE_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_native\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":11,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

/// What a capture engine saw: each request's head (lower case) and body bytes.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A raw-TCP engine serving model `m` and `/v1/messages` with `answer` (or, for a streamed
/// request, `stream` as an event stream), recording every request byte for byte.
async fn capture_engine(answer: &'static str, stream: &'static str) -> (String, Seen) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen: Seen = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + len].to_vec();
                    buf.drain(..head_end + len);
                    let streamed = String::from_utf8_lossy(&body).contains("\"stream\":true");
                    let (kind, out) = if head.starts_with("get /v1/models") {
                        (
                            "application/json",
                            r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#,
                        )
                    } else if streamed {
                        ("text/event-stream", stream)
                    } else {
                        ("application/json", answer)
                    };
                    log.lock().unwrap().push((head, body));
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// The last `/v1/messages` request a capture engine saw.
fn last_messages(seen: &Seen) -> (String, Vec<u8>) {
    seen.lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(head, _)| head.starts_with("post /v1/messages "))
        .cloned()
        .expect("the engine got no /v1/messages request")
}

async fn send_raw(lumen: &Lumen, body: &str) -> Reply {
    send(
        http::Method::POST,
        &lumen.url("/v1/messages"),
        body,
        &[
            ("x-api-key", KEY),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "tools-2024-04-04"),
        ],
    )
    .await
}

/// The agent key's tokens in the usage history and in `/metrics`: ((input, output), (input,
/// output)).
async fn key_tokens(lumen: &Lumen) -> ((u64, u64), (f64, f64)) {
    let r = send(
        http::Method::GET,
        &lumen.url("/admin/usage/history?key=agent"),
        "",
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // One row per model served and model named (an alias has its own).
    let rows = r.json()["data"].as_array().unwrap().clone();
    let sum = |field: &str| rows.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
    let history = (sum("input_tokens"), sum("output_tokens"));
    let text = get(&lumen.url("/metrics")).await.text();
    let series = |t: &str| {
        metric(
            &text,
            &format!(r#"lumen_key_tokens_total{{key="agent",token_type="{t}"}}"#),
        )
        .unwrap_or(0.0)
    };
    (history, (series("input"), series("output")))
}

/// A native engine gets the client's body byte for byte (but for the model, which an alias
/// changes in place) with Anthropic's headers, and the client gets the engine's answer and
/// stream byte for byte (but for the model, shown as the alias); the key is billed exactly
/// the engine's usage — the prompt with its cache reads from `message_start`, the output from
/// `message_delta` — in the limits, the usage history and the metrics.
#[tokio::test]
async fn a_native_engine_gets_the_body_as_sent_and_the_client_its_answer_as_sent() {
    let (url, seen) = capture_engine(NATIVE_MESSAGE, NATIVE_STREAM).await;
    let mut gov = lumen_governance::GovernanceConfig::default();
    gov.aliases.insert("claude-x".into(), "m".into());
    // Aliases are the key's to use only when its list names them: this key may use any model.
    let mut keys = auth();
    keys.keys[0].models = None;
    let lumen = Lumen::start(builder(&[&url]).governance(gov).auth(keys).build().unwrap()).await;
    let body = r#"{ "max_tokens": 16,  "model":"m", "messages":[{"role":"user","content":"hi"}], "metadata": {"user_id": "u"} }"#;
    let r = send_raw(&lumen, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), NATIVE_MESSAGE);
    let (head, sent) = last_messages(&seen);
    assert_eq!(String::from_utf8(sent).unwrap(), body);
    assert!(
        head.contains("\r\nanthropic-version: 2023-06-01\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nanthropic-beta: tools-2024-04-04\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("x-api-key"),
        "the client's key stays with Lumen: {head}"
    );
    assert_eq!(used(&lumen).await, 15 + 3);

    let aliased = body.replace(r#""model":"m""#, r#""model":"claude-x""#);
    let r = send_raw(&lumen, &aliased).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        NATIVE_MESSAGE.replace(r#""model":"m""#, r#""model":"claude-x""#)
    );
    assert_eq!(String::from_utf8(last_messages(&seen).1).unwrap(), body);
    assert_eq!(used(&lumen).await, 2 * 18);

    let streamed = r#"{"model":"m","stream":true, "max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = send_raw(&lumen, streamed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.text(), NATIVE_STREAM);
    assert_eq!(String::from_utf8(last_messages(&seen).1).unwrap(), streamed);
    let r = send_raw(
        &lumen,
        &streamed.replace(r#""model":"m""#, r#""model":"claude-x""#),
    )
    .await;
    assert_eq!(
        r.text(),
        NATIVE_STREAM.replacen(r#""model":"m""#, r#""model":"claude-x""#, 1)
    );
    assert_eq!(used(&lumen).await, 4 * 18);
    assert_eq!(key_tokens(&lumen).await, ((4 * 15, 4 * 3), (60.0, 12.0)));
}

/// The simulator serving `/v1/messages` natively: it sees the request there (not a chat
/// completion), and the key is billed its usage exactly, streamed or not.
#[tokio::test]
async fn a_native_simulator_is_asked_at_v1_messages_and_billed_its_usage() {
    let (url, sim) = sim_with(SimConfig {
        models: vec!["m".to_owned()],
        ..SimConfig::default()
    })
    .await;
    let lumen = Lumen::start(builder(&[&url]).auth(auth()).build().unwrap()).await;
    let body = json!({
        "model": "m",
        "max_tokens": 6,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let r = messages(&lumen, &body, KEY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message");
    let answer = v["usage"]["input_tokens"].as_u64().unwrap() + 6;
    assert_eq!(used(&lumen).await, answer);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = messages(&lumen, &streamed, KEY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = sse_events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    let input = evs[0].1["message"]["usage"]["input_tokens"]
        .as_u64()
        .unwrap();
    let (_, delta) = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    let output = delta["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(output, 6);
    assert_eq!(used(&lumen).await, answer + input + output);
    let paths: Vec<String> = sim
        .records()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/v1/messages", "/v1/messages"]);
    let last = sim.records().last().unwrap().clone();
    assert_eq!(last.body, streamed, "the body as sent");
    assert_eq!(last.header("anthropic-version"), Some("2023-06-01"));
}

/// A backend whose kind promises `/v1/messages` but whose engine lacks it (an older vLLM, or a
/// careless `kind`): the engine's 404 there is followed by the same request as a chat
/// completion on the same engine, and the client never sees the 404 (that later requests skip
/// the 404 is the core's `messages_native` flag, set off once the chat answer came).
#[tokio::test]
async fn an_engine_without_v1_messages_is_translated_after_its_first_404() {
    let (url, sim) = sim_with(SimConfig {
        models: vec!["m".to_owned()],
        messages_api: MessagesApi::None,
        ..SimConfig::default()
    })
    .await;
    let lumen = Lumen::start(builder(&[&url]).auth(auth()).build().unwrap()).await;
    let body = json!({
        "model": "m",
        "max_tokens": 6,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    for b in [&streamed, &body, &streamed] {
        let r = messages(&lumen, b, KEY).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let paths: Vec<String> = sim
        .records()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect();
    // The simulator records only the routes it serves: its 404s at /v1/messages leave no
    // record, and each request was served once, as a chat completion.
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ],
    );
}

/// A native engine that fails before its first byte falls back to a model whose engine is
/// translated; the client still gets a whole Anthropic stream (and answer), billed on the
/// engine that served.
#[tokio::test]
async fn a_failing_native_engine_falls_back_to_a_translated_one() {
    let (native, native_sim) = sim_with(SimConfig {
        models: vec!["m".to_owned()],
        faults: lumen_sim::Faults {
            status: Some(503),
            ..Default::default()
        },
        ..SimConfig::default()
    })
    .await;
    let (translated, translated_sim) = sim_with(SimConfig {
        models: vec!["m2".to_owned()],
        messages_api: MessagesApi::None,
        ..SimConfig::default()
    })
    .await;
    let mut gov = lumen_governance::GovernanceConfig::default();
    gov.fallbacks.insert("m".into(), vec!["m2".into()]);
    let lumen = Lumen::start(
        builder_native(&[(&native, true), (&translated, false)])
            .governance(gov)
            .retry(lumen_server::config::RetryConfig {
                max_attempts: Some(1),
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let body = json!({
        "model": "m",
        "max_tokens": 5,
        "stream": true,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let r = messages(&lumen, &body, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = sse_events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(names.contains(&"content_block_delta"), "{names:?}");
    assert_eq!(evs[0].1["message"]["model"], "m2", "the model that served");
    let (_, delta) = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 5);
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let r = messages(&lumen, &whole, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "message");
    assert_eq!(r.json()["usage"]["output_tokens"], 5);
    let posts = |sim: &lumen_sim::Simulator| -> Vec<String> {
        sim.records()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.path.clone())
            .collect()
    };
    assert_eq!(posts(&native_sim), ["/v1/messages", "/v1/messages"]);
    assert_eq!(
        posts(&translated_sim),
        ["/v1/chat/completions", "/v1/chat/completions"]
    );
}

/// An engine answering `/v1/messages` with something that is not an Anthropic message gives
/// the client a clean Anthropic error, streamed or not; an engine's own `event: error` after
/// the stream began ends the client's stream with an `error` event.
#[tokio::test]
async fn garbage_and_errors_from_a_native_engine_reach_the_client_in_anthropics_shape() {
    let (url, _seen) =
        capture_engine("this is not json", "event: message_start\ndata: {nope\n\n").await;
    let lumen = Lumen::start(single_shot(&[&url]).build().unwrap()).await;
    for stream in [false, true] {
        let body = json!({
            "model": "m",
            "max_tokens": 5,
            "stream": stream,
            "messages": [{"role": "user", "content": "hello"}],
        });
        let r = messages(&lumen, &body, "").await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["type"], "error", "{}", r.text());
        assert_eq!(r.json()["error"]["type"], "api_error", "{}", r.text());
    }

    let (url, _sim) = sim_with(SimConfig {
        models: vec!["m".to_owned()],
        ..SimConfig::default()
    })
    .await;
    let lumen = Lumen::start(single_shot(&[&url]).build().unwrap()).await;
    let body = json!({
        "model": "m",
        "max_tokens": 8,
        "stream": true,
        "messages": [{"role": "user", "content": "hello"}],
        "sim": {"error_after": 2},
    });
    let r = messages(&lumen, &body, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = sse_events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    assert!(!names.contains(&"message_stop"), "{names:?}");
    assert_eq!(evs.last().unwrap().1["type"], "error");
    assert!(evs.last().unwrap().1["error"]["type"].is_string());
}
