use super::*;
use futures::StreamExt;
use lumen_openai_types::{ChatMessage, Model};

/// A backend written the way an embedder would write one, used through the boxed seam.
struct Echo;

impl Backend for Echo {
    async fn chat(
        &self,
        req: ChatCompletionRequest,
        cx: &RequestContext,
    ) -> Result<Reply<ChatCompletionResponse>, BackendError> {
        Ok(Reply::new(ChatCompletionResponse {
            id: cx.request_id.clone(),
            model: req.model,
            ..Default::default()
        }))
    }
    async fn chat_stream(
        &self,
        _req: ChatCompletionRequest,
        _cx: &RequestContext,
    ) -> Result<ChunkStream<ChatCompletionChunk>, BackendError> {
        let chunks = (0..2).map(|_| Ok(Chunk::new(ChatCompletionChunk::default())));
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
    async fn completions(
        &self,
        _req: CompletionRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<CompletionResponse>, BackendError> {
        Err(BackendError::Upstream {
            backend: "echo".into(),
            status: 503,
            error: Box::new(lumen_openai_types::ErrorObject::new("busy", "server_error")),
            retry_after: None,
        })
    }
    async fn completions_stream(
        &self,
        _req: CompletionRequest,
        _cx: &RequestContext,
    ) -> Result<ChunkStream<CompletionChunk>, BackendError> {
        Err(BackendError::Timeout {
            kind: TimeoutKind::Idle,
        })
    }
    async fn embeddings(
        &self,
        _req: EmbeddingRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<EmbeddingResponse>, BackendError> {
        Ok(Reply::new(EmbeddingResponse::default()))
    }
    async fn models(&self, _cx: &RequestContext) -> Result<ModelList, BackendError> {
        Ok(ModelList::new(vec![Model::new("echo")]))
    }
    async fn health(&self) -> Health {
        Health::Healthy
    }
}

#[tokio::test]
async fn custom_backend_works_through_the_boxed_seam() {
    let shared: SharedBackend = Arc::new(Echo);
    let cx = RequestContext::new("req-1");
    let req = ChatCompletionRequest {
        model: "m".into(),
        messages: vec![ChatMessage::new("user", "hi")].into(),
        ..Default::default()
    };
    let resp = shared.chat(req.clone(), &cx).await.unwrap().into_inner();
    assert_eq!((resp.id.as_str(), resp.model.as_str()), ("req-1", "m"));
    let n = shared.chat_stream(req, &cx).await.unwrap().count().await;
    assert_eq!(n, 2);
    let err = shared
        .completions(CompletionRequest::default(), &cx)
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.kind(), "upstream_5xx");
    assert_eq!(shared.models(&cx).await.unwrap().data[0].id, "echo");
    assert!(shared.health().await.is_healthy());
    // A backend that says nothing about its load reports none, through the seam too.
    assert_eq!(shared.metrics(&cx).await.unwrap(), None);
}

/// An embedder's backend serves no other API natively unless it says so: Messages requests are
/// translated for it, and a native call that reached it anyway is a 404, not retried.
#[tokio::test]
async fn a_backend_serves_no_native_api_unless_it_opts_in() {
    let shared: SharedBackend = Arc::new(Echo);
    let cx = RequestContext::new("req-1");
    assert!(!shared.native_messages());
    let body = JsonBody::parse(br#"{"model":"m"}"#.to_vec().into()).unwrap();
    let Err(err) = shared.call_stream("/v1/messages", body.clone(), &cx).await else {
        panic!("a stream from a backend that serves none");
    };
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("/v1/messages"), "{err}");
    let err = shared
        .call_body("/v1/messages", body, &cx)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "upstream_4xx");
}

#[test]
fn retryability_follows_the_rules() {
    let up = |status| BackendError::Upstream {
        backend: "b".into(),
        status,
        error: Box::default(),
        retry_after: None,
    };
    // A one-off 500 is worth another attempt (engines fail transiently with it).
    for s in [429, 500, 502, 503, 504, 529] {
        assert!(up(s).is_retryable(), "{s}");
    }
    for s in [400, 401, 403, 404, 413, 422] {
        assert!(!up(s).is_retryable(), "{s}");
    }
    assert!(
        BackendError::Timeout {
            kind: TimeoutKind::FirstByte
        }
        .is_retryable()
    );
    assert!(
        BackendError::Timeout {
            kind: TimeoutKind::Connect
        }
        .is_retryable()
    );
    assert!(
        !BackendError::Timeout {
            kind: TimeoutKind::Idle
        }
        .is_retryable()
    );
    assert!(
        !BackendError::Timeout {
            kind: TimeoutKind::Total
        }
        .is_retryable()
    );
    let died = BackendError::StreamInterrupted {
        backend: "b".into(),
        message: "reset".into(),
        error: None,
    };
    assert!(
        died.is_retryable(),
        "before commit an engine that died may be retried"
    );
    let garbage = BackendError::Protocol {
        backend: "b".into(),
        message: "not JSON".into(),
    };
    assert!(!garbage.is_retryable());
}
