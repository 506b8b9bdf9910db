//! The proxy path: every endpoint through Lumen to lumen-sim, and what the engine received.

use lumen_tests::*;
use serde_json::{Value, json};

const CHAT: &str =
    r#"{"model":"m1","messages":[{"role":"user","content":"hello"}],"max_tokens":5}"#;

#[tokio::test]
async fn chat_non_streamed() {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").is_some());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "m1");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Lumen routes every request to"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    // Engine extras in the response survive the round trip.
    assert_eq!(v["choices"][0]["stop_reason"], Value::Null);
    assert!(v.as_object().unwrap().contains_key("choices"));
    assert_eq!(sim.generation_count(), 1);
}

/// A non-streamed answer is the engine's bytes: key order, spacing, escapes and unknown fields
/// all survive (Lumen peeks at `usage` but does not re-serialise), and tokens are still counted.
#[tokio::test]
async fn non_streamed_answers_are_forwarded_byte_for_byte() {
    const ANSWER: &str = r#"{"usage": {"total_tokens": 12, "prompt_tokens": 5, "completion_tokens": 7},
 "id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m1","engine_extra":{"z":1,"a":[1.50,2e3]},
 "choices":[{"index":0,"message":{"role":"assistant","content":"caf\u00e9 \/ ok"},"finish_reason":"stop"}]}"#;
    let url = canned_engine(ANSWER).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ANSWER);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "café / ok");
    let metrics = get(&lumen.url("/metrics")).await.text();
    let tokens = |kind: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("lumen_tokens_total") && l.contains(&format!("token_type=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(tokens("input").as_deref(), Some("5"), "{metrics}");
    assert_eq!(tokens("output").as_deref(), Some("7"), "{metrics}");
}

#[tokio::test]
async fn unknown_fields_reach_the_engine_unchanged() {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let body = json!({
        "model": "m1",
        "messages": [{"role": "user", "content": "hi", "cache_salt": "abc"}],
        "max_tokens": 2,
        "top_k": 20,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "guided_json": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "chat_template_kwargs": {"enable_thinking": false},
        "priority": -5,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "logit_bias": {"50256": -100}
    });
    let r = post(&lumen.url("/v1/chat/completions"), &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = sim
        .records()
        .into_iter()
        .find(|rec| rec.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(
        got.body, body,
        "the engine must receive exactly what the client sent"
    );
}

#[tokio::test]
async fn request_id_and_upstream_key_are_forwarded_and_client_auth_is_not() {
    let (url, sim) = sim_with(lumen_sim::SimConfig {
        models: vec!["m1".into()],
        api_key: Some("sk-upstream".into()),
        ..Default::default()
    })
    .await;
    let mut vc = lumen_backend_vllm::VllmConfig::new("gpu", &url);
    vc.api_key = Some("sk-upstream".into());
    let gw = lumen_server::Gateway::builder()
        .health(no_health_checks())
        .backend(
            "gpu",
            lumen_backend_vllm::VllmBackend::new(vc).unwrap(),
            None,
        )
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    let r = send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        CHAT,
        &[
            ("x-request-id", "trace-me-42"),
            ("authorization", "Bearer client-key"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-request-id"), Some("trace-me-42"));
    let rec = sim
        .records()
        .into_iter()
        .rfind(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(rec.header("x-request-id"), Some("trace-me-42"));
    assert_eq!(rec.header("authorization"), Some("Bearer sk-upstream"));
}

#[tokio::test]
async fn insane_request_ids_are_replaced() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let long = "x".repeat(129);
    for bad in [long.as_str(), "tab\there"] {
        let r = send(
            http::Method::GET,
            &lumen.url("/v1/models"),
            "",
            &[("x-request-id", bad)],
        )
        .await;
        let id = r.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "a UUID: {id}");
    }
}

#[tokio::test]
async fn completions_non_streamed_and_token_prompt() {
    let (url, _sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    for prompt in [r#""Say hi""#, r#"["a","b"]"#, "[1,2,3]"] {
        let body = format!(r#"{{"model":"m1","prompt":{prompt},"max_tokens":3}}"#);
        let r = post(&lumen.url("/v1/completions"), &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "Lumen routes every");
    }
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let (url, _sim) = sim(&["emb"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(
        &lumen.url("/v1/embeddings"),
        r#"{"model":"emb","input":["a","b"]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let r = post(
        &lumen.url("/v1/embeddings"),
        r#"{"model":"emb","input":"a","encoding_format":"base64"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["data"][0]["embedding"]
            .as_str()
            .unwrap()
            .ends_with('=')
    );
}

#[tokio::test]
async fn models_list_and_lookup_keep_engine_metadata() {
    let (a, _s1) = sim(&["m1", "org/m2"]).await;
    let (b, _s2) = sim(&["m1", "m3"]).await;
    let lumen = Lumen::in_front_of(&[&a, &b]).await;
    let v = get(&lumen.url("/v1/models")).await.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["m1", "m3", "org/m2"],
        "each routable model once, sorted"
    );
    assert_eq!(v["data"][0]["max_model_len"], 8192);
    let one = get(&lumen.url("/v1/models/org%2Fm2")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], "org/m2");
    let one = get(&lumen.url("/v1/models/org/m2")).await;
    assert_eq!(
        one.json()["id"],
        "org/m2",
        "ids with a slash work unescaped too"
    );
    assert_eq!(get(&lumen.url("/v1/models/nope")).await.status, 404);
}

#[tokio::test]
async fn requests_spread_across_engines_serving_the_model() {
    let (a, s1) = sim(&["m1"]).await;
    let (b, s2) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&a, &b]).await;
    for _ in 0..10 {
        assert_eq!(
            post(&lumen.url("/v1/chat/completions"), CHAT).await.status,
            200
        );
    }
    assert_eq!((s1.generation_count(), s2.generation_count()), (5, 5));
}

#[tokio::test]
async fn omitted_model_uses_the_only_model_or_the_default() {
    let (url, sim1) = sim(&["only"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "only");
    let rec = sim1
        .records()
        .into_iter()
        .rfind(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(
        rec.body["model"], "only",
        "the engine gets the resolved model"
    );

    let (url2, _s) = sim(&["a", "b"]).await;
    let gw = builder(&[&url2])
        .default_model(Some("b".into()))
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        r#"{"model":null,"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.json()["model"], "b");
}

#[tokio::test]
async fn discovery_picks_up_an_engine_that_starts_late() {
    // Reserve a port, start Lumen in front of it while nothing listens, then start the engine.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let gw = builder(&[&format!("http://{addr}")])
        .discovery_interval(std::time::Duration::from_millis(20))
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    assert_eq!(
        post(&lumen.url("/v1/chat/completions"), CHAT).await.status,
        404
    );
    let sim = lumen_sim::Simulator::new(lumen_sim::SimConfig {
        models: vec!["m1".into()],
        ..Default::default()
    });
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(lumen_sim::serve(l, sim, std::future::pending()));
    let gw = lumen.gateway.clone();
    eventually(std::time::Duration::from_secs(10), || {
        gw.core().model("m1").is_some()
    })
    .await;
    assert_eq!(
        post(&lumen.url("/v1/chat/completions"), CHAT).await.status,
        200
    );
}
