//! Exact billing on a stream's early exits with block leases on (`redis.lease`), on a real
//! Redis and in real time: a client that hangs up (chat, and native Messages), a cut `n`
//! stream, an engine that breaks (with and without continuation), streams whose block another
//! replaced, and two replicas sharing one Redis. The usage history
//! (what finance reads) must count the prompt estimate plus what was relayed, to the token;
//! and the key's `tpm` window must hold the charge, which the next request shows.
//!
//! How the window is checked: each cut stream reserves less than a block (so it is admitted
//! from one) and is charged more than a block (so its settlement spends the block and the
//! rest overruns into Redis). Every block then ends spent, so Redis's counter is exactly the
//! sum of the charges, and a request that reserves at least a block is charged on Redis on its
//! own: one reserving a token more than the window has left is refused, one reserving what is
//! left is admitted. A stream charged nothing, or only its reservation, leaves the block's
//! tokens unspent and Redis's counter at the block, and the first request is admitted. (One
//! test keeps the charge inside the block instead, and reads it in the next request's rate
//! headers.)
//! The simulator's stalls and breaks make what was relayed exact: it sends `k` tokens, then
//! nothing (`stall_after`) or drops the connection (`drop_after`).

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use lumen_governance::limits::{LeaseSettings, LimitSpec};
use lumen_server::config::{AuthConfig, RedisConfig};
use lumen_tests::*;
use serde_json::{Value, json};

use crate::continuation::events;
use crate::shared_state::{admin, auth, call, key, redis, usage_history};
use crate::stream_billing::{read_chunks, read_events, relayed_estimate, text_delta};

const KEY: &str = "sk-leased";
const NAME: &str = "team-l";

fn keys(tpm: u64) -> AuthConfig {
    auth(vec![key(
        NAME,
        KEY,
        None,
        LimitSpec {
            tpm: Some(tpm),
            ..LimitSpec::default()
        },
    )])
}

/// Leases on: blocks of a quarter of the key's `tpm`, at most `block` tokens.
fn leased(url: &str, block: u64) -> RedisConfig {
    RedisConfig {
        lease: LeaseSettings {
            fraction: 0.25,
            max_tokens: block,
            ..LeaseSettings::default()
        },
        ..redis(url, false)
    }
}

/// The key's `tpm` and the block size of a test whose cut streams each reserve `estimate` and
/// are charged `charges`.
#[derive(Debug, Clone, Copy)]
struct Window {
    tpm: u64,
    block: u64,
}

/// A block strictly between the reservation and the smallest charge, and a window with room
/// for every charge and two blocks more (a quarter of it is at least the block, and
/// `max_tokens` caps it there).
fn window(estimate: u64, charges: &[u64]) -> Window {
    let least = *charges.iter().min().unwrap();
    let block = (estimate + least) / 2;
    assert!(
        estimate < block && block < least,
        "the design needs reservation {estimate} < block {block} < charge {least}"
    );
    let total: u64 = charges.iter().sum();
    Window {
        tpm: (4 * block).max(total + 2 * block),
        block,
    }
}

/// A streamed chat request for `n` answers of at most `max_tokens`, with simulator faults.
fn stream_body(n: u32, max_tokens: u32, faults: Value) -> String {
    json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "n": n,
        "max_tokens": max_tokens,
        "stream": true,
        "sim": faults,
    })
    .to_string()
}

/// Lumen's prompt estimate of a request body: 4 bytes a token.
fn prompt_of(body: &str) -> u64 {
    (body.len() as u64 / 4).max(1)
}

/// A non-streamed chat request whose reservation (prompt estimate plus `max_tokens`) is
/// exactly `estimate` tokens.
fn reserving(estimate: u64) -> String {
    let body = |m: u64| {
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": m,
        })
        .to_string()
    };
    (1..estimate)
        .rev()
        .map(|m| (m, body(m)))
        .find(|(m, b)| prompt_of(b) + m == estimate)
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no request body reserves exactly {estimate}"))
}

async fn open(lumen: &Lumen, body: &str) -> http::Response<hyper::body::Incoming> {
    open_at(lumen, "/v1/chat/completions", body).await
}

async fn open_at(lumen: &Lumen, path: &str, body: &str) -> http::Response<hyper::body::Incoming> {
    let req = Request::post(lumen.url(path))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    client().request(req).await.unwrap()
}

/// Opens a stream, reads `chunks` chunks with text (over every choice) and returns the
/// response, still open: the caller drops it, and the connection with it.
async fn cut(lumen: &Lumen, body: &str, chunks: usize) -> http::Response<hyper::body::Incoming> {
    let mut resp = open(lumen, body).await;
    assert_eq!(resp.status(), 200);
    let read = read_chunks(&mut resp, chunks).await;
    assert_eq!(read, chunks, "one token a chunk");
    resp
}

/// The key's `tpm` counter on Redis once it reads `expected` (settlements land as requests
/// end), or the last reading after 5 s.
async fn tpm_counter(lumen: &Lumen, expected: u64) -> u64 {
    let mut used = 0;
    for _ in 0..100 {
        let r = admin(lumen, http::Method::GET, "/admin/usage", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let usage = r.json();
        let counters = usage["data"][0]["counters"].as_array().unwrap();
        used = counters
            .iter()
            .find(|c| c["counter"] == "tokens")
            .unwrap_or_else(|| panic!("{usage}"))["used"]
            .as_u64()
            .unwrap();
        if used == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    used
}

/// With `used` tokens charged in the window, the next request that reserves a token more than
/// what is left is refused on every replica, and one that reserves what is left is admitted
/// and leaves nothing. Both reserve at least a block, so neither comes out of one: Redis's
/// count alone decides.
async fn next_fits_exactly(replicas: &[&Lumen], w: Window, used: u64) {
    let left = w.tpm.checked_sub(used).unwrap();
    assert!(left >= w.block, "left {left}, block {}", w.block);
    for lumen in replicas {
        let over = call(lumen, KEY, &reserving(left + 1)).await;
        assert_eq!(
            over.status,
            429,
            "{} left of {}, {} reserved: {}",
            left,
            w.tpm,
            left + 1,
            over.text()
        );
        assert_eq!(over.json()["error"]["code"], "rate_limit_exceeded");
    }
    let fits = call(replicas[0], KEY, &reserving(left)).await;
    assert_eq!(
        fits.status,
        200,
        "{left} left, as many reserved: {}",
        fits.text()
    );
    assert_eq!(fits.header("x-ratelimit-remaining-tokens"), Some("0"));
}

/// Lumen from `builder` with the key's `tpm` and leases on, on `redis_url`.
async fn gateway(builder: lumen_server::GatewayBuilder, redis_url: &str, w: Window) -> Lumen {
    Lumen::start(
        builder
            .auth(keys(w.tpm))
            .redis(leased(redis_url, w.block))
            .build()
            .unwrap(),
    )
    .await
}

/// A client that reads 90 tokens of a leased stream and hangs up while the engine is still
/// generating: the usage history counts the prompt estimate and those 90 tokens, and Redis's
/// window holds exactly that charge.
#[tokio::test]
async fn a_client_that_leaves_a_leased_stream_is_charged_exactly_what_it_was_sent() {
    let server = RedisServer::start().await;
    let (url, _sim) = sim(&["m"]).await;
    let body = stream_body(1, 100, json!({"stall_after": 90}));
    let prompt = prompt_of(&body);
    let (estimate, charge) = (prompt + 100, prompt + relayed_estimate(90));
    let w = window(estimate, &[charge]);
    let lumen = gateway(single_shot(&[&url]), &server.url(), w).await;

    drop(cut(&lumen, &body, 90).await);
    assert_eq!(
        usage_history(&lumen, NAME, 1).await,
        (1, prompt, relayed_estimate(90)),
        "the prompt estimate and the 90 tokens sent"
    );
    assert_eq!(tpm_counter(&lumen, charge).await, charge);
    next_fits_exactly(&[&lumen], w, charge).await;
}

/// The same when the charge fits in the block: the overrun is taken from the block, nothing
/// reaches Redis (its counter stays at the block), and the next request, admitted from the
/// block, is told what is left of the window net of the charge.
#[tokio::test]
async fn a_cut_stream_charged_inside_its_block_spends_the_block_exactly() {
    let server = RedisServer::start().await;
    let (url, _sim) = sim(&["m"]).await;
    let body = stream_body(1, 100, json!({"stall_after": 90}));
    let prompt = prompt_of(&body);
    let (estimate, charge) = (prompt + 100, prompt + relayed_estimate(90));
    assert!(
        estimate < charge,
        "an overrun: {estimate} reserved, {charge} charged"
    );
    // A quarter of the window: the fraction sizes the block (the cap is the same).
    let block = charge + 100;
    let w = Window {
        tpm: 4 * block,
        block,
    };
    let lumen = gateway(single_shot(&[&url]), &server.url(), w).await;

    drop(cut(&lumen, &body, 90).await);
    assert_eq!(
        usage_history(&lumen, NAME, 1).await,
        (1, prompt, relayed_estimate(90))
    );
    // 50 reserved, out of the 100 left of the block: remaining is the window less the block
    // on Redis, plus what is left of the block.
    let next = call(&lumen, KEY, &reserving(50)).await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(
        next.header("x-ratelimit-remaining-tokens"),
        Some((w.tpm - charge - 50).to_string().as_str()),
        "the window less the stream's charge and this reservation"
    );
    assert_eq!(
        tpm_counter(&lumen, block).await,
        block,
        "only the block was charged on Redis"
    );
}

/// Every choice of a cut `n` stream is charged: 4 choices, 55 tokens each sent.
#[tokio::test]
async fn every_choice_of_a_cut_leased_n_stream_is_charged() {
    let server = RedisServer::start().await;
    let (url, _sim) = sim(&["m"]).await;
    let body = stream_body(4, 60, json!({"stall_after": 55}));
    let prompt = prompt_of(&body);
    let (estimate, charge) = (prompt + 4 * 60, prompt + 4 * relayed_estimate(55));
    let w = window(estimate, &[charge]);
    let lumen = gateway(single_shot(&[&url]), &server.url(), w).await;

    drop(cut(&lumen, &body, 4 * 55).await);
    assert_eq!(
        usage_history(&lumen, NAME, 1).await,
        (1, prompt, 4 * relayed_estimate(55)),
        "the prompt estimate and 55 tokens of each of the 4 choices"
    );
    assert_eq!(tpm_counter(&lumen, charge).await, charge);
    next_fits_exactly(&[&lumen], w, charge).await;
}

/// An engine that breaks after 90 tokens: the caller gets the error in the stream, and is
/// charged the prompt estimate and the 90 tokens relayed.
#[tokio::test]
async fn a_leased_stream_that_breaks_is_charged_what_it_relayed() {
    let server = RedisServer::start().await;
    let (url, _sim) = sim(&["m"]).await;
    let body = stream_body(1, 100, json!({"drop_after": 90}));
    let prompt = prompt_of(&body);
    let (estimate, charge) = (prompt + 100, prompt + relayed_estimate(90));
    let w = window(estimate, &[charge]);
    let lumen = gateway(single_shot(&[&url]), &server.url(), w).await;

    let r = call(&lumen, KEY, &body).await;
    assert_eq!(r.status, 200);
    let (texts, error) = texts_and_error(&r);
    assert_eq!(texts, 90, "{}", r.text());
    assert_eq!(error["error"]["code"], "stream_interrupted", "{error}");
    assert_eq!(
        usage_history(&lumen, NAME, 1).await,
        (1, prompt, relayed_estimate(90))
    );
    assert_eq!(tpm_counter(&lumen, charge).await, charge);
    next_fits_exactly(&[&lumen], w, charge).await;
}

/// A chat stream's chunks with text, and the error event before `[DONE]`.
fn texts_and_error(r: &Reply) -> (usize, Value) {
    let (events, _) = events(r);
    let (error, chunks) = events.split_last().unwrap();
    let texts = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    (texts, error.clone())
}

/// With stream continuation on, an answer that breaks after 30 tokens is continued on the
/// other engine, which breaks after 30 more; no engine is left, so the caller gets the error.
/// It is charged the 60 tokens relayed (the engines' running counts) and the prompt as Lumen
/// counts a continued answer's: the last part's prompt (the engine's count, which includes
/// the 30 tokens of the partial answer) twice, less those 30 (see `continuation.rs`).
#[tokio::test]
async fn a_leased_stream_broken_again_after_its_continuation_is_charged_both_parts() {
    let server = RedisServer::start().await;
    let (a, sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let body = stream_body(1, 70, json!({"drop_after": 30}));
    let estimate = prompt_of(&body) + 70;
    // The charge depends on the continuation's prompt, known once it was sent: a block just
    // above the reservation, checked below the charge afterwards.
    let block = estimate + 8;
    let w = Window {
        tpm: 4 * block,
        block,
    };
    let continuing = lumen_governance::GovernanceConfig {
        stream_continuation: true,
        policy: lumen_governance::Policy::RoundRobin,
        ..lumen_governance::GovernanceConfig::default()
    };
    let lumen = gateway(builder(&[&a, &b]).governance(continuing), &server.url(), w).await;

    let r = call(&lumen, KEY, &body).await;
    assert_eq!(r.status, 200);
    let (texts, error) = texts_and_error(&r);
    assert_eq!(texts, 60, "30 tokens from each engine: {}", r.text());
    assert_eq!(error["error"]["code"], "stream_interrupted", "{error}");
    let continued: Vec<Value> = [&sa, &sb]
        .iter()
        .flat_map(|s| s.records())
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| r.body)
        .filter(|b| b["messages"].as_array().is_some_and(|m| m.len() == 2))
        .collect();
    assert_eq!(continued.len(), 1, "one continuation");
    assert_eq!(continued[0]["messages"][1]["role"], "assistant");
    // The simulator's prompt count: 4 bytes of the messages' JSON a token.
    let last_prompt = (serde_json::to_string(&continued[0]["messages"])
        .unwrap()
        .len() as u64
        / 4)
    .max(1);
    let (input, output) = (2 * last_prompt - 30, 60);
    let charge = input + output;
    assert!(block < charge, "block {block}, charge {charge}");
    assert_eq!(usage_history(&lumen, NAME, 1).await, (1, input, output));
    assert_eq!(tpm_counter(&lumen, charge).await, charge);
    next_fits_exactly(&[&lumen], w, charge).await;
}

/// Anthropic's Messages API on an engine that serves it: a client that leaves after 195 text
/// deltas, before `message_delta` (which carries the usage), is charged the prompt the engine
/// reported in `message_start` and the 195 tokens sent.
#[tokio::test]
async fn a_client_that_leaves_a_leased_messages_stream_is_charged_what_it_was_sent() {
    let server = RedisServer::start().await;
    let (url, sim) = sim(&["m"]).await;
    let body = json!({
        "model": "m",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "stream": true,
        "sim": {"stall_after": 195},
    })
    .to_string();
    let estimate = prompt_of(&body) + 200;
    // The charge depends on the engine's prompt count, known once it was asked: a block just
    // above the reservation, checked below the charge afterwards.
    let block = estimate + 8;
    let w = Window {
        tpm: 4 * block,
        block,
    };
    let lumen = gateway(builder_native(&[(&url, true)]), &server.url(), w).await;

    let mut resp = open_at(&lumen, "/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let reported = std::cell::Cell::new(None);
    let read = read_events(&mut resp, 195, |data| {
        let event: Value = serde_json::from_slice(data).unwrap();
        if event["type"] == "message_start" {
            reported.set(event["message"]["usage"]["input_tokens"].as_u64());
        }
        assert_ne!(event["type"], "message_delta", "the usage came first");
        text_delta(&event)
    })
    .await;
    assert_eq!(read, 195);
    drop(resp);
    // The simulator's prompt count: 4 bytes of the messages' JSON a token.
    let asked: Vec<Value> = sim
        .records()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .map(|r| r.body)
        .collect();
    assert_eq!(asked.len(), 1);
    let input = (serde_json::to_string(&asked[0]["messages"]).unwrap().len() as u64 / 4).max(1);
    assert_eq!(reported.get(), Some(input), "message_start's count");
    let charge = input + relayed_estimate(195);
    assert!(block < charge, "block {block}, charge {charge}");
    assert_eq!(
        usage_history(&lumen, NAME, 1).await,
        (1, input, relayed_estimate(195))
    );
    assert_eq!(tpm_counter(&lumen, charge).await, charge);
    next_fits_exactly(&[&lumen], w, charge).await;
}

/// A stream admitted while another holds its replica's block replaces the block (what is left
/// of it cannot cover the reservation): the first stream's charge then goes to Redis whole,
/// and the rest of the replaced block goes back with the second's settlement. Cut in either
/// order, the window holds exactly the sum of the charges.
#[tokio::test]
async fn cut_streams_whose_block_was_replaced_are_billed_exactly() {
    let server = RedisServer::start().await;
    let (url, _sim) = sim(&["m"]).await;
    let ks = [90, 92, 94, 96];
    let bodies: Vec<String> = ks
        .iter()
        .map(|k| stream_body(1, 100, json!({"stall_after": k})))
        .collect();
    let prompts: Vec<u64> = bodies.iter().map(|b| prompt_of(b)).collect();
    let charges: Vec<u64> = prompts
        .iter()
        .zip(ks)
        .map(|(p, k)| p + relayed_estimate(k))
        .collect();
    let estimate = prompts.iter().max().unwrap() + 100;
    let w = window(estimate, &charges);
    assert!(
        w.block - estimate < estimate && w.block > estimate,
        "a block covers one reservation, and what is left of it not another"
    );
    let lumen = gateway(single_shot(&[&url]), &server.url(), w).await;

    // Two at a time, each admitted once the one before holds its block; the first pair is
    // cut oldest first, the second newest first.
    let mut ended = 0;
    for (pair, newest_first) in [(0..2, false), (2..4, true)] {
        let mut streams = Vec::new();
        for i in pair {
            streams.push(cut(&lumen, &bodies[i], ks[i] as usize).await);
        }
        if newest_first {
            streams.reverse();
        }
        for s in streams {
            drop(s);
            ended += 1;
            assert_eq!(usage_history(&lumen, NAME, ended).await.0, ended);
        }
    }
    let sent: u64 = ks.iter().map(|k| relayed_estimate(*k)).sum();
    assert_eq!(
        usage_history(&lumen, NAME, 4).await,
        (4, prompts.iter().sum::<u64>(), sent)
    );
    let total: u64 = charges.iter().sum();
    assert_eq!(tpm_counter(&lumen, total).await, total);
    next_fits_exactly(&[&lumen], w, total).await;
}

/// Two replicas with leases on one Redis, a client cutting two streams on each at once: the
/// usage history (one total, whichever replica answers) counts every stream's prompt estimate
/// and tokens sent, and Redis's window holds the sum of the charges, for both replicas.
#[tokio::test]
async fn cut_streams_on_two_leased_replicas_are_billed_exactly() {
    let server = RedisServer::start().await;
    let (url, _sim) = sim(&["m"]).await;
    // (replica, tokens sent before the client leaves)
    let plan = [(0, 90), (1, 92), (0, 94), (1, 96)];
    let bodies: Vec<String> = plan
        .iter()
        .map(|(_, k)| stream_body(1, 100, json!({"stall_after": k})))
        .collect();
    let prompts: Vec<u64> = bodies.iter().map(|b| prompt_of(b)).collect();
    let charges: Vec<u64> = prompts
        .iter()
        .zip(&plan)
        .map(|(p, (_, k))| p + relayed_estimate(*k))
        .collect();
    let estimate = prompts.iter().max().unwrap() + 100;
    let w = window(estimate, &charges);
    let replicas = [
        gateway(single_shot(&[&url]), &server.url(), w).await,
        gateway(single_shot(&[&url]), &server.url(), w).await,
    ];

    let open = plan.iter().zip(&bodies).map(|((replica, k), body)| {
        let lumen = &replicas[*replica];
        let chunks = *k as usize;
        async move { cut(lumen, body, chunks).await }
    });
    let streams = futures::future::join_all(open).await;
    drop(streams);

    let sent: u64 = plan.iter().map(|(_, k)| relayed_estimate(*k)).sum();
    let expected = (plan.len() as u64, prompts.iter().sum::<u64>(), sent);
    for lumen in &replicas {
        assert_eq!(
            usage_history(lumen, NAME, plan.len() as u64).await,
            expected
        );
    }
    let total: u64 = charges.iter().sum();
    for lumen in &replicas {
        assert_eq!(tpm_counter(lumen, total).await, total);
    }
    next_fits_exactly(&[&replicas[0], &replicas[1]], w, total).await;
}
