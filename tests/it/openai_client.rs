//! The official-style client (`async-openai`) cannot tell Lumen from an engine.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use futures::StreamExt;
use lumen_tests::*;

async fn setup() -> (Lumen, Client<OpenAIConfig>, lumen_sim::Simulator) {
    let (url, sim) = sim(&["m1"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let cfg = OpenAIConfig::new()
        .with_api_base(lumen.url("/v1"))
        .with_api_key("sk-anything");
    (lumen, Client::with_config(cfg), sim)
}

fn chat_request(
    model: &str,
    stream: bool,
) -> async_openai::types::chat::CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .max_tokens(4u32)
        .stream(stream)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hello")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn chat_and_chat_stream() {
    let (_lumen, client, _sim) = setup().await;
    let resp = client
        .chat()
        .create(chat_request("m1", false))
        .await
        .unwrap();
    assert_eq!(resp.model, "m1");
    assert_eq!(
        resp.choices[0].message.content.as_deref(),
        Some("Lumen routes every request")
    );
    assert_eq!(resp.usage.unwrap().completion_tokens, 4);

    let mut stream = client
        .chat()
        .create_stream(chat_request("m1", true))
        .await
        .unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for c in chunk.unwrap().choices {
            text.push_str(c.delta.content.as_deref().unwrap_or(""));
        }
    }
    assert_eq!(text, "Lumen routes every request");
}

#[tokio::test]
async fn completions_embeddings_and_models() {
    let (_lumen, client, _sim) = setup().await;
    let req = CreateCompletionRequestArgs::default()
        .model("m1")
        .prompt("say")
        .max_tokens(2u32)
        .build()
        .unwrap();
    let resp = client.completions().create(req).await.unwrap();
    assert_eq!(resp.choices[0].text, "Lumen routes");

    let req = CreateEmbeddingRequestArgs::default()
        .model("m1")
        .input(["a", "b"])
        .build()
        .unwrap();
    let resp = client.embeddings().create(req).await.unwrap();
    assert_eq!(resp.data.len(), 2);
    assert_eq!(resp.data[0].embedding.len(), 8);

    let models = client.models().list().await.unwrap();
    assert_eq!(models.data[0].id, "m1");
    let one = client.models().retrieve("m1").await.unwrap();
    assert_eq!(one.id, "m1");
}

#[tokio::test]
async fn errors_arrive_as_typed_api_errors() {
    let (_lumen, client, sim) = setup().await;
    match client.chat().create(chat_request("nope", false)).await {
        Err(OpenAIError::ApiError(e)) => {
            let e = e.api_error;
            assert_eq!(e.code.as_deref(), Some("model_not_found"));
            assert_eq!(e.r#type.as_deref(), Some("invalid_request_error"));
            assert_eq!(e.param.as_deref(), Some("model"));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    // A failure after the stream started reaches the SDK as an error item, then the stream ends.
    sim.set_faults(Faults {
        drop_after: Some(2),
        ..Faults::default()
    });
    let mut stream = client
        .chat()
        .create_stream(chat_request("m1", true))
        .await
        .unwrap();
    let (mut ok, mut errors) = (0, Vec::new());
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => ok += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert_eq!(ok, 3, "role chunk and two tokens");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("interrupted"), "{errors:?}");
}
