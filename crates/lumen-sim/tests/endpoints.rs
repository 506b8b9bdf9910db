//! vLLM's tokenizer and rerank endpoints over real TCP, in the shapes the gateway relies on.

// The helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use lumen_sim::{SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A minimal HTTP/1.1 client: one request per connection, so reading to EOF ends the response.
async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, Value) {
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
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let (status, _, body) = send(addr, "POST", path, &body.to_string()).await;
    (status, body)
}

async fn sim() -> (SocketAddr, Simulator) {
    lumen_sim::spawn(SimConfig {
        models: vec!["sim-model".to_owned(), "reranker".to_owned()],
        max_model_len: 4096,
        record: 16,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

async fn tokens_of(addr: SocketAddr, text: &str) -> u64 {
    let (_, t) = post(
        addr,
        "/tokenize",
        json!({"prompt": text, "add_special_tokens": false}),
    )
    .await;
    t["count"].as_u64().unwrap()
}

#[tokio::test]
async fn tokenize_then_detokenize_gives_the_prompt_back() {
    let (addr, _sim) = sim().await;
    let prompt = "Lumen routes every request";
    let (status, t) = post(
        addr,
        "/tokenize",
        json!({"model": "sim-model", "prompt": prompt}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    // BOS (add_special_tokens defaults to true for a prompt) and one token per simulator word.
    assert_eq!(t["count"], 5);
    assert_eq!(t["max_model_len"], 4096);
    assert_eq!(t["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(t["tokens"][0], 1);
    assert_eq!(t["token_strs"], Value::Null);
    let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["count", "max_model_len", "token_strs", "tokens"]);

    let (status, d) = post(
        addr,
        "/detokenize",
        json!({"model": "sim-model", "tokens": t["tokens"]}),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d, json!({"prompt": prompt}));

    // Deterministic, and any text survives through the byte fallback.
    let (_, again) = post(addr, "/tokenize", json!({"prompt": prompt})).await;
    assert_eq!(again, t);
    let odd = "héllo wörld ✓ {\"x\": 1}\n";
    let (_, t) = post(addr, "/tokenize", json!({"prompt": odd})).await;
    let (_, d) = post(addr, "/detokenize", json!({"tokens": t["tokens"]})).await;
    assert_eq!(d["prompt"], odd);
}

#[tokio::test]
async fn tokenize_shows_token_strings_and_honours_special_tokens() {
    let (addr, _sim) = sim().await;
    let (_, t) = post(
        addr,
        "/tokenize",
        json!({"prompt": "Lumen routes!", "add_special_tokens": false, "return_token_strs": true}),
    )
    .await;
    assert_eq!(t["count"], 3);
    assert_eq!(t["token_strs"], json!(["Lumen", " routes", "<0x21>"]));
}

#[tokio::test]
async fn tokenize_applies_a_chat_template_to_messages() {
    let (addr, _sim) = sim().await;
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Lumen"}, {"type": "text", "text": " routes"}]}
    ]);
    let (status, t) = post(addr, "/tokenize", json!({"messages": messages})).await;
    assert_eq!(status, 200, "{t}");
    let (_, d) = post(addr, "/detokenize", json!({"tokens": t["tokens"]})).await;
    assert_eq!(
        d["prompt"],
        "system: Be brief.\nuser: Lumen routes\nassistant: "
    );
    // No BOS by default for chat (the template carries what it needs), as in vLLM.
    assert_ne!(t["tokens"][0], 1);

    let (_, t) = post(
        addr,
        "/tokenize",
        json!({"messages": messages, "add_generation_prompt": false, "add_special_tokens": true}),
    )
    .await;
    assert_eq!(t["tokens"][0], 1);
    let (_, d) = post(addr, "/detokenize", json!({"tokens": t["tokens"]})).await;
    assert_eq!(d["prompt"], "system: Be brief.\nuser: Lumen routes\n");
}

#[tokio::test]
async fn rerank_orders_by_query_overlap_on_every_path() {
    let (addr, _sim) = sim().await;
    let docs = json!([
        "a cat",
        "the healthy engine",
        {"text": "engine room"},
        "Healthy ENGINE!"
    ]);
    for path in ["/v1/rerank", "/rerank", "/v2/rerank"] {
        let (status, r) = post(
            addr,
            path,
            json!({"model": "reranker", "query": "healthy engine", "documents": docs}),
        )
        .await;
        assert_eq!(status, 200, "{path}: {r}");
        assert!(r["id"].as_str().unwrap().starts_with("rerank-"), "{r}");
        assert_eq!(r["model"], "reranker");
        let order: Vec<u64> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["index"].as_u64().unwrap())
            .collect();
        // Ties (1 and 3 both score 1.0) keep document order.
        assert_eq!(order, [1, 3, 2, 0], "{path}");
        assert_eq!(
            r["results"][0],
            json!({"index": 1, "document": {"text": "the healthy engine"}, "relevance_score": 1.0})
        );
        assert_eq!(r["results"][2]["document"], json!({"text": "engine room"}));
        assert_eq!(r["results"][2]["relevance_score"], 0.5);
        assert_eq!(r["results"][3]["relevance_score"], 0.0);
        let mut expected = tokens_of(addr, "healthy engine").await;
        for d in [
            "a cat",
            "the healthy engine",
            "engine room",
            "Healthy ENGINE!",
        ] {
            expected += tokens_of(addr, d).await;
        }
        assert_eq!(r["usage"], json!({"total_tokens": expected}));
    }
}

#[tokio::test]
async fn rerank_truncates_to_top_n_and_can_leave_documents_out() {
    let (addr, _sim) = sim().await;
    let body = json!({
        "query": "engine",
        "documents": ["x", "engine", "y", "an engine"],
        "top_n": 2,
        "return_documents": false
    });
    let (status, r) = post(addr, "/v1/rerank", body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["results"],
        json!([{"index": 1, "relevance_score": 1.0}, {"index": 3, "relevance_score": 1.0}])
    );
    // The model defaults to the first served one, as for the other endpoints.
    assert_eq!(r["model"], "sim-model");
    for top_n in [0, -1, 10] {
        let (_, r) = post(
            addr,
            "/v1/rerank",
            json!({"query": "engine", "documents": ["x", "engine"], "top_n": top_n}),
        )
        .await;
        assert_eq!(r["results"].as_array().unwrap().len(), 2, "top_n {top_n}");
    }
}

#[tokio::test]
async fn sim_faults_work_on_rerank_and_the_tokenizer() {
    let (addr, sim) = sim().await;
    let docs = json!(["engine"]);
    let (status, headers, r) = send(
        addr,
        "POST",
        "/v1/rerank",
        &json!({"query": "q", "documents": docs, "sim": {"status": 503}}).to_string(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(r["error"]["code"], 503);
    assert!(headers.contains("retry-after: 1"), "{headers}");

    let (status, r) = post(
        addr,
        "/tokenize",
        json!({"prompt": "x", "sim": {"status": 429, "flat_error": true}}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(r["object"], "error");

    let started = Instant::now();
    let (status, _) = post(
        addr,
        "/rerank",
        json!({"query": "q", "documents": docs, "sim": {"ttft_ms": 150}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let started = Instant::now();
    let (status, _) = post(
        addr,
        "/detokenize",
        json!({"tokens": [1], "sim": {"ttft_ms": 150}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    for (path, body) in [
        (
            "/v2/rerank",
            json!({"query": "q", "documents": docs, "sim": {"hang": true}}),
        ),
        ("/tokenize", json!({"prompt": "q", "sim": {"hang": true}})),
    ] {
        let hung = tokio::time::timeout(Duration::from_millis(200), post(addr, path, body)).await;
        assert!(hung.is_err(), "{path} answered");
    }
    // Both hung requests were dropped with their connections.
    for _ in 0..100 {
        if sim.running() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.running(), 0);
}

#[tokio::test]
async fn bad_requests_get_vllm_errors() {
    let (addr, _sim) = sim().await;
    let cases = [
        ("/tokenize", json!({"model": "nope", "prompt": "x"}), 404),
        ("/detokenize", json!({"model": "nope", "tokens": [1]}), 404),
        (
            "/v1/rerank",
            json!({"model": "nope", "query": "q", "documents": ["d"]}),
            404,
        ),
        ("/tokenize", json!({"model": "sim-model"}), 400),
        ("/detokenize", json!({}), 400),
        ("/detokenize", json!({"tokens": [999999]}), 400),
        ("/detokenize", json!({"tokens": [-1]}), 400),
        ("/v1/rerank", json!({"documents": ["d"]}), 400),
        ("/v1/rerank", json!({"query": "q"}), 400),
        ("/v1/rerank", json!({"query": "q", "documents": []}), 400),
        ("/v1/rerank", json!({"query": "q", "documents": [7]}), 400),
    ];
    for (path, body, want) in cases {
        let (status, r) = post(addr, path, body.clone()).await;
        assert_eq!(status, want, "{path} {body}: {r}");
        assert_eq!(r["error"]["code"], want, "{path} {body}: {r}");
        let kind = if want == 404 {
            "NotFoundError"
        } else {
            "BadRequestError"
        };
        assert_eq!(r["error"]["type"], kind);
    }
    let (_, r) = post(
        addr,
        "/v1/rerank",
        json!({"model": "nope", "query": "q", "documents": ["d"]}),
    )
    .await;
    assert_eq!(r["error"]["message"], "The model `nope` does not exist.");
    for path in ["/tokenize", "/detokenize", "/rerank"] {
        let (status, _, r) = send(addr, "POST", path, "not json").await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(r["error"]["type"], "BadRequestError");
    }
}

#[tokio::test]
async fn rerank_counts_as_generation_and_the_tokenizer_does_not() {
    let (addr, sim) = sim().await;
    post(addr, "/tokenize", json!({"prompt": "x"})).await;
    post(addr, "/detokenize", json!({"tokens": [1]})).await;
    assert_eq!(sim.generation_count(), 0);
    post(
        addr,
        "/v1/rerank",
        json!({"query": "q", "documents": ["q"]}),
    )
    .await;
    assert_eq!(sim.generation_count(), 1);
    assert_eq!(sim.request_count(), 3);
    let paths: Vec<String> = sim.records().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/tokenize", "/detokenize", "/v1/rerank"]);
    assert_eq!(sim.records()[2].body["documents"], json!(["q"]));

    let (status, _, models) = send(addr, "GET", "/v1/models", "").await;
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["max_model_len"], 4096);
}

#[tokio::test]
async fn faults_can_be_set_for_one_model() {
    let (addr, sim) = sim().await;
    sim.set_model_faults(
        "reranker",
        lumen_sim::Faults {
            status: Some(429),
            retry_after: Some(7),
            ..lumen_sim::Faults::default()
        },
    );
    let chat = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            .to_string()
    };
    let (status, head, _) = send(addr, "POST", "/v1/chat/completions", &chat("reranker")).await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: 7"), "{head}");
    let (status, _, _) = send(addr, "POST", "/v1/chat/completions", &chat("sim-model")).await;
    assert_eq!(status, 200, "the other model is untouched");
    sim.set_model_faults("reranker", lumen_sim::Faults::default());
    let (status, _, _) = send(addr, "POST", "/v1/chat/completions", &chat("reranker")).await;
    assert_eq!(status, 200, "cleared");
}

#[tokio::test]
async fn a_prefilled_answer_is_continued_and_vllm_rules_are_kept() {
    let (addr, sim) = sim().await;
    let ask = |extra: Value| {
        let mut body = json!({
            "model": "sim-model",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Lumen routes every"}
            ],
            "max_tokens": 2,
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let (status, body) = post(addr, "/v1/chat/completions", ask(json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["choices"][0]["message"]["content"], " request to",
        "picks up after the prefill's three tokens"
    );
    let (status, body) = post(
        addr,
        "/v1/chat/completions",
        ask(json!({"continue_final_message": true})),
    )
    .await;
    assert_eq!(
        status, 400,
        "vLLM refuses it with a generation prompt: {body}"
    );
    let (status, _) = post(
        addr,
        "/v1/chat/completions",
        ask(json!({"continue_final_message": true, "add_generation_prompt": false})),
    )
    .await;
    assert_eq!(status, 200);
    sim.set_faults(lumen_sim::Faults {
        reject_prefill: true,
        ..lumen_sim::Faults::default()
    });
    let (status, body) = post(addr, "/v1/chat/completions", ask(json!({}))).await;
    assert_eq!(status, 400, "{body}");
}

/// A streamed POST's `data:` payloads (HTTP/1.0, so the body is not chunked and ends at EOF),
/// parsed, up to `[DONE]`.
async fn stream_events(addr: SocketAddr, path: &str, body: Value) -> Vec<Value> {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.0\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .take_while(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn prefilled(extra: Value) -> Value {
    let mut body = json!({
        "model": "sim-model",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Lumen routes every"}
        ],
        "max_tokens": 3,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn contents(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn llama_cpp_flavour_repeats_a_prefill_unless_told_to_continue_it() {
    let (addr, _sim) = lumen_sim::spawn(SimConfig {
        models: vec!["sim-model".to_owned()],
        flavor: lumen_sim::Flavor::LlamaCpp,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // A prefill: the answer starts with the prefill's text again, in the first chunk with the
    // first new token; usage counts only the generated tokens.
    let events = stream_events(
        addr,
        "/v1/chat/completions",
        prefilled(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(
        contents(&events),
        ["Lumen routes every request", " to", " a"]
    );
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 3);
    let (status, body) = post(addr, "/v1/chat/completions", prefilled(json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Lumen routes every request to a"
    );
    // `continue_final_message` continues it cleanly (no vLLM rule about the generation
    // prompt: llama.cpp does not check it).
    let events = stream_events(
        addr,
        "/v1/chat/completions",
        prefilled(json!({"stream": true, "continue_final_message": true})),
    )
    .await;
    assert_eq!(contents(&events), [" request", " to", " a"]);
    // Continuous usage is vLLM's: llama.cpp sends usage only at the end.
    let events = stream_events(
        addr,
        "/v1/chat/completions",
        prefilled(json!({"stream": true, "continue_final_message": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true}})),
    )
    .await;
    assert_eq!(
        events.iter().filter(|e| e.get("usage").is_some()).count(),
        1
    );
}

#[tokio::test]
async fn streams_honour_n_packing_and_continuous_usage() {
    let (addr, _sim) = sim().await;
    let events = stream_events(
        addr,
        "/v1/chat/completions",
        json!({
            "model": "sim-model", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5, "n": 2, "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true},
            "sim": {"tokens_per_chunk": 2},
        }),
    )
    .await;
    let of = |c: u64| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["choices"][0]["index"] == c)
            .collect()
    };
    for c in 0..2 {
        let chunks = of(c);
        let texts: Vec<&str> = chunks
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(texts, ["", "Lumen routes", " every request", " to"], "{c}");
        let counts: Vec<&Value> = chunks
            .iter()
            .map(|e| &e["usage"]["completion_tokens"])
            .collect();
        assert_eq!(counts, [0, 2, 4, 5], "tokens so far, per choice");
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "length"
        );
    }
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 10, "both choices");
    // Without the switch, usage comes once, at the end.
    let events = stream_events(
        addr,
        "/v1/completions",
        json!({"model": "sim-model", "prompt": "hi", "max_tokens": 3, "stream": true,
            "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(
        events.iter().filter(|e| e.get("usage").is_some()).count(),
        1
    );
    let (status, body) = post(
        addr,
        "/v1/completions",
        json!({"model": "sim-model", "prompt": "hi", "max_tokens": 2, "n": 3}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"].as_array().unwrap().len(), 3);
    assert_eq!(body["choices"][2]["text"], "Lumen routes");
    assert_eq!(body["usage"]["completion_tokens"], 6);
}
