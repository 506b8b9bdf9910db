//! A Rust service that embeds only Lumen's core (`lumen-gateway`): no HTTP server, no figment,
//! no Redis, no Prometheus. It plugs in its own `Backend` (two in-memory "engines", one of
//! which refuses its first connection), routes typed chat requests across them with a retry,
//! watches what happened through its own `Observer`, then runs the whole pipeline
//! (`Gateway::serve`) with API keys, a model list and limits — keys, limits and usage without
//! the server crate — and checks its output. CI runs it; it exits non-zero if the core or the
//! seam breaks.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use lumen_backend::{Backend, BackendError, ChunkStream, Health, RequestContext};
use lumen_gateway::operation::Chat;
use lumen_gateway::{
    Call, Event, Gateway, Observer, PolicyError, PolicySettings, PolicyStores, ServeError, Served,
};
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::LimitSpec;
use lumen_governance::{AuthConfig, CacheConfig, GovernanceError, LimitsConfig};
use lumen_openai_types::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, ChatMessage, Chunk, CompletionChunk, CompletionRequest,
    CompletionResponse, EmbeddingRequest, EmbeddingResponse, Model, ModelList, Reply, Usage,
};

/// An engine in process: answers "<name> says hi", and refuses its first `fail_first` calls as
/// an unreachable engine would.
struct Engine {
    name: &'static str,
    fail_first: u32,
    calls: AtomicU32,
}

impl Engine {
    fn new(name: &'static str, fail_first: u32) -> Self {
        Self {
            name,
            fail_first,
            calls: AtomicU32::new(0),
        }
    }

    fn answer(&self) -> String {
        format!("{} says hi", self.name)
    }

    fn call(&self) -> Result<(), BackendError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            return Err(BackendError::Connect {
                backend: self.name.into(),
                source: "connection refused".into(),
            });
        }
        Ok(())
    }
}

fn unsupported(what: &str) -> BackendError {
    BackendError::Unavailable {
        reason: format!("{what} is not served here"),
        retry_after: None,
    }
}

impl Backend for Engine {
    async fn chat(
        &self,
        req: ChatCompletionRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<ChatCompletionResponse>, BackendError> {
        self.call()?;
        Ok(Reply::new(ChatCompletionResponse {
            id: format!("{}-1", self.name),
            model: req.model,
            choices: vec![ChatChoice {
                message: ChatMessage::new("assistant", self.answer()),
                finish_reason: Some("stop".into()),
                ..Default::default()
            }],
            usage: Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 3,
                total_tokens: 8,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn chat_stream(
        &self,
        req: ChatCompletionRequest,
        _cx: &RequestContext,
    ) -> Result<ChunkStream<ChatCompletionChunk>, BackendError> {
        self.call()?;
        let words: Vec<_> = self
            .answer()
            .split(' ')
            .map(|w| {
                Ok(Chunk::new(ChatCompletionChunk {
                    model: req.model.clone(),
                    choices: vec![ChatChunkChoice {
                        delta: ChatDelta {
                            content: Some(format!("{w} ")),
                            ..Default::default()
                        },
                        ..Default::default()
                    }],
                    ..Default::default()
                }))
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(words)))
    }

    async fn completions(
        &self,
        _req: CompletionRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<CompletionResponse>, BackendError> {
        Err(unsupported("completions"))
    }

    async fn completions_stream(
        &self,
        _req: CompletionRequest,
        _cx: &RequestContext,
    ) -> Result<ChunkStream<CompletionChunk>, BackendError> {
        Err(unsupported("completions"))
    }

    async fn embeddings(
        &self,
        _req: EmbeddingRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<EmbeddingResponse>, BackendError> {
        Err(unsupported("embeddings"))
    }

    async fn models(&self, _cx: &RequestContext) -> Result<ModelList, BackendError> {
        Ok(ModelList::new(vec![Model::new("house-model")]))
    }

    async fn health(&self) -> Health {
        Health::Healthy
    }
}

/// The host service's own telemetry: which backend each attempt went to, and the retries.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Observer for Log {
    fn event(&self, event: &Event<'_>) {
        let line = match event {
            Event::AttemptStarted {
                attempt, backend, ..
            } => format!("attempt {attempt} -> {backend}"),
            Event::Retrying {
                backend, reason, ..
            } => format!("retry after {reason} on {backend}"),
            Event::StreamEnded { backend, .. } => format!("stream from {backend} ended"),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

#[tokio::main]
async fn main() {
    let log = Arc::new(Log::default());
    let gateway = Gateway::builder()
        // Round robin starts at `flaky`, which refuses its first connection.
        .backend("flaky", Engine::new("flaky", 1), None)
        .backend("steady", Engine::new("steady", 0), None)
        .observer(log.clone())
        .build()
        .unwrap();
    gateway.discover().await;
    assert_eq!(gateway.models().data[0].id, "house-model");

    let cx = RequestContext::new("embedded-core-1");
    let req = ChatCompletionRequest {
        // Blank: the only model is the default.
        model: String::new(),
        messages: vec![ChatMessage::new("user", "hello")].into(),
        ..Default::default()
    };
    let first = gateway.chat(req.clone(), &cx).await.unwrap();
    let text = first.get().choices[0]
        .message
        .content
        .as_ref()
        .unwrap()
        .text();
    println!("first answer: {text:?}");
    assert_eq!(
        text, "steady says hi",
        "the refused attempt was retried elsewhere"
    );

    let mut stream = gateway.chat_stream(req.clone(), &cx).await.unwrap();
    let mut streamed = String::new();
    while let Some(chunk) = stream.next().await {
        for c in &chunk.unwrap().get().choices {
            streamed.push_str(c.delta.content.as_deref().unwrap_or(""));
        }
    }
    drop(stream);
    println!("streamed: {streamed:?}");
    assert_eq!(
        streamed.trim_end(),
        "flaky says hi",
        "flaky serves once it is up"
    );

    let lines = log.0.lock().unwrap().clone();
    for l in &lines {
        println!("observed: {l}");
    }
    assert_eq!(
        lines,
        [
            "attempt 1 -> flaky",
            "retry after connect on flaky",
            "attempt 2 -> steady",
            "attempt 1 -> flaky",
            "stream from flaky ended",
        ]
    );
    governed(req).await;
    println!("embedded core OK");
}

/// The pipeline with keys and limits: a key that may use `house-model`, 2 requests a minute,
/// and a daily token quota that records what it used.
async fn governed(mut req: ChatCompletionRequest) {
    // The reservation is the prompt estimate plus `max_tokens`; it settles to the usage.
    req.max_tokens = Some(16);
    let secret = "sk-embedded-team-a";
    let auth = AuthConfig {
        enabled: true,
        keys: vec![
            ApiKey {
                name: "team-a".into(),
                sha256: to_hex(&digest(secret)),
                models: Some(vec!["house-model".into()]),
                limits: LimitSpec {
                    rpm: Some(2),
                    daily_tokens: Some(1_000),
                    ..Default::default()
                },
                per_model: Default::default(),
            },
            ApiKey {
                name: "team-b".into(),
                sha256: to_hex(&digest("sk-embedded-team-b")),
                models: Some(vec!["another-model".into()]),
                limits: LimitSpec::default(),
                per_model: Default::default(),
            },
        ],
        ..Default::default()
    };
    let cache = CacheConfig::default();
    let (stores, _) = PolicyStores::in_memory(&cache);
    let settings = PolicySettings::new(&auth, &LimitsConfig::default(), &cache, false).unwrap();
    let gateway = Gateway::builder()
        .backend("steady", Engine::new("steady", 0), None)
        .policy(stores, settings)
        .build()
        .unwrap();
    gateway.discover().await;
    let policy = gateway.policy();
    assert!(matches!(
        policy.authenticate(None).await,
        Err(PolicyError::MissingKey)
    ));
    assert!(matches!(
        policy.authenticate(Some("sk-wrong")).await,
        Err(PolicyError::InvalidKey)
    ));

    // A key without the model: not found, as the model is absent from its list.
    let team_b = policy
        .authenticate(Some("sk-embedded-team-b"))
        .await
        .unwrap();
    let mut named = req.clone();
    named.model = "house-model".into();
    let refused = gateway
        .serve::<Chat>(
            named,
            Call {
                principal: &team_b,
                body_len: 64,
                cache_control: None,
                priority: None,
            },
            RequestContext::new("embedded-core-b"),
        )
        .await;
    assert!(matches!(
        refused,
        Err(ServeError::Gateway(
            lumen_gateway::GatewayError::Governance(GovernanceError::ModelNotFound { .. })
        ))
    ));

    let team_a = policy.authenticate(Some(secret)).await.unwrap();
    let call = Call {
        principal: &team_a,
        body_len: 64,
        cache_control: None,
        priority: None,
    };
    for i in 0..2 {
        let cx = RequestContext::new(format!("embedded-core-a{i}"));
        match gateway.serve::<Chat>(req.clone(), call, cx).await.unwrap() {
            Served::Answer(a) => {
                assert_eq!(a.tokens, Some((5, 3)));
                assert_eq!(a.rate.requests.map(|(_, left, _)| left), Some(1 - i));
            }
            Served::Stream { .. } => panic!("a non-streamed request answered with a stream"),
        }
    }
    let third = gateway
        .serve::<Chat>(req, call, RequestContext::new("embedded-core-a2"))
        .await;
    assert!(
        matches!(third, Err(ServeError::Policy(PolicyError::Limited(_)))),
        "the third request in a minute is over the key's rpm"
    );
    let usage = policy
        .limiter()
        .usage(&policy.settings().keys()[0])
        .await
        .unwrap();
    let daily = usage.iter().find(|u| u.counter == "daily tokens").unwrap();
    println!("team-a used {} of {} daily tokens", daily.used, daily.limit);
    assert_eq!(
        daily.used, 16,
        "two answers of 8 tokens each, settled on their usage"
    );
}
