use futures::StreamExt;
use lumen_anthropic_types::ReplyContext;
use lumen_backend::{BackendError, ChunkStream};
use lumen_openai_types::{ChatCompletionChunk, Chunk, HasUsage, JsonAnswer};

use super::{MessagesCall, TranslatedEvents, native_events};

fn chat_stream(chunks: &[&str]) -> ChunkStream<ChatCompletionChunk> {
    let items: Vec<_> = chunks
        .iter()
        .map(|c| Ok(Chunk::from_raw(bytes::Bytes::from(c.to_string())).unwrap()))
        .collect();
    Box::pin(futures::stream::iter(items))
}

#[tokio::test]
async fn a_chat_stream_becomes_anthropic_events_with_the_engines_usage() {
    let chunks = chat_stream(&[
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
    ]);
    let events: Vec<_> = TranslatedEvents::new(chunks, ReplyContext::default(), "b".into())
        .collect()
        .await;
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    let kinds: Vec<_> = events.iter().map(|e| e.get().kind().to_owned()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("message_start"));
    assert_eq!(kinds.last().map(String::as_str), Some("message_stop"));
    let delta = events
        .iter()
        .find(|e| e.get().kind() == "message_delta")
        .unwrap();
    assert_eq!(delta.tokens(), Some((9, 2)));
    assert!(delta.is_usage_only());
    let text: u64 = events.iter().filter_map(|e| e.get().output_bytes()).sum();
    assert_eq!(text, 5);
}

#[tokio::test]
async fn a_chat_stream_cut_short_ends_as_a_failure() {
    let chunks = chat_stream(&[
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
    ]);
    let events: Vec<_> = TranslatedEvents::new(chunks, ReplyContext::default(), "b".into())
        .collect()
        .await;
    let last = events.last().unwrap();
    assert!(
        matches!(last, Err(BackendError::StreamInterrupted { .. })),
        "{last:?}"
    );
    assert!(events[..events.len() - 1].iter().all(Result::is_ok));
}

#[tokio::test]
async fn native_events_keep_their_bytes_and_a_garbage_event_ends_the_stream() {
    let raw = [
        r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":3,"output_tokens":1}}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#,
    ];
    let items: Vec<Result<Chunk<JsonAnswer>, BackendError>> = raw
        .iter()
        .map(|c| Ok(Chunk::from_raw(bytes::Bytes::from(c.to_string())).unwrap()))
        .collect();
    let events: Vec<_> = native_events(Box::pin(futures::stream::iter(items)), "b".into())
        .collect()
        .await;
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events[0].to_json().unwrap(), raw[0].as_bytes());
    assert_eq!(events[1].tokens(), Some((3, 4)));
}

#[test]
fn a_call_keeps_the_body_and_the_translation_in_step() {
    let body = r#"{"model":"alias", "max_tokens": 8, "messages":[{"role":"user","content":"hi"}]}"#;
    let mut call = MessagesCall::read(bytes::Bytes::from(body)).unwrap();
    assert!(!call.stream);
    "engine".clone_into(lumen_openai_types::HasModel::model_mut(&mut call));
    assert_eq!(call.chat_for_attempt().model, "engine");
    assert_eq!(
        call.body.to_bytes(),
        body.replace("\"alias\"", "\"engine\"").as_bytes()
    );
    assert!(MessagesCall::read(bytes::Bytes::from_static(b"{}")).is_err());
}
