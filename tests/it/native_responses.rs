//! OpenAI's Responses API passed through to engines that serve it themselves
//! (`backends[].native_responses`): the body as sent, the engine's answer and events as it
//! sent them, billed on their Responses usage; the response id mapped to the engine and the
//! key that created it, so `previous_response_id`, `GET`, `DELETE`, `cancel` and
//! `input_items` go back to that engine, for that key only. Real TCP, the simulator as an
//! engine that keeps its responses (as vLLM with `VLLM_ENABLE_RESPONSES_API_STORE`).

use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::AuthConfig;
use lumen_sim::{SimConfig, Simulator};
use lumen_tests::*;
use serde_json::{Value, json};

const KEY: &str = "sk-native";
const OTHER: &str = "sk-other";
const ADMIN: &str = "sk-admin";

fn key(name: &str, secret: &str) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: to_hex(&digest(secret)),
        models: Some(vec!["m".into()]),
        limits: LimitSpec {
            daily_tokens: Some(1_000_000),
            ..LimitSpec::default()
        },
        per_model: Default::default(),
    }
}

fn auth() -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: Some(to_hex(&digest(ADMIN))),
        keys: vec![key("agent", KEY), key("other", OTHER)],
    }
}

async fn engine() -> (String, Simulator) {
    sim_with(SimConfig {
        models: vec!["m".to_owned(), "m2".to_owned()],
        record: 256,
        ..SimConfig::default()
    })
    .await
}

/// Lumen in front of `engines` (`b0`, `b1`, ...: url and whether native), one attempt each.
async fn lumen(engines: &[(&str, bool)]) -> Lumen {
    Lumen::start(
        builder_responses(engines)
            .auth(auth())
            .retry(lumen_server::config::RetryConfig {
                max_attempts: Some(1),
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await
}

async fn call(lumen: &Lumen, method: http::Method, path: &str, body: &Value, key: &str) -> Reply {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    send(
        method,
        &lumen.url(path),
        &body,
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await
}

async fn create(lumen: &Lumen, body: &Value, key: &str) -> Reply {
    call(lumen, http::Method::POST, "/v1/responses", body, key).await
}

/// The daily tokens the agent key has used, from `/admin/usage`.
async fn used(lumen: &Lumen) -> u64 {
    let r = call(
        lumen,
        http::Method::GET,
        "/admin/usage",
        &Value::Null,
        ADMIN,
    )
    .await;
    let v = r.json();
    let agent = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "agent")
        .unwrap()
        .clone();
    agent["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["counter"] == "daily tokens")
        .unwrap()["used"]
        .as_u64()
        .unwrap()
}

/// `METHOD path` of every request the engine got (the model list left out).
fn seen(sim: &Simulator) -> Vec<String> {
    sim.records()
        .iter()
        .filter(|r| r.path != "/v1/models")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Lets the background writes of the id map land (they never hold up the answer).
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_native_engine_gets_the_body_as_sent_and_the_key_is_billed_its_usage() {
    let (url, sim) = engine().await;
    let lumen = lumen(&[(&url, true)]).await;
    let body = json!({
        "model": "m",
        "input": "hello",
        "max_output_tokens": 6,
        "background": false,
        "reasoning": {"effort": "low"},
    });
    let r = create(&lumen, &body, KEY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["model"], "m");
    let (input, output) = (
        v["usage"]["input_tokens"].as_u64().unwrap(),
        v["usage"]["output_tokens"].as_u64().unwrap(),
    );
    assert_eq!(output, 6);
    assert_eq!(used(&lumen).await, input + output);
    let last = sim.records().last().unwrap().clone();
    assert_eq!(last.path, "/v1/responses");
    assert_eq!(last.body, body, "the body as sent");
    // The engine's own answer: the same object it keeps.
    settle().await;
    let id = v["id"].as_str().unwrap();
    let kept = call(
        &lumen,
        http::Method::GET,
        &format!("/v1/responses/{id}"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(kept.status, 200, "{}", kept.text());
    assert_eq!(kept.json(), v);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = create(&lumen, &streamed, KEY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        r.headers
    );
    let evs = sse_events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"), "{names:?}");
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    for (i, (name, data)) in evs.iter().enumerate() {
        assert_eq!(data["sequence_number"], i as u64, "kept as sent: {name}");
        assert_eq!(data["type"], name.as_str());
    }
    let done = &evs.last().unwrap().1["response"];
    let streamed_usage = done["usage"]["input_tokens"].as_u64().unwrap()
        + done["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(done["usage"]["output_tokens"], 6);
    assert_eq!(used(&lumen).await, input + output + streamed_usage);
    assert_eq!(sim.records().last().unwrap().body, streamed);
    // Both are the engine's, kept there: no chat completion was ever sent.
    assert!(
        !seen(&sim).iter().any(|p| p.contains("chat")),
        "{:?}",
        seen(&sim)
    );
}

#[tokio::test]
async fn previous_response_id_goes_back_to_the_engine_that_keeps_it() {
    let (a_url, a) = engine().await;
    let (b_url, b) = engine().await;
    let lumen = lumen(&[(&a_url, true), (&b_url, true)]).await;
    for turn in 0..6 {
        let before = (seen(&a).len(), seen(&b).len());
        let first = create(
            &lumen,
            &json!({"model": "m", "input": "hi", "max_output_tokens": 3}),
            KEY,
        )
        .await;
        assert_eq!(first.status, 200, "{}", first.text());
        let first = first.json();
        let id = first["id"].as_str().unwrap().to_owned();
        let on_a = seen(&a).len() > before.0;
        let (home, away) = if on_a { (&a, &b) } else { (&b, &a) };
        settle().await;
        let stream = turn % 2 == 1;
        let next = json!({
            "model": "m",
            "input": "and then?",
            "max_output_tokens": 2,
            "previous_response_id": id,
            "stream": stream,
        });
        let (home_before, away_before) = (seen(home).len(), seen(away).len());
        let r = create(&lumen, &next, KEY).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            seen(home).len(),
            home_before + 1,
            "turn {turn}: the keeping engine"
        );
        assert_eq!(
            seen(away).len(),
            away_before,
            "turn {turn}: never the other"
        );
        let usage = if stream {
            sse_events(&r.text()).last().unwrap().1["response"]["usage"].clone()
        } else {
            r.json()["usage"].clone()
        };
        // The engine found the conversation: its prompt holds the first turn.
        let first_turn = first["usage"]["input_tokens"].as_u64().unwrap() + 3;
        assert!(
            usage["input_tokens"].as_u64().unwrap() > first_turn,
            "{usage}"
        );
    }
}

#[tokio::test]
async fn get_items_cancel_and_delete_are_forwarded_to_the_keeping_engine() {
    let (a_url, a) = engine().await;
    let (b_url, b) = engine().await;
    let lumen = lumen(&[(&a_url, true), (&b_url, true)]).await;
    let r = create(
        &lumen,
        &json!({"model": "m", "input": "hello", "max_output_tokens": 3}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    let id = answer["id"].as_str().unwrap().to_owned();
    let home = if a.stored_responses() == 1 { &a } else { &b };
    assert_eq!(a.stored_responses() + b.stored_responses(), 1);
    settle().await;
    let path = format!("/v1/responses/{id}");
    let get = call(&lumen, http::Method::GET, &path, &Value::Null, KEY).await;
    assert_eq!((get.status.as_u16(), get.json()), (200, answer.clone()));
    let items = call(
        &lumen,
        http::Method::GET,
        &format!("{path}/input_items?limit=5"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(items.status, 200, "{}", items.text());
    assert_eq!(items.json()["data"][0]["content"][0]["text"], "hello");
    let cancel = call(
        &lumen,
        http::Method::POST,
        &format!("{path}/cancel"),
        &Value::Null,
        KEY,
    )
    .await;
    assert_eq!(
        cancel.status,
        400,
        "the engine's own answer: {}",
        cancel.text()
    );
    assert!(
        cancel.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("synchronous")
    );
    let tail: Vec<String> = seen(home).into_iter().rev().take(3).collect();
    assert_eq!(
        tail,
        [
            format!("POST {path}/cancel"),
            format!("GET {path}/input_items"),
            format!("GET {path}"),
        ]
    );
    let delete = call(&lumen, http::Method::DELETE, &path, &Value::Null, KEY).await;
    assert_eq!(delete.status, 200, "{}", delete.text());
    assert_eq!(delete.json()["deleted"], true);
    assert_eq!(home.stored_responses(), 0);
    // The mapping went with it: Lumen knows the id no more.
    let before = seen(home).len();
    for (method, p) in [
        (http::Method::GET, path.clone()),
        (http::Method::DELETE, path.clone()),
    ] {
        let r = call(&lumen, method, &p, &Value::Null, KEY).await;
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(r.json()["error"]["param"], "response_id");
    }
    assert_eq!(seen(home).len(), before);
}

#[tokio::test]
async fn another_key_gets_404_on_every_endpoint_and_the_engine_sees_nothing() {
    let (url, sim) = engine().await;
    let lumen = lumen(&[(&url, true)]).await;
    let r = create(
        &lumen,
        &json!({"model": "m", "input": "secret", "max_output_tokens": 2}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    settle().await;
    let before = seen(&sim).len();
    let path = format!("/v1/responses/{id}");
    for (method, p) in [
        (http::Method::GET, path.clone()),
        (http::Method::DELETE, path.clone()),
        (http::Method::GET, format!("{path}/input_items")),
        (http::Method::POST, format!("{path}/cancel")),
    ] {
        let r = call(&lumen, method.clone(), &p, &Value::Null, OTHER).await;
        assert_eq!(r.status, 404, "{method} {p}: {}", r.text());
        let never = call(
            &lumen,
            method.clone(),
            &p.replace(&id, "resp_never"),
            &Value::Null,
            OTHER,
        )
        .await;
        assert_eq!(
            r.text(),
            never.text().replace("resp_never", &id),
            "the same 404 as for no such id"
        );
    }
    let continued = json!({"model": "m", "input": "more", "previous_response_id": id});
    let r = create(&lumen, &continued, OTHER).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(seen(&sim).len(), before, "{:?}", seen(&sim));
    // The owner still has it: the other key's DELETE did nothing.
    let r = call(&lumen, http::Method::GET, &path, &Value::Null, KEY).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_model_outside_the_keys_list_is_refused_before_any_engine() {
    let (url, sim) = engine().await;
    let lumen = lumen(&[(&url, true)]).await;
    let r = create(&lumen, &json!({"model": "m2", "input": "hi"}), KEY).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(seen(&sim).is_empty(), "{:?}", seen(&sim));
}

/// The engine that keeps a response gone from the configuration, or unreachable: continuing,
/// reading or deleting it is a clear 503 that names the response, and no other engine is
/// asked.
#[tokio::test]
async fn the_keeping_engine_gone_or_unreachable_is_a_clear_error() {
    let (a_url, a) = engine().await;
    let (b_url, b) = engine().await;
    let lumen = lumen(&[(&a_url, true), (&b_url, true)]).await;
    let r = create(
        &lumen,
        &json!({"model": "m", "input": "hi", "max_output_tokens": 2}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let (home, other, other_url, other_name) = if a.stored_responses() == 1 {
        ("b0", &b, &b_url, "b1")
    } else {
        ("b1", &a, &a_url, "b0")
    };
    settle().await;
    let core = lumen.gateway.core();
    let models = Some(vec!["m".to_owned(), "m2".to_owned()]);
    let reload = |specs| {
        core.reload(
            core.router().config().as_ref().clone(),
            specs,
            (*core.settings()).clone(),
        )
        .unwrap()
    };
    let check = |why: &'static str| {
        let id = id.clone();
        let lumen = &lumen;
        async move {
            let before = seen(other).len();
            let next = json!({"model": "m", "input": "more", "previous_response_id": id});
            for r in [
                create(lumen, &next, KEY).await,
                call(
                    lumen,
                    http::Method::GET,
                    &format!("/v1/responses/{id}"),
                    &Value::Null,
                    KEY,
                )
                .await,
                call(
                    lumen,
                    http::Method::DELETE,
                    &format!("/v1/responses/{id}"),
                    &Value::Null,
                    KEY,
                )
                .await,
            ] {
                assert_eq!(r.status, 503, "{why}: {}", r.text());
                let e = &r.json()["error"];
                assert_eq!(
                    e["code"],
                    "response_engine_unavailable",
                    "{why}: {}",
                    r.text()
                );
                assert!(e["message"].as_str().unwrap().contains(&id), "{why}: {e}");
            }
            assert_eq!(seen(other).len(), before, "{why}: never another engine");
        }
    };
    // Gone: only the other backend is configured.
    reload(vec![(
        responses_backend(other_name, other_url, true, models.clone()),
        lumen_gateway::Probe::Health,
    )]);
    check("gone").await;
    // Back under its name, at an address where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    reload(vec![
        (
            responses_backend(other_name, other_url, true, models.clone()),
            lumen_gateway::Probe::Health,
        ),
        (
            responses_backend(home, &dead_url, true, models.clone()),
            lumen_gateway::Probe::Health,
        ),
    ]);
    check("unreachable").await;
}

/// A pool that mixes native and translated backends is translated (the choice is made once
/// per request, and a translated request may be retried anywhere); one whose backends all
/// serve the API is native. Off by default: a backend must say it.
#[tokio::test]
async fn only_a_pool_whose_backends_all_serve_it_is_native() {
    let (a_url, a) = engine().await;
    let (b_url, b) = engine().await;
    let lumen = lumen(&[(&a_url, true), (&b_url, false)]).await;
    for _ in 0..4 {
        let r = create(
            &lumen,
            &json!({"model": "m", "input": "hi", "max_output_tokens": 2}),
            KEY,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["id"].as_str().unwrap().starts_with("resp_"));
    }
    let posts: Vec<String> = seen(&a).into_iter().chain(seen(&b)).collect();
    assert!(
        posts.iter().all(|p| p == "POST /v1/chat/completions"),
        "{posts:?}"
    );
    let (url, sim) = engine().await;
    let plain = Lumen::start(builder(&[&url]).auth(auth()).build().unwrap()).await;
    let r = create(
        &plain,
        &json!({"model": "m", "input": "hi", "max_output_tokens": 2}),
        KEY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        seen(&sim),
        ["POST /v1/chat/completions"],
        "translated by default"
    );
}

/// An engine that lets clients choose response ids (vLLM's `request_id`) must not let one key
/// take over another's: `request_id` is refused on the native path, and an id an engine answers
/// to a second key stays mapped to the first.
#[tokio::test]
async fn a_key_cannot_take_over_another_keys_response_id() {
    // Whatever it is asked, this engine answers the same response id.
    const ANSWER: &str = r#"{"id":"resp_fixed","object":"response","created_at":1,"status":"completed","model":"m1","output":[],"usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}"#;
    let engine = canned_engine(ANSWER).await;
    let mut auth = auth();
    for k in &mut auth.keys {
        k.models = Some(vec!["m1".into()]);
    }
    let lumen = Lumen::start(
        builder_responses(&[(&engine, true)])
            .auth(auth)
            .build()
            .unwrap(),
    )
    .await;
    let refused = create(
        &lumen,
        &json!({"model": "m1", "input": "x", "request_id": "resp_fixed"}),
        OTHER,
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("request_id"), "{}", refused.text());

    let first = create(&lumen, &json!({"model": "m1", "input": "x"}), KEY).await;
    assert_eq!(first.status, 200, "{}", first.text());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // The engine answers the other key the same id: the map keeps its first owner.
    let second = create(&lumen, &json!({"model": "m1", "input": "y"}), OTHER).await;
    assert_eq!(second.status, 200, "{}", second.text());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let path = "/v1/responses/resp_fixed";
    let theirs = call(&lumen, http::Method::GET, path, &Value::Null, OTHER).await;
    assert_eq!(theirs.status, 404, "{}", theirs.text());
    let mine = call(&lumen, http::Method::GET, path, &Value::Null, KEY).await;
    assert_eq!(mine.status, 200, "{}", mine.text());
    assert_eq!(mine.json()["id"], "resp_fixed");
    lumen.shutdown().await;
}

/// A native engine whose stream breaks after the commit point (cut, a `response.failed`, a
/// frame that is not JSON): the client's stream ends with a terminal event it can read, never
/// a torn body, and the key is charged the prompt plus what it was sent.
#[tokio::test]
async fn a_native_stream_that_breaks_ends_readably_and_is_charged() {
    for fault in ["drop_after", "error_after", "garbage_after"] {
        let (url, _sim) = engine().await;
        let lumen = lumen(&[(&url, true)]).await;
        let body = json!({"model": "m", "input": "tell me", "stream": true,
            "max_output_tokens": 12, "sim": {fault: 3}});
        let r = create(&lumen, &body, KEY).await;
        assert_eq!(r.status, 200, "{fault}: {}", r.text());
        let events = sse_events(&r.text());
        let (last, data) = events.last().unwrap();
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            kinds
                .iter()
                .filter(|k| **k == "response.output_text.delta")
                .count()
                >= 3,
            "{fault}: {kinds:?}"
        );
        assert!(
            last == "response.failed" || last == "error",
            "{fault}: ends with {last}: {kinds:?}"
        );
        assert!(!kinds.contains(&"response.completed"), "{fault}: {kinds:?}");
        if last == "error" {
            assert!(
                data["message"].is_string() || data["error"].is_object(),
                "{data}"
            );
        }
        let charged = used(&lumen).await;
        assert!(charged >= 3, "{fault}: charged {charged}");
        lumen.shutdown().await;
    }
}
