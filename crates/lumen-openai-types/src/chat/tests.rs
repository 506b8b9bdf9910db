use super::*;
use crate::request::parse;

/// The first message's text as prefix routing reads it, capped at `max` bytes.
fn first_text(body: &str, max: usize) -> Vec<u8> {
    let req: ChatCompletionRequest = parse(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    req.messages
        .views()
        .next()
        .unwrap()
        .text_into(&mut out, max);
    out
}

fn chat_with(content: &str) -> String {
    format!(r#"{{"model":"m","messages":[{{"role":"user","content":{content}}}]}}"#)
}

/// The bounded decoder reads what serde reads, escapes of every kind included, and stops at
/// the cap without reading the rest.
#[test]
fn message_text_is_decoded_like_serde_up_to_the_cap() {
    let texts = [
        "plain ascii",
        "quote \" backslash \\ slash / controls \u{8}\u{c}\n\r\t",
        "é ü 中文 and an emoji 😀 and \u{1}",
        "",
    ];
    for text in texts {
        // serde's escapes, and the same text with every character `\u`-escaped.
        let escaped = serde_json::to_string(text).unwrap();
        let mut all_u = String::from("\"");
        for unit in text.encode_utf16() {
            all_u.push_str(&format!("\\u{unit:04x}"));
        }
        all_u.push('"');
        for literal in [&escaped, &all_u] {
            let body = chat_with(literal);
            assert_eq!(first_text(&body, 1 << 20), text.as_bytes(), "{literal}");
            for max in [0, 1, 3, 7, 12] {
                let got = first_text(&body, max);
                let want = &text.as_bytes()[..text.len().min(max)];
                // The cap may fall inside a character; the bytes before it are the text's.
                assert!(
                    got.len() <= max && want.starts_with(&got),
                    "{literal} at {max}"
                );
                assert!(got.len() + 4 > want.len(), "{literal} at {max}: {got:?}");
            }
        }
    }
    // Text parts are read the same way; other parts and non-string text are skipped.
    let parts = r#"[{"type":"text","text":"a\u00e9"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":5},{"type":"text","text":"\nb"}]"#;
    assert_eq!(first_text(&chat_with(parts), 100), "aé\nb".as_bytes());
}

/// A lone surrogate ends the text there (serde refuses such a string).
#[test]
fn a_lone_surrogate_ends_the_text() {
    assert_eq!(first_text(&chat_with(r#""ab\ud800cd""#), 100), b"ab");
    assert_eq!(first_text(&chat_with(r#""ab\ud800\u0041""#), 100), b"ab");
    assert_eq!(
        first_text(&chat_with(r#""\ud83d\ude00!""#), 100),
        "😀!".as_bytes()
    );
}

/// Content that is neither a string, an array nor null is refused with serde's words, and
/// the three allowed shapes pass.
#[test]
fn content_of_the_wrong_type_is_refused_as_before() {
    for (content, words) in [
        (
            "5",
            "invalid type: integer `5`, expected a string or an array of content parts",
        ),
        (
            "-5",
            "invalid type: integer `-5`, expected a string or an array of content parts",
        ),
        (
            "1.5",
            "invalid type: floating point `1.5`, expected a string or an array of content parts",
        ),
        (
            "true",
            "invalid type: boolean `true`, expected a string or an array of content parts",
        ),
        (
            r#"{"a":1}"#,
            "invalid type: map, expected a string or an array of content parts",
        ),
    ] {
        let req: ChatCompletionRequest = parse(chat_with(content).as_bytes()).unwrap();
        let err = req.validate().unwrap_err();
        assert!(err.message.contains(words), "{content}: {}", err.message);
        assert_eq!(
            err.param.as_deref(),
            Some("messages[0].content"),
            "{content}"
        );
    }
    for content in [r#""\u00e9""#, "[]", "null"] {
        let req: ChatCompletionRequest = parse(chat_with(content).as_bytes()).unwrap();
        req.validate().unwrap();
    }
}
