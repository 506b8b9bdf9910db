use super::*;
use crate::{ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Prompt};

#[test]
fn unknown_fields_are_kept_and_forwarded_unchanged() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi","cache_salt":"s"}],
        "top_k":5,"guided_json":{"type":"object"},"chat_template_kwargs":{"enable_thinking":false},
        "priority":-3,"stream":false}"#;
    let req: ChatCompletionRequest = parse(body).unwrap();
    assert_eq!(req.extra["top_k"], 5);
    assert_eq!(req.extra["priority"], -3);
    assert_eq!(req.messages[0].extra["cache_salt"], "s");
    let back: serde_json::Value = serde_json::to_value(&req).unwrap();
    let orig: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(back, orig);
}

#[test]
fn missing_field_names_the_param() {
    let err = parse::<ChatCompletionRequest>(br#"{"model":"m"}"#).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("messages"));
    assert_eq!(err.code, Some("missing_required_parameter"));
    let err = parse::<ChatCompletionRequest>(br#"{"model":"m","messages":[{"content":"x"}]}"#)
        .unwrap_err();
    assert_eq!(err.param.as_deref(), Some("messages[0].role"));
}

#[test]
fn wrong_type_names_the_path() {
    let err = parse::<ChatCompletionRequest>(br#"{"model":"m","messages":[],"max_tokens":"ten"}"#)
        .unwrap_err();
    assert_eq!(err.param.as_deref(), Some("max_tokens"));
    assert!(err.message.contains("max_tokens"), "{}", err.message);
    assert!(!err.message.contains("line 1"), "{}", err.message);
}

#[test]
fn syntax_errors_have_no_param() {
    let err = parse::<ChatCompletionRequest>(b"{not json").unwrap_err();
    assert_eq!(err.param, None);
    assert!(err.message.contains("could not parse the JSON body"));
    let err = parse::<ChatCompletionRequest>(b"").unwrap_err();
    assert!(err.message.contains("empty"));
}

#[test]
fn validation_rules() {
    let req: ChatCompletionRequest = parse(br#"{"model":"m","messages":[]}"#).unwrap();
    assert_eq!(
        req.validate().unwrap_err().param.as_deref(),
        Some("messages")
    );
    let req: ChatCompletionRequest =
        parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#)
            .unwrap();
    assert_eq!(
        req.validate().unwrap_err().param.as_deref(),
        Some("temperature")
    );
    let req: CompletionRequest = parse(br#"{"model":"m","prompt":[]}"#).unwrap();
    assert_eq!(req.validate().unwrap_err().param.as_deref(), Some("prompt"));
    let req: EmbeddingRequest =
        parse(br#"{"model":"m","input":"x","encoding_format":"hex"}"#).unwrap();
    assert_eq!(
        req.validate().unwrap_err().param.as_deref(),
        Some("encoding_format")
    );
}

#[test]
fn prompt_shapes() {
    for (body, want) in [
        (r#""a""#, Prompt::Text("a".into())),
        (r#"["a","b"]"#, Prompt::Texts(vec!["a".into(), "b".into()])),
        (r#"[1,2]"#, Prompt::Tokens(vec![1, 2])),
        (
            r#"[[1],[2,3]]"#,
            Prompt::TokenBatches(vec![vec![1], vec![2, 3]]),
        ),
    ] {
        let req: CompletionRequest =
            parse(format!(r#"{{"model":"m","prompt":{body}}}"#).as_bytes()).unwrap();
        assert_eq!(req.prompt, want);
    }
}

#[test]
fn null_model_means_unset() {
    let req: EmbeddingRequest = parse(br#"{"model":null,"input":"x"}"#).unwrap();
    assert_eq!(req.model, "");
}
