//! OpenAI's Responses API through Lumen (issue 23): `/v1/responses` translated to chat
//! completions on the same pipeline as chat (keys, model lists, limits billed on usage), with
//! Lumen's own store behind `store`, `previous_response_id`, retrieve, delete and
//! `input_items` — each readable only by the key that created the response. Real TCP, the
//! simulator as an engine without a Responses API of its own.

use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::AuthConfig;
use lumen_sim::SimConfig;
use lumen_tests::*;
use serde_json::{Value, json};

const KEY: &str = "sk-codex";
const OTHER: &str = "sk-other";

fn key(name: &str, secret: &str) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: to_hex(&digest(secret)),
        models: Some(vec!["m".into()]),
        limits: LimitSpec {
            daily_tokens: Some(1_000_000),
            ..LimitSpec::default()
        },
        per_model: Default::default(),
    }
}

async fn setup() -> (Lumen, lumen_sim::Simulator) {
    let (url, sim) = sim_with(SimConfig {
        models: vec!["m".to_owned()],
        answer_tokens: Some(5),
        record: 64,
        ..SimConfig::default()
    })
    .await;
    let auth = AuthConfig {
        enabled: true,
        admin_key_sha256: None,
        keys: vec![key("codex", KEY), key("other", OTHER)],
    };
    let lumen = Lumen::start(builder(&[&url]).auth(auth).build().unwrap()).await;
    (lumen, sim)
}

async fn call(
    lumen: &Lumen,
    method: http::Method,
    path: &str,
    body: &Value,
    secret: &str,
) -> Reply {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    send(
        method,
        &lumen.url(path),
        &body,
        &[("authorization", &format!("Bearer {secret}"))],
    )
    .await
}

#[tokio::test]
async fn a_response_is_created_stored_continued_read_and_deleted_by_its_owner_only() {
    let (lumen, sim) = setup().await;
    let first = call(
        &lumen,
        http::Method::POST,
        "/v1/responses",
        &json!({"model": "m", "instructions": "be brief", "input": "remember the word lantern"}),
        KEY,
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let r1 = first.json();
    assert_eq!(r1["object"], "response");
    assert_eq!(r1["status"], "completed");
    let id = r1["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!(r1["output"][0]["type"], "message");
    let said = r1["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!said.is_empty());
    assert_eq!(r1["usage"]["output_tokens"], 5);
    assert!(r1["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // The second turn continues the stored conversation: the engine reads the first turn.
    let second = call(
        &lumen,
        http::Method::POST,
        "/v1/responses",
        &json!({"model": "m", "input": "which word?", "previous_response_id": id}),
        KEY,
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["previous_response_id"], id.as_str());
    let sent = sim.records().last().unwrap().body.clone();
    let messages = sent["messages"].as_array().unwrap();
    let texts: Vec<String> = messages.iter().map(|m| m["content"].to_string()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("remember the word lantern")),
        "{sent}"
    );
    assert!(
        texts.iter().any(|t| t.contains(&said)),
        "the first answer: {sent}"
    );
    assert!(texts.last().unwrap().contains("which word?"), "{sent}");

    // Retrieve and input_items: the owner only. Another key learns nothing, not even that
    // the id exists.
    let got = call(
        &lumen,
        http::Method::GET,
        &format!("/v1/responses/{id}"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], id.as_str());
    let items = call(
        &lumen,
        http::Method::GET,
        &format!("/v1/responses/{id}/input_items"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(items.status, 200, "{}", items.text());
    let list = items.json();
    assert_eq!(list["object"], "list");
    let first = &list["data"][0];
    assert_eq!(first["type"], "message");
    assert_eq!(
        first["content"][0]["text"], "remember the word lantern",
        "{list}"
    );
    assert!(
        first["id"].as_str().is_some_and(|i| i.starts_with("msg_")),
        "every item has an id for the list's cursor: {list}"
    );
    assert_eq!(list["first_id"], first["id"]);
    assert_eq!(list["has_more"], false);
    let bad = call(
        &lumen,
        http::Method::GET,
        &format!("/v1/responses/{id}/input_items?limit=1000"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"]["param"], "limit");
    for (method, path) in [
        (http::Method::GET, format!("/v1/responses/{id}")),
        (http::Method::DELETE, format!("/v1/responses/{id}")),
        (http::Method::GET, format!("/v1/responses/{id}/input_items")),
    ] {
        let r = call(&lumen, method, &path, &Value::Null, OTHER).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let r = call(
        &lumen,
        http::Method::POST,
        "/v1/responses",
        &json!({"model": "m", "input": "x", "previous_response_id": id}),
        OTHER,
    )
    .await;
    assert_eq!(
        r.status,
        404,
        "another key cannot continue it: {}",
        r.text()
    );
    let unknown = call(
        &lumen,
        http::Method::GET,
        "/v1/responses/resp_nope",
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        unknown.json()["error"]["message"]
            .as_str()
            .unwrap()
            .replace("resp_nope", &id)
    );

    let cancel = call(
        &lumen,
        http::Method::POST,
        &format!("/v1/responses/{id}/cancel"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(cancel.status, 400, "{}", cancel.text());

    let deleted = call(
        &lumen,
        http::Method::DELETE,
        &format!("/v1/responses/{id}"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["deleted"], true);
    let gone = call(
        &lumen,
        http::Method::GET,
        &format!("/v1/responses/{id}"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn a_streamed_response_has_typed_events_in_sequence_and_is_stored() {
    let (lumen, _sim) = setup().await;
    let r = call(
        &lumen,
        http::Method::POST,
        "/v1/responses",
        &json!({"model": "m", "input": [{"role": "user", "content": "hello"}], "stream": true}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = sse_events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"), "{names:?}");
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    assert!(names.contains(&"response.output_text.delta"), "{names:?}");
    for (i, (name, v)) in evs.iter().enumerate() {
        assert_eq!(v["type"], name.as_str());
        assert_eq!(v["sequence_number"], i as u64, "{name}");
    }
    let done = &evs.last().unwrap().1["response"];
    assert_eq!(done["usage"]["output_tokens"], 5);
    let id = done["id"].as_str().unwrap();
    // Stored when the stream completed.
    let mut found = None;
    for _ in 0..50 {
        let got = call(
            &lumen,
            http::Method::GET,
            &format!("/v1/responses/{id}"),
            &Value::Null,
            KEY,
        )
        .await;
        if got.status == 200 {
            found = Some(got.json());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(found.unwrap()["status"], "completed");
}

#[tokio::test]
async fn what_the_translation_cannot_serve_is_refused_and_store_false_keeps_nothing() {
    let (lumen, sim) = setup().await;
    let r = call(
        &lumen,
        http::Method::POST,
        "/v1/responses",
        &json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["param"]
            .as_str()
            .unwrap()
            .starts_with("tools"),
        "{}",
        r.text()
    );
    let r = call(
        &lumen,
        http::Method::POST,
        "/v1/responses",
        &json!({"model": "m", "input": "hi", "background": true}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(sim.generation_count(), 0, "refused before any engine");

    let r = call(
        &lumen,
        http::Method::POST,
        "/v1/responses",
        &json!({"model": "m", "input": "hi", "store": false}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let got = call(
        &lumen,
        http::Method::GET,
        &format!("/v1/responses/{id}"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(got.status, 404, "store: false keeps nothing");

    let counted = call(
        &lumen,
        http::Method::POST,
        "/v1/responses/input_tokens",
        &json!({"model": "m", "input": "count these words please"}),
        KEY,
    )
    .await;
    assert_eq!(counted.status, 200, "{}", counted.text());
    assert_eq!(counted.json()["object"], "response.input_tokens");
    assert!(counted.json()["input_tokens"].as_u64().unwrap() > 0);
}

/// Codex's freeform `apply_patch` is a `custom` tool: offered to a chat engine as a function of
/// one string, its call comes back as a `custom_tool_call` with the text as `input`, and the
/// next turn (the call and its `custom_tool_call_output`) continues through Lumen's store.
#[tokio::test]
async fn a_custom_tool_is_called_and_continued_through_a_chat_engine() {
    const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m1",
        "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",
        "content":null,"tool_calls":[{"id":"call_9","type":"function","function":{
        "name":"apply_patch","arguments":"{\"input\":\"*** Begin Patch\\n*** End Patch\"}"}}]}}],
        "usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;
    let engine = canned_engine(ANSWER).await;
    let lumen = Lumen::start(builder(&[&engine]).build().unwrap()).await;
    let tool = json!({"type": "custom", "name": "apply_patch", "description": "Edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}});
    let first = post(
        &lumen.url("/v1/responses"),
        &json!({"model": "m1", "input": "fix the bug", "tools": [tool]}).to_string(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let r1 = first.json();
    assert_eq!(
        r1["output"][0],
        json!({"type": "custom_tool_call", "id": r1["output"][0]["id"], "status": "completed",
            "call_id": "call_9", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"})
    );
    assert_eq!(r1["tools"][0]["type"], "custom");
    assert_eq!(r1["usage"]["output_tokens"], 9);
    let second = post(
        &lumen.url("/v1/responses"),
        &json!({"model": "m1", "previous_response_id": r1["id"], "tools": [tool],
            "input": [{"type": "custom_tool_call_output", "call_id": "call_9", "output": "Done!"}]})
        .to_string(),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.text());
    let items = get(&lumen.url(&format!(
        "/v1/responses/{}/input_items?order=asc",
        second.json()["id"].as_str().unwrap()
    )))
    .await;
    assert_eq!(items.status, 200, "{}", items.text());
    assert_eq!(items.json()["data"][0]["type"], "custom_tool_call_output");
    lumen.shutdown().await;
}
