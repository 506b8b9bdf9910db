//! The core on its own: a scripted in-memory `Backend`, a paused clock, no HTTP.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use futures::StreamExt;
use lumen_backend::{ChunkStream, Health};
use lumen_openai_types::{ChatChoice, ChatChunkChoice, ChatDelta, ChatMessage, Chunk, ErrorObject};
use lumen_resilience::BreakerState;
use lumen_resilience::config::BackoffKind;

use super::*;

/// What one scripted call does.
#[derive(Clone, Copy, Debug)]
enum Step {
    Ok,
    /// HTTP 503 from the engine (retryable, the model's fault).
    Unavailable,
    /// Connection refused (the whole engine is down).
    Refused,
    /// A stream whose first chunk arrives, then fails.
    CutAfterFirst,
    /// Accepts the request and never answers.
    Silent,
    /// 400: the prompt is longer than the model's context.
    TooLong,
    /// 400: a content-policy refusal.
    Policy,
    /// 429 with `Retry-After: 2`.
    Throttled,
    /// A stream whose first chunk is a tool call, then fails.
    ToolCallThenCut,
    /// Answers after 100 ms (a busy engine).
    Slow,
}

/// An engine that plays a script per model (then `Ok` for ever) and logs each call.
struct Scripted {
    name: &'static str,
    script: Mutex<HashMap<String, VecDeque<Step>>>,
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl Scripted {
    fn new(
        name: &'static str,
        script: &[(&str, &[Step])],
        calls: &Arc<Mutex<Vec<(String, String)>>>,
    ) -> Self {
        Self {
            name,
            script: Mutex::new(
                script
                    .iter()
                    .map(|(m, s)| ((*m).to_owned(), s.iter().copied().collect()))
                    .collect(),
            ),
            calls: calls.clone(),
        }
    }

    fn next(&self, model: &str) -> Step {
        self.calls
            .lock()
            .unwrap()
            .push((self.name.to_owned(), model.to_owned()));
        self.script
            .lock()
            .unwrap()
            .get_mut(model)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Step::Ok)
    }

    fn fail(&self, step: Step) -> BackendError {
        match step {
            Step::Throttled => BackendError::Upstream {
                backend: self.name.into(),
                status: 429,
                error: Box::new(ErrorObject::new("slow down", "rate_limit_error")),
                retry_after: Some(Duration::from_secs(2)),
            },
            Step::Policy => BackendError::Upstream {
                backend: self.name.into(),
                status: 400,
                error: Box::new(ErrorObject::new(
                    "The prompt was refused by the content policy.",
                    "BadRequestError",
                )),
                retry_after: None,
            },
            Step::TooLong => BackendError::Upstream {
                backend: self.name.into(),
                status: 400,
                error: Box::new(ErrorObject::new(
                    "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.",
                    "BadRequestError",
                )),
                retry_after: None,
            },
            Step::Refused => BackendError::Connect {
                backend: self.name.into(),
                source: "refused".into(),
            },
            _ => BackendError::Upstream {
                backend: self.name.into(),
                status: 503,
                error: Box::new(ErrorObject::new("loading", "server_error")),
                retry_after: None,
            },
        }
    }
}

fn chunk(model: &str, text: &str) -> Chunk<ChatCompletionChunk> {
    Chunk::new(ChatCompletionChunk {
        model: model.into(),
        choices: vec![ChatChunkChoice {
            delta: ChatDelta {
                content: Some(text.into()),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    })
}

impl Backend for Scripted {
    async fn chat(
        &self,
        req: ChatCompletionRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<ChatCompletionResponse>, BackendError> {
        let step = self.next(&req.model);
        if let Step::Slow = step {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match step {
            Step::Ok | Step::CutAfterFirst | Step::Slow => Ok(Reply::new(ChatCompletionResponse {
                model: req.model,
                choices: vec![ChatChoice {
                    message: ChatMessage::new("assistant", self.name),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            s => Err(self.fail(s)),
        }
    }

    async fn chat_stream(
        &self,
        req: ChatCompletionRequest,
        _cx: &RequestContext,
    ) -> Result<ChunkStream<ChatCompletionChunk>, BackendError> {
        let name = self.name;
        match self.next(&req.model) {
            Step::Silent => Ok(Box::pin(futures::stream::pending())),
            Step::Ok => Ok(Box::pin(futures::stream::iter(vec![
                Ok(chunk(&req.model, name)),
                Ok(chunk(&req.model, "!")),
            ]))),
            Step::CutAfterFirst => Ok(Box::pin(futures::stream::iter(vec![
                Ok(chunk(&req.model, name)),
                Err(BackendError::StreamInterrupted {
                    backend: name.into(),
                    message: "engine died".into(),
                    error: None,
                }),
            ]))),
            Step::ToolCallThenCut => {
                let mut call = chunk(&req.model, "");
                call.get_mut().choices[0].delta.extra.insert(
                    "tool_calls".into(),
                    serde_json::json!([{"index": 0, "function": {"name": "f"}}]),
                );
                Ok(Box::pin(futures::stream::iter(vec![
                    Ok(call),
                    Err(BackendError::StreamInterrupted {
                        backend: name.into(),
                        message: "engine died".into(),
                        error: None,
                    }),
                ])))
            }
            s => Err(self.fail(s)),
        }
    }

    async fn completions(
        &self,
        _req: CompletionRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<CompletionResponse>, BackendError> {
        Err(self.fail(Step::Unavailable))
    }

    async fn completions_stream(
        &self,
        _req: CompletionRequest,
        _cx: &RequestContext,
    ) -> Result<ChunkStream<CompletionChunk>, BackendError> {
        Err(self.fail(Step::Unavailable))
    }

    async fn embeddings(
        &self,
        _req: EmbeddingRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<EmbeddingResponse>, BackendError> {
        Err(self.fail(Step::Unavailable))
    }

    async fn models(&self, _cx: &RequestContext) -> Result<ModelList, BackendError> {
        Ok(ModelList::new(vec![Model::new("a"), Model::new("b")]))
    }

    async fn health(&self) -> Health {
        Health::Healthy
    }

    fn continuation(&self) -> Continuation {
        Continuation::ContinueFinalMessage
    }
}

/// Records attempts and retry delays as the core reports them.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Observer for Seen {
    fn event(&self, e: &Event<'_>) {
        let line = match e {
            Event::AttemptStarted {
                attempt,
                model,
                backend,
                ..
            } => format!("attempt {attempt} {model}@{backend}"),
            Event::Retrying { delay, reason, .. } => {
                format!("retry in {}ms after {reason}", delay.as_millis())
            }
            Event::Fallback { from, to, reason } => format!("fallback {from} -> {to} ({reason})"),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

fn ask(model: &str) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: model.into(),
        messages: vec![ChatMessage::new("user", "hi")].into(),
        ..Default::default()
    }
}

type Calls = Arc<Mutex<Vec<(String, String)>>>;

fn core(backends: Vec<Scripted>, breaker_after: u32, seen: &Arc<Seen>) -> Gateway {
    let mut b = Gateway::builder()
        // Failover in a known order: the first request to the first backend.
        .governance(GovernanceConfig {
            policy: lumen_governance::Policy::RoundRobin,
            ..GovernanceConfig::default()
        })
        .retry(RetryConfig {
            max_attempts: Some(3),
            backoff: BackoffKind::Linear,
            base_ms: Some(100),
            step_ms: Some(100),
            max_ms: Some(1_000),
            ..Default::default()
        })
        .breaker(BreakerSettings {
            consecutive_failures: breaker_after,
            cooldown_ms: Some(60_000),
            ..Default::default()
        })
        .observer(seen.clone());
    for s in backends {
        let name = s.name;
        b = b.backend(name, s, Some(vec!["a".into(), "b".into()]));
    }
    b.build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_is_retried_on_the_other_backend_after_the_backoff() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let gw = core(
        vec![
            Scripted::new("b0", &[("a", &[Step::Unavailable])], &calls),
            Scripted::new("b1", &[], &calls),
        ],
        0,
        &seen,
    );
    let cx = RequestContext::new("t");
    let start = Instant::now();
    let r = gw.chat(ask("a"), &cx).await.unwrap();
    assert_eq!(
        r.get().choices[0].message.content.as_ref().unwrap().text(),
        "b1"
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "one linear backoff"
    );
    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            "attempt 1 a@b0",
            "retry in 100ms after upstream_5xx",
            "attempt 2 a@b1"
        ]
    );
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "exactly one send per attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_model_opens_its_own_breaker_and_leaves_the_engines_other_models_in_rotation() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let bad = [Step::Unavailable; 10];
    let gw = core(vec![Scripted::new("b0", &[("a", &bad)], &calls)], 2, &seen);
    let cx = RequestContext::new("t");
    // Two failures in a row (two attempts of one request, both on b0): (b0, a) opens, so
    // the third attempt finds no backend for `a`, and the caller gets the engine's failure.
    let e = gw.chat(ask("a"), &cx).await.unwrap_err();
    assert!(matches!(e, GatewayError::Backend(_)), "{e:?}");
    let slot = &gw.router().slots()[0];
    assert_eq!(slot.backend.models.states()[0].1, BreakerState::Open);
    assert_eq!(slot.backend.breaker.state(), BreakerState::Closed);
    // Model `a` is out on this backend; model `b` on the same engine still serves.
    let e = gw.chat(ask("a"), &cx).await.unwrap_err();
    assert!(
        matches!(
            e,
            GatewayError::Governance(GovernanceError::NoHealthyBackend { .. })
        ),
        "{e:?}"
    );
    assert!(gw.chat(ask("b"), &cx).await.is_ok());
    let to_a = calls.lock().unwrap().iter().filter(|c| c.1 == "a").count();
    assert_eq!(to_a, 2, "no call reached the open (backend, model) pair");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_engine_takes_the_whole_backend_out() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let refused = [Step::Refused; 4];
    let gw = core(
        vec![
            Scripted::new("b0", &[("a", &refused)], &calls),
            Scripted::new("b1", &[], &calls),
        ],
        1,
        &seen,
    );
    let cx = RequestContext::new("t");
    assert!(gw.chat(ask("a"), &cx).await.is_ok(), "retried on b1");
    let b0 = gw
        .router()
        .slots()
        .into_iter()
        .find(|s| s.name == "b0")
        .unwrap();
    assert_eq!(b0.backend.breaker.state(), BreakerState::Open);
    calls.lock().unwrap().clear();
    // Model `b` never failed on b0, but b0 is out for every model.
    for _ in 0..4 {
        assert!(gw.chat(ask("b"), &cx).await.is_ok());
    }
    assert!(calls.lock().unwrap().iter().all(|c| c.0 == "b1"));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_retried_after_the_commit_point() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let gw = core(
        vec![
            Scripted::new("b0", &[("a", &[Step::CutAfterFirst])], &calls),
            Scripted::new("b1", &[], &calls),
        ],
        0,
        &seen,
    );
    let cx = RequestContext::new("t");
    let mut s = gw.chat_stream(ask("a"), &cx).await.unwrap();
    assert!(s.next().await.unwrap().is_ok(), "the first chunk commits");
    assert!(
        s.next().await.unwrap().is_err(),
        "the failure arrives in-band"
    );
    assert!(s.next().await.is_none());
    assert_eq!(calls.lock().unwrap().len(), 1, "no second attempt");
}

/// A silent engine costs the caller one first-byte deadline: the backend is not asked again by
/// this request, the next backend serves, and with none left the caller gets the timeout well
/// inside the total deadline.
#[tokio::test(start_paused = true)]
async fn a_silent_engine_is_asked_once_per_request() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let silent = [Step::Silent; 5];
    let mut b = Gateway::builder()
        .retry(RetryConfig {
            max_attempts: Some(3),
            backoff: BackoffKind::Linear,
            base_ms: Some(100),
            step_ms: Some(0),
            max_ms: Some(1_000),
            ..Default::default()
        })
        .breaker(BreakerSettings {
            consecutive_failures: 0,
            ..Default::default()
        })
        .timeouts(Timeouts {
            first_byte: Some(Duration::from_secs(2)),
            idle: Some(Duration::from_secs(10)),
            total: Some(Duration::from_secs(60)),
        })
        .observer(seen.clone());
    b = b.backend(
        "only",
        Scripted::new("only", &[("a", &silent)], &calls),
        Some(vec!["a".into()]),
    );
    let gw = b.build().unwrap();
    let cx = RequestContext::new("t");
    let start = Instant::now();
    let e = gw.chat_stream(ask("a"), &cx).await.err().unwrap();
    assert!(
        matches!(
            e,
            GatewayError::Backend(BackendError::Timeout {
                kind: TimeoutKind::FirstByte
            })
        ),
        "{e:?}"
    );
    assert_eq!(calls.lock().unwrap().len(), 1, "asked once");
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(2_100),
        "one first-byte deadline and one backoff, not three deadlines"
    );
}

/// Core for the fallback tests: engine `e1` serves `a` (failing as scripted) and engine `e2`
/// serves `b` and `big`; `a` falls back to `b`, and to `big` when the prompt is too long.
fn fallback_core(script: &[Step], seen: &Arc<Seen>, calls: &Calls) -> Gateway {
    let mut gov = GovernanceConfig::default();
    gov.fallbacks.insert("a".into(), vec!["b".into()]);
    gov.context_fallbacks.insert("a".into(), vec!["big".into()]);
    Gateway::builder()
        .governance(gov)
        .retry(RetryConfig {
            max_attempts: Some(2),
            backoff: BackoffKind::Linear,
            base_ms: Some(100),
            step_ms: Some(0),
            max_ms: Some(1_000),
            ..Default::default()
        })
        .breaker(BreakerSettings {
            consecutive_failures: 0,
            ..Default::default()
        })
        .observer(seen.clone())
        .backend(
            "e1",
            Scripted::new("e1", &[("a", script)], calls),
            Some(vec!["a".into()]),
        )
        .backend(
            "e2",
            Scripted::new("e2", &[], calls),
            Some(vec!["b".into(), "big".into()]),
        )
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_pool_that_cannot_serve_falls_back_to_the_next_model() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let gw = fallback_core(&[Step::Unavailable; 5], &seen, &calls);
    let cx = RequestContext::new("t");
    let r = gw.chat(ask("a"), &cx).await.unwrap();
    assert_eq!(r.get().model, "b", "the answer names the model that served");
    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            "attempt 1 a@e1",
            "retry in 100ms after upstream_5xx",
            "attempt 2 a@e1",
            "fallback a -> b (upstream_5xx)",
            "attempt 3 b@e2",
        ]
    );
    // The caller's key may not use `b`: no fallback, the engine's failure.
    calls.lock().unwrap().clear();
    let mut only_a = RequestContext::new("t2");
    only_a.models = Some(vec!["a".to_owned()].into());
    let gw = fallback_core(&[Step::Unavailable; 5], &seen, &calls);
    let e = gw.chat(ask("a"), &only_a).await.unwrap_err();
    assert!(
        matches!(
            e,
            GatewayError::Backend(BackendError::Upstream { status: 503, .. })
        ),
        "{e:?}"
    );
    assert!(calls.lock().unwrap().iter().all(|c| c.1 == "a"));
}

#[tokio::test(start_paused = true)]
async fn a_prompt_too_long_moves_once_to_the_larger_context_model() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let gw = fallback_core(&[Step::TooLong], &seen, &calls);
    let cx = RequestContext::new("t");
    let r = gw.chat(ask("a"), &cx).await.unwrap();
    assert_eq!(r.get().model, "big");
    let lines = seen.0.lock().unwrap().clone();
    assert_eq!(
        lines,
        [
            "attempt 1 a@e1",
            "fallback a -> big (context_length_exceeded)",
            "attempt 2 big@e2"
        ],
        "no retry on the same model"
    );
}

#[tokio::test(start_paused = true)]
async fn other_client_errors_never_fall_back() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let gw = fallback_core(&[Step::Policy], &seen, &calls);
    let e = gw
        .chat(ask("a"), &RequestContext::new("t"))
        .await
        .unwrap_err();
    match e {
        GatewayError::Backend(BackendError::Upstream { status, error, .. }) => {
            assert_eq!(status, 400);
            assert!(
                error.message.contains("content policy"),
                "the engine's reason"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.lock().unwrap().len(), 1, "no retry, no fallback");
    assert_eq!(*seen.0.lock().unwrap(), ["attempt 1 a@e1"]);
}

/// An engine's `Retry-After` is honoured (the retry waits 2 s, not the 100 ms backoff), and the
/// request then succeeds: never a tight loop against a throttling engine.
#[tokio::test(start_paused = true)]
async fn a_retry_after_is_honoured() {
    let calls: Calls = Arc::default();
    let seen = Arc::new(Seen::default());
    let gw = core(
        vec![Scripted::new("b0", &[("a", &[Step::Throttled])], &calls)],
        0,
        &seen,
    );
    let start = Instant::now();
    let r = gw.chat(ask("a"), &RequestContext::new("t")).await.unwrap();
    assert_eq!(
        r.get().choices[0].message.content.as_ref().unwrap().text(),
        "b0"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(calls.lock().unwrap().len(), 2);
    assert_eq!(
        seen.0.lock().unwrap()[1],
        "retry in 2000ms after upstream_4xx"
    );
}

fn continuing_core(backends: Vec<Scripted>) -> Gateway {
    let mut b = Gateway::builder().governance(GovernanceConfig {
        stream_continuation: true,
        // The stream breaks on the first backend, the continuation goes to the second.
        policy: lumen_governance::Policy::RoundRobin,
        ..GovernanceConfig::default()
    });
    for s in backends {
        let name = s.name;
        b = b.backend(name, s, Some(vec!["a".into()]));
    }
    b.build().unwrap()
}

/// The text each item of a stream carries, and `ERR` for a failure.
async fn drain(mut s: GatewayStream<ChatCompletionChunk>) -> (Vec<String>, u32) {
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        out.push(match item {
            Ok(c) => c.get().choices[0].delta.content.clone().unwrap_or_default(),
            Err(_) => "ERR".into(),
        });
    }
    (out, s.continuations())
}

/// One stream through a continuing core whose backend `x` plays `first`, `y` is healthy.
async fn stream_after(first: Step) -> (Vec<String>, u32, Calls) {
    let calls: Calls = Arc::default();
    let core = continuing_core(vec![
        Scripted::new("x", &[("a", &[first])], &calls),
        Scripted::new("y", &[], &calls),
    ]);
    let s = core
        .chat_stream(ask("a"), &RequestContext::new("r"))
        .await
        .unwrap();
    let (items, continued) = drain(s).await;
    (items, continued, calls)
}

#[tokio::test(start_paused = true)]
async fn an_embedded_core_continues_a_broken_stream_on_another_backend() {
    let (items, continued, calls) = stream_after(Step::CutAfterFirst).await;
    assert_eq!(items, ["x", "y", "!"], "x's part, then y's; no error");
    assert_eq!(continued, 1);
    assert_eq!(
        *calls.lock().unwrap(),
        [("x".into(), "a".into()), ("y".into(), "a".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_with_a_tool_call_is_never_continued() {
    let (items, continued, calls) = stream_after(Step::ToolCallThenCut).await;
    assert_eq!(items, ["", "ERR"], "the failure reaches the caller");
    assert_eq!(continued, 0);
    assert_eq!(calls.lock().unwrap().len(), 1, "y was never asked");
}

/// One key's flood waits behind its own requests, not in front of another key's: with one
/// slot and an engine taking 100 ms a request, ten requests of `team-a` queued first do not
/// hold back `team-b`'s one (first come, first served would answer it after 1.1 s). Without
/// headroom, `team-b` takes the next free slot; with the default headroom of one, it runs at
/// once beside the flood.
async fn flood_then_one(headroom: usize) -> (Duration, Duration) {
    let calls = Calls::default();
    let engine = Scripted::new("e", &[("a", &[Step::Slow; 16])], &calls);
    let gw = Gateway::builder()
        .admission(AdmissionConfig {
            max_concurrent: Some(1),
            queue_size: Some(64),
            queue_timeout_ms: Some(60_000),
            headroom: Some(headroom),
            ..Default::default()
        })
        .backend("e", engine, Some(vec!["a".into()]))
        .build()
        .unwrap();
    let start = Instant::now();
    let request = |flow: &'static str| {
        let gw = gw.clone();
        async move {
            let mut cx = RequestContext::new(flow);
            cx.fairness = Some(lumen_backend::Fairness {
                flow: flow.into(),
                weight: 1,
                rank: 1,
            });
            gw.chat(ask("a"), &cx).await.unwrap();
            (flow, start.elapsed())
        }
    };
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(tokio::spawn(request("team-a")));
        tokio::task::yield_now().await;
    }
    tasks.push(tokio::spawn(request("team-b")));
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    let b = done.iter().find(|(f, _)| *f == "team-b").unwrap().1;
    let last = done.iter().map(|(_, t)| *t).max().unwrap();
    (b, last)
}

#[tokio::test(start_paused = true)]
async fn a_keys_flood_does_not_hold_back_another_keys_request() {
    let (b, last) = flood_then_one(0).await;
    assert!(b <= Duration::from_millis(300), "team-b waited {b:?}");
    assert_eq!(last, Duration::from_millis(1_100), "the slot never idled");
}

#[tokio::test(start_paused = true)]
async fn with_headroom_a_light_key_runs_beside_a_flood() {
    let (b, last) = flood_then_one(1).await;
    assert_eq!(b, Duration::from_millis(100), "team-b did not wait at all");
    assert_eq!(
        last,
        Duration::from_millis(1_000),
        "the flood kept its one slot throughout"
    );
}

/// A prompt counts as queued for prefill on its backend from the pick until the engine's first
/// byte (the whole answer, or a stream's first chunk), and never after, whatever ends the
/// attempt: an answer, a stream still decoding, a client gone before the engine began.
#[tokio::test(start_paused = true)]
async fn a_prompt_is_queued_for_prefill_until_the_engines_first_byte() {
    let calls = Calls::default();
    let engine = Scripted::new("e", &[("a", &[Step::Slow, Step::Silent])], &calls);
    let gw = Gateway::builder()
        .governance(GovernanceConfig {
            policy: lumen_governance::Policy::LoadAware,
            ..GovernanceConfig::default()
        })
        .backend("e", engine, Some(vec!["a".into()]))
        .build()
        .unwrap();
    let slot = gw.router().slots()[0].clone();
    let state = || (slot.backlog(), slot.in_flight());
    // An answer that takes 100 ms: its prompt is queued until it comes.
    let unary = tokio::spawn({
        let gw = gw.clone();
        async move { gw.chat(ask("a"), &RequestContext::new("r")).await.is_ok() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (queued, in_flight) = state();
    assert!(queued > 0, "load_aware reads the prompt's length");
    assert_eq!(in_flight, 1);
    assert!(unary.await.unwrap());
    assert_eq!(state(), (0, 0));
    // A stream the engine never starts: queued until the client leaves, then nothing.
    let silent = tokio::spawn({
        let gw = gw.clone();
        async move {
            gw.chat_stream(ask("a"), &RequestContext::new("s"))
                .await
                .is_ok()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(state(), (queued, 1));
    silent.abort();
    assert!(silent.await.is_err());
    assert_eq!(state(), (0, 0));
    // A stream whose first chunk came: in flight, decoding, queued nowhere.
    let stream = gw
        .chat_stream(ask("a"), &RequestContext::new("t"))
        .await
        .unwrap();
    assert_eq!(state(), (0, 1));
    drop(stream);
    assert_eq!(state(), (0, 0));
}
