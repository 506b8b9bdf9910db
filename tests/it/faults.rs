//! The engine faults of `docs/errors.md`'s table that depend on time, end to end with paused
//! time: what the engine saw and when (the simulator stamps each request with tokio's clock),
//! and what the caller got.

use std::time::Duration;

use lumen_governance::GovernanceConfig;
use lumen_server::config::TimeoutsConfig;
use lumen_tests::*;
use tokio::time::Instant;

const CHAT: &str =
    r#"{"model":"primary","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;

fn falling_back() -> GovernanceConfig {
    let mut gov = GovernanceConfig::default();
    gov.fallbacks
        .insert("primary".into(), vec!["secondary".into()]);
    gov
}

/// A primary engine with `faults`, a healthy secondary, and Lumen with the primary's fallback.
async fn primary_failing_with(
    faults: Faults,
) -> (lumen_sim::Simulator, lumen_sim::Simulator, Lumen) {
    let (p, sp) = sim(&["primary"]).await;
    let (s, ss) = sim(&["secondary"]).await;
    sp.set_faults(faults);
    let lumen = Lumen::start(
        builder(&[&p, &s])
            .governance(falling_back())
            .build()
            .unwrap(),
    )
    .await;
    (sp, ss, lumen)
}

/// When each generation request reached the engine.
fn arrivals(sim: &lumen_sim::Simulator) -> Vec<Instant> {
    sim.records()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/chat"))
        .map(|r| r.at)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_backs_off_then_falls_back_or_is_a_clean_429() {
    let (sp, ss, lumen) = primary_failing_with(Faults {
        status: Some(429),
        retry_after: Some(0),
        ..Faults::default()
    })
    .await;
    let start = Instant::now();
    let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "secondary");
    assert_eq!(ss.generation_count(), 1);
    let seen = arrivals(&sp);
    assert_eq!(
        seen.len(),
        3,
        "the medium profile's three attempts, then the fallback"
    );
    for pair in seen.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(25) && gap <= Duration::from_secs(1),
            "a jittered backoff between attempts, never a tight loop: {gap:?}"
        );
    }
    assert!(
        seen[2] - start < Duration::from_secs(3),
        "within the first seconds"
    );

    // Without a fallback: the engine's 429, cleanly, after the same bounded attempts.
    let (p2, sp2) = sim(&["primary"]).await;
    sp2.set_faults(Faults {
        status: Some(429),
        retry_after: Some(0),
        ..Faults::default()
    });
    let alone = Lumen::start(builder(&[&p2]).build().unwrap()).await;
    let r = post(&alone.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(arrivals(&sp2).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_first_token_after_20_seconds_is_answered_unless_a_shorter_deadline_is_set() {
    let (slow, ss) = sim(&["primary"]).await;
    ss.set_faults(Faults {
        ttft_ms: Some(20_000),
        ..Faults::default()
    });
    // The default (medium) first-byte deadline is 60 s: the slow engine answers.
    let lumen = Lumen::start(builder(&[&slow]).build().unwrap()).await;
    let body = CHAT.replace("\"max_tokens\":2", "\"max_tokens\":2,\"stream\":true");
    let start = Instant::now();
    let r = post(&lumen.url("/v1/chat/completions"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    assert!(start.elapsed() >= Duration::from_secs(20));
    assert_eq!(arrivals(&ss).len(), 1);

    // With first_byte_ms = 5000 the slow engine is left after 5 s for a fast one.
    let (fast, sf) = sim(&["primary"]).await;
    ss.clear_records();
    let lumen = Lumen::start(
        builder(&[&slow, &fast])
            .timeouts_config(TimeoutsConfig {
                first_byte_ms: Some(5_000),
                ..TimeoutsConfig::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let r = post(&lumen.url("/v1/chat/completions"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (first, second) = (arrivals(&ss), arrivals(&sf));
    assert_eq!((first.len(), second.len()), (1, 1));
    let waited = second[0] - first[0];
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(7),
        "one first-byte deadline, then the next backend: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_primary_down_for_a_minute_is_served_around_and_comes_back() {
    let (sp, _ss, lumen) = primary_failing_with(Faults {
        status: Some(503),
        ..Faults::default()
    })
    .await;
    let start = Instant::now();
    let mut served = Vec::new();
    // Twenty requests, one every 5 s; the primary recovers after 60 s.
    for _ in 0..20 {
        if start.elapsed() >= Duration::from_secs(60) {
            sp.set_faults(Faults::default());
        }
        let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 200, "{}", r.text());
        served.push((
            start.elapsed(),
            r.json()["model"].as_str().unwrap().to_owned(),
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let down: Vec<_> = served
        .iter()
        .filter(|(t, _)| *t < Duration::from_secs(60))
        .collect();
    assert!(
        down.iter().all(|(_, m)| m == "secondary"),
        "the fallback serves while the primary is down: {served:?}"
    );
    // While down the primary sees the first request's attempts and then only half-open probes
    // (one per 10 s cooldown at most), not every request.
    let asked_while_down = arrivals(&sp)
        .iter()
        .filter(|t| **t - start < Duration::from_secs(60))
        .count();
    assert!(
        asked_while_down <= 3 + 6,
        "breaker open: {asked_while_down} attempts"
    );
    let back = served
        .iter()
        .position(|(_, m)| m == "primary")
        .expect("back on the primary");
    assert!(
        served[back].0 <= Duration::from_secs(60 + 15),
        "soon after it recovers: {served:?}"
    );
    assert!(
        served[back..].iter().all(|(_, m)| m == "primary"),
        "and it stays there: {served:?}"
    );
}
