use super::*;

fn chat(system: &str, tools: Option<&str>, turns: &[(&str, &str)]) -> PromptKey {
    let mut h = PromptHasher::new(1 << 20, 64);
    h.shared("system", system.as_bytes());
    if let Some(t) = tools {
        h.shared("tools", t.as_bytes());
    }
    for (role, text) in turns {
        h.message(role, text.as_bytes());
    }
    h.finish(None)
}

fn text(n: usize, seed: u8) -> String {
    (0..n)
        .map(|i| char::from(b'a' + ((i as u8).wrapping_mul(7) ^ seed) % 26))
        .collect()
}

#[test]
fn boundaries_every_512_bytes_then_a_quarter_further() {
    let mut pos = 0;
    let mut seen = Vec::new();
    while pos < 20_000 {
        pos = next_boundary(pos);
        seen.push(pos);
    }
    assert_eq!(&seen[..6], &[512, 1024, 1536, 2048, 2560, 3200]);
    // A 100 KB document costs a couple of dozen hashes, not two hundred.
    let mut n = 0;
    let mut p = 0;
    while p < 100_000 {
        p = next_boundary(p);
        n += 1;
    }
    assert!(n < 30, "{n}");
}

#[test]
fn a_later_turn_shares_every_block_of_the_earlier_one() {
    let sys = text(3000, 1);
    let u1 = text(700, 2);
    let a1 = text(900, 3);
    let t1 = chat(&sys, None, &[("user", &u1)]);
    let t2 = chat(
        &sys,
        None,
        &[("user", &u1), ("assistant", &a1), ("user", "and then?")],
    );
    assert!(t2.blocks.len() > t1.blocks.len());
    assert_eq!(t1.blocks[..], t2.blocks[..t1.blocks.len()]);
    assert_eq!(
        t1.conversation, t2.conversation,
        "turns of one conversation share its key"
    );
    assert_eq!(t1.section, t2.section);
    assert_eq!(
        t1.section.map(|s| s.1),
        Some(3000 + "system:\n".len() as u32)
    );
}

#[test]
fn conversations_on_one_system_prompt_share_its_blocks_only() {
    let sys = text(2000, 1);
    let a = chat(&sys, None, &[("user", &text(900, 5))]);
    let b = chat(&sys, None, &[("user", &text(900, 6))]);
    assert_eq!(a.section, b.section);
    assert_ne!(a.conversation, b.conversation);
    let shared = a
        .blocks
        .iter()
        .zip(&b.blocks)
        .take_while(|(x, y)| x == y)
        .count();
    // Blocks that end inside the 2008-byte section (512, 1024, 1536) match; the rest do not.
    assert_eq!(shared, 3);
}

#[test]
fn tools_are_part_of_the_shared_section() {
    let sys = text(600, 1);
    let with = chat(&sys, Some("[{\"type\":\"function\"}]"), &[("user", "hi")]);
    let other = chat(&sys, Some("[{\"type\":\"other\"}]"), &[("user", "hi")]);
    let without = chat(&sys, None, &[("user", "hi")]);
    assert_ne!(with.section, other.section);
    assert_ne!(with.section, without.section);
    assert_ne!(with.conversation, without.conversation);
}

#[test]
fn the_conversation_key_reads_only_the_start_of_the_first_message() {
    let sys = "be brief";
    let doc = text(5000, 9);
    let q1 = format!("{doc}\nQuestion: who?");
    let q2 = format!("{doc}\nQuestion: when?");
    let a = chat(sys, None, &[("user", &q1)]);
    let b = chat(sys, None, &[("user", &q2)]);
    assert_eq!(
        a.conversation, b.conversation,
        "two questions about one document share its key"
    );
    let c = chat(sys, None, &[("user", &text(5000, 10))]);
    assert_ne!(a.conversation, c.conversation);
}

#[test]
fn placement_prefers_the_session_then_a_section_of_its_own() {
    let k = chat("doc", None, &[("user", "q")]);
    let section = k.section.unwrap().0;
    assert_eq!(k.placement(false), section);
    assert_eq!(k.placement(true), k.conversation);
    let mut h = PromptHasher::new(1 << 20, 64);
    h.shared("system", b"doc");
    h.message("user", b"q");
    let s = h.finish(Some("session-1"));
    assert_eq!(s.placement(false), s.session.unwrap());
    assert_eq!(s.placement(true), s.session.unwrap());
    assert_ne!(s.session, None);
    // No system prompt: the first message names the conversation.
    let mut h = PromptHasher::new(1 << 20, 64);
    h.message("user", b"hello");
    let plain = h.finish(Some(""));
    assert_eq!(plain.session, None, "an empty hint is no hint");
    assert_eq!(plain.placement(false), plain.conversation);
}

#[test]
fn hashing_stops_at_the_cap_and_text_prompts_work() {
    let mut h = PromptHasher::new(4096, 64);
    h.text(text(100_000, 3).as_bytes());
    let k = h.finish(None);
    assert_eq!(k.indexed_len(), 4000);
    let mut h = PromptHasher::new(4096, 64);
    let t = text(3000, 3);
    h.text(t.as_bytes());
    let k2 = h.finish(None);
    assert_eq!(k.blocks[..k2.blocks.len()], k2.blocks[..]);
    assert_eq!(k.conversation, k2.conversation);
}

#[test]
fn the_stream_hash_does_not_depend_on_how_bytes_arrive() {
    let data = text(1000, 4);
    let mut whole = Stream::new(1);
    whole.write(data.as_bytes());
    let mut pieces = Stream::new(1);
    for chunk in data.as_bytes().chunks(7) {
        pieces.write(chunk);
    }
    assert_eq!(whole.finish(), pieces.finish());
    let mut other = Stream::new(1);
    other.write(&data.as_bytes()[..999]);
    assert_ne!(whole.finish(), other.finish());
    let mut padded = Stream::new(1);
    padded.write(&data.as_bytes()[..999]);
    padded.write(&[0]);
    assert_ne!(other.finish(), padded.finish(), "length counts");
}

#[test]
fn a_short_instruction_before_a_long_document_is_not_the_key() {
    // The document in the first message names the conversation, not "Answer from it".
    let doc = text(6000, 11);
    let k = chat("Answer from the document.", None, &[("user", &doc)]);
    assert_eq!(k.placement(false), k.conversation);
    // The document as the system prompt, a question after it: the section names it.
    let k = chat(&doc, None, &[("user", "who wrote it?")]);
    assert_eq!(k.placement(false), k.section.unwrap().0);
    assert!(!k.history);
    let later = chat(
        &doc,
        None,
        &[("user", "who?"), ("assistant", "x"), ("user", "why?")],
    );
    assert!(later.history);
}
