use super::*;

#[test]
fn a_native_stream_is_billed_from_start_and_delta() {
    let mut u = NativeUsage::new();
    let events = [
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi","usage":{"output_tokens":999}}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    for e in events {
        u.observe_event(e.as_bytes()).unwrap();
    }
    assert_eq!(u.tokens(), Some((30, 15)));
    assert_eq!(u.usage().unwrap().input_tokens, 25);
}

#[test]
fn message_delta_may_restate_the_input() {
    // vLLM's and llama.cpp's servers put the input count in message_delta too.
    let mut u = NativeUsage::new();
    u.observe_event(
        br#"{"type":"message_start","message":{"usage":{"input_tokens":0,"output_tokens":0}}}"#,
    )
    .unwrap();
    u.observe_event(
        br#"{"type":"message_delta","delta":{},"usage":{"input_tokens":12,"output_tokens":7}}"#,
    )
    .unwrap();
    assert_eq!(u.tokens(), Some((12, 7)));
}

#[test]
fn nothing_reported_or_nonsense_is_none_and_garbage_is_an_error() {
    let mut u = NativeUsage::new();
    u.observe_event(br#"{"type":"ping"}"#).unwrap();
    assert_eq!(u.tokens(), None);
    assert!(u.observe_event(b"{not json").is_err());
    let huge = NativeUsage::from_response(
        br#"{"usage":{"input_tokens":18446744073709551615,"output_tokens":1}}"#,
    )
    .unwrap();
    assert_eq!(huge.tokens(), None);
}

#[test]
fn a_whole_answer_is_billed_from_its_usage() {
    let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"usage: not this"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":2,"output_tokens":4}}"#;
    assert_eq!(
        NativeUsage::from_response(body).unwrap().tokens(),
        Some((12, 4))
    );
}
