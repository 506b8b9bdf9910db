//! Engines that differ from vLLM, through Lumen over real TCP (issue 20, items 3, 14, 15, 16):
//! llama.cpp's tokenizer surface translated to vLLM's shapes (against lumen-sim in llama.cpp
//! flavour), each rerank path kept to the engine, tokenizer calls counted and capped, and idle
//! engine connections closed without a request.

use std::time::Duration;

use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::Gateway;
use lumen_server::config::{AuthConfig, BackendConfig, CacheConfig, EngineKind, LumenConfig};
use lumen_sim::{Flavor, SimConfig};
use lumen_tests::*;
use serde_json::{Value, json};

/// Lumen in front of one engine of `kind`, configured as an operator would.
async fn lumen_for(url: &str, kind: EngineKind) -> Lumen {
    let cfg = LumenConfig {
        backends: vec![BackendConfig {
            name: Some("e".into()),
            url: url.to_owned(),
            kind,
            ..BackendConfig::default()
        }],
        health: no_health_checks(),
        ..LumenConfig::default()
    };
    Lumen::start(Gateway::from_config(&cfg).unwrap()).await
}

/// A simulated engine serving `m`, in the given flavour.
async fn engine(flavor: Flavor) -> (String, lumen_sim::Simulator) {
    sim_with(SimConfig {
        models: vec!["m".into()],
        max_model_len: 4096,
        flavor,
        ..SimConfig::default()
    })
    .await
}

async fn call(lumen: &Lumen, path: &str, body: Value) -> Reply {
    post(&lumen.url(path), &body.to_string()).await
}

/// The paths the engine was asked, discovery's `/v1/models` aside.
fn engine_calls(sim: &lumen_sim::Simulator) -> Vec<String> {
    sim.records()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p != "/v1/models")
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// The same vLLM-shaped calls answer in the same shapes whether vLLM or llama.cpp serves them.
#[tokio::test]
async fn tokenizer_calls_take_vllm_shapes_on_a_llamacpp_engine() {
    let (vurl, _vsim) = engine(Flavor::Vllm).await;
    let (lurl, lsim) = engine(Flavor::LlamaCpp).await;
    let vllm = lumen_for(&vurl, EngineKind::Vllm).await;
    let llama = lumen_for(&lurl, EngineKind::Llamacpp).await;

    let text = "Lumen routes every request";
    let body = json!({"model": "m", "prompt": text});
    let v = call(&vllm, "/tokenize", body.clone()).await;
    let l = call(&llama, "/tokenize", body).await;
    assert_eq!(
        (v.status.as_u16(), l.status.as_u16()),
        (200, 200),
        "{} | {}",
        v.text(),
        l.text()
    );
    let (v, l) = (v.json(), l.json());
    assert_eq!(
        keys(&l),
        ["count", "max_model_len", "token_strs", "tokens"],
        "{l}"
    );
    // Same vocabulary in both simulators, and vLLM's BOS default honoured on llama.cpp.
    assert_eq!(l["tokens"], v["tokens"]);
    assert_eq!(l["count"], v["count"]);
    assert_eq!(l["tokens"][0], 1);
    assert_eq!(l["max_model_len"], 4096, "from /props");
    assert_eq!(l["token_strs"], Value::Null);
    // What the engine was asked: llama.cpp's body, then its props (once).
    let rec = lsim.records();
    let tok = rec.iter().find(|r| r.path == "/tokenize").unwrap();
    assert_eq!(
        tok.body,
        json!({"model": "m", "content": text, "add_special": true, "with_pieces": false})
    );
    assert_eq!(rec.iter().filter(|r| r.path == "/props").count(), 1);
    call(&llama, "/tokenize", json!({"model": "m", "prompt": "x"})).await;
    assert_eq!(
        lsim.records().iter().filter(|r| r.path == "/props").count(),
        1,
        "the context length is remembered"
    );

    // Detokenize: vLLM's `prompt` back (llama.cpp writes special tokens out).
    let d = call(
        &llama,
        "/detokenize",
        json!({"model": "m", "tokens": l["tokens"]}),
    )
    .await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(d.json(), json!({"prompt": format!("<s>{text}")}));

    // Token strings, a split character's bytes named as SentencePiece does.
    let s = call(
        &llama,
        "/tokenize",
        json!({"model": "m", "prompt": "Lumen é", "add_special_tokens": false, "return_token_strs": true}),
    )
    .await
    .json();
    assert_eq!(
        s["token_strs"],
        json!(["Lumen", " ", "<0xC3>", "<0xA9>"]),
        "{s}"
    );
    assert_eq!(s["count"], 4);
}

/// vLLM's chat form: llama.cpp renders the messages with the model's own template
/// (`/apply-template`), then tokenizes that text with the BOS its chat path adds.
#[tokio::test]
async fn messages_are_rendered_by_the_llamacpp_template_then_tokenized() {
    let (vurl, _vsim) = engine(Flavor::Vllm).await;
    let (lurl, lsim) = engine(Flavor::LlamaCpp).await;
    let vllm = lumen_for(&vurl, EngineKind::Vllm).await;
    let llama = lumen_for(&lurl, EngineKind::Llamacpp).await;
    let body = json!({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Lumen routes"}
    ]});
    let v = call(&vllm, "/tokenize", body.clone()).await.json();
    let l = call(&llama, "/tokenize", body).await;
    assert_eq!(l.status, 200, "{}", l.text());
    let l = l.json();
    assert_eq!(l["count"], v["count"].as_u64().unwrap() + 1, "BOS: {l} {v}");
    assert_eq!(
        l["tokens"].as_array().unwrap()[1..],
        v["tokens"].as_array().unwrap()[..]
    );
    assert_eq!(
        engine_calls(&lsim),
        ["/apply-template", "/tokenize", "/props"]
    );
    let d = call(
        &llama,
        "/detokenize",
        json!({"model": "m", "tokens": l["tokens"]}),
    )
    .await;
    assert_eq!(
        d.json()["prompt"],
        "<s>system: Be brief.\nuser: Lumen routes\nassistant: "
    );
}

/// llama.cpp's own body is not Lumen's API: refused before any engine is asked, naming what
/// to send. An engine without `/apply-template` (an older llama.cpp) gets a clear 400 for
/// `messages`, not its 404.
#[tokio::test]
async fn llamacpp_bodies_and_engines_without_a_template_endpoint_get_clear_errors() {
    let (lurl, lsim) = engine(Flavor::LlamaCpp).await;
    let llama = lumen_for(&lurl, EngineKind::Llamacpp).await;
    let r = call(&llama, "/tokenize", json!({"model": "m", "content": "hi"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "prompt");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'content'")
    );
    assert!(engine_calls(&lsim).is_empty());

    // The vLLM-flavoured simulator has no /apply-template: as an old llama-server.
    let (old, _) = engine(Flavor::Vllm).await;
    let old = lumen_for(&old, EngineKind::Llamacpp).await;
    let r = call(
        &old,
        "/tokenize",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "messages");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'prompt' instead of 'messages'"),
        "{}",
        r.text()
    );
}

/// Item 14: each rerank path reaches the engine on that path (engines answer each in its own
/// API's shape), and the cache never serves one path's answer for another.
#[tokio::test]
async fn each_rerank_path_keeps_its_own_path_and_cache_entry() {
    let (url, sim) = sim(&["rr"]).await;
    let lumen = Lumen::start(
        builder(&[&url])
            .cache(CacheConfig {
                enabled: true,
                ..CacheConfig::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let body = json!({"model": "rr", "query": "q", "documents": ["q", "x"]});
    let paths = ["/v2/rerank", "/rerank", "/v1/rerank"];
    for path in paths {
        let r = call(&lumen, path, body.clone()).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("x-lumen-cache"), Some("miss"), "{path}");
    }
    assert_eq!(engine_calls(&sim), paths);
    // The same call again is each path's own cache hit.
    for path in paths {
        let r = call(&lumen, path, body.clone()).await;
        assert_eq!(r.header("x-lumen-cache"), Some("hit"), "{path}");
    }
    assert_eq!(engine_calls(&sim).len(), 3);
}

const KEY: &str = "sk-tokenizer";

/// Item 15: tokenizer calls are charged a request each (rpm), never tokens, and their bodies
/// have a cap of their own, smaller than the one for inference.
#[tokio::test]
async fn tokenizer_calls_count_as_requests_and_have_their_own_body_cap() {
    let (url, sim) = sim(&["m"]).await;
    let auth = AuthConfig {
        enabled: true,
        admin_key_sha256: None,
        keys: vec![ApiKey {
            name: "svc".into(),
            sha256: to_hex(&digest(KEY)),
            models: None,
            limits: LimitSpec {
                rpm: Some(3),
                ..LimitSpec::default()
            },
            per_model: Default::default(),
        }],
    };
    let lumen = Lumen::start(
        builder(&[&url])
            .auth(auth)
            .max_tokenizer_body_bytes(1024)
            .build()
            .unwrap(),
    )
    .await;
    let bearer = format!("Bearer {KEY}");
    let send = |path: &'static str, body: Value| {
        let (url, bearer) = (lumen.url(path), bearer.clone());
        async move {
            send(
                http::Method::POST,
                &url,
                &body.to_string(),
                &[("authorization", &bearer)],
            )
            .await
        }
    };
    let big = "word ".repeat(300);
    // Over the tokenizer cap: 413 before the body is read whole, nothing charged or sent.
    let r = send("/tokenize", json!({"model": "m", "prompt": big})).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024-byte")
    );
    let r = send("/detokenize", json!({"model": "m", "tokens": vec![7; 600]})).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(engine_calls(&sim).is_empty());
    // The same size is fine for inference, which is charged tokens.
    let r = send(
        "/v1/completions",
        json!({"model": "m", "prompt": big, "max_tokens": 1}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Each tokenizer call is a request against the key's rpm: the fourth in the minute is refused.
    let r = send("/tokenize", json!({"model": "m", "prompt": "hi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("1"));
    let r = send("/detokenize", json!({"model": "m", "tokens": [7]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send("/tokenize", json!({"model": "m", "prompt": "hi"})).await;
    assert_eq!(r.status, 429, "{}", r.text());
}

/// Item 16 through the whole stack: `backends[].pool_idle_timeout_ms` reaches the pool, and an
/// idle engine connection is closed when it runs out, with no request arriving. The engine is
/// a raw TCP one, so the test sees the close itself.
#[tokio::test]
async fn idle_engine_connections_close_after_the_configured_timeout() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request(&mut sock, &mut buf).await.is_some() {
                    let body = r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    sock.write_all(head.as_bytes()).await.unwrap();
                    sock.write_all(body.as_bytes()).await.unwrap();
                }
                // The peer closed the connection.
                let _ = closed_tx.send(tokio::time::Instant::now());
            });
        }
    });
    let mut cfg = LumenConfig {
        backends: vec![BackendConfig {
            url,
            models: Some(vec!["m".into()]),
            pool_idle_timeout_ms: 300,
            ..BackendConfig::default()
        }],
        health: no_health_checks(),
        ..LumenConfig::default()
    };
    cfg.routing.discovery_interval_ms = 3_600_000;
    let lumen = Lumen::start(Gateway::from_config(&cfg).unwrap()).await;
    // One request through Lumen leaves one pooled connection (discovery's, or this one's).
    let r = call(&lumen, "/tokenize", json!({"model": "m", "prompt": "x"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let idle_from = tokio::time::Instant::now();
    let at = tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the engine never saw its idle connection close")
        .unwrap();
    assert!(
        at - idle_from >= Duration::from_millis(250),
        "closed too early"
    );

    // Zero is refused, naming the setting.
    cfg.backends[0].pool_idle_timeout_ms = 0;
    let e = Gateway::from_config(&cfg).err().unwrap().to_string();
    assert!(e.contains("backends[0].pool_idle_timeout_ms"), "{e}");
}

/// With `send_priority`, each request's class reaches a vLLM that schedules by priority as its
/// `priority` field (lower first), from the key's class and what the request asked within it;
/// without it the engine never sees the field (a vLLM without priority scheduling refuses it).
#[tokio::test]
async fn the_priority_class_reaches_engines_that_schedule_by_it() {
    use lumen_governance::keys::{ApiKey, digest, to_hex};
    use lumen_governance::limits::LimitSpec;
    let (url, sim) = sim_with(lumen_sim::SimConfig {
        models: vec!["m".into()],
        record: 16,
        ..lumen_sim::SimConfig::default()
    })
    .await;
    let key = |name: &str, priority: &str, max: Option<&str>| ApiKey {
        name: name.into(),
        sha256: to_hex(&digest(name)),
        models: None,
        limits: LimitSpec {
            priority: Some(priority.into()),
            max_priority: max.map(str::to_owned),
            ..LimitSpec::default()
        },
        per_model: Default::default(),
    };
    let auth = AuthConfig {
        enabled: true,
        admin_key_sha256: None,
        keys: vec![
            key("batchy", "batch", Some("standard")),
            key("chatty", "interactive", None),
        ],
    };
    let start = |send_priority: bool| {
        let mut vc = lumen_backend_vllm::VllmConfig::new("e", url.as_str());
        vc.send_priority = send_priority;
        let backend = lumen_backend_vllm::VllmBackend::new(vc).unwrap();
        lumen_server::Gateway::builder()
            .health(no_health_checks())
            .backend("e", backend, None)
            .auth(auth.clone())
            .build()
            .unwrap()
    };
    let lumen = Lumen::start(start(true)).await;
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    // A caller's own `priority` never reaches an engine that schedules by it.
    let jumping = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"priority":-100}"#;
    let r = send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        jumping,
        &[("authorization", "Bearer batchy")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sim.records().last().unwrap().body["priority"], 2);
    let sent = |secret: &'static str, asked: Option<&'static str>| {
        let url = lumen.url("/v1/chat/completions");
        let sim = &sim;
        async move {
            let bearer = format!("Bearer {secret}");
            let mut headers = vec![("authorization", bearer.as_str())];
            if let Some(a) = asked {
                headers.push(("x-lumen-priority", a));
            }
            let r = send(http::Method::POST, &url, chat, &headers).await;
            assert_eq!(r.status, 200, "{}", r.text());
            sim.records().last().unwrap().body["priority"].clone()
        }
    };
    assert_eq!(sent("batchy", None).await, 2);
    assert_eq!(sent("batchy", Some("standard")).await, 1);
    assert_eq!(
        sent("batchy", Some("interactive")).await,
        1,
        "capped at the key's max"
    );
    assert_eq!(sent("chatty", None).await, 0);
    let plain = Lumen::start(start(false)).await;
    let r = send(
        http::Method::POST,
        &plain.url("/v1/chat/completions"),
        chat,
        &[("authorization", "Bearer chatty")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(sim.records().last().unwrap().body.get("priority").is_none());
}
