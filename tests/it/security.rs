//! Holes found by attacking Lumen from outside, one test each: what a hostile client, a
//! careless operator or a Kubernetes environment did, and what Lumen must answer instead.

use std::time::Duration;

use lumen_governance::GovernanceConfig;
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::{AdmissionConfig, AuthConfig};
use lumen_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-only-a";

fn restricted(models: &[&str]) -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: None,
        keys: vec![ApiKey {
            name: "only-a".into(),
            sha256: to_hex(&digest(KEY)),
            models: Some(models.iter().map(|s| (*s).to_owned()).collect()),
            limits: LimitSpec::default(),
            per_model: Default::default(),
        }],
    }
}

async fn chat_as(lumen: &Lumen, body: &str) -> Reply {
    send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        body,
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await
}

fn chat_body(model: Option<&str>) -> String {
    let model = model.map_or(String::new(), |m| format!(r#""model":"{m}","#));
    format!(r#"{{{model}"messages":[{{"role":"user","content":"hi"}}],"max_tokens":2}}"#)
}

/// A key limited to `a` left `model` out and was served by the only exposed model, `b`: access
/// was checked on the blank name before the model was resolved.
#[tokio::test]
async fn a_blank_model_is_checked_against_the_key_after_resolution() {
    let (url, sim) = sim(&["b"]).await;
    let lumen = Lumen::start(
        single_shot(&[&url])
            .auth(restricted(&["a"]))
            .build()
            .unwrap(),
    )
    .await;
    let r = chat_as(&lumen, &chat_body(None)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(
        !r.text().contains("\"b\"") && !r.text().contains("`b`"),
        "the refusal does not name the default model: {}",
        r.text()
    );
    assert_eq!(sim.generation_count(), 0, "nothing reached the engine");
}

/// The same with a configured default, an alias and `auto`: the key's list is checked on the
/// model each resolves to, and `auto` picks among the key's models only.
#[tokio::test]
async fn every_way_of_naming_a_model_is_authorized_on_what_it_resolves_to() {
    let (url, sim) = sim(&["a", "b"]).await;
    let mut gov = GovernanceConfig {
        default_model: Some("b".into()),
        ..Default::default()
    };
    gov.aliases.insert("fast".into(), "b".into());
    gov.aliases.insert("mine".into(), "a".into());
    gov.auto.preference = vec!["b".into(), "a".into()];
    let lumen = Lumen::start(
        single_shot(&[&url])
            .governance(gov)
            .auth(restricted(&["a", "mine"]))
            .build()
            .unwrap(),
    )
    .await;
    // The default is `b`, which the key may not use: refused without naming it.
    let blank = chat_as(&lumen, &chat_body(None)).await;
    assert_eq!(blank.status, 404, "{}", blank.text());
    assert!(!blank.text().contains("`b`"), "{}", blank.text());
    // An alias of a forbidden model is forbidden, whatever the alias is called.
    let alias = chat_as(&lumen, &chat_body(Some("fast"))).await;
    assert_eq!(alias.status, 404, "{}", alias.text());
    // An alias the key lists, to a model it lists, is served.
    let mine = chat_as(&lumen, &chat_body(Some("mine"))).await;
    assert_eq!(mine.status, 200, "{}", mine.text());
    assert_eq!(mine.json()["model"], "mine");
    // `auto` prefers `b`, but for this key it may only pick `a`.
    let auto = chat_as(&lumen, &chat_body(Some("auto"))).await;
    assert_eq!(auto.status, 200, "{}", auto.text());
    assert_eq!(auto.json()["model"], "a");
    let engine_models: Vec<_> = sim
        .records()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| r.body["model"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(engine_models, ["a", "a"], "only `a` was ever asked");
}

/// `auto` for a key that may use none of its preferences is as absent as any other model.
#[tokio::test]
async fn auto_with_none_of_the_keys_models_is_404() {
    let (url, sim) = sim(&["a", "b"]).await;
    let mut gov = GovernanceConfig::default();
    gov.auto.preference = vec!["b".into()];
    let lumen = Lumen::start(
        single_shot(&[&url])
            .governance(gov)
            .auth(restricted(&["a"]))
            .build()
            .unwrap(),
    )
    .await;
    let r = chat_as(&lumen, &chat_body(Some("auto"))).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert_eq!(sim.generation_count(), 0);
}

/// Passthrough names are checked too: a key may not reach an engine model it does not list by
/// naming it directly.
#[tokio::test]
async fn passthrough_models_obey_the_key() {
    let (url, sim) = sim(&["a", "secret"]).await;
    let mut gov = GovernanceConfig {
        exposed_models: Some(vec!["a".into()]),
        ..Default::default()
    };
    gov.passthrough.enabled = true;
    let lumen = Lumen::start(
        single_shot(&[&url])
            .governance(gov)
            .auth(restricted(&["a"]))
            .build()
            .unwrap(),
    )
    .await;
    let r = chat_as(&lumen, &chat_body(Some("secret"))).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(sim.generation_count(), 0);
}

/// Opens a raw connection and sends a chat request without waiting for the answer.
async fn start_request(lumen: &Lumen, body: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(lumen.addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Clients that gave up while queued kept their queue places for ever: with a queue of 2, two
/// disconnects made every later request that had to wait a 429 `queue_full`.
#[tokio::test]
async fn clients_that_leave_the_queue_give_their_places_back() {
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::start(
        single_shot(&[&url])
            .admission(AdmissionConfig {
                max_concurrent: Some(1),
                queue_size: Some(2),
                queue_timeout_ms: Some(60_000),
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let hang = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"sim":{"hang":true}}"#;
    let holder = start_request(&lumen, hang).await;
    let gw = lumen.gateway.clone();
    let mut queued = Vec::new();
    for _ in 0..2 {
        queued.push(start_request(&lumen, &chat_body(Some("m"))).await);
    }
    eventually(Duration::from_secs(10), || gw.core().queued() == 2).await;
    drop(queued);
    eventually(Duration::from_secs(10), || gw.core().queued() == 0).await;
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(
        metrics.lines().any(|l| l == "lumen_queue_depth 0"),
        "the gauge is back to 0"
    );
    // The next caller waits rather than being refused, and is served once the slot frees.
    let next = tokio::spawn({
        let url = lumen.url("/v1/chat/completions");
        async move { post(&url, &chat_body(Some("m"))).await }
    });
    eventually(Duration::from_secs(10), || gw.core().queued() == 1).await;
    drop(holder);
    let r = next.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.core().queued(), 0);
}

/// Reads whatever the server sends until it closes the connection (bounded).
async fn read_to_close(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    out
}

/// With passthrough on, 2,000 invented model names of 10 KB each grew memory by 160 MB and
/// one scrape to 1.15 GB: every name became a label. Passthrough names now share one label.
#[tokio::test]
async fn passthrough_names_never_become_metric_labels() {
    let (url, _sim) = sim(&["m"]).await;
    let mut gov = GovernanceConfig::default();
    gov.passthrough.enabled = true;
    let lumen = Lumen::start(single_shot(&[&url]).governance(gov).build().unwrap()).await;
    for i in 0..200 {
        let name = format!("{i:04}{}", "x".repeat(2_000));
        let r = post(&lumen.url("/v1/chat/completions"), &chat_body(Some(&name))).await;
        assert!(r.status.as_u16() < 500, "{}", r.text());
    }
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(
        !metrics.contains("xxxxxxxxxx"),
        "no invented name is a label"
    );
    assert!(
        metrics.contains(r#"model="passthrough""#),
        "they share one label"
    );
    assert!(metrics.len() < 200_000, "{} bytes", metrics.len());
}

const ADMIN: &str = "sk-admin";

async fn admin_call(lumen: &Lumen, method: http::Method, path: &str, body: &str) -> Reply {
    send(
        method,
        &lumen.url(path),
        body,
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await
}

async fn chat_with(lumen: &Lumen, secret: &str, model: &str) -> http::StatusCode {
    send(
        http::Method::POST,
        &lumen.url("/v1/chat/completions"),
        &chat_body(Some(model)),
        &[("authorization", &format!("Bearer {secret}"))],
    )
    .await
    .status
}

/// Run-time key names: restricted to a documented alphabet, taken once (409, never a silent
/// replacement that drops the old key's restrictions), and revocable by their URL-encoded name.
async fn run_time_key_names(lumen: &Lumen) {
    let spaced = admin_call(
        lumen,
        http::Method::POST,
        "/admin/keys",
        r#"{"name":"ci bot","models":["a"]}"#,
    )
    .await;
    assert_eq!(spaced.status, 400, "{}", spaced.text());
    assert_eq!(spaced.json()["error"]["param"], "name");
    let created = admin_call(
        lumen,
        http::Method::POST,
        "/admin/keys",
        r#"{"name":"ci.bot@team-a","models":["a"]}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = created.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(chat_with(lumen, &secret, "a").await, 200);
    assert_eq!(chat_with(lumen, &secret, "b").await, 404);
    let again = admin_call(
        lumen,
        http::Method::POST,
        "/admin/keys",
        r#"{"name":"ci.bot@team-a"}"#,
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.json()["error"]["code"], "key_exists");
    assert!(again.json().get("key").is_none(), "no new secret");
    assert_eq!(
        chat_with(lumen, &secret, "b").await,
        404,
        "the first key keeps its restrictions"
    );
    let deleted = admin_call(
        lumen,
        http::Method::DELETE,
        "/admin/keys/ci.bot%40team%2Da",
        "",
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["name"], "ci.bot@team-a");
    assert_eq!(chat_with(lumen, &secret, "a").await, 401, "revoked");
}

fn with_admin() -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: Some(to_hex(&digest(ADMIN))),
        keys: Vec::new(),
    }
}

#[tokio::test]
async fn run_time_key_names_in_memory() {
    let (url, _sim) = sim(&["a", "b"]).await;
    let lumen = Lumen::start(single_shot(&[&url]).auth(with_admin()).build().unwrap()).await;
    run_time_key_names(&lumen).await;
}

#[tokio::test]
async fn run_time_key_names_on_redis() {
    let redis = RedisServer::start().await;
    let (url, _sim) = sim(&["a", "b"]).await;
    let lumen = Lumen::start(
        single_shot(&[&url])
            .auth(with_admin())
            .redis(lumen_server::config::RedisConfig {
                url: Some(lumen_server::config::Secret::new(redis.url())),
                timeout_ms: 2_000,
                key_cache_ms: 0,
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    run_time_key_names(&lumen).await;
}

/// Sends raw bytes on a fresh connection and returns everything the server sends back until
/// it closes the connection.
async fn raw_exchange(lumen: &Lumen, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(lumen.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned()
}

/// A browser can post text or a form cross-site without a preflight, and `gzip, chunked` was
/// read as if it were plain JSON: only JSON bodies, without codings, are read now.
#[tokio::test]
async fn only_plain_json_bodies_are_read() {
    let (url, sim) = sim(&["m"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let body = chat_body(Some("m"));
    let u = lumen.url("/v1/chat/completions");
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = send(http::Method::POST, &u, &body, &[("content-type", ct)]).await;
        assert_eq!(r.status, 415, "{ct}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    let r = send(
        http::Method::POST,
        &u,
        &body,
        &[("content-type", "application/json; charset=utf-8")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        http::Method::POST,
        &u,
        &body,
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    // No content type at all, with a body: refused too.
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = raw_exchange(&lumen, raw.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 415"), "{resp}");
    // Chunked framing is fine; a coding before it is not.
    let chunked = |te: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: {te}\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    };
    let resp = raw_exchange(&lumen, chunked("chunked").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = raw_exchange(&lumen, chunked("gzip, chunked").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 415"), "{resp}");
    assert!(resp.contains("unsupported_encoding"), "{resp}");
    assert_eq!(
        sim.generation_count(),
        2,
        "only the two good requests reached the engine"
    );
}

/// `n: 1000000000` reached the engine. It is bounded now (default 128, configurable).
#[tokio::test]
async fn n_is_bounded() {
    let (url, sim) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&url]).max_n(4).build().unwrap()).await;
    let ask = |n: u64| {
        format!(
            r#"{{"model":"m","n":{n},"messages":[{{"role":"user","content":"hi"}}],"max_tokens":1}}"#
        )
    };
    let r = post(&lumen.url("/v1/chat/completions"), &ask(5)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "n");
    let r = post(
        &lumen.url("/v1/completions"),
        r#"{"model":"m","prompt":"hi","n":1000000000}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(sim.generation_count(), 0);
    let r = post(&lumen.url("/v1/chat/completions"), &ask(4)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let default = Lumen::in_front_of(&[&url]).await;
    let r = post(&default.url("/v1/chat/completions"), &ask(129)).await;
    assert_eq!(r.status, 400, "the default maximum is 128: {}", r.text());
}

/// Headers had a deadline but the body did not: a client that sent part of a body held its
/// connection (and a descriptor) for ever. Now it gets a 408 and the connection is closed.
#[tokio::test]
async fn a_stalled_body_gets_408_and_loses_its_connection() {
    let (url, sim) = sim(&["m"]).await;
    let lumen = Lumen::start(
        builder(&[&url])
            .body_read_timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(lumen.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":\"m\",",
    )
    .await
    .unwrap();
    let resp = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("\"code\":\"request_timeout\""), "{resp}");
    assert_eq!(sim.generation_count(), 0);
}

/// When the shutdown grace ran out, open streams were cut mid-response: no error event, no
/// `[DONE]`, no final chunk. Now each gets one error event and `[DONE]`, and its body ends
/// cleanly (the chunked terminator arrives), so the client can tell it was cut.
#[tokio::test]
async fn shutdown_ends_open_streams_with_an_error_event() {
    use http_body_util::BodyExt;
    let (url, _sim) = sim(&["m1"]).await;
    let gw = builder(&[&url])
        .shutdown_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut lumen = Lumen::start(gw).await;
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"max_tokens":1000,"stream":true,"sim":{"itl_ms":50}}"#;
    let resp = post_streaming(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let mut got = stream
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    let serving = lumen.begin_shutdown();
    let rest = tokio::time::timeout(Duration::from_secs(20), stream.collect())
        .await
        .expect("the body ends")
        .expect("the body ends cleanly, not with a cut connection");
    got.extend_from_slice(&rest.to_bytes());
    let reply = Reply {
        status: http::StatusCode::OK,
        headers: Default::default(),
        body: got.into(),
    };
    let events = reply.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let error: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "server_shutting_down", "{error}");
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A model whose only engine was down when Lumen started answered 404 `model_not_found`
/// (which SDKs do not retry) for up to a discovery interval after the engine came up. A model
/// the configuration names is now 503 with `Retry-After` while its engine is unknown, and
/// discovery is re-run soon, so it is served shortly after the engine starts.
#[tokio::test]
async fn a_model_whose_engine_starts_late_is_503_then_served() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let gov = GovernanceConfig {
        exposed_models: Some(vec!["m".into()]),
        // An hour: only the quick re-discovery can find the engine within this test.
        discovery_interval_ms: 3_600_000,
        ..Default::default()
    };
    let lumen = Lumen::start(single_shot(&[&url]).governance(gov).build().unwrap()).await;
    let r = post(&lumen.url("/v1/chat/completions"), &chat_body(Some("m"))).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_ready");
    assert!(r.header("retry-after").is_some());
    // A name nothing configured stays a 404: typos are not "starting".
    let r = post(&lumen.url("/v1/chat/completions"), &chat_body(Some("typo"))).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // The engine comes up on its port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let sim = lumen_sim::Simulator::new(lumen_sim::SimConfig {
        models: vec!["m".into()],
        ..Default::default()
    });
    tokio::spawn(lumen_sim::serve(listener, sim, std::future::pending()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = post(&lumen.url("/v1/chat/completions"), &chat_body(Some("m"))).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "never a 404 meanwhile: {}", r.text());
        assert!(tokio::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A per-model limit holds whichever way the call reached the model: by name, through an
/// alias, as the default for a blank `model`, or as `auto`'s choice.
#[tokio::test]
async fn a_per_model_limit_holds_for_every_way_of_naming_the_model() {
    let (url, sim) = sim(&["chat"]).await;
    let mut gov = GovernanceConfig {
        default_model: Some("chat".into()),
        ..Default::default()
    };
    gov.aliases.insert("fast".into(), "chat".into());
    gov.auto.preference = vec!["chat".into()];
    let mut key = restricted(&["chat", "fast"]);
    key.keys[0].per_model.insert(
        "chat".into(),
        LimitSpec {
            rpm: Some(1),
            ..LimitSpec::default()
        },
    );
    let lumen = Lumen::start(
        single_shot(&[&url])
            .governance(gov)
            .auth(key)
            .build()
            .unwrap(),
    )
    .await;
    assert_eq!(chat_as(&lumen, &chat_body(Some("chat"))).await.status, 200);
    for model in [Some("fast"), None, Some("auto")] {
        let r = chat_as(&lumen, &chat_body(model)).await;
        assert_eq!(r.status, 429, "{model:?}: {}", r.text());
    }
    assert_eq!(sim.generation_count(), 1);
}

/// With passthrough on, invented model names never become usage rows either: a key's
/// requests to them are counted under `passthrough` (a client could otherwise add a row per
/// name to the history, on Redis for the whole retention).
#[tokio::test]
async fn passthrough_names_never_become_usage_rows() {
    let (url, _sim) = sim(&["m"]).await;
    let mut gov = GovernanceConfig::default();
    gov.passthrough.enabled = true;
    let auth = AuthConfig {
        enabled: true,
        admin_key_sha256: Some(to_hex(&digest(ADMIN))),
        keys: vec![ApiKey {
            name: "invent".into(),
            sha256: to_hex(&digest("sk-invent")),
            models: None,
            limits: LimitSpec::default(),
            per_model: Default::default(),
        }],
    };
    let lumen = Lumen::start(
        single_shot(&[&url])
            .governance(gov)
            .auth(auth)
            .build()
            .unwrap(),
    )
    .await;
    for name in ["invented-one", "invented-two", "m"] {
        let status = chat_with(&lumen, "sk-invent", name).await;
        assert!(status.as_u16() < 500, "{name}: {status}");
    }
    let mut rows = Vec::new();
    for _ in 0..50 {
        let r = admin_call(&lumen, http::Method::GET, "/admin/usage/history", "").await;
        rows = r.json()["data"].as_array().unwrap().clone();
        let requests: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        if requests == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let models: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert!(
        models.contains(&"passthrough") && models.contains(&"m"),
        "{rows:?}"
    );
    assert!(
        !models.iter().any(|m| m.starts_with("invented")),
        "{rows:?}"
    );
}
