//! Observability: exact metric values after scripted traffic, request ids everywhere, trace
//! context, usage counting on streams, health transitions in virtual time, and probes that bill
//! no tokens.

use std::time::Duration;

use lumen_server::config::{HealthConfig, RetryConfig};
use lumen_server::health::CheckState;
use lumen_tests::*;
use serde_json::Value;

/// The value of one sample line, `name{labels} value`, or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn chat(model: &str, extra: &str) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}],"max_tokens":4{extra}}}"#
    )
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, _sb) = sim(&["m1"]).await;
    sa.set_faults(Faults {
        fail_next: 1,
        fail_status: Some(502),
        ..Faults::default()
    });
    let gw = builder(&[&a, &b])
        .retry(RetryConfig {
            max_attempts: Some(2),
            base_ms: Some(1),
            step_ms: Some(0),
            ..Default::default()
        })
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    let url = lumen.url("/v1/chat/completions");
    // 1: fails on b0, retried on b1. 2-3: plain. 4: a stream of 4 tokens. 5: unknown model.
    for _ in 0..3 {
        assert_eq!(post(&url, &chat("m1", "")).await.status, 200);
    }
    let s = post(&url, &chat("m1", r#","stream":true"#)).await;
    assert_eq!(
        s.sse_data().len(),
        1 + 4 + 1,
        "role, 4 tokens, [DONE]: the forced usage chunk is stripped"
    );
    assert_eq!(post(&url, &chat("gpt-9", "")).await.status, 404);

    let m = get(&lumen.url("/metrics")).await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let t = m.text();
    let ok = |backend: &str| {
        sample(
            &t,
            &format!(
                r#"lumen_requests_total{{model="m1",backend="{backend}",endpoint="chat",status_class="2xx"}}"#
            ),
        )
    };
    assert_eq!(ok("b0") + ok("b1"), 4.0, "{t}");
    assert_eq!(
        ok("b1"),
        2.0,
        "round robin after the retry moved request 1 to b1"
    );
    assert_eq!(
        sample(
            &t,
            r#"lumen_requests_total{model="unknown",backend="none",endpoint="chat",status_class="4xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &t,
            r#"lumen_retries_total{backend="b0",reason="upstream_5xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &t,
            r#"lumen_attempt_errors_total{backend="b0",reason="upstream_5xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&t, r#"lumen_tokens_total{model="m1",token_type="output"}"#),
        16.0,
        "4 requests x 4 tokens"
    );
    assert!(sample(&t, r#"lumen_tokens_total{model="m1",token_type="input"}"#) > 0.0);
    assert_eq!(
        sample(
            &t,
            r#"gen_ai_server_time_to_first_token_seconds_count{model="m1"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &t,
            r#"gen_ai_server_time_per_output_token_seconds_count{model="m1"}"#
        ),
        4.0,
        "5 chunks, 4 gaps"
    );
    assert_eq!(
        sample(
            &t,
            r#"lumen_request_duration_seconds_count{model="m1",endpoint="chat"}"#
        ),
        4.0
    );
    assert_eq!(sample(&t, "lumen_overhead_seconds_count"), 5.0);
    assert_eq!(sample(&t, r#"lumen_backend_in_flight{backend="b0"}"#), 0.0);
    assert_eq!(sample(&t, r#"lumen_breaker_state{backend="b0"}"#), 0.0);
    assert_eq!(sample(&t, "lumen_queue_depth"), 0.0);
    assert!(!t.contains("hello"), "no prompt text in metrics");
}

#[tokio::test]
async fn timeouts_and_rejections_are_counted_by_kind() {
    let (a, _sa) = sim(&["m1"]).await;
    let gw = single_shot(&[&a])
        .timeouts(lumen_resilience::Timeouts {
            first_byte: Some(Duration::from_millis(100)),
            idle: Some(Duration::from_millis(100)),
            total: Some(Duration::from_secs(30)),
        })
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    let url = lumen.url("/v1/chat/completions");
    assert_eq!(
        post(
            &url,
            &chat("m1", r#","stream":true,"sim":{"ttft_ms":5000}"#)
        )
        .await
        .status,
        504
    );
    let idle = post(&url, &chat("m1", r#","stream":true,"sim":{"itl_ms":5000}"#)).await;
    assert!(idle.text().contains(r#""code":"timeout""#));
    for s in lumen.gateway.core().router().slots() {
        s.set_available(false);
    }
    assert_eq!(post(&url, &chat("m1", "")).await.status, 503);
    let t = get(&lumen.url("/metrics")).await.text();
    assert_eq!(
        sample(&t, r#"lumen_timeouts_total{kind="first_byte"}"#),
        1.0,
        "{t}"
    );
    assert_eq!(sample(&t, r#"lumen_timeouts_total{kind="idle"}"#), 1.0);
    assert_eq!(
        sample(&t, r#"lumen_rejected_total{reason="no_healthy_backend"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &t,
            r#"lumen_requests_total{model="m1",backend="b0",endpoint="chat",status_class="5xx"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn the_request_id_is_echoed_everywhere() {
    let (a, sa) = sim(&["m1"]).await;
    let lumen = Lumen::start(single_shot(&[&a]).build().unwrap()).await;
    let id = |n: &str| format!("req-{n}");
    let cases: Vec<(&str, http::Method, &str, String)> = vec![
        (
            "ok",
            http::Method::POST,
            "/v1/chat/completions",
            chat("m1", ""),
        ),
        (
            "4xx",
            http::Method::POST,
            "/v1/chat/completions",
            chat("nope", ""),
        ),
        (
            "5xx",
            http::Method::POST,
            "/v1/chat/completions",
            chat("m1", r#","sim":{"status":500}"#),
        ),
        (
            "midstream",
            http::Method::POST,
            "/v1/chat/completions",
            chat("m1", r#","stream":true,"sim":{"drop_after":1}"#),
        ),
        ("health", http::Method::GET, "/health", String::new()),
        (
            "deep",
            http::Method::GET,
            "/health/inference",
            String::new(),
        ),
        ("ready", http::Method::GET, "/ready", String::new()),
        ("metrics", http::Method::GET, "/metrics", String::new()),
        ("route", http::Method::GET, "/nowhere", String::new()),
    ];
    for (name, method, path, body) in cases {
        let rid = id(name);
        let r = send(method, &lumen.url(path), &body, &[("x-request-id", &rid)]).await;
        assert_eq!(
            r.header("x-request-id"),
            Some(rid.as_str()),
            "{name}: {}",
            r.status
        );
        if name == "midstream" {
            assert!(r.text().contains("stream_interrupted"));
        }
    }
    let forwarded: Vec<String> = sa
        .records()
        .iter()
        .filter_map(|r| r.header("x-request-id").map(str::to_owned))
        .collect();
    assert!(
        forwarded.contains(&id("ok")) && forwarded.contains(&id("midstream")),
        "{forwarded:?}"
    );
}

#[tokio::test]
async fn traceparent_is_propagated_or_created() {
    let (a, sa) = sim(&["m1"]).await;
    let lumen = Lumen::start(single_shot(&[&a]).build().unwrap()).await;
    let url = lumen.url("/v1/chat/completions");
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    post_with(&url, &chat("m1", ""), &[("traceparent", incoming)]).await;
    let got = last_header(&sa, "traceparent");
    let parts: Vec<&str> = got.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"),
        "same trace"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "Lumen is the new parent span");

    post_with(&url, &chat("m1", ""), &[("traceparent", "garbage")]).await;
    let created = last_header(&sa, "traceparent");
    let parts: Vec<&str> = created.split('-').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01"),
        "{created}"
    );
    assert_ne!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
}

async fn post_with(url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    send(http::Method::POST, url, body, headers).await
}

fn last_header(sim: &lumen_sim::Simulator, name: &str) -> String {
    sim.records()
        .iter()
        .rfind(|r| r.method == "POST")
        .and_then(|r| r.header(name).map(str::to_owned))
        .unwrap()
}

#[tokio::test]
async fn streams_ask_for_usage_and_strip_it_only_when_the_client_did_not() {
    let (a, sa) = sim(&["m1"]).await;
    let lumen = Lumen::start(single_shot(&[&a]).build().unwrap()).await;
    let url = lumen.url("/v1/chat/completions");
    let plain = post(&url, &chat("m1", r#","stream":true"#))
        .await
        .sse_data();
    assert!(plain.iter().all(|e| !e.contains(r#""usage""#)), "{plain:?}");
    let rec = sa
        .records()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        rec.body["stream_options"]["include_usage"], true,
        "the engine was asked for usage"
    );
    let asked = post(
        &url,
        &chat(
            "m1",
            r#","stream":true,"stream_options":{"include_usage":true}"#,
        ),
    )
    .await
    .sse_data();
    let usage: Value = serde_json::from_str(&asked[asked.len() - 2]).unwrap();
    assert_eq!(
        usage["usage"]["completion_tokens"], 4,
        "kept when the client asked"
    );
}

fn health(grace_ms: u64) -> HealthConfig {
    HealthConfig {
        enabled: true,
        interval_ms: 1_000,
        timeout_ms: 500,
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        startup_grace_ms: grace_ms,
        required_models: Vec::new(),
    }
}

fn check(lumen: &Lumen, backend: &str) -> CheckState {
    lumen
        .gateway
        .inference_report()
        .backends
        .into_iter()
        .find(|b| b.name == backend)
        .unwrap()
        .check
}

#[tokio::test(start_paused = true)]
async fn health_thresholds_eject_and_restore_in_virtual_time() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, _sb) = sim(&["m1"]).await;
    let gw = builder(&[&a, &b]).health(health(0)).build().unwrap();
    let lumen = Lumen::start(gw).await; // health checks run every (virtual) second
    let gw = lumen.gateway.clone();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(check(&lumen, "b0"), CheckState::Healthy);
    sa.set_faults(Faults {
        health_status: Some(503),
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        check(&lumen, "b0"),
        CheckState::Failing,
        "one failed probe does not eject"
    );
    assert!(gw.core().router().slots()[0].is_available());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        check(&lumen, "b0"),
        CheckState::Ejected,
        "three in a row do"
    );
    assert!(!gw.core().router().slots()[0].is_available());
    let before = sa.generation_count();
    for _ in 0..4 {
        assert_eq!(
            post(&lumen.url("/v1/chat/completions"), &chat("m1", ""))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        sa.generation_count(),
        before,
        "an ejected backend gets no traffic"
    );
    let report = get(&lumen.url("/health/inference")).await;
    assert_eq!(report.status, 200, "m1 still has b1");
    sa.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        check(&lumen, "b0"),
        CheckState::Ejected,
        "one success is not enough to return"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(check(&lumen, "b0"), CheckState::Healthy);
    assert!(gw.core().router().slots()[0].is_available());
    assert_eq!(sa.generation_count(), before, "probes bill no tokens");
}

#[tokio::test(start_paused = true)]
async fn a_loading_engine_is_not_ejected_during_the_grace_period() {
    let (a, sa) = sim(&["m1"]).await;
    sa.set_faults(Faults {
        health_status: Some(503),
        ..Faults::default()
    });
    let gw = builder(&[&a]).health(health(60_000)).build().unwrap();
    let lumen = Lumen::start(gw).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        check(&lumen, "b0"),
        CheckState::Loading,
        "ten failures inside the grace period"
    );
    let deep = get(&lumen.url("/health/inference")).await;
    assert_eq!(deep.status, 503);
    assert_eq!(deep.json()["backends"][0]["state"], "loading");
    assert_eq!(deep.json()["models"][0]["status"], "unhealthy");
    assert_eq!(get(&lumen.url("/ready")).await.status, 503);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        check(&lumen, "b0"),
        CheckState::Ejected,
        "after the grace period the thresholds apply"
    );
    sa.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(check(&lumen, "b0"), CheckState::Healthy);
    assert_eq!(get(&lumen.url("/ready")).await.status, 200);
    assert_eq!(sa.generation_count(), 0, "no generation call, ever");
    let probes = sa.records().iter().filter(|r| r.path == "/health").count();
    assert!(probes >= 70, "{probes} probes, all to /health");
}

#[tokio::test]
async fn a_generate_probe_is_opt_in_and_bills_one_token() {
    let (a, sa) = sim(&["m1"]).await;
    let file = std::env::temp_dir().join(format!("lumen-probe-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!("[[backends]]\nname = \"g\"\nurl = \"{a}\"\nprobe = \"generate\"\nmodels = [\"m1\"]\n[health]\ninterval_ms = 60000\n"),
    )
    .unwrap();
    let cfg = lumen_server::config::load(Some(&file), &Default::default()).unwrap();
    let _ = std::fs::remove_file(&file);
    let gw = lumen_server::Gateway::from_config(&cfg).unwrap();
    gw.core().check_health().await;
    let rec = sa
        .records()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(rec.path, "/v1/chat/completions");
    assert_eq!(rec.body["max_tokens"], 1);
    assert_eq!(gw.inference_report().backends[0].state, "healthy");
}

#[tokio::test]
async fn readiness_requires_the_configured_models() {
    let (a, _sa) = sim(&["m1"]).await;
    let need = |models: &[&str]| HealthConfig {
        required_models: models.iter().map(|m| (*m).to_owned()).collect(),
        ..health(0)
    };
    let gw = builder(&[&a]).health(need(&["m1", "m2"])).build().unwrap();
    let lumen = Lumen::start(gw).await;
    lumen.gateway.core().check_health().await;
    let r = get(&lumen.url("/ready")).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json(),
        serde_json::json!({"ready": false, "missing": ["m2"]})
    );
    let gw = builder(&[&a]).health(need(&["m1"])).build().unwrap();
    let lumen = Lumen::start(gw).await;
    lumen.gateway.core().check_health().await;
    assert_eq!(
        get(&lumen.url("/ready")).await.json(),
        serde_json::json!({"ready": true, "missing": []})
    );
}

#[tokio::test]
async fn an_admin_listener_takes_the_operational_endpoints() {
    let (a, _sa) = sim(&["m1"]).await;
    let gw = single_shot(&[&a]).build().unwrap();
    gw.core().discover().await;
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, admin_addr) = (api.local_addr().unwrap(), admin.local_addr().unwrap());
    tokio::spawn(lumen_server::serve_api(
        api,
        gw.clone(),
        std::future::pending(),
    ));
    tokio::spawn(lumen_server::serve_admin(admin, gw, std::future::pending()));
    let on = |addr: std::net::SocketAddr, path: &str| format!("http://{addr}{path}");
    assert_eq!(get(&on(admin_addr, "/metrics")).await.status, 200);
    assert_eq!(get(&on(admin_addr, "/ready")).await.status, 200);
    assert_eq!(get(&on(api_addr, "/metrics")).await.status, 404);
    assert_eq!(
        get(&on(api_addr, "/health")).await.status,
        200,
        "liveness stays for load balancers"
    );
    assert_eq!(
        post(&on(api_addr, "/v1/chat/completions"), &chat("m1", ""))
            .await
            .status,
        200
    );
    assert_eq!(
        post(&on(admin_addr, "/v1/chat/completions"), &chat("m1", ""))
            .await
            .status,
        404
    );
}
