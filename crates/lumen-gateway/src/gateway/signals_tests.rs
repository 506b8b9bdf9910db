//! Routing on the engines' own reports through the core: in-memory engines whose `/metrics`
//! text a test scripts, the scrape round, and the saturation hold, under a paused clock.

use lumen_governance::Policy;
use std::sync::Mutex;

use futures::future::BoxFuture;
use lumen_backend::{ChunkStream, Health};
use lumen_governance::{CacheAwareConfig, SignalsConfig};
use lumen_openai_types::{ChatChoice, ChatMessage};

use super::*;

type Log = Arc<Mutex<Vec<&'static str>>>;

/// An engine that answers every chat at once and reports whatever its `/metrics` holds.
struct Engine {
    name: &'static str,
    metrics: Arc<Mutex<Option<String>>>,
    /// The metrics call hangs (an engine that stopped answering).
    hang: bool,
    log: Log,
}

impl Backend for Engine {
    async fn chat(
        &self,
        req: ChatCompletionRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<ChatCompletionResponse>, BackendError> {
        self.log.lock().unwrap().push(self.name);
        Ok(Reply::new(ChatCompletionResponse {
            model: req.model,
            choices: vec![ChatChoice {
                message: ChatMessage::new("assistant", "ok"),
                ..Default::default()
            }],
            ..Default::default()
        }))
    }
    async fn chat_stream(
        &self,
        _req: ChatCompletionRequest,
        _cx: &RequestContext,
    ) -> Result<ChunkStream<ChatCompletionChunk>, BackendError> {
        Err(BackendError::Protocol {
            backend: self.name.into(),
            message: "no streams here".into(),
        })
    }
    async fn completions(
        &self,
        _req: CompletionRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<CompletionResponse>, BackendError> {
        unreachable!()
    }
    async fn completions_stream(
        &self,
        _req: CompletionRequest,
        _cx: &RequestContext,
    ) -> Result<ChunkStream<CompletionChunk>, BackendError> {
        unreachable!()
    }
    async fn embeddings(
        &self,
        _req: EmbeddingRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<EmbeddingResponse>, BackendError> {
        unreachable!()
    }
    async fn models(&self, _cx: &RequestContext) -> Result<ModelList, BackendError> {
        Ok(ModelList::new(vec![Model::new("m")]))
    }
    async fn health(&self) -> Health {
        Health::Healthy
    }
    fn metrics(
        &self,
        _cx: &RequestContext,
    ) -> impl Future<Output = Result<Option<String>, BackendError>> + Send {
        let text = self.metrics.lock().unwrap().clone();
        let hang = self.hang;
        let fut: BoxFuture<'static, _> = Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(text)
        });
        fut
    }
}

struct Fleet {
    gw: Gateway,
    metrics: Vec<Arc<Mutex<Option<String>>>>,
    log: Log,
}

impl Fleet {
    fn report(&self, i: usize, running: u32, waiting: u32) {
        *self.metrics[i].lock().unwrap() = Some(format!(
            "vllm:num_requests_running{{model_name=\"m\",engine=\"0\"}} {running}.0\n\
             vllm:num_requests_waiting{{model_name=\"m\",engine=\"0\"}} {waiting}.0\n\
             vllm:kv_cache_usage_perc{{model_name=\"m\",engine=\"0\"}} 0.25\n"
        ));
    }

    fn served(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

const NAMES: [&str; 3] = ["e0", "e1", "e2"];

fn fleet(policy: Policy, signals: SignalsConfig, hang: &[bool]) -> Fleet {
    let log: Log = Arc::default();
    let mut metrics = Vec::new();
    let mut b = Gateway::builder()
        .governance(GovernanceConfig {
            policy,
            signals,
            cache_aware: CacheAwareConfig::default(),
            ..GovernanceConfig::default()
        })
        .admission(AdmissionConfig {
            queue_timeout_ms: Some(3_000),
            ..Default::default()
        });
    for (i, name) in NAMES.iter().enumerate().take(hang.len()) {
        let m = Arc::new(Mutex::new(None));
        metrics.push(m.clone());
        b = b.backend(
            *name,
            Engine {
                name,
                metrics: m,
                hang: hang[i],
                log: log.clone(),
            },
            Some(vec!["m".into()]),
        );
    }
    Fleet {
        gw: b.build().unwrap(),
        metrics,
        log,
    }
}

fn slot(gw: &Gateway, name: &str) -> Arc<lumen_governance::Slot<Upstream>> {
    gw.router()
        .slots()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

fn ask(messages: &[(&str, &str)]) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: "m".into(),
        messages: messages
            .iter()
            .map(|(r, t)| ChatMessage::new(*r, *t))
            .collect::<Vec<_>>()
            .into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_scrape_stores_each_engines_report_and_failures_age_it_out() {
    let f = fleet(
        Policy::LoadAware,
        SignalsConfig::default(),
        &[false, false, true],
    );
    f.report(0, 12, 3);
    *f.metrics[1].lock().unwrap() = Some("process_open_fds 3\n".into());
    f.gw.scrape_signals().await;
    let e0 = slot(&f.gw, "e0").engine().snapshot().unwrap();
    assert_eq!((e0.running, e0.waiting, e0.kv_usage), (12, 3, Some(0.25)));
    assert_eq!(e0.capacity, Some(12), "it queued at 12");
    let (n, why) = slot(&f.gw, "e1").engine().failures();
    assert_eq!(n, 1);
    assert!(why.unwrap().contains("no queue or batch gauge"));
    // The hanging engine costs the round its deadline (400 ms), no more.
    let (n, why) = slot(&f.gw, "e2").engine().failures();
    assert_eq!(n, 1);
    assert_eq!(why.as_deref(), Some("no answer within 400 ms"));
    let stale = f.gw.router().config().signals.stale_ms;
    assert!(slot(&f.gw, "e0").load(f.gw.now_ms(), stale).fresh);
    tokio::time::advance(Duration::from_millis(2_100)).await;
    assert!(!slot(&f.gw, "e0").load(f.gw.now_ms(), stale).fresh);
}

#[tokio::test(start_paused = true)]
async fn load_aware_sends_nothing_to_the_engine_with_a_queue() {
    let f = fleet(
        Policy::LoadAware,
        SignalsConfig::default(),
        &[false, false, false],
    );
    f.report(0, 20, 9);
    f.report(1, 2, 0);
    f.report(2, 3, 0);
    f.gw.scrape_signals().await;
    let cx = RequestContext::new("t");
    for _ in 0..6 {
        f.gw.chat(ask(&[("user", "hi")]), &cx).await.unwrap();
    }
    let served = f.served();
    assert!(!served.contains(&"e0"), "{served:?}");
    assert_eq!(served.len(), 6);
}

#[tokio::test(start_paused = true)]
async fn cache_aware_keeps_a_conversation_and_its_session_on_one_engine() {
    let f = fleet(
        Policy::CacheAware,
        SignalsConfig::default(),
        &[false, false, false],
    );
    let system = "You are a careful assistant. ".repeat(100);
    let cx = RequestContext::new("t");
    let mut turns = vec![
        ("system", system.as_str()),
        ("user", "Tell me about ships."),
    ];
    let answers: Vec<String> = (0..5).map(|i| format!("answer {i} ").repeat(60)).collect();
    for a in &answers {
        f.gw.chat(ask(&turns), &cx).await.unwrap();
        turns.push(("assistant", a));
        turns.push(("user", "and then?"));
    }
    let served = f.served();
    assert!(served.iter().all(|e| *e == served[0]), "{served:?}");
    // `prompt_cache_key` names a session: unrelated prompts with one key stay together.
    for i in 0..5 {
        let mut req = ask(&[("user", &format!("question {i}"))]);
        req.extra.insert("prompt_cache_key", "thread-42").unwrap();
        f.gw.chat(req, &cx).await.unwrap();
    }
    let served = f.served();
    assert!(served.iter().all(|e| *e == served[0]), "{served:?}");
}

#[tokio::test(start_paused = true)]
async fn a_saturated_pool_holds_requests_until_an_engine_has_room() {
    let signals = SignalsConfig {
        saturation_queue: 4,
        ..SignalsConfig::default()
    };
    let f = fleet(Policy::LoadAware, signals, &[false, false]);
    f.report(0, 16, 6);
    f.report(1, 16, 5);
    f.gw.scrape_signals().await;
    let gw = f.gw.clone();
    let held = tokio::spawn(async move {
        gw.chat(ask(&[("user", "hi")]), &RequestContext::new("held"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.served(), Vec::<&str>::new(), "held in Lumen, not sent");
    assert_eq!(f.gw.queued(), 1, "it counts in the admission queue");
    f.report(1, 16, 0);
    f.gw.scrape_signals().await;
    held.await.unwrap().unwrap();
    assert_eq!(f.served(), vec!["e1"]);
    assert_eq!(f.gw.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_held_request_times_out_with_the_queues_deadline() {
    let signals = SignalsConfig {
        saturation_queue: 4,
        ..SignalsConfig::default()
    };
    let f = fleet(Policy::LoadAware, signals, &[false]);
    f.report(0, 16, 30);
    f.gw.scrape_signals().await;
    // Keep the report fresh while the request waits.
    let gw = f.gw.clone();
    let keep = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            gw.scrape_signals().await;
        }
    });
    let start = Instant::now();
    let err =
        f.gw.chat(ask(&[("user", "hi")]), &RequestContext::new("late"))
            .await
            .unwrap_err();
    keep.abort();
    assert!(
        matches!(
            err,
            GatewayError::Admission(AdmissionError::QueueTimeout { retry_after })
                if retry_after == Duration::from_secs(1)
        ),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(3_000));
    assert_eq!(f.served(), Vec::<&str>::new());
    assert_eq!(f.gw.queued(), 0, "its place is given back");
}

#[tokio::test(start_paused = true)]
async fn lumens_own_requests_finishing_release_a_hold_between_scrapes() {
    // The engine's report counted 3 of Lumen's own requests in its queue; when they finish,
    // the estimate drops below the threshold without waiting for the next scrape.
    let signals = SignalsConfig {
        saturation_queue: 4,
        interval_ms: 60_000,
        stale_ms: 60_000,
        ..SignalsConfig::default()
    };
    let f = fleet(Policy::LoadAware, signals, &[false]);
    let s = slot(&f.gw, "e0");
    let leases: Vec<_> = (0..3)
        .map(|_| {
            f.gw.router()
                .route(&RouteRequest {
                    model: "m",
                    now_ms: f.gw.now_ms(),
                    ..RouteRequest::default()
                })
                .unwrap()
        })
        .collect();
    assert_eq!(s.in_flight(), 3);
    f.report(0, 8, 6);
    f.gw.scrape_signals().await;
    let gw = f.gw.clone();
    let held = tokio::spawn(async move {
        gw.chat(ask(&[("user", "hi")]), &RequestContext::new("held"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(f.served().is_empty());
    drop(leases);
    held.await.unwrap().unwrap();
    assert_eq!(f.served(), vec!["e0"]);
}
