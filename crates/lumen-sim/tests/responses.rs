//! OpenAI's Responses API on the simulator, over real TCP: served natively with state (the
//! answer and its stream, `sequence_number`s, usage; `previous_response_id` adding the stored
//! conversation to the prompt; `GET`, `input_items`, `DELETE`; 404 for unknown ids), and
//! switched off.

// The helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use lumen_sim::{SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Status and body of one request (HTTP/1.0: the body is not chunked and ends at EOF).
async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
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

async fn call(addr: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, body) = send(addr, method, path, &body.to_string()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn sim(responses_api: bool) -> (SocketAddr, Simulator) {
    lumen_sim::spawn(SimConfig {
        models: vec!["sim-model".to_owned()],
        responses_api,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn events(sse: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in sse.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((name.clone(), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn a_response_is_kept_read_continued_and_deleted() {
    let (addr, sim) = sim(true).await;
    let body = json!({"model": "sim-model", "input": "hello", "max_output_tokens": 4});
    let (status, first) = call(addr, "POST", "/v1/responses", &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["usage"]["output_tokens"], 4);
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    let input = first["usage"]["input_tokens"].as_u64().unwrap();
    assert_eq!(sim.stored_responses(), 1);

    let (status, got) = call(addr, "GET", &format!("/v1/responses/{id}"), &Value::Null).await;
    assert_eq!((status, &got), (200, &first));
    let (status, items) = call(
        addr,
        "GET",
        &format!("/v1/responses/{id}/input_items"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(items["data"][0]["content"][0]["text"], "hello");

    // The next turn's prompt holds the whole conversation so far.
    let next = json!({"model": "sim-model", "input": "hello", "max_output_tokens": 2, "previous_response_id": id});
    let (status, second) = call(addr, "POST", "/v1/responses", &next).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["usage"]["input_tokens"].as_u64().unwrap(),
        input + 4 + input
    );
    assert_eq!(second["previous_response_id"], id.as_str());

    let (status, deleted) =
        call(addr, "DELETE", &format!("/v1/responses/{id}"), &Value::Null).await;
    assert_eq!((status, deleted["deleted"].as_bool()), (200, Some(true)));
    for (method, path) in [
        ("GET", format!("/v1/responses/{id}")),
        ("DELETE", format!("/v1/responses/{id}")),
        ("GET", format!("/v1/responses/{id}/input_items")),
        ("GET", "/v1/responses/resp_never".to_owned()),
    ] {
        let (status, _) = call(addr, method, &path, &Value::Null).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = call(addr, "POST", "/v1/responses", &next).await;
    assert_eq!(status, 404, "a deleted previous_response_id");
    let unstored = json!({"model": "sim-model", "input": "x", "store": false});
    let (status, r) = call(addr, "POST", "/v1/responses", &unstored).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        addr,
        "GET",
        &format!("/v1/responses/{}", r["id"].as_str().unwrap()),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 404, "store: false keeps nothing");
}

#[tokio::test]
async fn a_streamed_response_numbers_its_events_and_ends_with_the_usage() {
    let (addr, _sim) = sim(true).await;
    let body = json!({"model": "sim-model", "input": "hi", "max_output_tokens": 3, "stream": true});
    let (status, sse) = send(addr, "POST", "/v1/responses", &body.to_string()).await;
    assert_eq!(status, 200);
    let evs = events(&sse);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, data)) in evs.iter().enumerate() {
        assert_eq!(data["sequence_number"], i as u64, "{name}");
        assert_eq!(data["type"], name.as_str());
    }
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    let done = &evs.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(done["usage"]["output_tokens"], 3);
    let id = evs[0].1["response"]["id"].as_str().unwrap();
    assert_eq!(done["id"], id);
    let (status, got) = call(addr, "GET", &format!("/v1/responses/{id}"), &Value::Null).await;
    assert_eq!((status, &got), (200, done));
}

#[tokio::test]
async fn switched_off_the_routes_do_not_exist() {
    let (addr, _sim) = sim(false).await;
    let body = json!({"model": "sim-model", "input": "hi"});
    let (status, _) = call(addr, "POST", "/v1/responses", &body).await;
    assert_eq!(status, 404);
    let (status, _) = call(addr, "GET", "/v1/responses/resp_1", &Value::Null).await;
    assert_eq!(status, 404);
}
