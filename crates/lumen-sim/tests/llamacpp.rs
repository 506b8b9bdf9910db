//! The simulator in llama.cpp flavour, over real TCP: the tokenizer surface of `llama-server`
//! (`content` in, `{"tokens"}` and `{"content"}` out, `/apply-template`, `GET /props`), which
//! differs from vLLM's and which Lumen translates.

// The helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use lumen_sim::{Flavor, SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request per connection (`connection: close`), so reading to EOF ends the response.
async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    send(addr, "POST", path, &body.to_string()).await
}

async fn sim(flavor: Flavor) -> (SocketAddr, Simulator) {
    lumen_sim::spawn(SimConfig {
        models: vec!["llama".to_owned()],
        max_model_len: 4096,
        flavor,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tokenize_reads_content_and_answers_a_bare_token_list() {
    let (addr, _sim) = sim(Flavor::LlamaCpp).await;
    let (status, t) = post(
        addr,
        "/tokenize",
        json!({"model": "llama", "content": "Lumen routes"}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    // llama.cpp's whole answer: no count, no max_model_len; no BOS unless `add_special`.
    assert_eq!(t, json!({"tokens": t["tokens"]}));
    let ids = t["tokens"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], 1);
    let (_, with_bos) = post(
        addr,
        "/tokenize",
        json!({"content": "Lumen routes", "add_special": true}),
    )
    .await;
    assert_eq!(with_bos["tokens"][0], 1);
    assert_eq!(with_bos["tokens"].as_array().unwrap()[1..], ids[..]);

    // vLLM's body is not refused: llama.cpp reads no `prompt`, so the list is empty.
    for body in [
        json!({"model": "llama", "prompt": "Lumen routes"}),
        json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}),
    ] {
        let (status, t) = post(addr, "/tokenize", body).await;
        assert_eq!((status, t), (200, json!({"tokens": []})));
    }
}

#[tokio::test]
async fn pieces_are_text_or_the_bytes_of_a_split_character() {
    let (addr, _sim) = sim(Flavor::LlamaCpp).await;
    let (_, t) = post(
        addr,
        "/tokenize",
        json!({"content": "Lumen é", "with_pieces": true}),
    )
    .await;
    let pieces: Vec<Value> = t["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["piece"].clone())
        .collect();
    // "Lumen", " ", then é's two bytes, each not UTF-8 on its own.
    assert_eq!(
        pieces,
        [json!("Lumen"), json!(" "), json!([195]), json!([169])]
    );
    assert!(t["tokens"][0]["id"].is_u64());
}

#[tokio::test]
async fn detokenize_answers_content_with_special_tokens_written_out() {
    let (addr, _sim) = sim(Flavor::LlamaCpp).await;
    let (_, t) = post(
        addr,
        "/tokenize",
        json!({"content": "héllo ✓", "add_special": true}),
    )
    .await;
    let (status, d) = post(addr, "/detokenize", json!({"tokens": t["tokens"]})).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d, json!({"content": "<s>héllo ✓"}));
    let (_, empty) = post(addr, "/detokenize", json!({})).await;
    assert_eq!(empty, json!({"content": ""}));
    let (status, bad) = post(addr, "/detokenize", json!({"tokens": [4_000_000]})).await;
    assert_eq!(status, 500, "{bad}");
    assert_eq!(bad["error"]["type"], "server_error");
}

#[tokio::test]
async fn apply_template_and_props() {
    let (addr, sim) = sim(Flavor::LlamaCpp).await;
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Lumen"}
    ]);
    let (status, p) = post(addr, "/apply-template", json!({"messages": messages})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p,
        json!({"prompt": "system: Be brief.\nuser: Lumen\nassistant: "})
    );
    let (status, e) = post(addr, "/apply-template", json!({})).await;
    assert_eq!(status, 400, "{e}");
    let (status, props) = send(addr, "GET", "/props?model=llama", "").await;
    assert_eq!(status, 200);
    assert_eq!(props["default_generation_settings"]["n_ctx"], 4096);
    assert_eq!(sim.generation_count(), 0, "no model ran");

    // vLLM has neither.
    let (vllm, _) = sim_vllm().await;
    assert_eq!(post(vllm, "/apply-template", json!({})).await.0, 404);
    assert_eq!(send(vllm, "GET", "/props", "").await.0, 404);
    let (_, t) = post(vllm, "/tokenize", json!({"prompt": "Lumen"})).await;
    assert!(t["count"].is_u64(), "{t}");
}

async fn sim_vllm() -> (SocketAddr, Simulator) {
    sim(Flavor::Vllm).await
}
