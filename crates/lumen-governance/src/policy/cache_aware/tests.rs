use super::*;

const T: Thresholds = Thresholds {
    queue_slack: 4.0,
    kv_threshold: 0.9,
    kv_weight: 1.0,
    load_factor: 1.25,
    min_gain: 512,
};

fn load(occupancy: f64, queue: f64, kv: Option<f64>) -> Load {
    Load {
        occupancy,
        queue,
        kv,
        fresh: true,
    }
}

fn cands(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            node: hash::fnv1a(format!("b{i}").as_bytes()),
            weight: 1,
            load: load(10.0, 0.0, Some(0.5)),
            depth: 0,
        })
        .collect()
}

/// The backend rendezvous hashing puts `key` on, among `c`.
fn top(c: &[Candidate], key: u64) -> usize {
    (0..c.len())
        .max_by(|&a, &b| {
            hash::rendezvous(key, c[a].node, 1).total_cmp(&hash::rendezvous(key, c[b].node, 1))
        })
        .unwrap()
}

/// A key whose first choice is `want`, and its second choice.
fn key_on(c: &[Candidate], want: usize) -> (u64, usize) {
    let key = (0u64..).find(|k| top(c, *k) == want).unwrap();
    let rest: Vec<Candidate> = c
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != want)
        .map(|(_, x)| *x)
        .collect();
    let second = top(&rest, key);
    let second = (0..c.len()).filter(|i| *i != want).nth(second).unwrap();
    (key, second)
}

#[test]
fn nothing_known_places_by_the_key_alike_in_every_replica() {
    let c = cands(4);
    for k in 0..50u64 {
        assert_eq!(decide(&c, k, 0, false, &T), (top(&c, k), Why::Affinity));
    }
}

#[test]
fn the_longest_prefix_wins_over_the_key() {
    let mut c = cands(4);
    let (key, _) = key_on(&c, 0);
    c[2].depth = 4096;
    c[0].depth = 1024;
    assert_eq!(decide(&c, key, 0, false, &T), (2, Why::Prefix));
    // Equal depth, or deeper by less than a block: the key's backend keeps it.
    c[0].depth = 4096;
    assert_eq!(decide(&c, key, 0, false, &T), (0, Why::Affinity));
    c[0].depth = 3700;
    assert_eq!(decide(&c, key, 0, false, &T), (0, Why::Affinity));
}

#[test]
fn a_widely_shared_section_attracts_nobody() {
    let mut c = cands(4);
    let (key, _) = key_on(&c, 0);
    // Backend 3 holds the common 3 KB system prompt (and nothing more of this prompt).
    c[3].depth = 3072;
    assert_eq!(
        decide(&c, key, 0, false, &T).0,
        3,
        "counted, it would attract"
    );
    assert_eq!(decide(&c, key, 3072, false, &T), (0, Why::Affinity));
    // Beyond the section, the conversation itself still counts.
    c[1].depth = 6000;
    assert_eq!(decide(&c, key, 3072, false, &T), (1, Why::Prefix));
}

#[test]
fn a_queue_out_of_balance_is_not_favoured() {
    let mut c = cands(4);
    let (key, second) = key_on(&c, 0);
    c[0].depth = 8192;
    c[0].load = load(40.0, 6.0, Some(0.5));
    // Backend 0 holds the prompt, but its queue is 6 longer than the others' (slack 4).
    let (chosen, why) = decide(&c, key, 0, false, &T);
    assert_eq!((chosen, why), (second, Why::Spill));
    // A queue within the slack keeps the cache hit.
    c[0].load = load(14.0, 3.0, Some(0.5));
    assert_eq!(decide(&c, key, 0, false, &T), (0, Why::Affinity));
}

#[test]
fn a_kv_cache_near_full_is_not_favoured_while_another_has_room() {
    let mut c = cands(3);
    let (key, second) = key_on(&c, 1);
    c[1].load = load(10.0, 0.0, Some(0.95));
    assert_eq!(decide(&c, key, 0, false, &T), (second, Why::Spill));
    // All near full: none is better for it.
    for x in &mut c {
        x.load.kv = Some(0.95);
    }
    assert_eq!(decide(&c, key, 0, false, &T), (1, Why::Affinity));
}

#[test]
fn without_reports_lumens_own_counts_bound_the_load() {
    let mut c = cands(3);
    for x in &mut c {
        x.load = Load {
            occupancy: 2.0,
            queue: 0.0,
            kv: None,
            fresh: false,
        };
    }
    let (key, second) = key_on(&c, 2);
    c[2].load.occupancy = 20.0;
    // Mean 8: the bound is 1.25 * 8 + 4 = 14.
    assert_eq!(decide(&c, key, 0, false, &T), (second, Why::Spill));
}

#[test]
fn when_every_backend_is_out_of_balance_the_lowest_expected_wait() {
    // Impossible with one rule (the shortest queue is never over itself + slack), but
    // the KV rule and the occupancy bound can both hit: occupancy 0 with KV full.
    let mut c = cands(2);
    c[0].load = load(100.0, 0.0, Some(0.5));
    c[1].load = load(0.0, 0.0, Some(0.95));
    let (chosen, why) = decide(&c, 7, 0, false, &T);
    assert_eq!(why, Why::LeastLoaded);
    // 100 requests ahead against 0 plus a 19-request KV barrier.
    assert_eq!(chosen, 1);
}

#[test]
fn a_session_hint_keeps_its_backend_over_a_deeper_match() {
    let mut c = cands(4);
    let (key, second) = key_on(&c, 0);
    c[3].depth = 9000;
    assert_eq!(decide(&c, key, 0, true, &T), (0, Why::Affinity));
    // Its backend too loaded: where the session's prompt went before, if anywhere...
    c[0].load = load(40.0, 10.0, None);
    assert_eq!(decide(&c, key, 0, true, &T), (3, Why::Prefix));
    // ... else the next by hash.
    c[3].depth = 0;
    assert_eq!(decide(&c, key, 0, true, &T), (second, Why::Spill));
}

#[test]
fn weights_shift_placement() {
    let mut c = cands(2);
    c[1].weight = 9;
    let on_heavy = (0..1000u64)
        .filter(|k| decide(&c, *k, 0, false, &T).0 == 1)
        .count();
    assert!((850..=950).contains(&on_heavy), "{on_heavy}");
}
