use bytes::Bytes;

use crate::continuation::Resumable;
use crate::request::parse_shared;
use crate::{
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Forwardable, Prompt, StreamOptions,
};

fn parsed<T: Forwardable>(s: &str) -> T {
    parse_shared(&Bytes::from(s.to_owned())).unwrap()
}

fn chat(s: &str) -> ChatCompletionRequest {
    parsed(s)
}

/// The pieces joined.
fn sent<T: Forwardable>(r: &T) -> Option<String> {
    r.forwarded()
        .map(|p| String::from_utf8(p.concat()).unwrap())
}

const BODY: &str = r#" { "model" : "a",  "messages":[ {"role":"user","content":"h\u00e9"} ],
  "top_k": 5, "stream": false, "junk": [1, 2.50, {"x":null}] } "#;

#[test]
fn unchanged_is_the_body_itself() {
    let r = chat(BODY);
    let pieces = r.forwarded().unwrap();
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0], BODY.as_bytes());
    // The messages are read from the body, not a copy.
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages.to_vec().unwrap()[0].role, "user");
}

#[test]
fn a_new_model_is_spliced_in_place() {
    let mut r = chat(BODY);
    r.model = "engine/m\"1".into();
    assert_eq!(
        sent(&r).unwrap(),
        BODY.replace(r#""a""#, r#""engine/m\"1""#)
    );
}

#[test]
fn a_model_missing_or_null_is_set_once() {
    let mut r = chat(r#"{"messages":[]}"#);
    r.model = "m".into();
    assert_eq!(sent(&r).unwrap(), r#"{"model":"m","messages":[]}"#);
    let mut r = chat(r#"{"model":null,"messages":[]}"#);
    r.model = "m".into();
    assert_eq!(sent(&r).unwrap(), r#"{"model":"m","messages":[]}"#);
}

#[test]
fn the_usage_ask_and_added_members_are_spliced() {
    let mut r = chat(r#"{"model":"m","stream":true,"messages":[],"top_k":1}"#);
    r.stream_options = Some(StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    r.extra.insert("priority", &3).unwrap();
    let out = sent(&r).unwrap();
    assert_eq!(
        out,
        r#"{"stream_options":{"include_usage":true},"priority":3,"model":"m","stream":true,"messages":[],"top_k":1}"#
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::to_value(&r).unwrap());
    // Present already: replaced in place.
    let mut r = chat(r#"{"model":"m","stream":true,"stream_options":{"x":1},"messages":[]}"#);
    r.stream_options.as_mut().unwrap().include_usage = Some(true);
    assert_eq!(
        sent(&r).unwrap(),
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true,"x":1},"messages":[]}"#
    );
    // A stream asked for on a body without `stream`.
    let mut r = chat(r#"{"model":"m","messages":[]}"#);
    r.stream = Some(true);
    assert_eq!(
        sent(&r).unwrap(),
        r#"{"stream":true,"model":"m","messages":[]}"#
    );
    // `stream: false` dropped is the same request.
    let mut r = chat(BODY);
    r.stream = None;
    assert_eq!(sent(&r).unwrap(), BODY);
}

#[test]
fn other_changes_are_serialised() {
    let cases: [fn(&mut ChatCompletionRequest); 5] = [
        |r| r.max_tokens = Some(3),
        |r| r.messages = vec![crate::ChatMessage::new("user", "x")].into(),
        |r| {
            r.extra.insert("top_k", &6).unwrap();
        },
        |r| {
            r.extra.remove("junk");
        },
        |r| r.user = Some("u".into()),
    ];
    for change in cases {
        let mut r = chat(BODY);
        change(&mut r);
        assert!(r.forwarded().is_none(), "{r:?}");
    }
    // Built in code: no source.
    assert!(ChatCompletionRequest::default().forwarded().is_none());
}

#[test]
fn a_clone_forwards_the_same_bytes_without_copying_them() {
    let r = chat(BODY);
    let mut c = r.clone();
    c.model = "x".into();
    assert_eq!(sent(&c).unwrap(), BODY.replace(r#""a""#, r#""x""#));
    assert_eq!(r, chat(BODY));
    assert_eq!(
        serde_json::to_value(&r).unwrap()["messages"][0]["content"],
        "hé"
    );
}

const COMPLETION: &str = r#" {"prompt" : "Once \u0075pon\n" , "model":"a", "top_k":5,
  "max_tokens": 20, "echo":false, "junk": [1, 2.50, {"x":null}] } "#;

const EMBEDDING: &str = r#"{ "input": [[1, 2], [3]], "model" : "a", "dimensions": 8,
  "extra_body": {"truncate":true} }"#;

#[test]
fn a_completion_or_embedding_unchanged_is_the_body_itself() {
    let r: CompletionRequest = parsed(COMPLETION);
    assert_eq!(r.forwarded().unwrap(), vec![Bytes::from(COMPLETION)]);
    // The prompt is read from the body, not a copy.
    assert!(r.prompt.shared_bytes().is_some());
    assert_eq!(r.prompt.leading_bytes(100), b"Once upon\n");
    let r: EmbeddingRequest = parsed(EMBEDDING);
    assert_eq!(sent(&r).unwrap(), EMBEDDING);
    assert!(r.input.shared_bytes().is_some());
    assert_eq!(
        r.input.leading_bytes(8),
        [1u32, 2].map(u32::to_le_bytes).concat()
    );
    assert!(r.validate().is_ok());
    assert_eq!(r.input.count(), 2);
    // The serialised form (a cache key's, a fallback's) is the same request.
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        serde_json::from_str::<serde_json::Value>(EMBEDDING).unwrap()
    );
}

#[test]
fn a_completion_or_embedding_gets_its_model_and_usage_ask_spliced() {
    let mut r: CompletionRequest = parsed(COMPLETION);
    r.model = "m1".into();
    r.stream = Some(true);
    r.stream_options = Some(StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    r.extra.insert("priority", &1).unwrap();
    assert_eq!(
        sent(&r).unwrap(),
        format!(
            r#" {{"stream":true,"stream_options":{{"include_usage":true}},"priority":1,{}"#,
            &COMPLETION[2..].replace(r#""a""#, r#""m1""#)
        )
    );
    let mut r: EmbeddingRequest = parsed(EMBEDDING);
    r.model = "m1".into();
    assert_eq!(sent(&r).unwrap(), EMBEDDING.replace(r#""a""#, r#""m1""#));
}

#[test]
fn other_completion_and_embedding_changes_are_serialised() {
    let completions: [fn(&mut CompletionRequest); 5] = [
        |r| r.max_tokens = Some(3),
        |r| r.prompt = Prompt::Text("x".into()),
        |r| r.seed = Some(1),
        |r| {
            r.extra.insert("echo", &true).unwrap();
        },
        |r| r.user = Some("u".into()),
    ];
    for change in completions {
        let mut r: CompletionRequest = parsed(COMPLETION);
        change(&mut r);
        assert!(r.forwarded().is_none(), "{r:?}");
    }
    let embeddings: [fn(&mut EmbeddingRequest); 4] = [
        |r| r.dimensions = None,
        |r| r.encoding_format = Some("base64".into()),
        |r| r.input = Prompt::Text("x".into()),
        |r| {
            r.extra.remove("extra_body");
        },
    ];
    for change in embeddings {
        let mut r: EmbeddingRequest = parsed(EMBEDDING);
        change(&mut r);
        assert!(r.forwarded().is_none(), "{r:?}");
    }
    assert!(CompletionRequest::default().forwarded().is_none());
    assert!(EmbeddingRequest::default().forwarded().is_none());
}

/// Continuation rewrites the prompt (and lowers `max_tokens`): a splice cannot carry that, so
/// the continued request is serialised, with the prompt extended and every other member kept.
#[test]
fn a_continued_completion_is_serialised_with_its_prompt_extended() {
    let mut r: CompletionRequest = parsed(COMPLETION);
    r.model = "m1".into();
    r.stream = Some(true);
    let cont = r.with_partial_answer(" there was", 4).unwrap();
    assert!(cont.forwarded().is_none());
    let v = serde_json::to_value(&cont).unwrap();
    assert_eq!(v["prompt"], "Once upon\n there was");
    assert_eq!(v["max_tokens"], 16);
    assert_eq!(v["model"], "m1");
    assert_eq!(v["top_k"], 5);
    assert_eq!(v["junk"][2]["x"], serde_json::Value::Null);
    // The request it continues still forwards the client's bytes.
    assert!(r.forwarded().is_some());
}

/// A member the type does not read but may appear twice in the body (embeddings have no
/// `stream`, so a client's two `stream` members are both unknown members): no splice could be
/// sure which the engine reads, so the request is serialised, both kept as they came.
#[test]
fn a_repeated_unknown_member_named_like_a_spliced_one_is_serialised() {
    let body = r#"{"model":"m1","input":"x","stream":1,"stream":2}"#;
    let r: EmbeddingRequest = parsed(body);
    assert!(r.source.is_none());
    assert!(r.forwarded().is_none());
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"model":"m1","input":"x","stream":1,"stream":2}"#
    );
}

/// Any body of known and unknown members, in any order and spacing, with any of the changes
/// Lumen makes on the way (model, stream, the usage ask, an appended `priority`): what is
/// forwarded is the body itself when nothing changed, and always reads back as the request
/// Lumen holds.
mod property {
    use proptest::prelude::*;
    use serde::Serialize;

    use super::*;
    use crate::request::parse;

    /// The members a body may hold (after its bulk), each with the spellings it may take.
    const MEMBERS: [(&str, [&str; 3]); 8] = [
        ("model", [r#""a""#, "null", r#""m\u0031""#]),
        ("stream", ["true", "false", "null"]),
        (
            "stream_options",
            [r#"{"include_usage":false}"#, r#"{ "x" : 1 }"#, "null"],
        ),
        ("max_tokens", ["5", "1e0", "7"]),
        ("user", [r#""\u0075""#, r#""u""#, "null"]),
        ("top_k", ["1e1", "-0", "[]"]),
        ("junk", [r#"[1, {"a": null}]"#, r#""é""#, "{}"]),
        ("priority", ["3", "null", r#""high""#]),
    ];

    const SPACES: [&str; 4] = ["", " ", "\n  ", "\t"];

    /// A body: the bulk member, then the chosen members, in the chosen order and spacing.
    fn body(bulk: (&str, &str), picks: &[(bool, usize, usize)], order: &[usize]) -> String {
        let mut members = vec![format!(r#""{}":{}"#, bulk.0, bulk.1)];
        for &i in order {
            let (on, value, space) = picks[i];
            if on {
                let (key, values) = MEMBERS[i];
                let space = SPACES[space];
                members.push(format!(r#"{space}"{key}"{space}:{space}{}"#, values[value]));
            }
        }
        format!("{{{}}}", members.join(","))
    }

    /// Lumen's changes: a model, `stream` set, the usage ask, `priority` (replaced).
    #[derive(Debug, Clone)]
    struct Changes {
        model: Option<&'static str>,
        stream: bool,
        usage: bool,
        priority: bool,
    }

    fn changes() -> impl Strategy<Value = Changes> {
        (
            proptest::option::of(prop_oneof![Just("m1"), Just("engine/\"x\"")]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(model, stream, usage, priority)| Changes {
                model,
                stream,
                usage,
                priority,
            })
    }

    fn members() -> impl Strategy<Value = (Vec<(bool, usize, usize)>, Vec<usize>)> {
        (
            proptest::collection::vec((any::<bool>(), 0..3usize, 0..SPACES.len()), MEMBERS.len()),
            Just((0..MEMBERS.len()).collect::<Vec<_>>()).prop_shuffle(),
        )
    }

    /// The property for one request type: `change` applies [`Changes`] to it.
    fn forwards<T: Forwardable + std::fmt::Debug>(
        body: &str,
        c: &Changes,
        change: impl FnOnce(&mut T, &Changes),
    ) -> Result<(), TestCaseError> {
        let Ok(mut r) = parse_shared::<T>(&Bytes::from(body.to_owned())) else {
            // A spelling this type refuses (`"max_tokens": 1e0`): nothing to forward.
            return Ok(());
        };
        let unchanged = sent(&r);
        prop_assert_eq!(
            unchanged.as_deref(),
            Some(body),
            "unchanged: the body itself"
        );
        change(&mut r, c);
        let Some(out) = sent(&r) else {
            // Only a member rewritten falls back: `priority` replaced when the body had one.
            prop_assert!(c.priority && body.contains(r#""priority""#), "{:?}", r);
            return Ok(());
        };
        let again: T =
            parse(out.as_bytes()).map_err(|e| TestCaseError::fail(format!("{out}: {e}")))?;
        // As values: members appended by Lumen come first in the body, last in `extra`.
        prop_assert_eq!(json(&again), json(&r), "{}", out);
        Ok(())
    }

    fn json<T: Serialize>(r: &T) -> serde_json::Value {
        serde_json::to_value(r).unwrap_or_default()
    }

    fn usage(o: &mut Option<StreamOptions>) {
        o.get_or_insert_with(Default::default).include_usage = Some(true);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_completion_forwards_as_the_request_it_is(
            (picks, order) in members(),
            c in changes(),
            bulk in prop_oneof![Just(r#""Once \u0075pon""#), Just("[1, 2]"), Just(r#"[["x"]]"#)],
        ) {
            let body = body(("prompt", bulk), &picks, &order);
            forwards::<CompletionRequest>(&body, &c, |r, c| {
                if let Some(m) = c.model { r.model = m.into(); }
                if c.stream { r.stream = Some(true); }
                if c.usage { usage(&mut r.stream_options); }
                if c.priority { r.extra.insert("priority", &1).unwrap(); }
            })?;
        }

        #[test]
        fn any_embedding_forwards_as_the_request_it_is(
            (picks, order) in members(),
            c in changes(),
            bulk in prop_oneof![Just(r#" [ "a" , "b\n" ] "#), Just("[[1], [2, 3]]"), Just(r#""x""#)],
        ) {
            let body = body(("input", bulk.trim()), &picks, &order);
            forwards::<EmbeddingRequest>(&body, &c, |r, c| {
                if let Some(m) = c.model { r.model = m.into(); }
                if c.priority { r.extra.insert("priority", &1).unwrap(); }
            })?;
        }

        #[test]
        fn any_chat_forwards_as_the_request_it_is(
            (picks, order) in members(),
            c in changes(),
        ) {
            let body = body(("messages", r#"[{"role":"user","content":"h\u00e9"}]"#), &picks, &order);
            forwards::<ChatCompletionRequest>(&body, &c, |r, c| {
                if let Some(m) = c.model { r.model = m.into(); }
                if c.stream { r.stream = Some(true); }
                if c.usage { usage(&mut r.stream_options); }
                if c.priority { r.extra.insert("priority", &1).unwrap(); }
            })?;
        }
    }
}
