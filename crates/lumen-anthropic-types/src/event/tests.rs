use serde_json::value::RawValue;

use super::*;
use crate::{ErrorType, MessagesResponse};

/// The frames of Anthropic's documented streaming example (text, then a tool call), member for
/// member, written out by hand.
#[test]
fn frames_match_anthropics_documented_stream() {
    let usage = Usage {
        input_tokens: 472,
        output_tokens: 2,
        ..Usage::default()
    };
    let events = [
        StreamEvent::MessageStart {
            message: MessagesResponse::empty(
                "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
                "claude-opus-4-1".into(),
                usage,
            ),
        },
        StreamEvent::ContentBlockStart {
            index: 0,
            content_block: ResponseBlock::Text {
                text: String::new(),
            },
        },
        StreamEvent::Ping,
        StreamEvent::ContentBlockDelta {
            index: 0,
            delta: Delta::TextDelta {
                text: "Okay".into(),
            },
        },
        StreamEvent::ContentBlockStop { index: 0 },
        StreamEvent::ContentBlockStart {
            index: 1,
            content_block: ResponseBlock::ToolUse {
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                name: "get_weather".into(),
                input: RawValue::from_string("{}".into()).unwrap(),
            },
        },
        StreamEvent::ContentBlockDelta {
            index: 1,
            delta: Delta::InputJsonDelta {
                partial_json: "{\"location\":".into(),
            },
        },
        StreamEvent::ContentBlockStop { index: 1 },
        StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(StopReason::ToolUse),
                stop_sequence: None,
            },
            usage: Usage {
                output_tokens: 89,
                ..Usage::default()
            },
        },
        StreamEvent::MessageStop,
    ];
    let expected = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-1\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":0,\"output_tokens\":89}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    assert_eq!(std::str::from_utf8(&to_sse(&events)).unwrap(), expected);
}

#[test]
fn thinking_and_error_frames() {
    let e = StreamEvent::ContentBlockStart {
        index: 0,
        content_block: ResponseBlock::Thinking {
            thinking: String::new(),
            signature: String::new(),
        },
    };
    assert_eq!(
        &e.to_sse()[..],
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n"
    );
    let e = StreamEvent::ContentBlockDelta {
        index: 0,
        delta: Delta::SignatureDelta {
            signature: "s".into(),
        },
    };
    assert!(
        std::str::from_utf8(&e.to_sse())
            .unwrap()
            .contains(r#""delta":{"type":"signature_delta","signature":"s"}"#)
    );
    let e = StreamEvent::Error {
        error: ErrorObject {
            kind: ErrorType::OverloadedError,
            message: "Overloaded".into(),
        },
    };
    assert_eq!(
        &e.to_sse()[..],
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
    );
}
