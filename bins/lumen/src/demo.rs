//! `lumen --demo`: the simulator in-process, and a streamed answer printed on start.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use lumen_backend::{Backend, RequestContext};
use lumen_backend_vllm::{VllmBackend, VllmConfig};
use lumen_openai_types::{ChatCompletionRequest, ChatMessage};
use lumen_sim::{SimConfig, Simulator};

pub const DEMO_MODEL: &str = "lumen-demo";

/// Starts the simulator on a free loopback port, paced so tokens visibly stream.
pub async fn start_simulator() -> std::io::Result<(String, Simulator)> {
    let (addr, sim) = lumen_sim::spawn(SimConfig {
        models: vec![DEMO_MODEL.to_owned()],
        ttft: Duration::from_millis(150),
        itl: Duration::from_millis(40),
        default_max_tokens: 22,
        ..SimConfig::default()
    })
    .await?;
    Ok((format!("http://{addr}"), sim))
}

/// Streams one answer through Lumen itself, exactly as an app would, and prints it.
#[allow(clippy::print_stdout)]
pub async fn show(lumen: SocketAddr) {
    let client = match VllmBackend::new(VllmConfig::new("demo-client", format!("http://{lumen}"))) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "demo client could not start");
            return;
        }
    };
    let req = ChatCompletionRequest {
        model: DEMO_MODEL.to_owned(),
        messages: vec![ChatMessage::new("user", "What does Lumen do?")].into(),
        stream: Some(true),
        ..Default::default()
    };
    let mut out = std::io::stdout();
    let _ = write!(out, "\nStreaming a sample answer through Lumen:\n\n  ");
    let _ = out.flush();
    match client.chat_stream(req, &RequestContext::new("demo")).await {
        Ok(mut stream) => {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        for choice in &c.get().choices {
                            let _ =
                                write!(out, "{}", choice.delta.content.as_deref().unwrap_or(""));
                            let _ = out.flush();
                        }
                    }
                    Err(e) => {
                        let _ = write!(out, "\n  [stream error: {e}]");
                        break;
                    }
                }
            }
        }
        Err(e) => {
            let _ = write!(out, "[request failed: {e}]");
        }
    }
    println!(
        "\n\nTry it yourself:\n\n  curl -N http://{lumen}/v1/chat/completions \\\n    -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{DEMO_MODEL}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n\nPress Ctrl-C to stop.\n"
    );
}
