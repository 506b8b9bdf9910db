//! What a stream is charged when the engine's usage never reaches Lumen (issue 20, item 1): a
//! client that hangs up just before the usage chunk, or an engine that breaks, is charged at
//! least the prompt estimate plus what it was relayed, for every choice — never only the
//! reservation. Real TCP, the simulator streaming under a paused clock, so the client always
//! leaves before the engine has generated its last token.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_openai_types::sse::SseDecoder;
use lumen_server::config::AuthConfig;
use lumen_sim::SimConfig;
use lumen_tests::*;
use serde_json::{Value, json};

const KEY: &str = "sk-stream";
const ADMIN: &str = "sk-admin";

fn auth(tpm: u64) -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: Some(to_hex(&digest(ADMIN))),
        keys: vec![ApiKey {
            name: "team".into(),
            sha256: to_hex(&digest(KEY)),
            models: None,
            limits: LimitSpec {
                tpm: Some(tpm),
                ..LimitSpec::default()
            },
            per_model: Default::default(),
        }],
    }
}

/// A simulator that takes 1 ms (of the paused clock) per token and answers 2,000 tokens when
/// `max_tokens` is absent, as an engine whose default is the rest of the context does.
async fn engine() -> String {
    let (url, _sim) = sim_with(SimConfig {
        models: vec!["m".to_owned()],
        itl: std::time::Duration::from_millis(1),
        default_max_tokens: 2_000,
        ..SimConfig::default()
    })
    .await;
    url
}

async fn open_stream(lumen: &Lumen, body: &str) -> http::Response<hyper::body::Incoming> {
    open_stream_at(lumen, "/v1/chat/completions", body).await
}

async fn open_stream_at(
    lumen: &Lumen,
    path: &str,
    body: &str,
) -> http::Response<hyper::body::Incoming> {
    let req = Request::post(lumen.url(path))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    client().request(req).await.unwrap()
}

/// Reads the stream until `stop_at` chunks with text have arrived (over every choice) and
/// returns them; the caller then drops the response, and the connection with it.
pub(crate) async fn read_chunks(
    resp: &mut http::Response<hyper::body::Incoming>,
    stop_at: usize,
) -> usize {
    read_events(resp, stop_at, |event| {
        assert_ne!(event, b"[DONE]", "the stream ended before the client left");
        let chunk: Value = serde_json::from_slice(event).unwrap();
        assert!(
            chunk.get("usage").is_none(),
            "the usage chunk came first: {chunk}"
        );
        chunk["choices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            })
            .count()
    })
    .await
}

/// Reads SSE events, counting what `texts` finds in each event's data, until `stop_at`.
pub(crate) async fn read_events(
    resp: &mut http::Response<hyper::body::Incoming>,
    stop_at: usize,
    texts: impl Fn(&[u8]) -> usize,
) -> usize {
    let mut decoder = SseDecoder::new();
    let mut seen = 0;
    while let Some(frame) = resp.body_mut().frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        decoder.push(&data);
        while let Some(event) = decoder.next_event().unwrap() {
            seen += texts(&event.data);
            if seen >= stop_at {
                return seen;
            }
        }
    }
    panic!("the stream ended after {seen} events with text");
}

/// The key's tokens in the current minute, once the settlement has landed (it does when Lumen
/// notices the client has gone).
async fn tokens_charged(lumen: &Lumen, at_least: u64) -> u64 {
    let mut used = 0;
    for _ in 0..400 {
        let r = send(
            http::Method::GET,
            &lumen.url("/admin/usage"),
            "",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await;
        let counters = r.json()["data"][0]["counters"].clone();
        used = counters
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["counter"] == "tokens")
            .unwrap()["used"]
            .as_u64()
            .unwrap();
        if used >= at_least {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    used
}

/// Lumen's tokenizer-free estimate of `tokens` of the simulator's answer, sent one token a
/// chunk: 4 bytes a token, rounded up, at least one a chunk (`GatewayStream::relayed`).
pub(crate) fn relayed_estimate(tokens: u32) -> u64 {
    let text = (0..tokens).map(sim_token).collect::<String>();
    (text.len() as u64).div_ceil(4).max(u64::from(tokens))
}

/// The simulator's `i`-th token.
fn sim_token(i: u32) -> &'static str {
    const WORDS: &[&str] = &[
        "Lumen", " routes", " every", " request", " to", " a", " healthy", " engine", ",",
        " streams", " tokens", " as", " they", " arrive", ",", " and", " retries", " before",
        " the", " first", " byte", ".",
    ];
    WORDS[i as usize % WORDS.len()]
}

#[tokio::test(start_paused = true)]
async fn a_client_that_hangs_up_before_the_usage_chunk_is_charged_what_it_was_sent() {
    let url = engine().await;
    // 3,000 tokens a minute: far more than the reservation (body/4 + 1,024 without
    // `max_tokens`), less than what this stream really costs plus one more reservation.
    let lumen = Lumen::start(single_shot(&[&url]).auth(auth(3_000)).build().unwrap()).await;
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "stream": true,
    })
    .to_string();
    let mut resp = open_stream(&lumen, &body).await;
    assert_eq!(resp.status(), 200);
    let read = read_chunks(&mut resp, 1_901).await;
    drop(resp);
    let prompt = (body.len() / 4) as u64;
    let least = prompt + relayed_estimate(1_901);
    let used = tokens_charged(&lumen, least).await;
    assert!(
        used >= least,
        "charged {used} for {read} chunks of text received (at least {least})"
    );
    assert!(
        used <= prompt + relayed_estimate(2_000),
        "never more than the whole answer: {used}"
    );
    // The window then holds what the stream cost: another such request no longer fits.
    let next = send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        &body,
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await;
    assert_eq!(next.status, 429, "{}", next.text());
}

#[tokio::test(start_paused = true)]
async fn every_choice_of_a_cut_n_stream_is_charged() {
    let url = engine().await;
    let lumen = Lumen::start(single_shot(&[&url]).auth(auth(1_000_000)).build().unwrap()).await;
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "n": 128,
        "max_tokens": 20,
        "stream": true,
    })
    .to_string();
    let mut resp = open_stream(&lumen, &body).await;
    assert_eq!(resp.status(), 200);
    // Every choice's first 19 tokens; the client leaves while the engine makes the 20th.
    let read = read_chunks(&mut resp, 128 * 19).await;
    drop(resp);
    let prompt = (body.len() / 4) as u64;
    let least = prompt + 128 * relayed_estimate(19);
    let used = tokens_charged(&lumen, least).await;
    assert!(
        used >= least,
        "charged {used} for {read} chunks of text over 128 choices (at least {least})"
    );
    assert!(used <= prompt + 128 * relayed_estimate(20), "{used}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_breaks_is_charged_what_it_relayed_and_logs_it() {
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::start(single_shot(&[&url]).auth(auth(1_000_000)).build().unwrap()).await;
    let (logs, _guard) = capture_logs();
    // 160 tokens asked for; the engine dies after 150, so its usage never comes. Their
    // estimate (4 bytes a token of the simulator's longish words) is above the reservation.
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 160,
        "stream": true,
        "sim": {"drop_after": 150},
    })
    .to_string();
    let r = send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        &body,
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await;
    let data = r.sse_data();
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted");
    let prompt = (body.len() / 4) as u64;
    let relayed = relayed_estimate(150);
    assert!(
        relayed > 160,
        "the estimate is above the reservation here: {relayed}"
    );
    assert_eq!(
        tokens_charged(&lumen, prompt + relayed).await,
        prompt + relayed
    );
    let access = logs.access();
    let line = access.last().unwrap();
    assert_eq!(line["output_tokens"], relayed, "{line}");
    assert_eq!(line["input_tokens"], prompt, "{line}");
    assert_eq!(line["tokens_estimated"], true, "{line}");
    assert_eq!(line["outcome"], "stream_interrupted", "{line}");
}

/// The Messages API runs the same settlement as chat: a client that leaves a `/v1/messages`
/// stream before `message_delta` (which carries the usage) is charged the prompt plus what it
/// was sent, and the window then refuses the next such request — on an engine that serves the
/// API itself (its events relayed as they came) as on one that is translated.
#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_a_native_messages_stream_is_charged_what_it_was_sent() {
    leave_a_messages_stream(Path::Native).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_a_translated_messages_stream_is_charged_what_it_was_sent() {
    leave_a_messages_stream(Path::Translated).await;
}

/// Where the route continues streams (its engines report usage on every chunk), a translated
/// stream's `message_start` carries the engine's prompt count, and a client that leaves early
/// is billed that, not the estimate.
#[tokio::test(start_paused = true)]
async fn a_translated_messages_stream_with_running_usage_reports_and_bills_the_engines_prompt() {
    leave_a_messages_stream(Path::TranslatedRunningUsage).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Native,
    Translated,
    TranslatedRunningUsage,
}

async fn leave_a_messages_stream(path: Path) {
    let url = engine().await;
    let lumen = Lumen::start(
        builder_native(&[(&url, path == Path::Native)])
            .governance(lumen_governance::GovernanceConfig {
                stream_continuation: path == Path::TranslatedRunningUsage,
                ..Default::default()
            })
            .retry(lumen_server::config::RetryConfig {
                max_attempts: Some(1),
                ..Default::default()
            })
            .breaker(lumen_server::config::BreakerSettings {
                consecutive_failures: 0,
                ..Default::default()
            })
            .auth(auth(3_000))
            .build()
            .unwrap(),
    )
    .await;
    let body = json!({
        "model": "m",
        "max_tokens": 2_000,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "stream": true,
    })
    .to_string();
    let (logs, _guard) = capture_logs();
    let mut resp = open_stream_at(&lumen, "/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    // The prompt as `message_start` reports it (a translated stream's does not know it yet).
    let reported = std::cell::Cell::new(0u64);
    let read = read_events(&mut resp, 1_901, |data| {
        let event: Value = serde_json::from_slice(data).unwrap();
        if event["type"] == "message_start" {
            reported.set(
                event["message"]["usage"]["input_tokens"]
                    .as_u64()
                    .unwrap_or(0),
            );
        }
        assert_ne!(event["type"], "message_delta", "the usage came first");
        assert_ne!(event["type"], "message_stop", "the stream ended first");
        text_delta(&event)
    })
    .await;
    drop(resp);
    let least = relayed_estimate(1_901);
    let used = tokens_charged(&lumen, least).await;
    assert!(
        used >= least,
        "charged {used} for {read} text deltas received (at least {least})"
    );
    assert!(
        used <= 2 * (body.len() as u64) + relayed_estimate(2_000),
        "never more than the whole answer: {used}"
    );
    // The input is the engine's own count once `message_start` gave it, else the estimate.
    let line = logs.access().last().unwrap().clone();
    assert_eq!(line["tokens_estimated"], true, "{line}");
    if path == Path::Translated {
        assert_eq!(
            reported.get(),
            0,
            "a translated stream's start does not know it"
        );
        assert_eq!(line["input_tokens"], (body.len() / 4) as u64, "{line}");
    } else {
        assert!(reported.get() > 0, "the engine reported its prompt");
        assert_ne!(reported.get(), (body.len() / 4) as u64, "not the estimate");
        assert_eq!(line["input_tokens"], reported.get(), "{line}");
    }
    let next = send(
        http::Method::POST,
        &lumen.url("/v1/messages"),
        &body,
        &[("x-api-key", KEY)],
    )
    .await;
    assert_eq!(next.status, 429, "{}", next.text());
    assert_eq!(
        next.json()["type"],
        "error",
        "Anthropic's shape: {}",
        next.text()
    );
}

/// The same for the Responses API: a client that leaves before `response.completed` (which
/// carries the usage) is charged what it was sent.
#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_a_responses_stream_is_charged_what_it_was_sent() {
    let url = engine().await;
    let lumen = Lumen::start(single_shot(&[&url]).auth(auth(3_000)).build().unwrap()).await;
    let body = json!({
        "model": "m",
        "input": "Tell me a long story.",
        "stream": true,
        "store": false,
    })
    .to_string();
    let mut resp = open_stream_at(&lumen, "/v1/responses", &body).await;
    assert_eq!(resp.status(), 200);
    let read = read_events(&mut resp, 1_901, |data| {
        let event: Value = serde_json::from_slice(data).unwrap();
        assert_ne!(
            event["type"], "response.completed",
            "the stream ended first"
        );
        usize::from(
            event["type"] == "response.output_text.delta"
                && event["delta"].as_str().is_some_and(|t| !t.is_empty()),
        )
    })
    .await;
    drop(resp);
    let least = relayed_estimate(1_901);
    let used = tokens_charged(&lumen, least).await;
    assert!(
        used >= least,
        "charged {used} for {read} text deltas received (at least {least})"
    );
    assert!(
        used <= 2 * (body.len() as u64) + relayed_estimate(2_000),
        "never more than the whole answer: {used}"
    );
    let next = send(
        http::Method::POST,
        &lumen.url("/v1/responses"),
        &body,
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await;
    assert_eq!(next.status, 429, "{}", next.text());
}

/// The same on an engine that serves the Responses API itself: its events are relayed as it
/// sent them, and a client that leaves before `response.completed` (the only event with the
/// usage) is charged the prompt plus what it was sent.
#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_a_native_responses_stream_is_charged_what_it_was_sent() {
    let url = engine().await;
    let lumen = Lumen::start(
        builder_responses(&[(&url, true)])
            .retry(lumen_server::config::RetryConfig {
                max_attempts: Some(1),
                ..Default::default()
            })
            .auth(auth(3_000))
            .build()
            .unwrap(),
    )
    .await;
    let body = json!({
        "model": "m",
        "input": "Tell me a long story.",
        "stream": true,
        "store": false,
    })
    .to_string();
    let mut resp = open_stream_at(&lumen, "/v1/responses", &body).await;
    assert_eq!(resp.status(), 200);
    let read = read_events(&mut resp, 1_901, |data| {
        let event: Value = serde_json::from_slice(data).unwrap();
        assert_ne!(
            event["type"], "response.completed",
            "the stream ended first"
        );
        usize::from(
            event["type"] == "response.output_text.delta"
                && event["delta"].as_str().is_some_and(|t| !t.is_empty()),
        )
    })
    .await;
    drop(resp);
    let least = relayed_estimate(1_901);
    let used = tokens_charged(&lumen, least).await;
    assert!(
        used >= least,
        "charged {used} for {read} text deltas received (at least {least})"
    );
    assert!(
        used <= 2 * (body.len() as u64) + relayed_estimate(2_000),
        "never more than the whole answer: {used}"
    );
    let next = send(
        http::Method::POST,
        &lumen.url("/v1/responses"),
        &body,
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await;
    assert_eq!(next.status, 429, "{}", next.text());
}

/// 1 for a Messages event that carries text (a non-empty `text_delta`), else 0: what a client
/// was sent, counted event by event.
pub(crate) fn text_delta(event: &Value) -> usize {
    usize::from(
        event["type"] == "content_block_delta"
            && event["delta"]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
    )
}
