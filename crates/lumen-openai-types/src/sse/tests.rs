use super::*;

/// A vLLM chat stream as it appears on the wire (with usage and the terminal sentinel).
const VLLM_CHAT: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \\u00e9\xe2\x9c\x93\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"total_tokens\":5,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";

/// An SGLang/TGI-style stream with CRLF, comments, keep-alives, event names and multi-line data.
const MIXED: &[u8] = b"\xEF\xBB\xBF: keep-alive\r\n\r\n\
event: message\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n\
data:no-space\rdata:  two-spaces\r\r\
:comment\n\
data\n\n\
retry: 100\nunknown: x\ndata: [DONE]\n\n";

fn decode_all(chunks: &[&[u8]]) -> Vec<Event> {
    let mut d = SseDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(e) = d.next_event().unwrap() {
            out.push(e);
        }
    }
    assert!(!d.has_partial(), "left over: {d:?}");
    out
}

fn data_of(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
        .collect()
}

#[test]
fn vllm_stream_whole() {
    let events = decode_all(&[VLLM_CHAT]);
    assert_eq!(events.len(), 5);
    assert!(events[4].is_done());
    assert!(
        events[..4]
            .iter()
            .all(|e| !e.is_done() && e.data.starts_with(b"{"))
    );
}

#[test]
fn mixed_stream_whole() {
    let events = decode_all(&[MIXED]);
    assert_eq!(
        data_of(&events),
        vec!["{\"a\":\n1}", "no-space\n two-spaces", "", "[DONE]"]
    );
    assert_eq!(events[0].event.as_deref(), Some("message"));
    assert_eq!(events[0].id.as_deref(), Some("7"));
    assert_eq!(events[1].event, None);
    assert_eq!(events[1].id.as_deref(), Some("7"), "last event id persists");
}

/// Every split point of every recorded stream must decode to the same events.
#[test]
fn every_two_way_split_gives_the_same_events() {
    for stream in [VLLM_CHAT, MIXED] {
        let whole = decode_all(&[stream]);
        for i in 0..=stream.len() {
            let (a, b) = stream.split_at(i);
            assert_eq!(decode_all(&[a, b]), whole, "split at {i}");
        }
    }
}

#[test]
fn every_three_way_split_of_the_mixed_stream() {
    let whole = decode_all(&[MIXED]);
    for i in 0..=MIXED.len() {
        for j in i..=MIXED.len() {
            let parts = [&MIXED[..i], &MIXED[i..j], &MIXED[j..]];
            assert_eq!(decode_all(&parts), whole, "split at {i},{j}");
        }
    }
}

#[test]
fn byte_at_a_time() {
    for stream in [VLLM_CHAT, MIXED] {
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode_all(&chunks), decode_all(&[stream]));
    }
}

#[test]
fn single_line_data_is_zero_copy() {
    let mut d = SseDecoder::new();
    d.push(b"data: {\"x\":1}\n\n");
    let e = d.next_event().unwrap().unwrap();
    assert_eq!(e.data.as_ref(), b"{\"x\":1}");
}

#[test]
fn partial_event_at_eof_is_reported_not_dispatched() {
    let mut d = SseDecoder::new();
    d.push(b"data: {\"x\":1}\n");
    assert_eq!(d.next_event().unwrap(), None);
    assert!(d.has_partial());
    d.push(b"data: {\"trunc");
    assert_eq!(d.next_event().unwrap(), None);
    assert!(d.has_partial());
}

#[test]
fn lone_cr_then_lf_in_next_chunk_is_one_terminator() {
    let events = decode_all(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(data_of(&events), vec!["a\nb"]);
}

#[test]
fn oversized_event_is_an_error() {
    let mut d = SseDecoder::with_max_event_bytes(16);
    d.push(b"data: 0123456789abcdefghij");
    assert_eq!(d.next_event(), Err(SseError::EventTooLarge { limit: 16 }));
    let mut d = SseDecoder::with_max_event_bytes(16);
    d.push(b"data: 0123456789\ndata: 0123456789\n");
    assert!(d.next_event().is_err());
}

#[test]
fn data_frame_round_trips() {
    let frame = data_frame(b"{\"k\":\"v\"}");
    assert_eq!(frame.as_ref(), b"data: {\"k\":\"v\"}\n\n");
    assert_eq!(data_of(&decode_all(&[&frame])), vec!["{\"k\":\"v\"}"]);
}

/// A long line in small pieces: each piece is searched once (the decoder remembers how far it
/// looked), and the result is the same as in one piece, including a CR that ends the line in a
/// later piece and an event after it.
#[test]
fn a_long_line_in_small_pieces_decodes_and_is_capped() {
    let line = format!("data: {}\r\n\r\ndata: next\n\n", "x".repeat(100_000));
    let pieces: Vec<&[u8]> = line.as_bytes().chunks(7).collect();
    let events = decode_all(&pieces);
    assert_eq!(
        data_of(&events),
        vec!["x".repeat(100_000), "next".to_owned()]
    );
    let mut d = SseDecoder::with_max_event_bytes(64 * 1024);
    let mut got = None;
    for piece in line.as_bytes().chunks(1024) {
        d.push(piece);
        if let Err(e) = d.next_event() {
            got = Some(e);
            break;
        }
    }
    assert_eq!(got, Some(SseError::EventTooLarge { limit: 64 * 1024 }));
    // After the error the decoder holds nothing: a later event decodes from scratch.
    d.push(b"data: ok\n\n");
    assert_eq!(d.next_event().unwrap().unwrap().data.as_ref(), b"ok");
}

/// SSE split invariance: whatever the transport does to a byte stream (any cut points, empty
/// reads), the decoder yields the same events, the same error and the same leftover as when
/// fed the whole stream at once, and as a line-at-a-time reading of the spec.
mod split_invariance {
    use proptest::prelude::*;

    use crate::fuzz::{decode, reference};
    use crate::sse::DEFAULT_MAX_EVENT_BYTES;

    /// Streams built from the pieces that make SSE hard: every line ending, BOMs, comments,
    /// fields with and without the space, multi-byte UTF-8, NUL in ids, and raw bytes.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"data".to_vec()),
            Just(b"event: e".to_vec()),
            Just(b"id: 7".to_vec()),
            Just(b"id: a\0b".to_vec()),
            Just(b"retry: 5".to_vec()),
            Just(b": keep-alive".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n\n".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just("é✓".as_bytes().to_vec()),
            Just(b"{\"a\":1}".to_vec()),
            Just(b"[DONE]".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    fn cut<'a>(input: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = points.iter().map(|p| p % (input.len() + 1)).collect();
        at.sort_unstable();
        let mut out = Vec::new();
        let mut from = 0;
        for p in at {
            out.push(&input[from..p]); // repeated points give empty reads
            from = p;
        }
        out.push(&input[from..]);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_split_decodes_to_the_same_events(
            input in stream(),
            points in proptest::collection::vec(any::<usize>(), 0..24),
            max in prop_oneof![Just(8usize), Just(32), Just(DEFAULT_MAX_EVENT_BYTES)],
        ) {
            let whole = decode(max, &[&input]);
            prop_assert_eq!(&whole, &decode(max, &cut(&input, &points)));
            prop_assert_eq!(&whole, &reference(max, &input));
        }
    }
}

/// Found by `split_invariance`: a line over the cap was refused when it arrived in pieces but
/// accepted when its end came in the same read.
#[test]
fn a_line_over_the_cap_is_refused_however_it_arrives() {
    let line = b"data: 123456789\n\n";
    let mut whole = SseDecoder::with_max_event_bytes(8);
    whole.push(line);
    assert_eq!(
        whole.next_event(),
        Err(SseError::EventTooLarge { limit: 8 })
    );
    let mut split = SseDecoder::with_max_event_bytes(8);
    let mut verdict = Ok(None);
    for b in line.chunks(1) {
        split.push(b);
        verdict = split.next_event();
        if verdict.is_err() {
            break;
        }
    }
    assert_eq!(verdict, Err(SseError::EventTooLarge { limit: 8 }));
}
