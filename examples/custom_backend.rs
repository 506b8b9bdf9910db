//! Plug your own engine into Lumen by implementing `Backend`.
//!
//! `ReverseBackend` "generates" by reversing the last user message. Lumen serves it over HTTP
//! with the same routing, validation, errors and SSE as any engine. The example then calls
//! its own server and checks the answers, so `cargo run -p lumen-examples --example
//! custom_backend` exits non-zero if the seam breaks (CI runs it).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use lumen_backend::{Backend, BackendError, ChunkStream, Health, RequestContext};
use lumen_openai_types::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, ChatMessage, Chunk, CompletionChunk, CompletionRequest,
    CompletionResponse, EmbeddingRequest, EmbeddingResponse, ErrorObject, Model, ModelList, Reply,
};

struct ReverseBackend;

fn reversed(req: &ChatCompletionRequest) -> String {
    // Messages are read one at a time (a parsed request keeps them as the client's JSON).
    let last = req
        .messages
        .iter()
        .filter_map(Result::ok)
        .last()
        .and_then(|m| m.content.map(|c| c.text()));
    last.unwrap_or_default().chars().rev().collect()
}

impl Backend for ReverseBackend {
    async fn chat(
        &self,
        req: ChatCompletionRequest,
        _cx: &RequestContext,
    ) -> Result<Reply<ChatCompletionResponse>, BackendError> {
        // Built in process, so it is serialised when sent (`Reply::new`).
        Ok(Reply::new(ChatCompletionResponse {
            id: "rev-1".into(),
            model: req.model.clone(),
            choices: vec![ChatChoice {
                message: ChatMessage::new("assistant", reversed(&req)),
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
        let model = req.model.clone();
        let chunks: Vec<_> = reversed(&req)
            .chars()
            .map(|c| {
                Ok(Chunk::new(ChatCompletionChunk {
                    id: "rev-1".into(),
                    model: model.clone(),
                    choices: vec![ChatChunkChoice {
                        delta: ChatDelta {
                            content: Some(c.to_string()),
                            ..Default::default()
                        },
                        ..Default::default()
                    }],
                    ..Default::default()
                }))
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
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
        Ok(ModelList::new(vec![Model::new("reverse-1")]))
    }

    async fn health(&self) -> Health {
        Health::Healthy
    }
}

/// An engine that does not offer an endpoint answers 404, as an OpenAI-compatible server would.
fn unsupported(what: &str) -> BackendError {
    BackendError::Upstream {
        backend: "reverse".into(),
        status: 404,
        error: Box::new(ErrorObject::new(
            format!("this backend does not serve {what}"),
            "invalid_request_error",
        )),
        retry_after: None,
    }
}

/// One request over a fresh HTTP/1.1 connection (hyper's low-level client, no pool needed).
async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::main]
async fn main() {
    // Fixed model list: no discovery round needed.
    let gateway = lumen_server::Gateway::builder()
        .backend("reverse", ReverseBackend, Some(vec!["reverse-1".into()]))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lumen_server::serve(
        listener,
        gateway,
        std::future::pending(),
    ));

    let chat = r#"{"model":"reverse-1","messages":[{"role":"user","content":"Lumen"}]}"#;
    let (status, body) = post(addr, "/v1/chat/completions", chat).await;
    println!("chat -> {status} {body}");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "nemuL");

    let stream =
        r#"{"model":"reverse-1","stream":true,"messages":[{"role":"user","content":"abc"}]}"#;
    let (status, body) = post(addr, "/v1/chat/completions", stream).await;
    println!("stream -> {status}\n{body}");
    assert_eq!(status, 200);
    assert_eq!(body.matches("data: ").count(), 4, "three chunks and [DONE]");
    assert!(body.ends_with("data: [DONE]\n\n"));

    let (status, body) = post(
        addr,
        "/v1/embeddings",
        r#"{"model":"reverse-1","input":"x"}"#,
    )
    .await;
    println!("embeddings -> {status} {body}");
    assert_eq!(status, 404);
    println!("custom backend OK");
}
