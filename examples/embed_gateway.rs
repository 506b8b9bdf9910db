//! Embed Lumen's routing core in another Rust service, without HTTP on Lumen's side.
//!
//! Two simulated engines serve `m1`; the gateway discovers them, routes across them (by the
//! default `cache_aware` policy: a repeated prompt goes back to the engine that cached it) and
//! enforces deadlines, and the host program calls it as a library. Self-checking, like every
//! example (CI runs it).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use lumen_backend::RequestContext;
use lumen_backend_vllm::{VllmBackend, VllmConfig};
use lumen_openai_types::{ChatCompletionRequest, ChatMessage};
use lumen_sim::SimConfig;

#[tokio::main]
async fn main() {
    let mut builder = lumen_server::Gateway::builder();
    let mut sims = Vec::new();
    for name in ["gpu-a", "gpu-b"] {
        let (addr, sim) = lumen_sim::spawn(SimConfig {
            models: vec!["m1".into()],
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let backend = VllmBackend::new(VllmConfig::new(name, format!("http://{addr}"))).unwrap();
        builder = builder.backend(name, backend, None);
        sims.push(sim);
    }
    let gateway = builder.build().unwrap();
    gateway.core().discover().await;
    println!(
        "models: {:?}",
        gateway
            .core()
            .models()
            .data
            .iter()
            .map(|m| &m.id)
            .collect::<Vec<_>>()
    );

    let cx = RequestContext::new("embedded-1");
    let req = ChatCompletionRequest {
        model: "m1".into(),
        messages: vec![ChatMessage::new("user", "hi")].into(),
        max_tokens: Some(3),
        ..Default::default()
    };
    for _ in 0..4 {
        // A `Reply` keeps the engine's bytes; `get` parses them on first use.
        let resp = gateway.core().chat(req.clone(), &cx).await.unwrap();
        let resp = resp.get();
        assert_eq!(
            resp.choices[0].message.content.as_ref().unwrap().text(),
            "Lumen routes every"
        );
    }
    let mut stream = gateway.core().chat_stream(req, &cx).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for c in &chunk.unwrap().get().choices {
            text.push_str(c.delta.content.as_deref().unwrap_or(""));
        }
    }
    println!("streamed: {text:?}");
    assert_eq!(text, "Lumen routes every");
    let counts: Vec<u64> = sims.iter().map(|s| s.generation_count()).collect();
    println!("requests per engine: {counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 5);
    // The default policy (`cache_aware`) keeps a prompt on the engine that already holds it in
    // its KV cache: the same conversation, asked five times, met one engine.
    assert!(counts.contains(&5), "one engine served the repeated prompt");
    println!("embedded gateway OK");
}
