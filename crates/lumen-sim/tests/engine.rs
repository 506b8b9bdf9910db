//! The engine model over real TCP: what a client and a metrics scraper see of it.

// The helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lumen_sim::{EngineConfig, SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request per connection; the status and the raw body.
async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
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
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, body) = send(addr, "POST", path, &body.to_string()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A streamed chat: the usage chunk's `usage` (the body is chunked; its events are found by
/// their `data: ` prefix, which chunk-size lines never start with).
async fn stream_usage(addr: SocketAddr, body: &Value) -> Value {
    let (status, raw) = send(addr, "POST", "/v1/chat/completions", &body.to_string()).await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.contains("data: [DONE]"), "{raw}");
    raw.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
        .unwrap()
}

/// A fast engine (1 µs per token) so the tests take milliseconds of real time.
async fn sim() -> (SocketAddr, Simulator) {
    lumen_sim::spawn(SimConfig {
        models: vec!["m".to_owned()],
        engine: Some(EngineConfig {
            step_us: 200,
            token_us: 1,
            kv_read_ns: 1,
            ..EngineConfig::default()
        }),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// `/metrics` as `series{labels} -> value`, checking the text format on the way: every series
/// is declared by `# HELP` and `# TYPE` lines, every value parses as a float.
async fn scrape(addr: SocketAddr) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let (status, text) = send(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let mut values = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
                .unwrap_or(name);
            assert!(types.contains_key(family), "undeclared series: {line}");
            assert!(
                series.contains(r#"model_name="m",engine="0""#),
                "labels: {line}"
            );
            values.insert(series.to_owned(), value.parse::<f64>().unwrap());
        }
    }
    (values, types)
}

fn one(values: &BTreeMap<String, f64>, name: &str) -> f64 {
    values[&format!(r#"{name}{{model_name="m",engine="0"}}"#)]
}

/// A long system prompt in the simulator's own words (one token each).
fn system_prompt(words: u32) -> String {
    lumen_sim::answer(words)
}

#[tokio::test]
async fn shared_prefixes_show_as_cached_tokens_and_in_the_metrics() {
    let (addr, sim) = sim().await;
    let system = system_prompt(400);
    let mut prompt_sum = 0.0;
    let mut cached_sum = 0.0;
    for (i, q) in ["What is Lumen?", "How does it route?", "Explain retries."]
        .iter()
        .enumerate()
    {
        let messages = json!([
            {"role": "system", "content": system},
            {"role": "user", "content": q},
        ]);
        let body = json!({"model": "m", "messages": messages, "max_tokens": 5});
        let usage = if i == 1 {
            let mut b = body.clone();
            b["stream"] = json!(true);
            b["stream_options"] = json!({"include_usage": true});
            stream_usage(addr, &b).await
        } else {
            let (status, v) = post(addr, "/v1/chat/completions", &body).await;
            assert_eq!(status, 200, "{v}");
            v["usage"].clone()
        };
        // The engine's prompt is exactly what /tokenize counts for the same messages.
        let (_, t) = post(
            addr,
            "/tokenize",
            &json!({"model": "m", "messages": messages}),
        )
        .await;
        assert_eq!(usage["prompt_tokens"], t["count"], "{usage}");
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        if i == 0 {
            assert_eq!(cached, 0);
        } else {
            // "system: " (8 tokens), 400 words, the newline and "user: ": 415 shared tokens,
            // 25 full blocks.
            assert_eq!(cached, 25 * 16, "{usage}");
        }
        prompt_sum += usage["prompt_tokens"].as_f64().unwrap();
        cached_sum += cached as f64;
    }

    let (values, types) = scrape(addr).await;
    assert_eq!(types["vllm:prefix_cache_queries_total"], "counter");
    assert_eq!(types["vllm:prefix_cache_hits_total"], "counter");
    assert_eq!(types["vllm:kv_cache_usage_perc"], "gauge");
    assert_eq!(types["vllm:num_requests_waiting"], "gauge");
    assert_eq!(types["vllm:time_to_first_token_seconds"], "histogram");
    assert_eq!(one(&values, "vllm:prefix_cache_queries_total"), prompt_sum);
    assert_eq!(one(&values, "vllm:prefix_cache_hits_total"), cached_sum);
    assert_eq!(one(&values, "vllm:num_requests_running"), 0.0);
    assert_eq!(one(&values, "vllm:num_requests_waiting"), 0.0);
    assert_eq!(one(&values, "vllm:kv_cache_usage_perc"), 0.0);
    assert_eq!(one(&values, "vllm:prompt_tokens_total"), prompt_sum);
    assert_eq!(one(&values, "vllm:time_to_first_token_seconds_count"), 3.0);
    // Cumulative buckets ending in +Inf = count.
    let buckets: Vec<f64> = values
        .iter()
        .filter(|(k, _)| k.starts_with("vllm:time_to_first_token_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 23);
    let inf =
        values[r#"vllm:time_to_first_token_seconds_bucket{model_name="m",engine="0",le="+Inf"}"#];
    assert_eq!(inf, 3.0);
    assert!(buckets.iter().all(|b| *b <= inf));
    let report = sim.engine_report().unwrap();
    assert_eq!(report.stats.prefix_hits as f64, cached_sum);
}

#[tokio::test]
async fn the_next_turn_reuses_the_previous_answer() {
    let (addr, _sim) = sim().await;
    let system = system_prompt(100);
    let turn1 = json!([
        {"role": "system", "content": system},
        {"role": "user", "content": "Tell me about routing."},
    ]);
    let (status, a) = post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": turn1, "max_tokens": 40}),
    )
    .await;
    assert_eq!(status, 200);
    let answer = a["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(answer, lumen_sim::answer(40));
    let p1 = a["usage"]["prompt_tokens"].as_u64().unwrap();

    let mut turn2 = turn1.as_array().unwrap().clone();
    turn2.push(json!({"role": "assistant", "content": answer}));
    turn2.push(json!({"role": "user", "content": "And retries?"}));
    let (_, b) = post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": turn2, "max_tokens": 4}),
    )
    .await;
    // The engine holds turn 1's prompt and its answer (all but the last token, whose KV was
    // never computed): every full block of that is reused.
    let cached = b["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(cached, (p1 + 40 - 1) / 16 * 16, "{b}");
}

#[tokio::test]
async fn tools_are_part_of_the_prompt() {
    let (addr, _sim) = sim().await;
    let messages = json!([{"role": "user", "content": "Weather?"}]);
    let tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let (_, plain) = post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": messages, "max_tokens": 1}),
    )
    .await;
    let (_, with_tools) = post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": messages, "tools": tools, "max_tokens": 1}),
    )
    .await;
    let n = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    let tools_line = format!("tools: {tools}\n");
    assert_eq!(
        n(&with_tools),
        n(&plain) + tools_line.len() as u64,
        "one token per byte of it"
    );
}

#[tokio::test]
async fn a_prompt_beyond_the_context_length_is_refused_like_vllm() {
    let (addr, _sim) = lumen_sim::spawn(SimConfig {
        models: vec!["m".to_owned()],
        max_model_len: 64,
        engine: Some(EngineConfig {
            num_blocks: 8,
            ..EngineConfig::default()
        }),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (status, v) = post(
        addr,
        "/v1/completions",
        &json!({"model": "m", "prompt": "x".repeat(60), "max_tokens": 10}),
    )
    .await;
    assert_eq!(status, 400);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("This model's maximum context length is 64 tokens. However, you requested 71 tokens (61 in the messages, 10 in the completion)."),
        "{msg}"
    );
}

#[tokio::test]
async fn an_engine_that_cannot_work_is_refused_at_start() {
    let err = lumen_sim::spawn(SimConfig {
        engine: Some(EngineConfig {
            num_blocks: 10,
            ..EngineConfig::default()
        }),
        ..SimConfig::default()
    })
    .await
    .err()
    .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("max_model_len (8192)"), "{err}");
}

#[tokio::test]
async fn without_the_engine_usage_is_unchanged_and_nothing_is_queued() {
    let (addr, _sim) = lumen_sim::spawn(SimConfig {
        models: vec!["m".to_owned()],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (_, v) = post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let keys: Vec<&String> = v["usage"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["completion_tokens", "prompt_tokens", "total_tokens"]);
    let (values, types) = scrape(addr).await;
    assert!(!types.contains_key("vllm:prefix_cache_hits_total"));
    assert_eq!(one(&values, "vllm:num_requests_waiting"), 0.0);
}

#[tokio::test]
async fn render_gives_the_prompt_the_engine_schedules() {
    let (addr, _sim) = sim().await;
    let messages = json!([
        {"role": "system", "content": system_prompt(40)},
        {"role": "user", "content": "Weather?"},
    ]);
    let tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let (status, rendered) = post(
        addr,
        "/v1/chat/completions/render",
        &json!({"model": "m", "messages": messages, "tools": tools, "max_tokens": 7}),
    )
    .await;
    assert_eq!(status, 200, "{rendered}");
    let ids = rendered["token_ids"].as_array().unwrap();
    let usage = stream_usage(
        addr,
        &json!({"model": "m", "messages": messages, "tools": tools, "max_tokens": 1,
                "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(ids.len() as u64, usage["prompt_tokens"].as_u64().unwrap());
    assert_eq!(rendered["sampling_params"]["max_tokens"], 7);
    assert_eq!(rendered["model"], "m");
    assert!(rendered["features"].is_null());

    // Without tools the template is /tokenize's, id for id; max_tokens defaults to the rest
    // of the context, as vLLM's does.
    let (_, plain) = post(
        addr,
        "/v1/chat/completions/render",
        &json!({"messages": messages}),
    )
    .await;
    let (_, tokenized) = post(addr, "/tokenize", &json!({"messages": messages})).await;
    assert_eq!(plain["token_ids"], tokenized["tokens"]);
    let n = tokenized["count"].as_u64().unwrap();
    assert_eq!(
        plain["sampling_params"]["max_tokens"].as_u64(),
        Some(8192 - n)
    );

    let (status, _) = post(
        addr,
        "/v1/chat/completions/render",
        &json!({"model": "other", "messages": messages}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(addr, "/v1/chat/completions/render", &json!({"model": "m"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn get_load_answers_like_sglang_only_when_asked() {
    let (addr, _sim) = sim().await;
    assert_eq!(
        send(addr, "GET", "/get_load", "").await.0,
        404,
        "vLLM has none"
    );

    // One sequence at a time and slow steps: while the first request decodes, the second
    // waits.
    let (addr, _sim) = lumen_sim::spawn(SimConfig {
        models: vec!["m".to_owned()],
        sglang_get_load: true,
        engine: Some(EngineConfig {
            max_num_seqs: 1,
            step_us: 20_000,
            token_us: 1,
            kv_read_ns: 1,
            ..EngineConfig::default()
        }),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let load = || async move {
        let (status, body) = send(addr, "GET", "/get_load", "").await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v.as_array().unwrap().len(),
            1,
            "one data-parallel rank: {v}"
        );
        assert_eq!(v[0]["dp_rank"], 0);
        let n = |k: &str| v[0][k].as_u64().unwrap();
        (n("num_reqs"), n("num_waiting_reqs"), n("num_tokens"))
    };
    assert_eq!(load().await, (0, 0, 0));
    let body = |q: &str| {
        json!({"model": "m", "max_tokens": 20,
               "messages": [{"role": "user", "content": format!("{} {q}", system_prompt(100))}]})
    };
    let (_, tokenized) = post(
        addr,
        "/tokenize",
        &json!({"messages": body("b")["messages"]}),
    )
    .await;
    let waiting_prompt = tokenized["count"].as_u64().unwrap();
    let first = tokio::spawn(async move { post(addr, "/v1/chat/completions", &body("a")).await });
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = tokio::spawn(async move { post(addr, "/v1/chat/completions", &body("b")).await });
    let mut seen = (0, 0, 0);
    for _ in 0..100 {
        seen = load().await;
        if seen.1 == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (reqs, waiting, tokens) = seen;
    assert_eq!((reqs, waiting), (2, 1), "{seen:?}");
    // The running request's blocks, whole blocks of 16, plus the waiting prompt.
    assert!(tokens > waiting_prompt, "{seen:?}");
    assert_eq!((tokens - waiting_prompt) % 16, 0, "{seen:?}");
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
    // Finished requests' blocks stay cached but are held by nobody.
    assert_eq!(load().await, (0, 0, 0));
}
