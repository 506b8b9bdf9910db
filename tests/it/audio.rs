//! The audio endpoints (`/v1/audio/transcriptions`, `/v1/audio/translations`: multipart forms
//! routed by their `model` field) and the configured extra JSON paths
//! (`server.extra_json_paths`), through the same pipeline as chat, against lumen-sim.

use bytes::Bytes;
use http_body_util::Full;
use lumen_governance::GovernanceConfig;
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_server::config::AuthConfig;
use lumen_sim::Faults;
use lumen_tests::*;
use serde_json::json;

const KEY: &str = "sk-audio";
const BOUNDARY: &str = "lumen-test-boundary";

fn keyed(models: &[&str]) -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: None,
        keys: vec![ApiKey {
            name: "svc".into(),
            sha256: to_hex(&digest(KEY)),
            models: Some(models.iter().map(|s| (*s).to_owned()).collect()),
            limits: LimitSpec::default(),
            per_model: Default::default(),
        }],
    }
}

/// A form as curl sends it (`-F file=@a.wav -F model=...`): the file first.
fn form(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        if *name == "file" {
            out.extend_from_slice(
                b"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
                  Content-Type: audio/wav\r\n\r\n",
            );
        } else {
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        }
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// Audio-like bytes: every byte value, CRs and LFs, and the boundary's text inside (never after
/// a CRLF: then it would be a delimiter, which a client's boundary never is in its data).
fn audio(len: usize) -> Vec<u8> {
    let mut pattern: Vec<u8> = (0..=255u8).collect();
    pattern.extend_from_slice(format!("\r\n-x--{BOUNDARY}\r\r\n-").as_bytes());
    pattern.iter().copied().cycle().take(len).collect()
}

async fn upload(lumen: &Lumen, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let req = http::Request::post(lumen.url(path))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let fut = async { Reply::read(client().request(req).await.unwrap()).await };
    tokio::time::timeout(std::time::Duration::from_secs(30), fut)
        .await
        .unwrap()
}

fn multipart() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn metric(metrics: &str, prefix: &str, needles: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn transcription_and_translation_reach_the_engine_byte_for_byte() {
    let (url, _sim) = sim(&["whisper"]).await;
    let lumen = Lumen::start(builder(&[&url]).auth(keyed(&["whisper"])).build().unwrap()).await;
    let file = audio(200_000);
    let body = form(&[("file", &file), ("model", b"whisper"), ("language", b"en")]);
    let r = upload(
        &lumen,
        "/v1/audio/transcriptions",
        &multipart(),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    let j = r.json();
    assert_eq!(j["text"], "transcribed 200000 bytes of audio");
    assert_eq!(j["usage"], json!({"type": "duration", "seconds": 7}));
    // Unchanged model: the engine got exactly the client's bytes.
    assert_eq!(j["sim"]["file_bytes"], 200_000);
    assert_eq!(j["sim"]["body_fnv1a"], format!("{:016x}", fnv1a(&body)));

    // The text format comes back as the engine's text, with its content type.
    let body = form(&[
        ("model", b"whisper"),
        ("file", &file[..1000]),
        ("response_format", b"text"),
    ]);
    let r = upload(&lumen, "/v1/audio/translations", &multipart(), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.text(), "translated 1000 bytes of audio\n");

    // Counted as requests of their own endpoints, billed no tokens (seconds are not tokens).
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"endpoint="transcriptions""#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"endpoint="translations""#), "{metrics}");
    assert_eq!(
        metric(&metrics, "lumen_tokens_total", &[r#"model="whisper""#]),
        0
    );
}

#[tokio::test]
async fn an_alias_is_rewritten_in_the_form_and_only_there() {
    let (url, _sim) = sim(&["openai/whisper-large-v3"]).await;
    let mut gov = GovernanceConfig {
        exposed_models: Some(vec!["whisper-1".into()]),
        ..Default::default()
    };
    gov.aliases
        .insert("whisper-1".into(), "openai/whisper-large-v3".into());
    let lumen = Lumen::start(
        builder(&[&url])
            .governance(gov)
            .auth(keyed(&["whisper-1"]))
            .build()
            .unwrap(),
    )
    .await;
    let file = audio(300_000);
    let body = form(&[("file", &file), ("model", b"whisper-1")]);
    let r = upload(
        &lumen,
        "/v1/audio/transcriptions",
        &multipart(),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["sim"]["model"], "openai/whisper-large-v3");
    // The file is binary: compare the spliced bytes, not a lossy string.
    let mut sent = body.clone();
    let at = find(&sent, b"\r\n\r\nwhisper-1\r\n").unwrap() + 4;
    sent.splice(
        at..at + "whisper-1".len(),
        b"openai/whisper-large-v3".iter().copied(),
    );
    assert_eq!(
        sent.len(),
        body.len() + "openai/whisper-large-v3".len() - "whisper-1".len()
    );
    assert_eq!(j["sim"]["body_fnv1a"], format!("{:016x}", fnv1a(&sent)));
    assert_eq!(j["sim"]["file_bytes"], 300_000);

    // The engine's id is not the key's: as absent as it is for chat.
    let body = form(&[("file", b"x"), ("model", b"openai/whisper-large-v3")]);
    let r = upload(&lumen, "/v1/audio/transcriptions", &multipart(), body).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_found");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn bad_forms_get_a_clear_400_and_big_ones_413() {
    let (url, sim) = sim(&["whisper"]).await;
    let lumen = Lumen::start(
        builder(&[&url])
            .auth(keyed(&["whisper"]))
            .max_body_bytes(64 * 1024)
            .build()
            .unwrap(),
    )
    .await;
    let path = "/v1/audio/transcriptions";
    let cases: Vec<(&str, String, Vec<u8>, Option<&str>)> = vec![
        ("no model", multipart(), form(&[("file", b"abc")]), Some("model")),
        ("not multipart", "application/json".into(), b"{\"model\":\"whisper\"}".to_vec(), None),
        ("no boundary", "multipart/form-data".into(), form(&[("model", b"whisper")]), None),
        (
            "broken part header",
            multipart(),
            format!("--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--{BOUNDARY}--\r\n").into_bytes(),
            None,
        ),
        (
            "huge part header",
            multipart(),
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; x=\"{}\"\r\n\r\nx\r\n--{BOUNDARY}--\r\n",
                "a".repeat(20_000)
            )
            .into_bytes(),
            None,
        ),
        ("cut short", multipart(), form(&[("model", b"whisper")])[..30].to_vec(), None),
        ("two models", multipart(), form(&[("model", b"whisper"), ("model", b"other")]), Some("model")),
        ("stream", multipart(), form(&[("model", b"whisper"), ("stream", b"true")]), Some("stream")),
    ];
    for (what, ct, body, param) in cases {
        let r = upload(&lumen, path, &ct, body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error", "{what}");
        assert!(!e["message"].as_str().unwrap().is_empty());
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{what}");
        }
    }
    // Over the body limit, wherever the model is: 413.
    let big = form(&[("file", &audio(100_000)), ("model", b"whisper")]);
    let r = upload(&lumen, path, &multipart(), big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(sim.generation_count(), 0, "no engine was asked");
}

#[tokio::test]
async fn a_failing_engine_is_retried_and_a_dead_one_skipped() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (a, sa) = sim(&["whisper"]).await;
    let (b, sb) = sim(&["whisper"]).await;
    sa.set_faults(Faults {
        fail_next: 1,
        fail_status: Some(503),
        ..Faults::default()
    });
    sb.set_faults(Faults {
        fail_next: 1,
        fail_status: Some(503),
        ..Faults::default()
    });
    let lumen = Lumen::start(
        builder(&[&dead, &a, &b])
            .auth(keyed(&["whisper"]))
            .build()
            .unwrap(),
    )
    .await;
    let file = audio(50_000);
    for _ in 0..3 {
        let body = form(&[("file", &file), ("model", b"whisper")]);
        let r = upload(
            &lumen,
            "/v1/audio/transcriptions",
            &multipart(),
            body.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        // Every attempt sent the same bytes.
        assert_eq!(
            r.json()["sim"]["body_fnv1a"],
            format!("{:016x}", fnv1a(&body))
        );
    }
    assert_eq!(
        sa.generation_count() + sb.generation_count(),
        5,
        "3 answers, 2 retries"
    );
}

#[tokio::test]
async fn extra_json_paths_are_routed_by_model_billed_and_never_shadow_lumen() {
    let (url, sim) = sim(&["engine-m"]).await;
    let mut gov = GovernanceConfig {
        exposed_models: Some(vec!["m".into(), "other".into()]),
        ..Default::default()
    };
    gov.aliases.insert("m".into(), "engine-m".into());
    let lumen = Lumen::start(
        builder(&[&url])
            .governance(gov)
            .auth(keyed(&["m"]))
            .extra_json_paths(vec!["/v1/sim/echo".into()])
            .build()
            .unwrap(),
    )
    .await;
    let auth = format!("Bearer {KEY}");
    let post = |body: serde_json::Value| {
        let (u, a) = (lumen.url("/v1/sim/echo"), auth.clone());
        async move {
            send(
                http::Method::POST,
                &u,
                &body.to_string(),
                &[("authorization", &a)],
            )
            .await
        }
    };
    let r = post(json!({"model": "m", "input": "hello there"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["echo"]["model"], "engine-m", "the engine's id reached it");
    assert_eq!(j["echo"]["input"], "hello there");
    assert_eq!(j["model"], "m", "the caller's name in the answer");
    let billed = j["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(billed > 0);
    // A model the key may not use, and one nobody serves: 404 as for chat.
    for model in ["other", "nope"] {
        let r = post(json!({"model": model})).await;
        assert_eq!(r.status, 404, "{model}: {}", r.text());
    }
    // Any stream an engine could read as true is refused, not only `true`.
    for stream in [json!(true), json!(1), json!("true")] {
        let r = post(json!({"model": "m", "stream": stream})).await;
        assert_eq!(r.status, 400, "{stream}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "stream");
    }
    // A path not configured is not forwarded.
    let r = send(
        http::Method::POST,
        &lumen.url("/v1/sim/other"),
        "{}",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 404);
    // Without the key: 401, as any API path.
    let r = send(
        http::Method::POST,
        &lumen.url("/v1/sim/echo"),
        r#"{"model":"m"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(sim.generation_count(), 1);
    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(metrics.contains(r#"endpoint="extra""#), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "lumen_tokens_total",
            &[r#"model="m""#, r#"token_type="input""#]
        ),
        billed,
        "{metrics}"
    );

    // A path Lumen serves itself, or no path at all, is refused at startup.
    for bad in [
        "/v1/chat/completions",
        "/health",
        "/admin/keys",
        "/metrics",
        "v1/foo",
        "/a?b",
    ] {
        let built = builder(&[&url]).extra_json_paths(vec![bad.into()]).build();
        assert!(built.is_err(), "{bad} was accepted");
    }
}
