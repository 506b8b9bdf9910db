//! Streaming: real SSE framing, byte-exact pass-through, the commit point, mid-stream failures,
//! deadlines and cancellation.

use std::time::Duration;

use http_body_util::BodyExt;
use lumen_tests::*;
use serde_json::{Value, json};

fn stream_body(extra: Value) -> String {
    let mut body = json!({
        "model": "m1",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
        "stream": true,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body.to_string()
}

/// Removes the per-request `id` and `created` so two runs of the same request compare equal.
fn normalise(events: &[String]) -> Vec<String> {
    events
        .iter()
        .map(|e| match serde_json::from_str::<Value>(e) {
            Ok(v) => {
                let mut s = e.clone();
                if let Some(id) = v["id"].as_str() {
                    s = s.replace(id, "ID");
                }
                if let Some(c) = v["created"].as_u64() {
                    s = s.replace(&format!("\"created\":{c}"), "\"created\":0");
                }
                s
            }
            Err(_) => e.clone(),
        })
        .collect()
}

#[tokio::test]
async fn chat_stream_is_passed_through_byte_for_byte() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let body = stream_body(json!({"stream_options": {"include_usage": true}}));
    let via = post(&lumen.url("/v1/chat/completions"), &body).await;
    let direct = post(&format!("{url}/v1/chat/completions"), &body).await;
    assert_eq!(via.status, 200);
    assert_eq!(via.header("content-type"), Some("text/event-stream"));
    let events = via.sse_data();
    assert_eq!(events.len(), 1 + 4 + 1 + 1, "role, 4 tokens, usage, [DONE]");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(normalise(&events), normalise(&direct.sse_data()));
    let usage: Value = serde_json::from_str(&events[5]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert!(via.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn completions_stream() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(
        &lumen.url("/v1/completions"),
        r#"{"model":"m1","prompt":"x","max_tokens":3,"stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.sse_data();
    let text: String = events[..3]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Lumen routes every");
    assert_eq!(events[3], "[DONE]");
}

const INTERRUPTED: &str = "data: {\"error\":{\"message\":\"The stream from the inference backend was interrupted\",\"type\":\"server_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\ndata: [DONE]\n\n";

#[tokio::test]
async fn engine_dying_mid_stream_ends_with_one_error_event_then_done() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &stream_body(json!({"sim": {"drop_after": 2}})),
    )
    .await;
    assert_eq!(r.status, 200);
    let events = r.sse_data();
    assert_eq!(
        events.len(),
        1 + 2 + 2,
        "role, 2 tokens, error, [DONE]: {events:?}"
    );
    assert!(r.text().ends_with(INTERRUPTED), "{}", r.text());
}

#[tokio::test]
async fn garbage_mid_stream_is_reported_the_same_way() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &stream_body(json!({"sim": {"garbage_after": 1}})),
    )
    .await;
    assert!(r.text().ends_with(INTERRUPTED), "{}", r.text());
    assert_eq!(r.sse_data().len(), 1 + 1 + 2);
}

#[tokio::test]
async fn engine_error_event_mid_stream_keeps_its_message() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &stream_body(json!({"sim": {"error_after": 3}})),
    )
    .await;
    let want = "data: {\"error\":{\"message\":\"The stream from the inference backend was interrupted: injected engine failure\",\"type\":\"server_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\ndata: [DONE]\n\n";
    assert!(r.text().ends_with(want), "{}", r.text());
}

#[tokio::test]
async fn an_error_before_the_first_chunk_is_an_http_error_not_a_stream() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(
        &lumen.url("/v1/completions"),
        r#"{"model":"m1","prompt":"x","stream":true,"sim":{"error_after":0}}"#,
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"]["code"], "stream_interrupted");
}

/// Lumen in front of one engine with short first-byte and idle deadlines.
async fn with_deadlines(url: &str, first_ms: u64, idle_ms: u64) -> Lumen {
    let timeouts = lumen_resilience::Timeouts {
        first_byte: Some(Duration::from_millis(first_ms)),
        idle: Some(Duration::from_millis(idle_ms)),
        total: Some(Duration::from_secs(60)),
    };
    Lumen::start(builder(&[url]).timeouts(timeouts).build().unwrap()).await
}

#[tokio::test]
async fn slow_first_token_is_a_504_before_commit() {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = with_deadlines(&url, 200, 5_000).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &stream_body(json!({"sim": {"ttft_ms": 10_000}})),
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "timeout");
    assert_eq!(
        r.json()["error"]["message"],
        "Timed out waiting for the first token."
    );
    eventually(Duration::from_secs(10), || sim.running() == 0).await;
}

#[tokio::test]
async fn idle_gap_after_commit_ends_the_stream_with_a_timeout_event() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = with_deadlines(&url, 5_000, 200).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &stream_body(json!({"sim": {"itl_ms": 10_000}})),
    )
    .await;
    assert_eq!(r.status, 200);
    let want = "data: {\"error\":{\"message\":\"Timed out waiting for the next token.\",\"type\":\"server_error\",\"param\":null,\"code\":\"timeout\"}}\n\ndata: [DONE]\n\n";
    assert!(r.text().ends_with(want), "{}", r.text());
}

#[tokio::test]
async fn client_disconnect_mid_stream_stops_the_engine() {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let body = stream_body(json!({"max_tokens": 1000, "sim": {"itl_ms": 20}}));
    let resp = post_streaming(&lumen.url("/v1/chat/completions"), &body).await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    assert_eq!(sim.running(), 1);
    drop(body);
    eventually(Duration::from_secs(10), || sim.running() == 0).await;
}

#[tokio::test]
async fn client_disconnect_while_waiting_stops_the_engine() {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"sim":{"hang":true}}"#;
    let url = lumen.url("/v1/chat/completions");
    let call = tokio::spawn(async move { post(&url, body).await });
    eventually(Duration::from_secs(10), || sim.running() == 1).await;
    call.abort();
    eventually(Duration::from_secs(10), || sim.running() == 0).await;
}

/// A client that goes away before its answer starts still gets its access line: status 499,
/// outcome `client_disconnected`, with the model it asked for (the line was never written
/// when the request's work was dropped unfinished).
#[tokio::test]
async fn a_client_gone_before_the_answer_starts_gets_an_access_line() {
    let (logs, _guard) = capture_logs();
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"stream":true,"sim":{"hang":true}}"#;
    let url = lumen.url("/v1/chat/completions");
    let call = tokio::spawn(async move {
        send(
            http::Method::POST,
            &url,
            body,
            &[("x-request-id", "gone-before-the-answer")],
        )
        .await
    });
    eventually(Duration::from_secs(10), || sim.running() == 1).await;
    call.abort();
    eventually(Duration::from_secs(10), || sim.running() == 0).await;
    let mine = || {
        logs.access()
            .into_iter()
            .filter(|l| l["id"] == "gone-before-the-answer")
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(10), || !mine().is_empty()).await;
    let lines = mine();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 499, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "client_disconnected");
    assert_eq!(lines[0]["endpoint"], "chat");
    assert_eq!(lines[0]["model"], "m1");
}

/// A complete stream (finish reason and usage sent, the HTTP body ended cleanly) whose engine
/// left out `data: [DONE]` is a normal, successful stream: Lumen adds `[DONE]` itself. A stream
/// that ends without a finish reason is still interrupted.
#[tokio::test]
async fn a_complete_stream_without_done_is_a_success() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &stream_body(json!({"sim": {"no_done": true}, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(r.status, 200);
    let events = r.sse_data();
    assert_eq!(
        events.len(),
        1 + 4 + 1 + 1,
        "role, 4 tokens, usage, [DONE]: {events:?}"
    );
    assert!(!r.text().contains("\"error\""), "{}", r.text());
    let usage: Value = serde_json::from_str(&events[5]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    // Without the usage chunk the last token carries the finish reason: still complete.
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &stream_body(json!({"sim": {"no_done": true}})),
    )
    .await;
    assert!(!r.text().contains("\"error\""), "{}", r.text());
    // Cut before the finish reason: interrupted, as before.
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &stream_body(json!({"sim": {"drop_after": 3}})),
    )
    .await;
    assert!(r.text().ends_with(INTERRUPTED), "{}", r.text());
}
