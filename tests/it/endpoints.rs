//! The endpoints added as descriptors of the one pipeline: vLLM's `/tokenize` and
//! `/detokenize`, and rerank on `/v1/rerank`, `/rerank` and `/v2/rerank`. Each goes through the
//! same model resolution, keys, limits, retries and metrics as chat, against lumen-sim.

use lumen_governance::GovernanceConfig;
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::AuthConfig;
use lumen_tests::*;
use serde_json::json;

const KEY: &str = "sk-rerank";

fn keyed(models: &[&str], limits: LimitSpec) -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: None,
        keys: vec![ApiKey {
            name: "svc".into(),
            sha256: to_hex(&digest(KEY)),
            models: Some(models.iter().map(|s| (*s).to_owned()).collect()),
            limits,
            per_model: Default::default(),
        }],
    }
}

async fn call(lumen: &Lumen, path: &str, body: serde_json::Value) -> Reply {
    send(
        http::Method::POST,
        &lumen.url(path),
        &body.to_string(),
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await
}

#[tokio::test]
async fn tokenize_and_detokenize_are_routed_by_model_through_an_alias() {
    let (url, sim) = sim(&["engine-m"]).await;
    let mut gov = GovernanceConfig {
        exposed_models: Some(vec!["m".into()]),
        ..Default::default()
    };
    gov.aliases.insert("m".into(), "engine-m".into());
    let lumen = Lumen::start(
        builder(&[&url])
            .governance(gov)
            .auth(keyed(&["m"], LimitSpec::default()))
            .build()
            .unwrap(),
    )
    .await;
    let text = "Lumen routes every request";
    let t = call(&lumen, "/tokenize", json!({"model": "m", "prompt": text})).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let tokens = t.json()["tokens"].clone();
    assert_eq!(
        t.json()["count"].as_u64().unwrap() as usize,
        tokens.as_array().unwrap().len()
    );
    let d = call(
        &lumen,
        "/detokenize",
        json!({"model": "m", "tokens": tokens}),
    )
    .await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(d.json()["prompt"], text);
    // The engine saw its own model id, and the client's other fields unchanged.
    let rec = sim.records();
    let tok = rec.iter().find(|r| r.path == "/tokenize").unwrap();
    assert_eq!(tok.body["model"], "engine-m");
    assert_eq!(tok.body["prompt"], text);
    // A model outside the key's list is as absent as it is for chat.
    let denied = call(
        &lumen,
        "/tokenize",
        json!({"model": "engine-m", "prompt": "x"}),
    )
    .await;
    assert_eq!(denied.status, 404, "{}", denied.text());
    assert_eq!(denied.json()["error"]["code"], "model_not_found");
    // Lumen checks the shape before any engine is asked.
    let before = sim.request_count();
    let missing = call(&lumen, "/detokenize", json!({"model": "m"})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["error"]["param"], "tokens");
    assert_eq!(sim.request_count(), before);
    // Tokenizer calls are counted as requests, never as tokens.
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"endpoint="tokenize""#),
        "per-endpoint metrics"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("lumen_tokens_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn rerank_on_every_path_with_keys_limits_retries_and_usage() {
    let (a, sa) = sim(&["rr"]).await;
    let (b, sb) = sim(&["rr"]).await;
    // One engine fails once: the attempt loop retries on the other, as it does for chat.
    sa.set_faults(Faults {
        fail_next: 1,
        fail_status: Some(503),
        ..Faults::default()
    });
    let lumen = Lumen::start(
        builder(&[&a, &b])
            .auth(keyed(
                &["rr"],
                LimitSpec {
                    rpm: Some(3),
                    ..LimitSpec::default()
                },
            ))
            .build()
            .unwrap(),
    )
    .await;
    let body = json!({
        "model": "rr",
        "query": "gateway routes",
        "documents": ["a gateway routes requests", "bananas", "routes"],
        "top_n": 2
    });
    let mut total = 0;
    for path in ["/v1/rerank", "/rerank", "/v2/rerank"] {
        let r = call(&lumen, path, body.clone()).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let j = r.json();
        let results = j["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "top_n");
        assert_eq!(results[0]["index"], 0, "best match first: {j}");
        total += j["usage"]["total_tokens"].as_u64().unwrap();
    }
    assert!(total > 0);
    assert_eq!(
        sa.generation_count() + sb.generation_count(),
        4,
        "3 answers, 1 retry"
    );
    // The key's request limit applies: the fourth call in the minute is refused.
    let r = call(&lumen, "/v1/rerank", body.clone()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    // Usage is billed as input tokens, and the retry shows in the metrics.
    let metrics = get(&lumen.url("/metrics")).await.text();
    let input: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("lumen_tokens_total")
                && l.contains(r#"model="rr""#)
                && l.contains(r#"token_type="input""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(input, total, "{metrics}");
    assert!(metrics.contains(r#"endpoint="rerank""#));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lumen_retries_total") && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn rerank_input_is_checked_before_any_engine_is_asked() {
    let (url, sim) = sim(&["rr"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    for (body, param) in [
        (json!({"model": "rr", "documents": ["x"]}), "query"),
        (json!({"model": "rr", "query": "q"}), "documents"),
        (
            json!({"model": "rr", "query": "q", "documents": []}),
            "documents",
        ),
        (
            json!({"model": "rr", "query": "q", "documents": "x"}),
            "documents",
        ),
    ] {
        let r = post(&lumen.url("/v1/rerank"), &body.to_string()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param);
    }
    let r = send(http::Method::GET, &lumen.url("/v1/rerank"), "", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(sim.generation_count(), 0);
}

/// vLLM's pooling endpoints (`/v1/score`, `/score`, `/classify`, `/pooling`) through the same
/// pipeline: the key's model list and limits, the engine's answer passed through, tokens billed
/// from its `usage`, and a body missing its input refused before any engine is asked.
#[tokio::test]
async fn score_classify_and_pooling_are_routed_billed_and_checked() {
    let (url, sim) = sim(&["pm"]).await;
    let lumen = Lumen::start(
        builder(&[&url])
            .auth(keyed(
                &["pm"],
                LimitSpec {
                    rpm: Some(100),
                    ..LimitSpec::default()
                },
            ))
            .build()
            .unwrap(),
    )
    .await;
    let mut total = 0;
    for (path, body, object) in [
        (
            "/v1/score",
            json!({"model": "pm", "text_1": "gateway", "text_2": ["a gateway routes", "bananas"]}),
            "score",
        ),
        (
            "/score",
            json!({"model": "pm", "text_1": "gateway", "text_2": "a gateway"}),
            "score",
        ),
        (
            "/classify",
            json!({"model": "pm", "input": ["good day", "bad"]}),
            "classification",
        ),
        (
            "/pooling",
            json!({"model": "pm", "input": "pool me"}),
            "pooling",
        ),
    ] {
        let r = call(&lumen, path, body.clone()).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let j = r.json();
        assert_eq!(j["data"][0]["object"], object, "{path}: {j}");
        assert_eq!(j["model"], "pm");
        total += j["usage"]["total_tokens"].as_u64().unwrap();
    }
    assert!(total > 0);
    let metrics = get(&lumen.url("/metrics")).await.text();
    let input: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("lumen_tokens_total")
                && l.contains(r#"model="pm""#)
                && l.contains(r#"token_type="input""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(input, total, "billed from the engines' usage: {metrics}");
    for endpoint in ["score", "classify", "pooling"] {
        assert!(
            metrics.contains(&format!(r#"endpoint="{endpoint}""#)),
            "{endpoint}: {metrics}"
        );
    }
    let before = sim.generation_count();
    let r = call(&lumen, "/classify", json!({"model": "pm"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "input");
    let r = call(&lumen, "/pooling", json!({"model": "other", "input": "x"})).await;
    assert_eq!(
        r.status,
        404,
        "a model outside the key's list: {}",
        r.text()
    );
    assert_eq!(sim.generation_count(), before, "refused before any engine");
}
