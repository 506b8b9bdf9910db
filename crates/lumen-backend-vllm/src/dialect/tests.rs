use serde_json::{Value, json};

use super::*;

fn request(body: Value) -> JsonRequest {
    lumen_openai_types::request::parse(body.to_string().as_bytes()).unwrap()
}

fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn only_llamacpp_tokenizer_calls_are_translated() {
    let r = request(json!({"model": "m", "prompt": "x"}));
    for path in [
        "/tokenize",
        "/detokenize",
        "/v1/rerank",
        "/rerank",
        "/v2/rerank",
    ] {
        assert_eq!(plan(Dialect::Vllm, path, &r), JsonCall::Forward, "{path}");
    }
    assert_eq!(plan(Dialect::Llamacpp, "/v1/rerank", &r), JsonCall::Forward);
    assert_eq!(
        plan(Dialect::Llamacpp, "/detokenize", &r),
        JsonCall::LlamacppDetokenize
    );
    // vLLM's defaults, except that the chat form gets llama.cpp's chat-path BOS.
    assert_eq!(
        plan(Dialect::Llamacpp, "/tokenize", &r),
        JsonCall::LlamacppTokenize(Tokenize {
            chat: false,
            add_special: true,
            token_strs: false
        })
    );
    let chat = request(json!({
        "model": "m", "messages": [], "add_special_tokens": false, "return_token_strs": true
    }));
    assert_eq!(
        plan(Dialect::Llamacpp, "/tokenize", &chat),
        JsonCall::LlamacppTokenize(Tokenize {
            chat: true,
            add_special: false,
            token_strs: true
        })
    );
}

#[test]
fn a_prompt_becomes_content_and_other_fields_pass() {
    let r = request(json!({
        "model": "m", "prompt": "hi", "add_special_tokens": false, "return_token_strs": true,
        "sim": {"ttft_ms": 1}
    }));
    let JsonCall::LlamacppTokenize(p) = plan(Dialect::Llamacpp, "/tokenize", &r) else {
        panic!()
    };
    let out = tokenize_request(&r, &p, None).unwrap();
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({
            "model": "m", "sim": {"ttft_ms": 1},
            "content": "hi", "add_special": false, "with_pieces": true
        })
    );
}

#[test]
fn messages_go_to_the_template_then_its_text_is_tokenized() {
    let r = request(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "add_generation_prompt": false, "return_token_strs": false
    }));
    let t = template_request(&r);
    assert_eq!(
        serde_json::to_value(&t).unwrap(),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": false})
    );
    let rendered = template_prompt(br#"{"prompt":"<|user|>hi\n"}"#).unwrap();
    let JsonCall::LlamacppTokenize(p) = plan(Dialect::Llamacpp, "/tokenize", &r) else {
        panic!()
    };
    let out = tokenize_request(&r, &p, Some(&rendered)).unwrap();
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({"model": "m", "content": "<|user|>hi\n", "add_special": true, "with_pieces": false})
    );
    assert!(template_prompt(br#"{"error":"x"}"#).is_err());
}

#[test]
fn answers_take_vllm_shapes() {
    let a = tokenize_answer(br#"{"tokens":[1,15043,3186]}"#, Some(4096), false).unwrap();
    assert_eq!(
        String::from_utf8(a).unwrap(),
        r#"{"count":3,"max_model_len":4096,"tokens":[1,15043,3186],"token_strs":null}"#
    );
    let a = tokenize_answer(
        br#"{"tokens":[{"id":7,"piece":"Hi"},{"id":200,"piece":[195]},{"id":170,"piece":[169,10]}]}"#,
        None,
        true,
    )
    .unwrap();
    assert_eq!(
        value(&a),
        json!({
            "count": 3, "max_model_len": null, "tokens": [7, 200, 170],
            "token_strs": ["Hi", "<0xC3>", "<0xA9><0x0A>"]
        })
    );
    assert_eq!(
        value(&tokenize_answer(br#"{"tokens":[]}"#, Some(8), false).unwrap()),
        json!({"count": 0, "max_model_len": 8, "tokens": [], "token_strs": null})
    );
    for bad in [&br#"{}"#[..], br#"{"tokens":"x"}"#, b"not json"] {
        assert!(tokenize_answer(bad, None, false).is_err());
    }
    assert_eq!(
        value(&detokenize_answer(br#"{"content":"<s>Hi"}"#).unwrap()),
        json!({"prompt": "<s>Hi"})
    );
    assert!(detokenize_answer(br#"{"prompt":"Hi"}"#).is_err());
}

#[test]
fn props_give_the_per_slot_context() {
    assert_eq!(props_path(""), "/props");
    assert_eq!(props_path("qwen2.5-7b"), "/props?model=qwen2.5-7b");
    assert_eq!(props_path("org/m q&x"), "/props?model=org%2Fm%20q%26x");
    let props = br#"{"default_generation_settings":{"n_ctx":8192,"params":{}},"total_slots":4}"#;
    assert_eq!(props_context(props), Some(8192));
    for none in [
        &br#"{"total_slots":4}"#[..],
        br#"{"default_generation_settings":{"n_ctx":0}}"#,
    ] {
        assert_eq!(props_context(none), None);
    }
}

#[tokio::test(start_paused = true)]
async fn context_lengths_are_kept_a_minute_and_bounded() {
    let c = ContextLengths::default();
    assert_eq!(c.get("m"), None);
    c.put("m", Some(4096));
    c.put("unknown", None);
    assert_eq!(c.get("m"), Some(Some(4096)));
    assert_eq!(c.get("unknown"), Some(None));
    tokio::time::advance(ContextLengths::FRESH).await;
    assert_eq!(c.get("m"), None, "stale");
    for i in 0..ContextLengths::MAX + 10 {
        c.put(&format!("passthrough-{i}"), Some(1));
    }
    assert_eq!(c.known.lock().unwrap().len(), ContextLengths::MAX);
}
