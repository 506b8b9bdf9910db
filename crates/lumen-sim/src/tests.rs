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
