use super::*;
use crate::{ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Prompt};

#[test]
fn unknown_fields_are_kept_and_forwarded_unchanged() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi","cache_salt":"s"}],
        "top_k":5,"guided_json":{"type":"object"},"chat_template_kwargs":{"enable_thinking":false},
        "priority":-3,"stream":false}"#;
    let req: ChatCompletionRequest = parse(body).unwrap();
    assert_eq!(req.extra.get_as::<i64>("top_k"), Some(5));
    assert_eq!(req.extra.get_as::<i64>("priority"), Some(-3));
    assert_eq!(
        req.extra.get("guided_json").unwrap().get(),
        r#"{"type":"object"}"#,
        "unknown fields stay the client's JSON"
    );
    let messages = req.messages.to_vec().unwrap();
    assert_eq!(
        messages[0].extra.get_as::<String>("cache_salt").unwrap(),
        "s"
    );
    let back: serde_json::Value = serde_json::to_value(&req).unwrap();
    let orig: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(back, orig);
}

#[test]
fn missing_field_names_the_param() {
    let err = parse::<ChatCompletionRequest>(br#"{"model":"m"}"#).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("messages"));
    assert_eq!(err.code, Some("missing_required_parameter"));
    // Messages stay JSON when parsed, so their shape is checked by `validate`, with the path.
    let check = |body: &[u8]| {
        parse::<ChatCompletionRequest>(body)
            .and_then(|r| r.validate())
            .unwrap_err()
    };
    let err = check(br#"{"model":"m","messages":[{"role":"user"},{"content":"x"}]}"#);
    assert_eq!(err.param.as_deref(), Some("messages[1].role"));
    assert_eq!(err.code, Some("missing_required_parameter"));
    let err = check(br#"{"model":"m","messages":[{"role":5}]}"#);
    assert_eq!(err.param.as_deref(), Some("messages[0].role"));
    let err = check(br#"{"model":"m","messages":[{"role":"user","content":{}}]}"#);
    assert_eq!(err.param.as_deref(), Some("messages[0].content"));
    let err = check(br#"{"model":"m","messages":[{"role":""}]}"#);
    assert_eq!(err.param.as_deref(), Some("messages[0].role"));
    let err = check(br#"{"model":"m","messages":[1]}"#);
    assert_eq!(err.param.as_deref(), Some("messages[0]"));
    let err = check(br#"{"model":"m","messages":"hi"}"#);
    assert_eq!(err.param.as_deref(), Some("messages"));
    let err = parse::<CompletionRequest>(br#"{"model":"m","prompt":[1,"a"]}"#)
        .and_then(|r| r.validate())
        .unwrap_err();
    assert_eq!(err.param.as_deref(), Some("prompt"));
    let err = parse::<EmbeddingRequest>(br#"{"model":"m","input":[[1],[-1]]}"#)
        .and_then(|r| r.validate())
        .unwrap_err();
    assert_eq!(err.param.as_deref(), Some("input"));
    let err = parse::<EmbeddingRequest>(br#"{"model":"m","input":[[1],[]]}"#)
        .and_then(|r| r.validate())
        .unwrap_err();
    assert_eq!(err.message, "'input' must not be empty.");
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
    // Parsed prompts stay raw JSON; they compare equal to the typed shape they hold.
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

#[test]
fn trailing_data_after_the_value_is_a_syntax_error() {
    let one = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for body in [
        format!("{one} xyz"),
        format!("{one}{one}"),
        format!("{one}]"),
    ] {
        let err = parse::<ChatCompletionRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(err.param, None, "{body}");
        assert!(
            err.message.starts_with("We could not parse the JSON body"),
            "{body}: {}",
            err.message
        );
    }
    assert!(parse::<ChatCompletionRequest>(format!(" {one}\r\n\t").as_bytes()).is_ok());
}

#[test]
fn a_parsed_request_serialises_back_to_the_same_json() {
    let body = r#"{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"be brief"},{"type":"image_url","image_url":{"url":"x"}}]},{"role":"user","content":"hi","name":"n","cache_salt":"s"}],"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true},"top_k":5,"guided_json":{"type":"object","properties":{}},"chat_template_kwargs":{"enable_thinking":false}}"#;
    let req: ChatCompletionRequest = parse(body.as_bytes()).unwrap();
    req.validate().unwrap();
    assert_eq!(serde_json::to_string(&req).unwrap(), body);
    let views: Vec<_> = req.messages.views().collect();
    assert_eq!(views.len(), 2);
    let mut text = Vec::new();
    views[0].text_into(&mut text, 1024);
    assert_eq!(text, b"be brief");
    let typed = req.messages.to_vec().unwrap();
    assert_eq!(typed[1].content.as_ref().unwrap().text(), "hi");
    assert_eq!(typed[0].content.as_ref().unwrap().text(), "be brief");
    assert_eq!(req.messages.len(), 2);
    // Built in code, the same request serialises the same way.
    let built = ChatCompletionRequest {
        model: "m".into(),
        messages: typed.into(),
        ..Default::default()
    };
    assert!(
        serde_json::to_string(&built)
            .unwrap()
            .contains(r#""cache_salt":"s""#)
    );
    for (body, prompt) in [
        (
            r#"{"model":"m","prompt":[1,2,3],"top_k":1}"#,
            &[1u8, 0, 0, 0, 2, 0, 0, 0][..],
        ),
        (
            r#"{"model":"m","prompt":[[1,2],[3]]}"#,
            &[1, 0, 0, 0, 2, 0, 0, 0],
        ),
        (r#"{"model":"m","prompt":["ab","c"]}"#, b"ab"),
        (r#"{"model":"m","prompt":"abc"}"#, b"ab"),
    ] {
        let req: CompletionRequest = parse(body.as_bytes()).unwrap();
        req.validate().unwrap();
        assert_eq!(serde_json::to_string(&req).unwrap(), body);
        let max = if prompt.len() == 2 { 2 } else { 8 };
        assert_eq!(req.prompt.leading_bytes(max), prompt, "{body}");
    }
}

/// Parts kept as raw JSON (unknown fields, `messages`) were skipped by serde_json without its
/// recursion limit, so 100,000 levels reached the engine. Nesting is bounded for the whole body.
#[test]
fn nesting_deeper_than_the_limit_is_refused_anywhere_in_the_body() {
    let nest = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    let chat = |junk: String| {
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"junk":{junk}}}"#)
    };
    for body in [
        chat(nest("[", "", "]", 100_000)),
        chat(nest(r#"{"a":"#, "1", "}", 100_000)),
        format!(
            r#"{{"model":"m","messages":{}}}"#,
            nest("[", "", "]", 100_000)
        ),
        chat(nest("[", "", "]", MAX_DEPTH)),
    ] {
        let err = parse::<ChatCompletionRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(err.param, None);
        assert!(
            err.message.contains("nested deeper than"),
            "{}",
            err.message
        );
    }
    // At the limit (the body's own object is one level), and brackets inside strings, are fine.
    let ok = chat(nest("[", "", "]", MAX_DEPTH - 1));
    parse::<ChatCompletionRequest>(ok.as_bytes()).unwrap();
    let strings = chat(format!(r#""{}\"{}""#, "[".repeat(1000), "{".repeat(1000)));
    parse::<ChatCompletionRequest>(strings.as_bytes()).unwrap();
}

#[test]
fn duplicate_and_out_of_range_fields_name_the_param() {
    let err =
        parse::<ChatCompletionRequest>(br#"{"model":"m","model":"x","messages":[]}"#).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("model"));
    assert!(err.message.contains("more than once"), "{}", err.message);
    let err = parse::<ChatCompletionRequest>(
        br#"{"model":"m","messages":[],"str\u0065am":1,"stream":1}"#,
    )
    .unwrap_err();
    assert_eq!(err.param.as_deref(), Some("stream"));
    for field in ["max_tokens", "temperature", "n", "seed"] {
        let body = format!(r#"{{"model":"m","messages":[],"{field}":1e400}}"#);
        let err = parse::<ChatCompletionRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some(field), "{}", err.message);
    }
}

/// `max_tokens: 0` reached the engine, which answered an empty completion (or, on vLLM, a 400
/// in its own words). A chat request must leave room for at least one token. Completions keep
/// 0 (with `echo`, it scores the prompt).
#[test]
fn a_chat_token_budget_of_zero_is_refused() {
    for field in ["max_tokens", "max_completion_tokens"] {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"{field}":0}}"#);
        let req: ChatCompletionRequest = parse(body.as_bytes()).unwrap();
        let err = req.validate().unwrap_err();
        assert_eq!(err.param.as_deref(), Some(field));
        assert_eq!(
            err.message,
            format!("0 is less than the minimum of 1 - '{field}'")
        );
    }
    let req: CompletionRequest =
        parse(br#"{"model":"m","prompt":"x","max_tokens":0,"echo":true}"#).unwrap();
    req.validate().unwrap();
}
