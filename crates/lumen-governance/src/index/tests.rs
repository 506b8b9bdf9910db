use super::*;
use crate::prefix::PromptHasher;

fn prompt(parts: &[&str]) -> PromptKey {
    let mut h = PromptHasher::new(1 << 20, 256);
    for p in parts {
        h.text(p.as_bytes());
    }
    h.finish(None)
}

fn body(n: usize, seed: u8) -> String {
    (0..n)
        .map(|i| char::from(b'a' + ((i as u8).wrapping_mul(13) ^ seed) % 26))
        .collect()
}

const ALL: u64 = 0b1111;

#[test]
fn a_backend_matches_as_deep_as_the_prefix_it_was_sent() {
    let mut ix = PrefixIndex::new(1000, 60_000);
    let doc = body(3000, 1);
    let first = prompt(&[&doc, "question one"]);
    ix.record(&first, 2, 1_000);
    let second = prompt(&[&doc, "question two, longer than the first"]);
    let d = ix.depths(&second, ALL, 2_000);
    assert_eq!(d.0[2], 2560, "the blocks inside the shared document");
    assert_eq!((d.0[0], d.0[1], d.0[3]), (0, 0, 0));
    // The same prompt again matches to its last block.
    assert_eq!(ix.depths(&first, ALL, 2_000).0[2], first.indexed_len());
    // Only candidates count.
    assert_eq!(ix.depths(&first, 0b0011, 2_000).0[2], 0);
}

#[test]
fn depths_follow_each_backend_separately() {
    let mut ix = PrefixIndex::new(1000, 60_000);
    let sys = body(1100, 1);
    let conv = prompt(&[&sys, &body(2000, 2)]);
    ix.record(&prompt(&[&sys, &body(600, 7)]), 0, 0);
    ix.record(&conv, 1, 0);
    let next = prompt(&[&sys, &body(2000, 2), "more"]);
    let d = ix.depths(&next, ALL, 0);
    assert_eq!(d.0[0], 1024, "backend 0 holds the system prompt's blocks");
    assert_eq!(
        d.0[1],
        conv.indexed_len(),
        "backend 1 holds the conversation"
    );
}

#[test]
fn entries_expire_after_the_ttl() {
    let mut ix = PrefixIndex::new(1000, 10_000);
    let p = prompt(&[&body(2000, 3)]);
    ix.record(&p, 0, 0);
    assert_eq!(ix.depths(&p, ALL, 9_000).0[0], p.indexed_len());
    assert_eq!(ix.depths(&p, ALL, 10_500).0[0], 0, "gone after 10 s");
    // Recording again starts the entry over: the old backend is not kept.
    ix.record(&p, 1, 11_000);
    let d = ix.depths(&p, ALL, 11_000);
    assert_eq!((d.0[0], d.0[1]), (0, p.indexed_len()));
}

#[test]
fn memory_is_bounded_and_the_least_recent_goes_first() {
    let mut ix = PrefixIndex::new(64, 600_000);
    let keep = prompt(&[&body(2048, 200)]);
    for i in 0..200u8 {
        ix.record(&prompt(&[&body(2048, i)]), 1, u64::from(i) * 10);
        if i % 10 == 0 {
            ix.record(&keep, 0, u64::from(i) * 10);
        }
        assert!(ix.len() <= 64);
    }
    assert_eq!(ix.len(), 64);
    assert_eq!(
        ix.depths(&keep, ALL, 2_000).0[0],
        keep.indexed_len(),
        "kept by use"
    );
    let old = prompt(&[&body(2048, 3)]);
    assert_eq!(ix.depths(&old, ALL, 2_000).0[1], 0, "evicted");
}

#[test]
fn eviction_keeps_what_remains_prefix_closed() {
    // Capacity for part of one long prompt: what survives is its start, never a middle.
    let mut ix = PrefixIndex::new(5, 600_000);
    let long = prompt(&[&body(20_000, 4)]);
    assert!(long.blocks.len() > 5);
    ix.record(&long, 0, 0);
    assert_eq!(ix.depths(&long, ALL, 0).0[0], long.blocks[4].0);
}

#[test]
fn a_section_becomes_shared_after_enough_different_conversations() {
    let mut ix = PrefixIndex::new(1000, 600_000);
    let h = |sys: &str, user: &str| {
        let mut p = PromptHasher::new(1 << 20, 256);
        p.shared("system", sys.as_bytes());
        p.message("user", user.as_bytes());
        p.finish(None)
    };
    let sys = body(1500, 5);
    let section = h(&sys, "x").section.unwrap().0;
    // Turns of one conversation never make it shared.
    for _ in 0..20 {
        ix.record(&h(&sys, "the same conversation"), 0, 0);
    }
    assert!(!ix.is_shared(section, 3, 0));
    for i in 0..3 {
        ix.record(&h(&sys, &format!("conversation {i}")), 1, 0);
    }
    assert!(ix.is_shared(section, 3, 0));
    assert!(!ix.is_shared(section, 4, 0));
}

#[test]
fn a_section_whose_conversations_have_history_is_shared_at_the_second() {
    let mut ix = PrefixIndex::new(1000, 600_000);
    let turn = |user: &str, history: bool| {
        let mut p = PromptHasher::new(1 << 20, 256);
        p.shared("system", body(1500, 8).as_bytes());
        p.message("user", user.as_bytes());
        if history {
            p.message("assistant", b"an answer");
            p.message("user", b"and then?");
        }
        p.finish(None)
    };
    let section = turn("a", false).section.unwrap().0;
    ix.record(&turn("a", false), 0, 0);
    ix.record(&turn("a", true), 0, 0);
    assert!(
        !ix.is_shared(section, 64, 0),
        "one conversation, turn after turn"
    );
    ix.record(&turn("b", false), 1, 0);
    assert!(
        ix.is_shared(section, 64, 0),
        "a second conversation on a chat prompt"
    );
}

#[test]
fn forgetting_a_bit_clears_it_everywhere() {
    let mut ix = PrefixIndex::new(1000, 600_000);
    let p = prompt(&[&body(3000, 6)]);
    ix.record(&p, 3, 0);
    ix.record(&p, 1, 0);
    ix.forget(3);
    let d = ix.depths(&p, ALL, 0);
    assert_eq!((d.0[1], d.0[3]), (p.indexed_len(), 0));
}
