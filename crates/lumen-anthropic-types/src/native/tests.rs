use lumen_openai_types::{HasModel, HasUsage};

use super::NativeEvent;
use crate::NativeUsage;

const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"engine-m","content":[],"stop_reason":null,"usage":{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":1}}}"#;
const DELTA: &str =
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"héllo"}}"#;
const END: &str = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}"#;

fn read(events: &[&str]) -> Vec<NativeEvent> {
    let mut usage = NativeUsage::new();
    events
        .iter()
        .map(|e| NativeEvent::event(e.as_bytes(), &mut usage).unwrap())
        .collect()
}

#[test]
fn usage_is_the_prompt_from_message_start_and_the_output_from_message_delta() {
    let events = read(&[START, DELTA, END]);
    assert_eq!(events[0].tokens(), Some((15, 1)));
    assert!(!events[0].is_usage_only());
    assert_eq!(events[1].tokens(), None);
    assert_eq!(events[1].output_bytes(), Some("héllo".len() as u64));
    assert_eq!(events[2].tokens(), Some((15, 7)), "the input is kept");
    assert!(events[2].is_usage_only());
    assert_eq!(
        events.iter().map(NativeEvent::kind).collect::<Vec<_>>(),
        ["message_start", "content_block_delta", "message_delta"]
    );
}

#[test]
fn events_are_sent_as_they_came() {
    let events = read(&[START, DELTA, END]);
    for (e, raw) in events.iter().zip([START, DELTA, END]) {
        assert_eq!(serde_json::to_string(e).unwrap(), raw);
    }
}

#[test]
fn the_model_is_rewritten_in_place_only_where_one_is_named() {
    let mut events = read(&[START, DELTA]);
    assert_eq!(events[0].model(), "engine-m");
    "alias".clone_into(events[0].model_mut());
    assert_eq!(
        events[0].json(),
        START.replace(r#""model":"engine-m""#, r#""model":"alias""#)
    );
    "alias".clone_into(events[1].model_mut());
    assert_eq!(events[1].json(), DELTA);
}

#[test]
fn a_whole_answer_is_read_and_its_model_rewritten() {
    let body = r#"{"id":"msg_1","type":"message","model":"engine-m","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":4,"output_tokens":2}}"#;
    let mut a = NativeEvent::answer(body.as_bytes()).unwrap();
    assert_eq!(a.tokens(), Some((4, 2)));
    assert_eq!(serde_json::to_string(&a).unwrap(), body);
    "alias".clone_into(a.model_mut());
    assert_eq!(a.json(), body.replace("engine-m", "alias"));
    let back: NativeEvent = serde_json::from_str(body).unwrap();
    assert_eq!(back.tokens(), Some((4, 2)));
}

#[test]
fn what_is_not_a_message_is_refused() {
    assert!(NativeEvent::answer(b"not json").is_err());
    assert!(NativeEvent::answer(br#"{"type":"error","error":{"type":"api_error"}}"#).is_err());
    assert!(NativeEvent::answer(b"[]").is_err());
    assert!(NativeEvent::event(b"{", &mut NativeUsage::new()).is_err());
}
