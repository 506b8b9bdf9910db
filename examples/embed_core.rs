//! A Rust service that embeds only Lumen's routing and retry core (`lumen-gateway`): no HTTP
//! server, no figment, no Redis, no Prometheus. It plugs in its own `Backend` (two in-memory
//! "engines", one of which refuses its first connection), routes typed chat requests across
//! them with a retry, watches what happened through its own `Observer`, and checks its output.
//! CI runs it; it exits non-zero if the core or the seam breaks.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use lumen_backend::{Backend, BackendError, ChunkStream, Health, RequestContext};
use lumen_gateway::{Event, Gateway, Observer};
use lumen_openai_types::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, ChatMessage, Chunk, CompletionChunk, CompletionRequest,
    CompletionResponse, EmbeddingRequest, EmbeddingResponse, Model, ModelList, Reply,
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

    let mut stream = gateway.chat_stream(req, &cx).await.unwrap();
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
    println!("embedded core OK");
}
