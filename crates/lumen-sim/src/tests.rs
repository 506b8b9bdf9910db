use crate::config::Faults;
use crate::text;

#[test]
fn base64_matches_the_standard_alphabet() {
    // 1.0f32 = 00 00 80 3f
    assert_eq!(text::base64_f32(&[1.0]), "AACAPw==");
    assert_eq!(text::base64_f32(&[1.0, 1.0, 1.0]), "AACAPwAAgD8AAIA/");
}

#[test]
fn embeddings_are_deterministic_and_bounded() {
    let a = text::embedding("hello", 16);
    assert_eq!(a, text::embedding("hello", 16));
    assert_ne!(a, text::embedding("hellp", 16));
    assert!(a.iter().all(|x| (-1.0..=1.0).contains(x)));
}

#[test]
fn answer_has_the_requested_token_count() {
    let joined: String = (0..5).map(text::token).collect();
    assert_eq!(text::answer(5), joined);
    assert_eq!(text::answer(0), "");
}

#[test]
fn per_request_faults_override_global_ones() {
    let global = Faults {
        status: Some(500),
        ttft_ms: Some(10),
        ..Faults::default()
    };
    let req = Faults {
        status: Some(429),
        hang: true,
        ..Faults::default()
    };
    let m = global.merged(&req);
    assert_eq!((m.status, m.hang, m.ttft_ms), (Some(429), true, Some(10)));
}

#[test]
fn error_rate_sequence_is_deterministic_and_roughly_right() {
    let hits = (0..10_000)
        .filter(|n| text::unit_from_counter(*n) < 0.25)
        .count();
    assert!((2_300..2_700).contains(&hits), "{hits}");
}

#[test]
fn own_words_are_one_token_each_and_everything_round_trips() {
    let mut ids = Vec::new();
    text::encode(&text::answer(22), |id| ids.push(id));
    assert_eq!(ids.len(), 22);
    for s in [
        "Lumen routes every request",
        "héllo, wörld ✓\n",
        " and a",
        "",
    ] {
        let mut ids = Vec::new();
        text::encode(s, |id| ids.push(id));
        assert_eq!(text::decode(&ids).as_deref(), Ok(s));
        assert_eq!(text::count_tokens(s), ids.len() as u64);
    }
}

#[test]
fn longest_word_wins_and_specials_decode_to_nothing() {
    let mut ids = vec![text::BOS];
    text::encode(" and!", |id| ids.push(id));
    let strs: Vec<String> = ids.iter().map(|&id| text::token_str(id)).collect();
    assert_eq!(strs, ["<s>", " and", "<0x21>"]);
    assert_eq!(text::decode(&ids).as_deref(), Ok(" and!"));
    assert_eq!(text::decode(&[text::VOCAB_SIZE]), Err(text::VOCAB_SIZE));
}

#[test]
fn relevance_is_the_share_of_query_words_found() {
    let q = text::words("Healthy engine, healthy!");
    assert_eq!(q, ["engine", "healthy"]);
    assert_eq!(text::relevance(&q, "a HEALTHY engine"), 1.0);
    assert_eq!(text::relevance(&q, "engines"), 0.0);
    assert_eq!(text::relevance(&q, "the engine"), 0.5);
    assert_eq!(text::relevance(&[], "anything"), 0.0);
}

#[test]
fn a_partial_answer_is_continued_where_it_stops() {
    for k in [1u32, 5, 21, 22, 23, 40, 59] {
        let partial = text::answer(k);
        assert_eq!(text::continued_from(&partial), k, "{partial:?}");
        let prompt = format!("Tell me about Lumen.\n{partial}");
        assert_eq!(text::continued_from(&prompt), k);
        assert_eq!(
            format!("{partial}{}", text::answer_from(k, 60 - k)),
            text::answer(60)
        );
    }
    assert_eq!(text::continued_from("Tell me something"), 0);
    assert_eq!(text::continued_from("Lumen is great"), 0);
}
