//! Mid-stream continuation end to end: a stream that breaks after commit is finished by another
//! engine, asked to continue the partial answer; the caller reads one uninterrupted stream.
//!
//! The faults ride in the request's `"sim"` object, so every engine sees them; they are chosen
//! so that only the first part trips them (a cut after 40 tokens, while the continuation is
//! asked for the 20 left).

use std::time::Duration;

use lumen_governance::GovernanceConfig;
use lumen_governance::ModelConfig;
use lumen_server::config::TimeoutsConfig;
use lumen_sim::Simulator;
use lumen_tests::*;
use serde_json::{Value, json};

fn continuing() -> GovernanceConfig {
    GovernanceConfig {
        stream_continuation: true,
        // The stream breaks on the first backend; its continuation goes to the next.
        policy: lumen_governance::Policy::RoundRobin,
        ..GovernanceConfig::default()
    }
}

fn chat_body(faults: Value, max_tokens: u32) -> String {
    json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Tell me about Lumen."}],
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
        "sim": faults,
    })
    .to_string()
}

/// The answer a healthy engine gives in one piece (a fresh simulator, asked directly).
async fn whole_answer(max_tokens: u32) -> String {
    let (engine, _sim) = sim(&["m"]).await;
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Tell me about Lumen."}],
        "max_tokens": max_tokens,
    });
    let r = post(&format!("{engine}/v1/chat/completions"), &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The stream's events, parsed, and the text their deltas spell.
pub(crate) fn events(r: &Reply) -> (Vec<Value>, String) {
    let data = r.sse_data();
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        r.text()
    );
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text = chat_text(&chunks);
    (chunks, text)
}

/// The text chat chunks' deltas spell.
fn chat_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The request most tests send: 60 tokens, the first engine cut after 40.
async fn cut_at_40_of_60(lumen: &Lumen) -> Reply {
    post(
        &lumen.url("/v1/chat/completions"),
        &chat_body(json!({"drop_after": 40}), 60),
    )
    .await
}

/// The generation requests an engine received (health and discovery left out).
fn generations(sim: &Simulator) -> Vec<Value> {
    sim.records()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions" || r.path == "/v1/completions")
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn a_stream_cut_mid_answer_is_finished_on_another_engine() {
    let (a, sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&a, &b]).governance(continuing()).build().unwrap()).await;
    let r = cut_at_40_of_60(&lumen).await;
    assert_eq!(r.status, 200);
    let (chunks, text) = events(&r);
    assert_eq!(text, whole_answer(60).await, "one uninterrupted answer");
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "no error event: {}",
        r.text()
    );
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("role").is_some())
        .count();
    assert_eq!(roles, 1, "the continuation's opening chunk is not repeated");
    let ids: std::collections::BTreeSet<_> =
        chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one stream id throughout: {ids:?}");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 60, "40 streamed + 20 continued");

    // The first engine was cut; the second was asked to continue the 40 tokens it streamed.
    let (first, second) = (generations(&sa), generations(&sb));
    assert_eq!((first.len(), second.len()), (1, 1));
    let cont = &second[0];
    assert_eq!(cont["continue_final_message"], true);
    assert_eq!(cont["add_generation_prompt"], false);
    assert_eq!(cont["max_tokens"], 20, "the limit less what was sent");
    let messages = cont["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["role"], "assistant");
    let partial = messages[1]["content"].as_str().unwrap();
    assert!(
        text.starts_with(partial) && partial.len() < text.len(),
        "{partial:?}"
    );
    // Usage sums both parts: the second engine read the prompt and the partial answer (the
    // simulator counts a token per 4 bytes of messages JSON); the first read the prompt alone,
    // which Lumen takes as the second's less the 40 tokens of the partial answer.
    let second = serde_json::to_string(&cont["messages"]).unwrap().len() as u64 / 4;
    assert_eq!(usage["prompt_tokens"], second + (second - 40));
    assert_eq!(usage["total_tokens"], second + (second - 40) + 60);

    let metrics = get(&lumen.url("/metrics")).await.text();
    assert!(
        metrics.lines().any(|l| l
            == r#"lumen_stream_continuations_total{model="m",reason="protocol",outcome="resumed"} 1"#
            || l == r#"lumen_stream_continuations_total{model="m",reason="transport",outcome="resumed"} 1"#
            || l == r#"lumen_stream_continuations_total{model="m",reason="stream_interrupted",outcome="resumed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_continuation_a_cut_stream_ends_with_one_error_event() {
    let (a, _sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let lumen = Lumen::in_front_of(&[&a, &b]).await;
    let r = cut_at_40_of_60(&lumen).await;
    let data = r.sse_data();
    let last_two = &data[data.len() - 2..];
    let error: Value = serde_json::from_str(&last_two[0]).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted", "{}", r.text());
    assert_eq!(last_two[1], "[DONE]");
    assert!(
        generations(&sb).is_empty(),
        "off by default: nobody else asked"
    );
}

#[tokio::test]
async fn a_stalled_stream_and_a_malformed_event_are_continued_too() {
    for faults in [json!({"stall_after": 30}), json!({"garbage_after": 30})] {
        let (a, _sa) = sim(&["m"]).await;
        let (b, sb) = sim(&["m"]).await;
        let lumen = Lumen::start(
            builder(&[&a, &b])
                .governance(continuing())
                .timeouts_config(TimeoutsConfig {
                    idle_ms: Some(300),
                    ..TimeoutsConfig::default()
                })
                .build()
                .unwrap(),
        )
        .await;
        let r = post(
            &lumen.url("/v1/chat/completions"),
            &chat_body(faults.clone(), 50),
        )
        .await;
        let (_, text) = events(&r);
        assert_eq!(text, whole_answer(50).await, "{faults}");
        assert_eq!(generations(&sb).len(), 1, "{faults}");
        // Lumen is healthy afterwards.
        let r = post(&lumen.url("/v1/chat/completions"), &chat_body(json!({}), 3)).await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test]
async fn an_engine_that_refuses_the_prefill_is_skipped_and_never_shown() {
    // b0 cuts the answer; b1 refuses prefills (a 400), b2 continues.
    let (a, _sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let (c, sc) = sim(&["m"]).await;
    sb.set_faults(Faults {
        reject_prefill: true,
        ..Faults::default()
    });
    let lumen = Lumen::start(
        builder(&[&a, &b, &c])
            .governance(continuing())
            .build()
            .unwrap(),
    )
    .await;
    let r = cut_at_40_of_60(&lumen).await;
    let (_, text) = events(&r);
    assert_eq!(text, whole_answer(60).await);
    assert_eq!(
        generations(&sb).len(),
        1,
        "the second engine was asked and refused"
    );
    assert_eq!(generations(&sc).len(), 1, "the third engine finished it");

    // With no engine left that accepts, the caller gets the original failure in-band, never
    // the refusal.
    sc.set_faults(Faults {
        reject_prefill: true,
        ..Faults::default()
    });
    sb.clear_records();
    let r = cut_at_40_of_60(&lumen).await;
    let data = r.sse_data();
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted", "{error}");
    assert!(!r.text().contains("prefill"), "{}", r.text());
    assert_eq!(data.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn a_stream_is_continued_on_the_fallback_when_its_pool_cannot() {
    // One engine for the primary (it cuts the stream), one for the fallback.
    let (p, _sp) = sim(&["primary"]).await;
    let (f, sf) = sim(&["fallback"]).await;
    let mut gov = GovernanceConfig::default();
    gov.fallbacks
        .insert("primary".into(), vec!["fallback".into()]);
    gov.models.insert(
        "primary".into(),
        ModelConfig {
            stream_continuation: Some(true),
            ..ModelConfig::default()
        },
    );
    let lumen = Lumen::start(builder(&[&p, &f]).governance(gov).build().unwrap()).await;
    let body = chat_body(json!({"drop_after": 20}), 30).replace("\"m\"", "\"primary\"");
    let r = post(&lumen.url("/v1/chat/completions"), &body).await;
    let (chunks, text) = events(&r);
    assert_eq!(text, whole_answer(30).await);
    assert_eq!(chunks[0]["model"], "primary", "{}", r.text());
    assert_eq!(
        chunks.last().unwrap()["model"],
        "fallback",
        "the continuation names the model that served it"
    );
    let cont = &generations(&sf)[0];
    assert_eq!(cont["model"], "fallback");
    assert_eq!(cont["max_tokens"], 10);
}

#[tokio::test]
async fn completions_are_continued_by_extending_the_prompt() {
    let (a, _sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&a, &b]).governance(continuing()).build().unwrap()).await;
    let body = json!({
        "model": "m", "prompt": "Once upon a time", "max_tokens": 25, "stream": true,
        "sim": {"drop_after": 15},
    });
    let r = post(&lumen.url("/v1/completions"), &body.to_string()).await;
    let data = r.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    let (reference, _r) = sim(&["m"]).await;
    let whole = post(
        &format!("{reference}/v1/completions"),
        &json!({"model": "m", "prompt": "Once upon a time", "max_tokens": 25}).to_string(),
    )
    .await;
    assert_eq!(text, whole.json()["choices"][0]["text"].as_str().unwrap());
    let cont = &generations(&sb)[0];
    let prompt = cont["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("Once upon a time") && prompt.len() > 16,
        "{prompt}"
    );
    assert_eq!(cont["max_tokens"], 10);
    assert!(cont.get("continue_final_message").is_none());
}

#[tokio::test]
async fn a_client_that_leaves_during_a_continuation_stops_it() {
    let (a, _sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    // The continuation's engine is slow to start; the client leaves meanwhile.
    sb.set_faults(Faults {
        ttft_ms: Some(60_000),
        ..Faults::default()
    });
    let lumen = Lumen::start(builder(&[&a, &b]).governance(continuing()).build().unwrap()).await;
    let resp = post_streaming(
        &lumen.url("/v1/chat/completions"),
        &chat_body(json!({"drop_after": 5}), 20),
    )
    .await;
    eventually(Duration::from_secs(5), || sb.running() == 1).await;
    drop(resp);
    eventually(Duration::from_secs(5), || sb.running() == 0).await;
}

/// A gateway over the given engines, each with its own way of continuing (or none).
fn with_styles(engines: &[(&str, lumen_backend::Continuation)]) -> lumen_server::GatewayBuilder {
    let mut b = lumen_server::Gateway::builder()
        .health(no_health_checks())
        .governance(continuing());
    for (i, (url, style)) in engines.iter().enumerate() {
        let mut cfg = lumen_backend_vllm::VllmConfig::new(format!("b{i}"), *url);
        cfg.continuation = *style;
        let backend = lumen_backend_vllm::VllmBackend::new(cfg).unwrap();
        b = b.backend(format!("b{i}"), backend, None);
    }
    b
}

#[tokio::test]
async fn each_engine_is_asked_the_way_it_continues_and_one_that_cannot_is_never_asked() {
    use lumen_backend::Continuation;
    let (a, _sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let (c, sc) = sim(&["m"]).await;
    let lumen = Lumen::start(
        with_styles(&[
            (&a, Continuation::ContinueFinalMessage),
            (&b, Continuation::None),
            (&c, Continuation::Prefill),
        ])
        .build()
        .unwrap(),
    )
    .await;
    let r = cut_at_40_of_60(&lumen).await;
    let (_, text) = events(&r);
    assert_eq!(text, whole_answer(60).await);
    assert!(
        generations(&sb).is_empty(),
        "an engine that cannot continue is never asked"
    );
    let cont = &generations(&sc)[0];
    assert_eq!(cont["messages"][1]["role"], "assistant", "a plain prefill");
    assert!(cont.get("continue_final_message").is_none());
    assert!(cont.get("add_generation_prompt").is_none());
}

#[tokio::test]
async fn a_stream_that_breaks_twice_is_continued_twice_and_usage_sums_three_parts() {
    let (a, _sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let (c, sc) = sim(&["m"]).await;
    let lumen = Lumen::start(
        builder(&[&a, &b, &c])
            .governance(continuing())
            .build()
            .unwrap(),
    )
    .await;
    // Every part is cut after 10 tokens: 30 = 10 (a) + 10 (b, asked for 20) + 10 (c, asked for 10).
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &chat_body(json!({"drop_after": 10}), 30),
    )
    .await;
    let (chunks, text) = events(&r);
    assert_eq!(text, whole_answer(30).await);
    assert_eq!(generations(&sb)[0]["max_tokens"], 20);
    let last = &generations(&sc)[0];
    assert_eq!(last["max_tokens"], 10);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 30);
    // The last engine's prompt (prompt + 20 tokens) stands for P + 20: the first part read P,
    // the second P + 10.
    let p3 = serde_json::to_string(&last["messages"]).unwrap().len() as u64 / 4;
    assert_eq!(usage["prompt_tokens"], p3 + (p3 - 20) + (p3 - 10));

    // A third break is reported, not continued.
    let (d, _sd) = sim(&["m"]).await;
    let lumen = Lumen::start(
        builder(&[&a, &b, &c, &d])
            .governance(continuing())
            .build()
            .unwrap(),
    )
    .await;
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &chat_body(json!({"drop_after": 5}), 40),
    )
    .await;
    let data = r.sse_data();
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted");
    let chunks: Vec<Value> = data[..data.len() - 2]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text = chat_text(&chunks);
    assert_eq!(
        text,
        whole_answer(15).await,
        "three parts of 5 tokens, then the error"
    );
}

/// A simulator in llama.cpp's flavour: it repeats a final assistant message at the start of its
/// answer unless asked with `continue_final_message`, and sends no running usage.
async fn llama_sim() -> (String, Simulator) {
    sim_with(lumen_sim::SimConfig {
        models: vec!["m".to_owned()],
        flavor: lumen_sim::Flavor::LlamaCpp,
        ..lumen_sim::SimConfig::default()
    })
    .await
}

/// Lumen from configuration over `kind = "llamacpp"` backends `b0`, `b1`, ..., continuation on.
async fn llama_cpp_fleet(
    urls: &[&str],
    continuation: Option<lumen_backend::Continuation>,
) -> Lumen {
    let cfg = lumen_server::config::LumenConfig {
        backends: urls
            .iter()
            .enumerate()
            .map(|(i, u)| lumen_server::config::BackendConfig {
                name: Some(format!("b{i}")),
                url: (*u).to_owned(),
                kind: lumen_server::config::EngineKind::Llamacpp,
                continuation,
                ..Default::default()
            })
            .collect(),
        routing: continuing(),
        health: no_health_checks(),
        ..Default::default()
    };
    Lumen::start(lumen_server::Gateway::from_config(&cfg).unwrap()).await
}

/// The tokens a continuation was asked for (its `max_tokens`).
fn asked(cont: &Value) -> u32 {
    u32::try_from(cont["max_tokens"].as_u64().unwrap()).unwrap()
}

#[tokio::test]
async fn a_llama_cpp_backend_continues_without_sending_the_answer_twice() {
    let (a, _sa) = llama_sim().await;
    let (b, sb) = llama_sim().await;
    let lumen = llama_cpp_fleet(&[&a, &b], None).await;
    let r = cut_at_40_of_60(&lumen).await;
    let (chunks, text) = events(&r);
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{}",
        r.text()
    );
    let cont = &generations(&sb)[0];
    assert_eq!(
        cont["continue_final_message"], true,
        "the default continuation for kind = llamacpp"
    );
    // llama.cpp sends no running token count, so the 40 tokens sent are estimated (4 bytes a
    // token: more than 40 of the simulator's words), and fewer than 20 are asked for.
    let asked = asked(cont);
    assert!((1..=20).contains(&asked), "{asked}");
    assert_eq!(
        text,
        whole_answer(40 + asked).await,
        "the partial answer once, then the rest"
    );
}

#[tokio::test]
async fn the_seam_drops_a_copy_of_the_answer_whatever_the_engine() {
    // `continuation = "prefill"` on llama.cpp: the engine repeats the partial answer before
    // continuing it, as llama-server does; Lumen drops the copy.
    let (a, _sa) = llama_sim().await;
    let (b, sb) = llama_sim().await;
    let lumen = llama_cpp_fleet(&[&a, &b], Some(lumen_backend::Continuation::Prefill)).await;
    let r = cut_at_40_of_60(&lumen).await;
    let (_, text) = events(&r);
    let cont = &generations(&sb)[0];
    assert!(
        cont.get("continue_final_message").is_none(),
        "a plain prefill"
    );
    let partial = cont["messages"][1]["content"].as_str().unwrap();
    assert_eq!(partial, whole_answer(40).await);
    assert_eq!(text.matches(partial).count(), 1, "{text}");
    assert_eq!(text, whole_answer(40 + asked(cont)).await);
}

#[tokio::test]
async fn a_continuation_counts_tokens_not_chunks() {
    // Three tokens a chunk, cut after 40 tokens (14 chunks) of 60.
    let body = chat_body(json!({"drop_after": 40, "tokens_per_chunk": 3}), 60);
    // vLLM sends its running count when asked (Lumen asks on models it may continue): the
    // continuation is asked for exactly the 20 tokens left, and usage adds up.
    let (a, _sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&a, &b]).governance(continuing()).build().unwrap()).await;
    let r = post(&lumen.url("/v1/chat/completions"), &body).await;
    let (chunks, text) = events(&r);
    assert_eq!(asked(&generations(&sb)[0]), 20);
    assert_eq!(text, whole_answer(60).await);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 60, "{usage}");
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "the running counts Lumen asked for are not shown to a caller who did not ask"
    );

    // An engine without running counts (llama.cpp): the estimate still never lets the answer
    // run past `max_tokens`.
    let (a, _sa) = llama_sim().await;
    let (b, sb) = llama_sim().await;
    let lumen = llama_cpp_fleet(&[&a, &b], None).await;
    let r = post(&lumen.url("/v1/chat/completions"), &body).await;
    let (chunks, text) = events(&r);
    let asked = asked(&generations(&sb)[0]);
    assert!(40 + asked <= 60, "{asked}");
    assert_eq!(text, whole_answer(40 + asked).await);
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        60,
        "the first part's estimate plus the tokens the second generated"
    );
}

#[tokio::test]
async fn echo_and_structured_output_are_never_continued() {
    let (a, sa) = sim(&["m"]).await;
    let (b, sb) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&a, &b]).governance(continuing()).build().unwrap()).await;
    let mut seen = 0;
    for extra in [
        json!({"echo": true}),
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}}),
        json!({"response_format": {"type": "json_object"}}),
    ] {
        let mut body: Value =
            serde_json::from_str(&chat_body(json!({"drop_after": 10}), 30)).unwrap();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = post(&lumen.url("/v1/chat/completions"), &body.to_string()).await;
        let data = r.sse_data();
        let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(error["error"]["code"], "stream_interrupted", "{extra}");
        let asked = generations(&sa).len() + generations(&sb).len();
        assert_eq!(asked, seen + 1, "{extra}: nobody was asked to continue");
        seen = asked;
    }
}

#[tokio::test]
async fn a_fallback_model_on_the_engine_that_broke_finishes_the_answer() {
    // One engine serves both models (llama.cpp's router mode, Ollama, a multi-model vLLM).
    let (url, s) = sim(&["primary", "fallback"]).await;
    let mut gov = GovernanceConfig::default();
    gov.fallbacks
        .insert("primary".into(), vec!["fallback".into()]);
    gov.models.insert(
        "primary".into(),
        ModelConfig {
            stream_continuation: Some(true),
            ..ModelConfig::default()
        },
    );
    let lumen = Lumen::start(builder(&[&url]).governance(gov).build().unwrap()).await;
    let body = chat_body(json!({"drop_after": 20}), 30).replace("\"m\"", "\"primary\"");
    let r = post(&lumen.url("/v1/chat/completions"), &body).await;
    let (chunks, text) = events(&r);
    assert_eq!(text, whole_answer(30).await, "{}", r.text());
    assert_eq!(chunks.last().unwrap()["model"], "fallback");
    let models: Vec<Value> = generations(&s).iter().map(|g| g["model"].clone()).collect();
    assert_eq!(
        models,
        [json!("primary"), json!("fallback")],
        "the same engine, asked again for the fallback model"
    );
}

#[tokio::test]
async fn when_no_engine_can_continue_the_log_says_why_and_what_was_relayed() {
    let (url, _s) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&url]).governance(continuing()).build().unwrap()).await;
    let (logs, _guard) = capture_logs();
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &chat_body(json!({"drop_after": 20}), 30),
    )
    .await;
    let data = r.sse_data();
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted");
    let why = logs.with_message("no engine could continue the stream");
    assert_eq!(why.len(), 1, "{:?}", logs.lines());
    assert_eq!(
        why[0]["reason"], "already_failed",
        "the only backend is healthy; its stream of this model broke: {}",
        why[0]
    );
    let access = logs.access();
    let line = access.last().unwrap();
    assert_eq!(
        line["output_tokens"], 20,
        "the engine's running count: {line}"
    );
    assert_eq!(line["tokens_estimated"], true, "{line}");
}

#[tokio::test]
async fn a_continued_stream_is_logged_and_counted_against_every_backend_that_served_it() {
    let (a, _sa) = sim(&["m"]).await;
    let (b, _sb) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&a, &b]).governance(continuing()).build().unwrap()).await;
    let (logs, _guard) = capture_logs();
    let r = cut_at_40_of_60(&lumen).await;
    let (_, text) = events(&r);
    assert_eq!(text, whole_answer(60).await);
    let access = logs.access();
    let line = access
        .last()
        .unwrap_or_else(|| panic!("{:#?}", logs.lines()));
    assert_eq!(
        line["backend"], "b1",
        "the backend that finished it: {line}"
    );
    assert_eq!(line["backends"], "b0,b1", "{line}");
    assert_eq!(line["continuations"], 1);
    assert_eq!(line["output_tokens"], 60);
    assert_eq!(line["tokens_estimated"], false);
    let metrics = get(&lumen.url("/metrics")).await.text();
    let requests = |backend: &str| {
        metrics.lines().any(|l| {
            l == format!(
                r#"lumen_requests_total{{model="m",backend="{backend}",endpoint="chat",status_class="2xx"}} 1"#
            )
        })
    };
    assert!(requests("b1"), "{metrics}");
    assert!(!requests("b0"), "{metrics}");
}
