//! Resilience end to end, against the simulator's fault injection: retries on other backends,
//! what is and is not retried, backoff in virtual time, Retry-After, the retry budget, circuit
//! breakers, admission control, and per-request deadlines.

use std::time::Duration;

use lumen_backend::RequestContext;
use lumen_openai_types::{ChatCompletionRequest, ChatMessage};
use lumen_resilience::BreakerState;
use lumen_server::config::{AdmissionConfig, BreakerSettings, RetryConfig};
use lumen_tests::*;
use serde_json::json;
use tokio::time::Instant;

const CHAT: &str = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;

fn retry(attempts: u32, base_ms: u64, step_ms: u64) -> RetryConfig {
    RetryConfig {
        max_attempts: Some(attempts),
        base_ms: Some(base_ms),
        step_ms: Some(step_ms),
        max_ms: Some(10_000),
        ..RetryConfig::default()
    }
}

fn no_breaker() -> BreakerSettings {
    BreakerSettings {
        consecutive_failures: 0,
        ..BreakerSettings::default()
    }
}

fn fail(n: u32, status: u16) -> Faults {
    Faults {
        fail_next: n,
        fail_status: Some(status),
        ..Faults::default()
    }
}

fn chat_req() -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: "m1".into(),
        messages: vec![ChatMessage::new("user", "hi")].into(),
        max_tokens: Some(2),
        ..Default::default()
    }
}

/// Which simulator served each generation request, in order.
fn served_by(sims: &[&lumen_sim::Simulator]) -> Vec<u64> {
    sims.iter().map(|s| s.generation_count()).collect()
}

#[tokio::test(start_paused = true)]
async fn linear_backoff_between_attempts_in_virtual_time() {
    let (a, sa) = sim(&["m1"]).await;
    sa.set_faults(fail(2, 502));
    let gw = builder(&[&a])
        .retry(retry(3, 50, 100))
        .breaker(no_breaker())
        .build()
        .unwrap();
    gw.core().discover().await;
    let start = Instant::now();
    let resp = gw
        .core()
        .chat(chat_req(), &RequestContext::new("t"))
        .await
        .unwrap();
    assert_eq!(resp.get().model, "m1");
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(50 + 150),
        "base, then base + step"
    );
    assert_eq!(sa.generation_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_engine_is_honoured() {
    let (a, sa) = sim(&["m1"]).await;
    sa.set_faults(fail(1, 503)); // the simulator sends Retry-After: 1 with 503
    let gw = builder(&[&a])
        .retry(retry(2, 10, 0))
        .breaker(no_breaker())
        .build()
        .unwrap();
    gw.core().discover().await;
    let start = Instant::now();
    gw.core()
        .chat(chat_req(), &RequestContext::new("t"))
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "waited the engine's Retry-After, not 10 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_cap_goes_to_the_client() {
    let (a, sa) = sim(&["m1"]).await;
    sa.set_faults(fail(1, 503));
    let gw = builder(&[&a])
        .retry(RetryConfig {
            max_retry_after_ms: 500,
            ..retry(3, 10, 0)
        })
        .breaker(no_breaker())
        .build()
        .unwrap();
    gw.core().discover().await;
    let err = gw
        .core()
        .chat(chat_req(), &RequestContext::new("t"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "backend b0 returned HTTP 503: injected fault"
    );
    assert_eq!(sa.generation_count(), 1);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_on_another_backend() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, sb) = sim(&["m1"]).await;
    sa.set_faults(fail(1, 502));
    let lumen = Lumen::start(builder(&[&a, &b]).retry(retry(3, 1, 0)).build().unwrap()).await;
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        served_by(&[&sa, &sb]),
        vec![1, 1],
        "attempt 1 on a (failed), attempt 2 on b"
    );
}

#[tokio::test]
async fn every_retryable_failure_kind_fails_over() {
    for (name, faults) in [
        ("429", fail(1, 429)),
        ("502", fail(1, 502)),
        ("503", fail(1, 503)),
        ("504", fail(1, 504)),
    ] {
        let (a, sa) = sim(&["m1"]).await;
        let (b, sb) = sim(&["m1"]).await;
        sa.set_faults(faults);
        let lumen = Lumen::start(
            builder(&[&a, &b])
                .retry(RetryConfig {
                    max_retry_after_ms: 0,
                    ..retry(2, 1, 0)
                })
                .build()
                .unwrap(),
        )
        .await;
        let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
        // Retry-After (sent with 429/503) above the 0 ms cap goes back to the client instead.
        if name == "429" || name == "503" {
            assert_eq!(served_by(&[&sa, &sb]), vec![1, 0], "{name}");
            assert_eq!(r.header("retry-after"), Some("1"), "{name}");
        } else {
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            assert_eq!(served_by(&[&sa, &sb]), vec![1, 1], "{name}");
        }
    }
}

#[tokio::test]
async fn connect_failure_and_first_byte_timeout_fail_over() {
    // a: nothing listens. b: hangs. c: healthy. Fixed model lists, so no discovery is needed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (b, sb) = sim(&["m1"]).await;
    let (c, sc) = sim(&["m1"]).await;
    sb.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let mk = |name: &str, url: &str| {
        lumen_backend_vllm::VllmBackend::new(lumen_backend_vllm::VllmConfig::new(name, url))
            .unwrap()
    };
    let gw = lumen_server::Gateway::builder()
        .health(no_health_checks())
        .backend(
            "a",
            mk("a", &format!("http://{closed}")),
            Some(vec!["m1".into()]),
        )
        .backend("b", mk("b", &b), Some(vec!["m1".into()]))
        .backend("c", mk("c", &c), Some(vec!["m1".into()]))
        .retry(retry(3, 1, 0))
        .timeouts(lumen_resilience::Timeouts {
            first_byte: Some(Duration::from_millis(200)),
            idle: None,
            total: Some(Duration::from_secs(30)),
        })
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    let body = r#"{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let r = post(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        (sb.generation_count(), sc.generation_count()),
        (1, 1),
        "a refused, b timed out, c served"
    );
    eventually(Duration::from_secs(10), || sb.running() == 0).await;
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, sb) = sim(&["m1"]).await;
    let lumen = Lumen::start(builder(&[&a, &b]).retry(retry(3, 1, 0)).build().unwrap()).await;
    let body = json!({"model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 999_999});
    let r = post(&lumen.url("/v1/chat/completions"), &body.to_string()).await;
    assert_eq!(r.status, 400);
    assert_eq!(sa.generation_count() + sb.generation_count(), 1);
}

#[tokio::test]
async fn nothing_is_retried_after_the_first_chunk() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, sb) = sim(&["m1"]).await;
    sa.set_faults(Faults {
        drop_after: Some(1),
        ..Faults::default()
    });
    let lumen = Lumen::start(builder(&[&a, &b]).retry(retry(3, 1, 0)).build().unwrap()).await;
    let body = r#"{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#;
    let r = post(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().ends_with("data: {\"error\":{\"message\":\"The stream from the inference backend was interrupted\",\"type\":\"server_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\ndata: [DONE]\n\n"),
        "{}",
        r.text()
    );
    assert_eq!(
        served_by(&[&sa, &sb]),
        vec![1, 0],
        "committed on a: never retried on b"
    );
}

#[tokio::test]
async fn a_stream_failing_before_its_first_chunk_is_retried() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, sb) = sim(&["m1"]).await;
    sa.set_faults(Faults {
        error_after: Some(0),
        ..Faults::default()
    });
    let lumen = Lumen::start(builder(&[&a, &b]).retry(retry(3, 1, 0)).build().unwrap()).await;
    let body = r#"{"model":"m1","stream":true,"prompt":"x","max_tokens":3}"#;
    let r = post(&lumen.url("/v1/completions"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.sse_data().len(), 4, "three tokens and [DONE], all from b");
    assert_eq!(served_by(&[&sa, &sb]), vec![1, 1]);
}

#[tokio::test]
async fn all_attempts_failing_returns_the_last_error() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, sb) = sim(&["m1"]).await;
    sa.set_faults(fail(100, 502));
    sb.set_faults(fail(100, 502));
    let lumen = Lumen::start(
        builder(&[&a, &b])
            .retry(retry(3, 1, 0))
            .breaker(no_breaker())
            .build()
            .unwrap(),
    )
    .await;
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        served_by(&[&sa, &sb]),
        vec![2, 1],
        "a, then b (untried), then a again"
    );
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    let (a, sa) = sim(&["m1"]).await;
    sa.set_faults(fail(1_000, 502));
    let budget = RetryConfig {
        budget_ratio: 0.5,
        budget_min_per_sec: 0,
        ..retry(2, 1, 0)
    };
    let lumen = Lumen::start(
        builder(&[&a])
            .retry(budget)
            .breaker(no_breaker())
            .build()
            .unwrap(),
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            post(&lumen.url("/v1/chat/completions"), CHAT).await.status,
            502
        );
    }
    // Ten requests, each wanting one retry; the budget allows 0.5 per request.
    assert_eq!(sa.generation_count(), 15);
    assert_eq!(lumen.gateway.core().retries_refused(), 5);
}

#[tokio::test]
async fn the_breaker_ejects_a_failing_backend_then_probes_it_back() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, sb) = sim(&["m1"]).await;
    sa.set_faults(fail(1_000, 500));
    let breaker = BreakerSettings {
        consecutive_failures: 2,
        cooldown_ms: Some(300),
        ..BreakerSettings::default()
    };
    let gw = single_shot(&[&a, &b]).breaker(breaker).build().unwrap();
    let lumen = Lumen::start(gw).await;
    // A 500 is the model's failure on that engine: the (backend, model) breaker opens; the
    // backend's own breaker is for an engine that cannot be reached.
    let model_state = |gw: &lumen_server::Gateway, name: &str| {
        gw.core()
            .router()
            .slots()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
            .backend
            .models
            .states()
            .into_iter()
            .find(|(m, _)| m == "m1")
            .map_or(BreakerState::Closed, |(_, s)| s)
    };
    let state = |name: &str| model_state(&lumen.gateway, name);
    for _ in 0..12 {
        post(&lumen.url("/v1/chat/completions"), CHAT).await;
    }
    assert_eq!(
        sa.generation_count(),
        2,
        "two failures, then a is out of rotation"
    );
    assert_eq!(sb.generation_count(), 10);
    assert_eq!(state("b0"), BreakerState::Open);
    sa.set_faults(Faults::default());
    let gw = lumen.gateway.clone();
    eventually(Duration::from_secs(10), || {
        model_state(&gw, "b0") == BreakerState::HalfOpen
    })
    .await;
    while sa.generation_count() == 2 {
        assert_eq!(
            post(&lumen.url("/v1/chat/completions"), CHAT).await.status,
            200
        );
    }
    assert_eq!(state("b0"), BreakerState::Closed, "the probe succeeded");
}

#[tokio::test]
async fn all_backends_ejected_is_a_clean_503() {
    let (a, sa) = sim(&["m1"]).await;
    sa.set_faults(fail(1_000, 500));
    let breaker = BreakerSettings {
        consecutive_failures: 1,
        cooldown_ms: Some(60_000),
        ..BreakerSettings::default()
    };
    let lumen = Lumen::start(single_shot(&[&a]).breaker(breaker).build().unwrap()).await;
    assert_eq!(
        post(&lumen.url("/v1/chat/completions"), CHAT).await.status,
        502
    );
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "no_healthy_backend");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(sa.generation_count(), 1);
}

#[tokio::test]
async fn admission_queue_full_is_429_and_queue_timeout_is_503() {
    let (a, sa) = sim(&["m1"]).await;
    let admission = AdmissionConfig {
        max_concurrent: Some(1),
        queue_size: Some(1),
        queue_timeout_ms: Some(300),
        ..AdmissionConfig::default()
    };
    let lumen = Lumen::start(single_shot(&[&a]).admission(admission).build().unwrap()).await;
    let url = lumen.url("/v1/chat/completions");
    // Holds the only slot: a stream that lasts, with the permit held until it ends.
    let slow = r#"{"model":"m1","stream":true,"messages":[{"role":"user","content":"x"}],"max_tokens":1000,"sim":{"itl_ms":10}}"#;
    let holder = post_streaming(&url, slow).await;
    assert_eq!(holder.status(), 200);
    let queued = {
        let url = url.clone();
        tokio::spawn(async move { post(&url, CHAT).await })
    };
    let gw = lumen.gateway.clone();
    eventually(Duration::from_secs(10), || gw.core().queued() == 1).await;
    let full = post(&url, CHAT).await;
    assert_eq!(full.status, 429, "{}", full.text());
    assert_eq!(full.json()["error"]["code"], "queue_full");
    assert_eq!(full.header("retry-after"), Some("1"));
    let timed_out = queued.await.unwrap();
    assert_eq!(timed_out.status, 503, "{}", timed_out.text());
    assert_eq!(timed_out.json()["error"]["code"], "queue_timeout");
    drop(holder);
    eventually(Duration::from_secs(10), || sa.running() == 0).await;
    assert_eq!(
        post(&url, CHAT).await.status,
        200,
        "the slot came back when the stream ended"
    );
}

#[tokio::test]
async fn per_backend_cap_spreads_load_then_queues() {
    let (a, sa) = sim(&["m1"]).await;
    let (b, sb) = sim(&["m1"]).await;
    let admission = AdmissionConfig {
        per_backend_max_concurrent: Some(1),
        queue_timeout_ms: Some(300),
        ..AdmissionConfig::default()
    };
    let lumen = Lumen::start(single_shot(&[&a, &b]).admission(admission).build().unwrap()).await;
    let url = lumen.url("/v1/chat/completions");
    let slow = r#"{"model":"m1","stream":true,"messages":[{"role":"user","content":"x"}],"max_tokens":1000,"sim":{"itl_ms":10}}"#;
    let h1 = post_streaming(&url, slow).await;
    let h2 = post_streaming(&url, slow).await;
    assert_eq!(
        (sa.running(), sb.running()),
        (1, 1),
        "the second stream went to the free backend"
    );
    let r = post(&url, CHAT).await;
    assert_eq!(
        r.status,
        503,
        "both backends full: queued, then timed out: {}",
        r.text()
    );
    drop((h1, h2));
    eventually(Duration::from_secs(10), || sa.running() + sb.running() == 0).await;
    assert_eq!(post(&url, CHAT).await.status, 200);
}

#[tokio::test]
async fn the_timeout_header_can_only_lower_the_cap() {
    let (a, _sa) = sim(&["m1"]).await;
    let gw = single_shot(&[&a])
        .timeouts(lumen_resilience::Timeouts {
            first_byte: None,
            idle: None,
            total: Some(Duration::from_millis(500)),
        })
        .build()
        .unwrap();
    let lumen = Lumen::start(gw).await;
    let url = lumen.url("/v1/chat/completions");
    let slow =
        r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"sim":{"ttft_ms":3000}}"#;
    let r = send(
        http::Method::POST,
        &url,
        slow,
        &[("x-lumen-timeout-ms", "100")],
    )
    .await;
    assert_eq!(r.status, 504, "lowered to 100 ms");
    // Asking for 60 s does not raise the 500 ms cap: the request fails long before 60 s.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        send(
            http::Method::POST,
            &url,
            slow,
            &[("x-lumen-timeout-ms", "60000")],
        ),
    )
    .await
    .expect("the configured cap still applies");
    assert_eq!(r.status, 504);
    let r = send(
        http::Method::POST,
        &url,
        slow,
        &[("x-lumen-timeout-ms", "soon")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_header");
}

#[tokio::test]
async fn per_model_timeouts_override_the_operation_default() {
    let (a, _sa) = sim(&["fast", "slow"]).await;
    let mut t = lumen_server::config::TimeoutsConfig::default();
    t.per_model.insert(
        "slow".into(),
        lumen_server::config::TimeoutOverrides {
            total_ms: Some(100),
            ..Default::default()
        },
    );
    let lumen = Lumen::start(single_shot(&[&a]).timeouts_config(t).build().unwrap()).await;
    let body = |m: &str| {
        format!(
            r#"{{"model":"{m}","messages":[{{"role":"user","content":"x"}}],"sim":{{"ttft_ms":400}}}}"#
        )
    };
    assert_eq!(
        post(&lumen.url("/v1/chat/completions"), &body("slow"))
            .await
            .status,
        504
    );
    assert_eq!(
        post(&lumen.url("/v1/chat/completions"), &body("fast"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_flaky_fleet_is_smoothed_by_retries() {
    // Both engines fail a deterministic 40 % of requests.
    let flaky = Faults {
        error_rate: 0.4,
        fail_status: Some(502),
        ..Faults::default()
    };
    let run = |attempts: u32| {
        let flaky = flaky.clone();
        async move {
            let (a, sa) = sim(&["m1"]).await;
            let (b, sb) = sim(&["m1"]).await;
            sa.set_faults(flaky.clone());
            sb.set_faults(flaky);
            let gw = builder(&[&a, &b])
                .retry(retry(attempts, 1, 0))
                .breaker(no_breaker())
                .build()
                .unwrap();
            let lumen = Lumen::start(gw).await;
            let mut ok = 0;
            for _ in 0..100 {
                if post(&lumen.url("/v1/chat/completions"), CHAT).await.status == 200 {
                    ok += 1;
                }
            }
            ok
        }
    };
    let (once, thrice) = (run(1).await, run(3).await);
    println!(
        "error_rate 0.4 on both engines: {once}/100 succeed without retries, {thrice}/100 with 3 attempts"
    );
    assert!((45..=75).contains(&once), "{once}");
    assert!(thrice >= 90, "{thrice}");
}

/// Health is kept per (backend, model): one engine serving two models keeps serving the one
/// that works while the other's breaker is open, and both levels show in `/health/inference`
/// and in the metrics.
#[tokio::test]
async fn a_failing_model_does_not_take_its_engine_out_for_the_other_models() {
    let (a, sa) = sim(&["m1", "m2"]).await;
    let breaker = BreakerSettings {
        consecutive_failures: 1,
        cooldown_ms: Some(60_000),
        ..BreakerSettings::default()
    };
    let lumen = Lumen::start(single_shot(&[&a]).breaker(breaker).build().unwrap()).await;
    let bad = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"max_tokens":1,"sim":{"status":500}}"#;
    assert_eq!(
        post(&lumen.url("/v1/chat/completions"), bad).await.status,
        502
    );
    let m1 = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"max_tokens":1}"#;
    let r = post(&lumen.url("/v1/chat/completions"), m1).await;
    assert_eq!(r.status, 503, "m1 is out on its only backend: {}", r.text());
    let m2 = r#"{"model":"m2","messages":[{"role":"user","content":"x"}],"max_tokens":1}"#;
    for _ in 0..3 {
        assert_eq!(
            post(&lumen.url("/v1/chat/completions"), m2).await.status,
            200
        );
    }
    assert_eq!(sa.generation_count(), 4);
    let report = get(&lumen.url("/health/inference")).await.json();
    let backend = &report["backends"][0];
    assert_eq!(backend["breaker"], "closed", "{report}");
    assert_eq!(backend["in_rotation"], true);
    let models = backend["models"].as_array().unwrap();
    let m1_state = models.iter().find(|m| m["model"] == "m1").unwrap();
    assert_eq!(m1_state["breaker"], "open", "{report}");
    let status = |id: &str| {
        report["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("m1"), "unhealthy");
    assert_eq!(status("m2"), "healthy");
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"lumen_model_breaker_state{backend="b0",model="m1"} 2"#),
        "{metrics}"
    );
}

/// An engine that answers `/v1/models` on a keep-alive connection, and takes every other
/// request, reads it, and closes the connection without a byte. Counts what it was sent.
async fn silent_engine() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sends = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = sends.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head) = read_request(&mut sock, &mut buf).await else {
                        return;
                    };
                    if !head.starts_with("get /v1/models") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        return; // read, then hang up without answering
                    }
                    let body = r#"{"object":"list","data":[{"id":"m1","object":"model"}]}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), sends)
}

/// The HTTP client re-sent a request on a fresh connection when a pooled one failed before
/// any response byte, below the attempt loop: an engine that accepts, stays silent and closes
/// saw more sends than the attempts Lumen counted. Generation is not idempotent, so the client
/// now re-sends only when the write itself failed; every other failure is an attempt.
#[tokio::test]
async fn the_engine_sees_exactly_one_send_per_attempt() {
    let (url, sends) = silent_engine().await;
    let lumen = Lumen::start(
        builder(&[&url])
            .retry(retry(3, 1, 0))
            .breaker(no_breaker())
            .build()
            .unwrap(),
    )
    .await;
    // Discovery left a pooled keep-alive connection: the first attempt reuses it.
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        sends.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "three attempts, three sends"
    );
    let retries: u64 = get(&lumen.url("/metrics"))
        .await
        .text()
        .lines()
        .filter(|l| l.starts_with("lumen_retries_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(retries, 2);
}

/// A one-off 500 is retried (500 is in the default retryable statuses); the list is
/// configurable, and a status outside it is answered at once.
#[tokio::test]
async fn a_one_off_500_is_retried_and_the_retryable_statuses_are_configurable() {
    let (a, sa) = sim(&["m1"]).await;
    sa.set_faults(fail(1, 500));
    let lumen = Lumen::start(builder(&[&a]).retry(retry(3, 1, 0)).build().unwrap()).await;
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sa.generation_count(), 2, "one retry");

    let (b, sb) = sim(&["m1"]).await;
    sb.set_faults(fail(1, 500));
    let only_503 = RetryConfig {
        retryable_statuses: vec![503],
        ..retry(3, 1, 0)
    };
    let lumen = Lumen::start(builder(&[&b]).retry(only_503).build().unwrap()).await;
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(sb.generation_count(), 1, "500 is not in the list: no retry");

    let bad = RetryConfig {
        retryable_statuses: vec![400],
        ..RetryConfig::default()
    };
    let err = builder(&[&b]).retry(bad).build().err().unwrap().to_string();
    assert!(err.contains("retry.retryable_statuses"), "{err}");
}
