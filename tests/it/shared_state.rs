//! Shared state: API keys and model access, the admin API, limits (in memory with a paused
//! clock, and on a real Redis), the response cache, and Redis failing and returning mid-run.

use std::time::Duration;

use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::{AuthConfig, CacheConfig, RedisConfig};
use lumen_tests::*;
use serde_json::json;

const KEY: &str = "sk-team-a";
const ADMIN: &str = "sk-admin";

pub(crate) fn key(name: &str, secret: &str, models: Option<&[&str]>, limits: LimitSpec) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: to_hex(&digest(secret)),
        models: models.map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
        limits,
        per_model: Default::default(),
    }
}

pub(crate) fn auth(keys: Vec<ApiKey>) -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: Some(to_hex(&digest(ADMIN))),
        keys,
    }
}

fn chat(model: &str, extra: &str) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}],"max_tokens":4{extra}}}"#
    )
}

pub(crate) async fn call(lumen: &Lumen, secret: &str, body: &str) -> Reply {
    let bearer = format!("Bearer {secret}");
    send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        body,
        &[("authorization", &bearer)],
    )
    .await
}

pub(crate) async fn admin(lumen: &Lumen, method: http::Method, path: &str, body: &str) -> Reply {
    let bearer = format!("Bearer {ADMIN}");
    send(
        method,
        &lumen.url(path),
        body,
        &[("authorization", &bearer)],
    )
    .await
}

#[tokio::test]
async fn keys_gate_the_api_and_scope_models() {
    let (a, _sa) = sim(&["m1", "m2"]).await;
    let keys = vec![key("team-a", KEY, Some(&["m1"]), LimitSpec::default())];
    let lumen = Lumen::start(single_shot(&[&a]).auth(auth(keys)).build().unwrap()).await;
    let missing = post(&lumen.url("/v1/chat/completions"), &chat("m1", "")).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["code"], "invalid_api_key");
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");
    let wrong = call(&lumen, "sk-nope", &chat("m1", "")).await;
    assert_eq!(wrong.status, 401);
    assert!(
        !wrong.text().contains("sk-nope"),
        "the presented key is never echoed"
    );
    assert_eq!(call(&lumen, KEY, &chat("m1", "")).await.status, 200);
    let other = call(&lumen, KEY, &chat("m2", "")).await;
    assert_eq!(
        other.status, 404,
        "a model outside the key's list does not exist for it"
    );
    assert_eq!(other.json()["error"]["code"], "model_not_found");
    let models = send(
        http::Method::GET,
        &lumen.url("/v1/models"),
        "",
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await;
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["m1"]);
    assert_eq!(get(&lumen.url("/v1/models")).await.status, 401);
    assert_eq!(
        get(&lumen.url("/health")).await.status,
        200,
        "liveness needs no key"
    );
}

#[tokio::test]
async fn the_admin_api_creates_lists_uses_and_revokes_keys() {
    let (a, _sa) = sim(&["m1"]).await;
    let lumen = Lumen::start(single_shot(&[&a]).auth(auth(vec![])).build().unwrap()).await;
    assert_eq!(
        get(&lumen.url("/admin/keys")).await.status,
        401,
        "admin key required"
    );
    let created = admin(
        &lumen,
        http::Method::POST,
        "/admin/keys",
        r#"{"name":"ci","limits":{"rpm":5}}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = created.json()["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("lumen-"));
    assert_eq!(call(&lumen, &secret, &chat("m1", "")).await.status, 200);
    let listed = admin(&lumen, http::Method::GET, "/admin/keys", "")
        .await
        .json();
    assert_eq!(listed["data"][0]["name"], "ci");
    assert!(
        !listed.to_string().contains(&secret),
        "secrets are shown once, at creation"
    );
    let usage = admin(&lumen, http::Method::GET, "/admin/usage", "")
        .await
        .json();
    assert_eq!(
        usage["data"][0]["counters"][0],
        json!({"counter": "requests", "used": 1, "limit": 5, "reset_seconds": 59})
    );
    assert_eq!(
        admin(&lumen, http::Method::DELETE, "/admin/keys/ci", "")
            .await
            .status,
        200
    );
    assert_eq!(
        call(&lumen, &secret, &chat("m1", "")).await.status,
        401,
        "revoked"
    );
    let bad = admin(&lumen, http::Method::POST, "/admin/keys", r#"{"nom":"x"}"#).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(start_paused = true)]
async fn rpm_limit_with_headers_and_window_reset_in_virtual_time() {
    let (a, _sa) = sim(&["m1"]).await;
    let keys = vec![key(
        "team-a",
        KEY,
        None,
        LimitSpec {
            rpm: Some(3),
            ..Default::default()
        },
    )];
    let lumen = Lumen::start(single_shot(&[&a]).auth(auth(keys)).build().unwrap()).await;
    for left in ["2", "1", "0"] {
        let r = call(&lumen, KEY, &chat("m1", "")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(left));
        assert_eq!(r.header("x-ratelimit-reset-requests"), Some("60s"));
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let refused = call(&lumen, KEY, &chat("m1", "")).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["type"], "rate_limit_error");
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.header("retry-after"), Some("40"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(
        call(&lumen, KEY, &chat("m1", "")).await.status,
        200,
        "a new window"
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_are_reserved_then_settled_and_quotas_are_insufficient_quota() {
    let (a, _sa) = sim(&["m1"]).await;
    // The request body is ~90 bytes (~22 tokens) + max_tokens 4 reserved; usage settles it.
    let keys = vec![
        key(
            "tpm",
            "sk-tpm",
            None,
            LimitSpec {
                tpm: Some(60),
                ..Default::default()
            },
        ),
        key(
            "quota",
            "sk-quota",
            None,
            LimitSpec {
                daily_tokens: Some(30),
                ..Default::default()
            },
        ),
    ];
    let lumen = Lumen::start(single_shot(&[&a]).auth(auth(keys)).build().unwrap()).await;
    let first = call(&lumen, "sk-tpm", &chat("m1", "")).await;
    assert_eq!(first.status, 200);
    let reserved_left: u64 = first
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // let the settlement land
    let second = call(&lumen, "sk-tpm", &chat("m1", "")).await;
    assert_eq!(second.status, 200);
    let usage = admin(&lumen, http::Method::GET, "/admin/usage", "")
        .await
        .json();
    let tpm_used = usage["data"][0]["counters"][0]["used"].as_u64().unwrap();
    // Settled to real usage (the simulator reports prompt ≈ body/4 of the messages, 4 output).
    assert!(
        tpm_used < 2 * (60 - reserved_left),
        "settled below two reservations: {tpm_used}"
    );
    let big = r#"{"model":"m1","messages":[{"role":"user","content":"hello"}],"max_tokens":100}"#;
    assert_eq!(
        call(&lumen, "sk-tpm", big).await.status,
        429,
        "the estimate alone is over the limit"
    );

    assert_eq!(call(&lumen, "sk-quota", &chat("m1", "")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = call(&lumen, "sk-quota", &chat("m1", "")).await;
    assert_eq!(out.status, 429);
    assert_eq!(out.json()["error"]["type"], "insufficient_quota");
    assert_eq!(out.json()["error"]["code"], "insufficient_quota");
}

fn cache_on() -> CacheConfig {
    CacheConfig {
        enabled: true,
        any_temperature_models: vec!["creative".into()],
        ..CacheConfig::default()
    }
}

#[tokio::test]
async fn cache_hit_miss_refresh_and_bypass() {
    let (a, sa) = sim(&["m1", "creative"]).await;
    let lumen = Lumen::start(single_shot(&[&a]).cache(cache_on()).build().unwrap()).await;
    let url = lumen.url("/v1/chat/completions");
    let det = chat("m1", r#","temperature":0"#);
    let first = post(&url, &det).await;
    assert_eq!(first.header("x-lumen-cache"), Some("miss"));
    tokio::time::sleep(Duration::from_millis(50)).await; // the write is asynchronous
    let second = post(&url, &det).await;
    assert_eq!(second.header("x-lumen-cache"), Some("hit"));
    assert_eq!(
        second.json(),
        first.json(),
        "the same answer, from the cache"
    );
    assert_eq!(sa.generation_count(), 1);
    // stream and user do not change the key; model and body do.
    let same = post(
        &url,
        &chat("m1", r#","temperature":0,"user":"someone-else""#),
    )
    .await;
    assert_eq!(same.header("x-lumen-cache"), Some("hit"));
    let refresh = send(
        http::Method::POST,
        &url,
        &det,
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(refresh.header("x-lumen-cache"), Some("refresh"));
    let bypass = send(
        http::Method::POST,
        &url,
        &det,
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(bypass.header("x-lumen-cache"), Some("bypass"));
    let hot = post(&url, &chat("m1", r#","temperature":0.8"#)).await;
    assert_eq!(
        hot.header("x-lumen-cache"),
        Some("bypass"),
        "not deterministic"
    );
    assert_eq!(sa.generation_count(), 4);
    post(&url, &chat("creative", r#","temperature":0.8"#)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let widened = post(&url, &chat("creative", r#","temperature":0.8"#)).await;
    assert_eq!(
        widened.header("x-lumen-cache"),
        Some("hit"),
        "widened per model"
    );
    let m = get(&lumen.url("/metrics")).await.text();
    assert!(
        m.contains(r#"lumen_cache_requests_total{result="hit"} 3"#),
        "{m}"
    );
}

#[tokio::test]
async fn cached_answers_are_not_shared_between_keys() {
    let (a, sa) = sim(&["m1"]).await;
    let keys = vec![
        key("a", "sk-a", None, LimitSpec::default()),
        key("b", "sk-b", None, LimitSpec::default()),
    ];
    let lumen = Lumen::start(
        single_shot(&[&a])
            .auth(auth(keys))
            .cache(cache_on())
            .build()
            .unwrap(),
    )
    .await;
    let det = chat("m1", r#","temperature":0"#);
    call(&lumen, "sk-a", &det).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        call(&lumen, "sk-b", &det).await.header("x-lumen-cache"),
        Some("miss")
    );
    assert_eq!(
        call(&lumen, "sk-a", &det).await.header("x-lumen-cache"),
        Some("hit")
    );
    assert_eq!(sa.generation_count(), 2);
}

pub(crate) fn redis(url: &str, fail_closed: bool) -> RedisConfig {
    RedisConfig {
        url: Some(lumen_server::config::Secret::new(url)),
        timeout_ms: 200,
        fail_closed,
        required: true,
        key_cache_ms: 5_000,
        lease: Default::default(),
    }
}

#[tokio::test]
async fn limits_and_cache_are_shared_through_redis() {
    let server = RedisServer::start().await;
    let (a, sa) = sim(&["m1"]).await;
    let keys = || {
        vec![key(
            "team-a",
            KEY,
            None,
            LimitSpec {
                rpm: Some(5),
                ..Default::default()
            },
        )]
    };
    let replica = || {
        single_shot(&[&a])
            .auth(auth(keys()))
            .cache(cache_on())
            .redis(redis(&server.url(), false))
    };
    let one = Lumen::start(replica().build().unwrap()).await;
    let two = Lumen::start(replica().build().unwrap()).await;
    let det = chat("m1", r#","temperature":0"#);
    let mut admitted = 0;
    for i in 0..10 {
        let lumen = if i % 2 == 0 { &one } else { &two };
        if call(lumen, KEY, &det).await.status == 200 {
            admitted += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(admitted, 5, "one limit across both replicas");
    assert_eq!(
        sa.generation_count(),
        1,
        "the first answer was cached for both replicas"
    );
    let h = get(&one.url("/health/redis")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    // A key created on one replica works on the other.
    let created = admin(
        &one,
        http::Method::POST,
        "/admin/keys",
        r#"{"name":"shared"}"#,
    )
    .await
    .json();
    assert_eq!(
        call(&two, created["key"].as_str().unwrap(), &chat("m1", ""))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn redis_down_fails_open_by_default_and_resumes_without_a_restart() {
    let mut server = RedisServer::start().await;
    let (a, _sa) = sim(&["m1"]).await;
    let keys = vec![key(
        "team-a",
        KEY,
        None,
        LimitSpec {
            rpm: Some(2),
            ..Default::default()
        },
    )];
    let lumen = Lumen::start(
        single_shot(&[&a])
            .auth(auth(keys))
            .redis(redis(&server.url(), false))
            .build()
            .unwrap(),
    )
    .await;
    assert_eq!(call(&lumen, KEY, &chat("m1", "")).await.status, 200);
    server.kill();
    for _ in 0..5 {
        let r = tokio::time::timeout(Duration::from_secs(5), call(&lumen, KEY, &chat("m1", "")))
            .await
            .expect("a request never hangs on Redis");
        assert_eq!(r.status, 200, "fail-open: admitted while Redis is down");
    }
    let h = get(&lumen.url("/health/redis")).await;
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["status"], "unavailable");
    assert_eq!(
        get(&lumen.url("/ready")).await.status,
        503,
        "redis.required"
    );
    let m = get(&lumen.url("/metrics")).await.text();
    assert!(
        m.contains(r#"lumen_redis_errors_total{op="limits"} 5"#),
        "{m}"
    );
    server.restart().await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(call(&lumen, KEY, &chat("m1", "")).await.status.as_u16());
    }
    // Redis came back empty: the window restarts and the limit of 2 applies again.
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.contains(&429),
        "limits enforced again after Redis returned: {statuses:?}"
    );
    assert!(ok >= 2, "{statuses:?}");
    assert_eq!(get(&lumen.url("/health/redis")).await.status, 200);
}

#[tokio::test]
async fn redis_down_fails_closed_when_configured() {
    let mut server = RedisServer::start().await;
    let (a, sa) = sim(&["m1"]).await;
    let keys = vec![key(
        "team-a",
        KEY,
        None,
        LimitSpec {
            rpm: Some(100),
            ..Default::default()
        },
    )];
    let lumen = Lumen::start(
        single_shot(&[&a])
            .auth(auth(keys))
            .redis(redis(&server.url(), true))
            .build()
            .unwrap(),
    )
    .await;
    assert_eq!(call(&lumen, KEY, &chat("m1", "")).await.status, 200);
    server.kill();
    let r = call(&lumen, KEY, &chat("m1", "")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "shared_state_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        sa.generation_count(),
        1,
        "nothing reached the engine unmetered"
    );
}

/// Polls `/admin/usage` until the key's first counter reads `used` (Redis may still be running
/// what was queued while it stalled), and returns the last report either way.
async fn usage_settles_to(lumen: &Lumen, used: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        let r = admin(lumen, http::Method::GET, "/admin/usage", "").await;
        if r.status == 200 {
            last = r.json();
            if last["data"][0]["counters"][0]["used"] == used {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last
}

#[tokio::test]
async fn a_redis_stall_does_not_lock_a_key_out() {
    let server = RedisServer::start().await;
    let (a, _sa) = sim(&["m1"]).await;
    let keys = vec![key(
        "team-a",
        KEY,
        None,
        LimitSpec {
            max_concurrent: Some(2),
            ..Default::default()
        },
    )];
    let mut cfg = redis(&server.url(), false);
    cfg.timeout_ms = 50; // shorter than the stall
    let lumen = Lumen::start(
        single_shot(&[&a])
            .auth(auth(keys))
            .redis(cfg)
            .build()
            .unwrap(),
    )
    .await;
    // Connected, scripts loaded, settled.
    assert_eq!(call(&lumen, KEY, &chat("m1", "")).await.status, 200);
    assert_eq!(
        usage_settles_to(&lumen, 0).await["data"][0]["counters"][0]["used"],
        0
    );
    // One request holds a slot when Redis stalls, and ends (is released) during the stall.
    let slow = {
        let lumen_url = lumen.url("/v1/chat/completions");
        let body = chat("m1", r#","sim":{"ttft_ms":300}"#);
        tokio::spawn(async move {
            let bearer = format!("Bearer {KEY}");
            send(
                http::Method::POST,
                &lumen_url,
                &body,
                &[("authorization", &bearer)],
            )
            .await
        })
    };
    assert_eq!(
        usage_settles_to(&lumen, 1).await["data"][0]["counters"][0]["used"],
        1
    );
    let body = chat("m1", "");
    server.pause();
    // Two more are admitted during the stall (fail-open): their charges wait in Redis.
    let (x, y) = tokio::join!(call(&lumen, KEY, &body), call(&lumen, KEY, &body));
    assert_eq!(
        (x.status.as_u16(), y.status.as_u16()),
        (200, 200),
        "fail-open while Redis stalls"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.resume();
    // The charges and the release queued during the stall run now: nothing may stay counted.
    let usage = usage_settles_to(&lumen, 0).await;
    assert_eq!(
        usage["data"][0]["counters"][0]["used"], 0,
        "late charges undone: {usage}"
    );
    for _ in 0..3 {
        let r = call(&lumen, KEY, &chat("m1", "")).await;
        assert_eq!(r.status, 200, "admitted after the stall: {}", r.text());
    }
}

#[tokio::test]
async fn a_limit_of_zero_suspends_the_key() {
    let (a, sa) = sim(&["m1"]).await;
    let keys = vec![key(
        "off",
        "sk-off",
        None,
        LimitSpec {
            rpm: Some(0),
            ..Default::default()
        },
    )];
    let lumen = Lumen::start(single_shot(&[&a]).auth(auth(keys)).build().unwrap()).await;
    let refused = call(&lumen, "sk-off", &chat("m1", "")).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let err = &refused.json()["error"];
    assert_eq!(err["type"], "rate_limit_error");
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert_eq!(
        err["message"],
        "Key `off` is suspended: its `rpm` limit is 0."
    );
    let created = admin(
        &lumen,
        http::Method::POST,
        "/admin/keys",
        r#"{"name":"paused","limits":{"max_concurrent":0}}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = created.json()["key"].as_str().unwrap().to_owned();
    let refused = call(&lumen, &secret, &chat("m1", "")).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(
        refused.json()["error"]["message"],
        "Key `paused` is suspended: its `max_concurrent` limit is 0."
    );
    assert_eq!(sa.generation_count(), 0, "nothing reached the engine");
    let m = get(&lumen.url("/metrics")).await.text();
    assert!(
        m.contains(r#"lumen_rate_limited_total{reason="suspended"} 2"#),
        "{m}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_live_stream_keeps_its_concurrency_slot_past_the_lease() {
    use http_body_util::BodyExt;
    let (a, _sa) = sim(&["m1"]).await;
    let keys = vec![key(
        "team-a",
        KEY,
        None,
        LimitSpec {
            max_concurrent: Some(1),
            ..Default::default()
        },
    )];
    let lumen = Lumen::start(single_shot(&[&a]).auth(auth(keys)).build().unwrap()).await;
    // 8 tokens 8 s apart: about a minute, twice the 30 s lease.
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"hello"}],"max_tokens":8,"stream":true,"sim":{"itl_ms":8000}}"#;
    let req = http::Request::post(lumen.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let stream = client().request(req).await.unwrap();
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_secs(45)).await;
    let refused = call(&lumen, KEY, &chat("m1", "")).await;
    assert_eq!(refused.status, 429, "the stream renewed its slot");
    let events = stream.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&events).contains("[DONE]"));
    assert_eq!(call(&lumen, KEY, &chat("m1", "")).await.status, 200);
}

/// Usage per key, model and day for finance (issue 25): three replicas on one Redis add to the
/// same rows; requests, streams and failures are counted with the engines' own token counts;
/// the history answers as JSON and as CSV with a cost from the price table.
#[tokio::test]
async fn usage_history_is_one_total_across_three_replicas_on_redis() {
    let server = RedisServer::start().await;
    let (a, _sa) = sim(&["m1"]).await;
    let keys = || vec![key("team-a", KEY, None, LimitSpec::default())];
    let prices: lumen_governance::accounting::PriceTable = serde_json::from_value(json!({
        "m1": {"input_per_million": 1.0, "output_per_million": 2.0}
    }))
    .unwrap();
    let replica = || {
        single_shot(&[&a])
            .auth(auth(keys()))
            .redis(redis(&server.url(), false))
            .accounting(lumen_server::config::AccountingConfig {
                prices: prices.clone(),
                ..Default::default()
            })
    };
    let replicas = [
        Lumen::start(replica().build().unwrap()).await,
        Lumen::start(replica().build().unwrap()).await,
        Lumen::start(replica().build().unwrap()).await,
    ];
    let (mut input, mut output) = (0, 0);
    for i in 0..6 {
        let r = call(&replicas[i % 3], KEY, &chat("m1", "")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        input += r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
        output += r.json()["usage"]["completion_tokens"].as_u64().unwrap();
    }
    // A stream, counted when it ends, with the usage the engine reported.
    let streamed = call(
        &replicas[1],
        KEY,
        &chat(
            "m1",
            r#","stream":true,"stream_options":{"include_usage":true}"#,
        ),
    )
    .await;
    let last = streamed
        .sse_data()
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(&d).unwrap())
        .rfind(|v| v["usage"].is_object())
        .unwrap();
    input += last["usage"]["prompt_tokens"].as_u64().unwrap();
    output += last["usage"]["completion_tokens"].as_u64().unwrap();
    // A failure counts as a request and an error, with no tokens.
    let failed = call(
        &replicas[2],
        KEY,
        &chat("m1", r#","sim":{"status":500,"flat_error":true}"#),
    )
    .await;
    assert_ne!(failed.status, 200);

    let mut row = serde_json::Value::Null;
    for _ in 0..100 {
        let r = admin(
            &replicas[0],
            http::Method::GET,
            "/admin/usage/history?key=team-a",
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        row = r.json()["data"][0].clone();
        if row["requests"] == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(row["key"], "team-a", "{row}");
    assert_eq!(row["model"], "m1");
    assert_eq!(row["requests"], 8, "{row}");
    assert_eq!(row["errors"], 1, "{row}");
    assert_eq!(row["input_tokens"], input, "{row}");
    assert_eq!(row["output_tokens"], output, "{row}");
    // The same counts per key in Prometheus, summed over the replicas.
    let mut requests = 0.0;
    let mut tokens_out = 0.0;
    for r in &replicas {
        let text = get(&r.url("/metrics")).await.text();
        requests += metric(&text, r#"lumen_key_requests_total{key="team-a"}"#).unwrap_or(0.0);
        tokens_out += metric(
            &text,
            r#"lumen_key_tokens_total{key="team-a",token_type="output"}"#,
        )
        .unwrap_or(0.0);
    }
    assert_eq!(requests, 8.0);
    assert_eq!(tokens_out, output as f64);
    let cost = (input as f64 * 1.0 + output as f64 * 2.0) / 1e6;
    assert!((row["cost"].as_f64().unwrap() - cost).abs() < 1e-6, "{row}");

    let csv = send(
        http::Method::GET,
        &replicas[2].url("/admin/usage/history"),
        "",
        &[
            ("authorization", &format!("Bearer {ADMIN}")),
            ("accept", "text/csv"),
        ],
    )
    .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    assert!(
        text.starts_with(
            "day,key,model,requested,requests,input_tokens,output_tokens,cached_tokens,errors,cost"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(",team-a,m1,,8,{input},{output},0,1,")),
        "{text}"
    );
    // The history is the admin's: a team key cannot read it.
    let r = send(
        http::Method::GET,
        &replicas[0].url("/admin/usage/history"),
        "",
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let bad = admin(
        &replicas[0],
        http::Method::GET,
        "/admin/usage/history?from=yesterday",
        "",
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
}

/// Two replicas with block leases (`redis.lease`) on one Redis: admission is approximate only
/// within the blocks (never past the limit, at most a block a replica left unused), while the
/// usage history — what finance reads — counts every admitted request's real tokens exactly.
#[tokio::test]
async fn leases_bound_admission_and_keep_usage_exact() {
    let server = RedisServer::start().await;
    let (a, _sa) = sim(&["m1"]).await;
    let (limit, block) = (40, 10);
    let keys = || {
        vec![key(
            "team-a",
            KEY,
            None,
            LimitSpec {
                rpm: Some(limit),
                tpm: Some(1_000_000),
                ..Default::default()
            },
        )]
    };
    let leased = RedisConfig {
        lease: lumen_governance::limits::LeaseSettings {
            fraction: 0.25,
            ..Default::default()
        },
        ..redis(&server.url(), false)
    };
    let replica = || single_shot(&[&a]).auth(auth(keys())).redis(leased.clone());
    let one = Lumen::start(replica().build().unwrap()).await;
    let two = Lumen::start(replica().build().unwrap()).await;
    let (mut admitted, mut input, mut output) = (0, 0, 0);
    for i in 0..70 {
        let lumen = if i % 3 == 0 { &one } else { &two };
        let r = call(lumen, KEY, &chat("m1", "")).await;
        match r.status.as_u16() {
            200 => {
                admitted += 1;
                let u = &r.json()["usage"];
                input += u["prompt_tokens"].as_u64().unwrap();
                output += u["completion_tokens"].as_u64().unwrap();
            }
            429 => {}
            s => panic!("{s}: {}", r.text()),
        }
    }
    assert!(admitted <= limit, "{admitted} admitted, limit {limit}");
    assert!(admitted >= limit - 2 * block, "{admitted} admitted");
    // The records are written after the responses: wait for them.
    assert_eq!(
        usage_history(&one, "team-a", admitted).await,
        (admitted, input, output),
        "usage is exact"
    );
}

/// By default (no `[redis.lease]`) a key whose `rpm` is big enough for blocks is admitted from
/// blocks of 1 % (Redis counts the block, not each request: no round trip a request), while a
/// key too small for a block stays exact (Redis counts each request).
#[tokio::test]
async fn leases_are_on_by_default_for_limits_big_enough_for_a_block() {
    let server = RedisServer::start().await;
    let (a, _sa) = sim(&["m1"]).await;
    let spec = |rpm| LimitSpec {
        rpm: Some(rpm),
        ..Default::default()
    };
    let keys = vec![
        key("big", "sk-big", None, spec(50_000)),
        key("small", "sk-small", None, spec(100)),
    ];
    let cfg = redis(&server.url(), false);
    assert!(cfg.lease.enabled(), "the default");
    let lumen = Lumen::start(
        single_shot(&[&a])
            .auth(auth(keys))
            .redis(cfg)
            .build()
            .unwrap(),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(call(&lumen, "sk-big", &chat("m1", "")).await.status, 200);
        assert_eq!(call(&lumen, "sk-small", &chat("m1", "")).await.status, 200);
    }
    let usage = admin(&lumen, http::Method::GET, "/admin/usage", "")
        .await
        .json();
    let used = |name: &str| {
        let row = usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {usage}"));
        row["counters"][0]["used"].as_u64().unwrap()
    };
    assert_eq!(used("big"), 500, "one block of 1 % of 50,000: {usage}");
    assert_eq!(used("small"), 5, "exact, a request at a time: {usage}");
}

/// `key`'s usage history summed over its rows, as (requests, input, output), once it counts
/// `requests` (a record is written as its request ends), or the last reading after 5 s.
pub(crate) async fn usage_history(lumen: &Lumen, key: &str, requests: u64) -> (u64, u64, u64) {
    let mut seen = (0, 0, 0);
    for _ in 0..100 {
        let r = admin(
            lumen,
            http::Method::GET,
            &format!("/admin/usage/history?key={key}"),
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let rows = r.json()["data"].as_array().unwrap().clone();
        let sum = |f: &str| rows.iter().map(|r| r[f].as_u64().unwrap()).sum::<u64>();
        seen = (sum("requests"), sum("input_tokens"), sum("output_tokens"));
        if seen.0 >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}
