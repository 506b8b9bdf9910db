//! Model fallback chains end to end: a whole pool that cannot serve moves the request to the
//! next model the caller's key may use; the caller sees which model served.

use lumen_governance::GovernanceConfig;
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::{AuthConfig, BreakerSettings, RetryConfig};
use lumen_tests::*;

fn key(name: &str, secret: &str, models: &[&str]) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: to_hex(&digest(secret)),
        models: Some(models.iter().map(|s| (*s).to_owned()).collect()),
        limits: LimitSpec::default(),
        per_model: Default::default(),
    }
}

async fn chat(lumen: &Lumen, secret: &str, stream: bool) -> Reply {
    let body = format!(
        r#"{{"model":"primary","messages":[{{"role":"user","content":"hi"}}],"max_tokens":2,"stream":{stream}}}"#
    );
    send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        &body,
        &[("authorization", &format!("Bearer {secret}"))],
    )
    .await
}

#[tokio::test]
async fn a_pool_that_fails_every_attempt_falls_back_to_the_next_model_the_key_allows() {
    let (p, sp) = sim(&["primary"]).await;
    let (s, ss) = sim(&["secondary"]).await;
    sp.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let mut gov = GovernanceConfig::default();
    gov.fallbacks
        .insert("primary".into(), vec!["secondary".into()]);
    let lumen = Lumen::start(
        builder(&[&p, &s])
            .governance(gov)
            .retry(RetryConfig {
                max_attempts: Some(2),
                base_ms: Some(1),
                step_ms: Some(0),
                ..RetryConfig::default()
            })
            .breaker(BreakerSettings {
                consecutive_failures: 0,
                ..BreakerSettings::default()
            })
            .auth(AuthConfig {
                enabled: true,
                admin_key_sha256: None,
                keys: vec![
                    key("both", "sk-both", &["primary", "secondary"]),
                    key("primary-only", "sk-primary", &["primary"]),
                ],
            })
            .build()
            .unwrap(),
    )
    .await;
    let r = chat(&lumen, "sk-both", false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["model"],
        "secondary",
        "the answer names the model that served"
    );
    assert_eq!(r.header("x-lumen-served-model"), Some("secondary"));
    assert!(r.json()["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(sp.generation_count(), 2, "both attempts on the primary");
    assert_eq!(ss.generation_count(), 1);
    // Streams fall back the same way, before the first byte.
    let r = chat(&lumen, "sk-both", true).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-lumen-served-model"), Some("secondary"));
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    // A key that may not use the fallback gets the primary's failure, with its message.
    let r = chat(&lumen, "sk-primary", false).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_unavailable");
    assert_eq!(
        ss.generation_count(),
        2,
        "the fallback was not asked for that key"
    );
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(
        metrics.lines().any(|l| l
            == r#"lumen_fallbacks_total{from="primary",to="secondary",reason="upstream_5xx"} 2"#),
        "{metrics}"
    );
}

/// A primary that is down for a while, then healthy: while its breaker is open the fallback
/// serves (the primary is not asked); after the cooldown a half-open probe finds it healthy and
/// traffic goes back to it.
#[tokio::test]
async fn a_flapping_primary_is_served_around_then_comes_back() {
    let (p, sp) = sim(&["primary"]).await;
    let (s, ss) = sim(&["secondary"]).await;
    sp.set_faults(Faults {
        status: Some(500),
        ..Faults::default()
    });
    let mut gov = GovernanceConfig::default();
    gov.fallbacks
        .insert("primary".into(), vec!["secondary".into()]);
    let lumen = Lumen::start(
        builder(&[&p, &s])
            .governance(gov)
            .retry(RetryConfig {
                max_attempts: Some(1),
                ..RetryConfig::default()
            })
            .breaker(BreakerSettings {
                consecutive_failures: 1,
                // Long enough that the first ten requests all fall inside it, even on a slow
                // machine; short enough for the test.
                cooldown_ms: Some(2_000),
                ..BreakerSettings::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let body = r#"{"model":"primary","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let served = |r: &Reply| r.json()["model"].as_str().unwrap_or_default().to_owned();
    // The first request fails on the primary (opening its breaker) and is served by the fallback.
    for _ in 0..10 {
        let r = post(&lumen.url("/v1/chat/completions"), body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(served(&r), "secondary");
    }
    assert_eq!(
        sp.generation_count(),
        1,
        "the open breaker keeps the primary out"
    );
    assert_eq!(ss.generation_count(), 10);
    // The primary recovers; after the cooldown a probe goes to it and it serves again.
    sp.set_faults(Faults::default());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = post(&lumen.url("/v1/chat/completions"), body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if served(&r) == "primary" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never back on the primary"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let r = post(&lumen.url("/v1/chat/completions"), body).await;
        assert_eq!(served(&r), "primary", "back on the primary");
    }
}

/// An answer from a fallback model is never cached under the requested model's key: once the
/// primary is back, callers get the primary's answers.
#[tokio::test]
async fn a_fallback_answer_is_not_cached_for_the_requested_model() {
    let (p, sp) = sim(&["primary"]).await;
    let (s, _ss) = sim(&["secondary"]).await;
    sp.set_faults(Faults {
        status: Some(500),
        ..Faults::default()
    });
    let mut gov = GovernanceConfig::default();
    gov.fallbacks
        .insert("primary".into(), vec!["secondary".into()]);
    let lumen = Lumen::start(
        builder(&[&p, &s])
            .governance(gov)
            .retry(RetryConfig {
                max_attempts: Some(1),
                ..RetryConfig::default()
            })
            .breaker(BreakerSettings {
                consecutive_failures: 0,
                ..BreakerSettings::default()
            })
            .cache(lumen_server::config::CacheConfig {
                enabled: true,
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let body = r#"{"model":"primary","temperature":0,"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let r = post(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(r.json()["model"], "secondary");
    sp.set_faults(Faults::default());
    let r = post(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(
        r.json()["model"],
        "primary",
        "not the cached fallback answer"
    );
    assert_eq!(r.header("x-lumen-cache"), Some("miss"));
}
