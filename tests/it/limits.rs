//! Limits on every path a request can take: every choice it asks for (`n`, `best_of`, batched
//! prompts) is reserved, a fallback model's own limits hold when a request moves there, and a
//! key re-created under an old name inherits neither its counters nor its cached answers.

use std::collections::BTreeMap;

use lumen_governance::GovernanceConfig;
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::{AuthConfig, BreakerSettings, CacheConfig, RetryConfig};
use lumen_sim::SimConfig;
use lumen_tests::*;
use serde_json::{Value, json};

const ADMIN: &str = "sk-admin";

fn key(name: &str, secret: &str, limits: LimitSpec, per_model: &[(&str, LimitSpec)]) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: to_hex(&digest(secret)),
        models: None,
        limits,
        per_model: per_model
            .iter()
            .map(|(m, s)| ((*m).to_owned(), s.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn auth(keys: Vec<ApiKey>) -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: Some(to_hex(&digest(ADMIN))),
        keys,
    }
}

async fn call(lumen: &Lumen, path: &str, secret: &str, body: &str) -> Reply {
    send(
        http::Method::POST,
        &lumen.url(path),
        body,
        &[("authorization", &format!("Bearer {secret}"))],
    )
    .await
}

async fn admin(lumen: &Lumen, method: http::Method, path: &str, body: &str) -> Reply {
    send(
        method,
        &lumen.url(path),
        body,
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await
}

/// `used` of the key's counter `what` (`model`: a `per_model` entry's, else the key's own).
fn used(usage: &Value, name: &str, model: Option<&str>, what: &str) -> u64 {
    let entry = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key {name} in {usage}"));
    entry["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["counter"] == what && c["model"].as_str() == model)
        .unwrap_or_else(|| panic!("no counter {what} for {model:?} in {entry}"))["used"]
        .as_u64()
        .unwrap()
}

fn tpm(n: u64) -> LimitSpec {
    LimitSpec {
        tpm: Some(n),
        ..LimitSpec::default()
    }
}

#[tokio::test(start_paused = true)]
async fn every_choice_a_request_asks_for_is_reserved() {
    let (a, sa) = sim(&["m1"]).await;
    let lumen = Lumen::start(
        single_shot(&[&a])
            .auth(auth(vec![key("k", "sk-k", tpm(100), &[])]))
            .build()
            .unwrap(),
    )
    .await;
    let chat = |extra: &str| {
        format!(
            r#"{{"model":"m1","messages":[{{"role":"user","content":"hi"}}],"max_tokens":20{extra}}}"#
        )
    };
    // ~20 prompt tokens + 8 × 20: over 100 (one answer's budget alone would be admitted).
    let r = call(&lumen, "/v1/chat/completions", "sk-k", &chat(r#","n":8"#)).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let r = call(
        &lumen,
        "/v1/chat/completions",
        "sk-k",
        &chat(r#","best_of":8"#),
    )
    .await;
    assert_eq!(
        r.status,
        429,
        "best_of sequences are generated too: {}",
        r.text()
    );
    let batch = r#"{"model":"m1","prompt":["a","b","c","d","e","f","g","h"],"max_tokens":20}"#;
    let r = call(&lumen, "/v1/completions", "sk-k", batch).await;
    assert_eq!(
        r.status,
        429,
        "each prompt of a batch is answered: {}",
        r.text()
    );
    // best_of is bounded like n, whatever the limits.
    for bad in [
        r#","best_of":1000000"#,
        r#","best_of":0"#,
        r#","best_of":"8""#,
    ] {
        let r = call(&lumen, "/v1/chat/completions", "sk-k", &chat(bad)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "best_of");
    }
    assert_eq!(
        sa.generation_count(),
        0,
        "nothing refused reached the engine"
    );
    // Within the limit: two answers of 20.
    let r = call(&lumen, "/v1/chat/completions", "sk-k", &chat(r#","n":2"#)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `broken` answers 503 to everything; its fallback is `spare`.
async fn broken_with_spare(
    keys: Vec<ApiKey>,
) -> (Lumen, lumen_sim::Simulator, lumen_sim::Simulator) {
    broken_with_spare_on(keys, None).await
}

/// [`broken_with_spare`], its limits and usage on `redis` when given.
async fn broken_with_spare_on(
    keys: Vec<ApiKey>,
    redis: Option<lumen_server::config::RedisConfig>,
) -> (Lumen, lumen_sim::Simulator, lumen_sim::Simulator) {
    let (b, sb) = sim(&["broken"]).await;
    let (s, ss) = sim(&["spare"]).await;
    sb.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let mut gov = GovernanceConfig::default();
    gov.fallbacks.insert("broken".into(), vec!["spare".into()]);
    let mut b = builder(&[&b, &s]);
    if let Some(redis) = redis {
        b = b.redis(redis);
    }
    let lumen = Lumen::start(
        b.governance(gov)
            .retry(RetryConfig {
                max_attempts: Some(1),
                ..RetryConfig::default()
            })
            .breaker(BreakerSettings {
                consecutive_failures: 0,
                ..BreakerSettings::default()
            })
            .auth(auth(keys))
            .build()
            .unwrap(),
    )
    .await;
    (lumen, sb, ss)
}

const BROKEN: &str =
    r#"{"model":"broken","messages":[{"role":"user","content":"hello"}],"max_tokens":8}"#;

#[tokio::test]
async fn a_fallback_never_serves_a_key_its_limits_refuse_on_that_model() {
    let suspended = LimitSpec {
        rpm: Some(0),
        ..LimitSpec::default()
    };
    let (lumen, _sb, ss) = broken_with_spare(vec![
        key(
            "suspended",
            "sk-suspended",
            LimitSpec::default(),
            &[("spare", suspended)],
        ),
        key(
            "tiny",
            "sk-tiny",
            LimitSpec::default(),
            &[("spare", tpm(1))],
        ),
        key("free", "sk-free", LimitSpec::default(), &[]),
    ])
    .await;
    for secret in ["sk-suspended", "sk-tiny"] {
        for stream in [false, true] {
            let body = format!(
                r#"{{"model":"broken","messages":[{{"role":"user","content":"hello"}}],"max_tokens":8,"stream":{stream}}}"#
            );
            let r = call(&lumen, "/v1/chat/completions", secret, &body).await;
            assert_eq!(r.status, 503, "{secret} stream={stream}: {}", r.text());
        }
    }
    assert_eq!(ss.generation_count(), 0, "the spare never served them");
    // A key with no limits on the spare is still served by it.
    let r = call(&lumen, "/v1/chat/completions", "sk-free", BROKEN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "spare");
}

#[tokio::test]
async fn a_fallbacks_tokens_count_against_the_model_that_served() {
    let (lumen, _sb, _ss) = broken_with_spare(vec![key(
        "metered",
        "sk-metered",
        LimitSpec::default(),
        &[("spare", tpm(10_000)), ("broken", tpm(10_000))],
    )])
    .await;
    let r = call(&lumen, "/v1/chat/completions", "sk-metered", BROKEN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "spare");
    let total = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    // The settlement lands just after the answer.
    let mut usage = Value::Null;
    for _ in 0..50 {
        usage = admin(&lumen, http::Method::GET, "/admin/usage", "")
            .await
            .json();
        if used(&usage, "metered", Some("broken"), "tokens") == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        used(&usage, "metered", Some("spare"), "tokens"),
        total,
        "the spare's counter holds the answer's real usage: {usage}"
    );
    assert_eq!(
        used(&usage, "metered", Some("broken"), "tokens"),
        0,
        "the model that failed got its estimate back: {usage}"
    );
}

/// The same on Redis with its default block leases (the key's tpm on both models is big
/// enough for blocks): a fallback, streamed or not, is billed in the usage history exactly
/// what the spare's usage says, under the spare, with the model the client asked for beside
/// it; the model that failed bills nothing.
#[tokio::test]
async fn a_fallback_on_redis_with_default_leases_is_billed_under_the_model_that_served() {
    let server = RedisServer::start().await;
    let redis = crate::shared_state::redis(&server.url(), false);
    assert!(redis.lease.enabled(), "the default");
    let (lumen, _sb, _ss) = broken_with_spare_on(
        vec![key(
            "leased",
            "sk-leased",
            tpm(1_000_000),
            &[("spare", tpm(1_000_000)), ("broken", tpm(1_000_000))],
        )],
        Some(redis),
    )
    .await;
    let r = call(&lumen, "/v1/chat/completions", "sk-leased", BROKEN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let usage = &r.json()["usage"];
    let mut want = (
        1,
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    let streamed = r#"{"model":"broken","messages":[{"role":"user","content":"hello"}],"max_tokens":8,"stream":true,"stream_options":{"include_usage":true}}"#;
    let r = call(&lumen, "/v1/chat/completions", "sk-leased", streamed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let last: Value = r
        .sse_data()
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .rfind(|v| v["usage"].is_object())
        .expect("a usage chunk");
    want.0 += 1;
    want.1 += last["usage"]["prompt_tokens"].as_u64().unwrap();
    want.2 += last["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        crate::shared_state::usage_history(&lumen, "leased", 2).await,
        want,
        "both requests, to the token"
    );
    let rows = admin(
        &lumen,
        http::Method::GET,
        "/admin/usage/history?key=leased",
        "",
    )
    .await
    .json();
    for row in rows["data"].as_array().unwrap() {
        assert_eq!(row["model"], "spare", "{rows}");
        assert_eq!(row["requested"], "broken", "{rows}");
    }
}

#[tokio::test]
async fn a_context_fallback_honours_the_larger_models_limits() {
    let (small, _s1) = sim_with(SimConfig {
        models: vec!["small".into()],
        max_model_len: 100,
        ..SimConfig::default()
    })
    .await;
    let (big, sbig) = sim(&["big"]).await;
    let mut gov = GovernanceConfig::default();
    gov.context_fallbacks
        .insert("small".into(), vec!["big".into()]);
    let suspended = LimitSpec {
        rpm: Some(0),
        ..LimitSpec::default()
    };
    let lumen = Lumen::start(
        builder(&[&small, &big])
            .governance(gov)
            .auth(auth(vec![
                key(
                    "no-big",
                    "sk-no-big",
                    LimitSpec::default(),
                    &[("big", suspended)],
                ),
                key("any", "sk-any", LimitSpec::default(), &[]),
            ]))
            .build()
            .unwrap(),
    )
    .await;
    let long = r#"{"model":"small","messages":[{"role":"user","content":"hi"}],"max_tokens":500}"#;
    let r = call(&lumen, "/v1/chat/completions", "sk-no-big", long).await;
    assert_eq!(r.status, 400, "the small model's own refusal: {}", r.text());
    assert_eq!(sbig.generation_count(), 0);
    let r = call(&lumen, "/v1/chat/completions", "sk-any", long).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "big");
}

#[tokio::test]
async fn a_key_created_again_under_an_old_name_inherits_nothing() {
    let (a, sa) = sim(&["m1"]).await;
    let lumen = Lumen::start(
        single_shot(&[&a])
            .auth(auth(vec![]))
            .cache(CacheConfig {
                enabled: true,
                ..CacheConfig::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let create = json!({"name": "tenant", "limits": {"rpm": 2}}).to_string();
    let r = admin(&lumen, http::Method::POST, "/admin/keys", &create).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let old = r.json()["key"].as_str().unwrap().to_owned();
    let private = r#"{"model":"m1","messages":[{"role":"user","content":"my private prompt"}],"max_tokens":4,"temperature":0}"#;
    for _ in 0..2 {
        assert_eq!(
            call(&lumen, "/v1/chat/completions", &old, private)
                .await
                .status,
            200
        );
    }
    let out = call(&lumen, "/v1/chat/completions", &old, private).await;
    assert_eq!(out.status, 429, "the old key used its two requests");
    assert_eq!(sa.generation_count(), 1, "the second was a cache hit");
    let r = admin(&lumen, http::Method::DELETE, "/admin/keys/tenant", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(&lumen, http::Method::POST, "/admin/keys", &create).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let new = r.json()["key"].as_str().unwrap().to_owned();
    let fresh = call(&lumen, "/v1/chat/completions", &new, private).await;
    assert_eq!(fresh.status, 200, "new counters: {}", fresh.text());
    assert_ne!(
        fresh.header("x-lumen-cache"),
        Some("hit"),
        "the new key never reads the old key's answer"
    );
    assert_eq!(sa.generation_count(), 2, "the engine answered the new key");
}
