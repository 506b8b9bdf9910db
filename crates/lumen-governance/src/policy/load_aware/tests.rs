use super::*;

fn l(occupancy: f64, queue: f64, kv: Option<f64>, fresh: bool) -> Load {
    Load {
        occupancy,
        queue,
        // The engine's report: this many waiting.
        waiting: queue,
        kv,
        fresh,
        since: 0.0,
    }
}

#[test]
fn the_least_prefill_queued_wins_not_the_fewest_requests() {
    let cursor = AtomicU64::new(0);
    // Backend 0 has 20 requests, all decoding; backend 1 has 2, one a long prompt sent a
    // moment ago: a new prompt waits behind that prefill, not behind the decodes.
    let loads = [l(20.0, 0.0, Some(0.3), true), l(2.0, 0.0, Some(0.3), true)];
    for _ in 0..5 {
        assert_eq!(decide(&loads, &[0.0, 6_000.0], 2_000.0, 1.0, &cursor), 0);
    }
    let loads = [l(0.0, 0.0, None, false); 3];
    assert_eq!(
        decide(
            &loads,
            &[20_000.0, 8_000.0, 12_000.0],
            2_000.0,
            1.0,
            &cursor
        ),
        1
    );
}

#[test]
fn a_kv_cache_about_to_overflow_costs_more_than_a_few_prompts() {
    let cursor = AtomicU64::new(0);
    let loads = [
        l(10.0, 0.0, Some(0.97), true),
        l(14.0, 0.0, Some(0.4), true),
    ];
    // 32 prompts' worth of barrier against 1 prompt queued.
    assert_eq!(decide(&loads, &[0.0, 2_000.0], 2_000.0, 1.0, &cursor), 1);
    // Weight 0 ignores it.
    assert_eq!(decide(&loads, &[0.0, 2_000.0], 2_000.0, 0.0, &cursor), 0);
}

#[test]
fn ties_take_turns_among_themselves() {
    let cursor = AtomicU64::new(0);
    let loads = [l(3.0, 0.0, None, false); 3];
    let picks: Vec<usize> = (0..6)
        .map(|_| decide(&loads, &[0.0; 3], 2_000.0, 1.0, &cursor))
        .collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    // Two idle next to a busy one: they alternate (a rotation over all three would give the
    // first idle one two turns in three).
    let backlog = [8_000.0, 0.0, 0.0];
    let picks: Vec<usize> = (0..6)
        .map(|_| decide(&loads, &backlog, 2_000.0, 1.0, &cursor))
        .collect();
    assert_eq!(picks, vec![1, 2, 1, 2, 1, 2]);
}

fn at(occupancy: f64, kv: f64, since: f64) -> Load {
    Load {
        occupancy,
        queue: 0.0,
        waiting: 0.0,
        kv: Some(kv),
        fresh: true,
        since,
    }
}

#[test]
fn small_differences_between_reports_never_herd() {
    let cursor = AtomicU64::new(0);
    // Three engines equally busy whose half-second-old reports differ by a few percent, all
    // their prefill done: taken exactly, the 30% one would take every request until the next
    // scrape. They take turns.
    let loads = [
        at(10.0, 0.33, 0.0),
        at(10.0, 0.30, 0.0),
        at(10.0, 0.36, 0.0),
    ];
    let picks: Vec<usize> = (0..6)
        .map(|_| decide(&loads, &[0.0; 3], 2_000.0, 1.0, &cursor))
        .collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn what_lumen_sent_since_the_report_fills_the_cache_it_reported() {
    let cursor = AtomicU64::new(0);
    // Both reported 45%; since then Lumen sent ten more to the first (decoding now, nothing
    // queued): it is near 90% full, worth nine prompts of wait.
    let loads = [at(20.0, 0.45, 10.0), at(10.0, 0.45, 0.0)];
    for _ in 0..4 {
        assert_eq!(decide(&loads, &[0.0, 8_000.0], 2_000.0, 1.0, &cursor), 1);
    }
}

#[test]
fn a_queue_the_engine_reports_counts_as_prompts_waiting() {
    let cursor = AtomicU64::new(0);
    // Other replicas' prompts wait at the first engine: Lumen sent it nothing, yet a new
    // prompt would wait behind three.
    let mut busy = at(23.0, 0.3, 0.0);
    busy.waiting = 3.0;
    let loads = [busy, at(10.0, 0.3, 0.0)];
    assert_eq!(decide(&loads, &[0.0, 4_000.0], 2_000.0, 1.0, &cursor), 1);
    assert_eq!(decide(&loads, &[0.0, 8_000.0], 2_000.0, 1.0, &cursor), 0);
    // A queue inferred from a batch size learned earlier is not read: the engine said how
    // many wait, and that was none.
    let mut guessed = at(23.0, 0.3, 0.0);
    guessed.queue = 3.0;
    let loads = [guessed, at(10.0, 0.3, 0.0)];
    assert_eq!(decide(&loads, &[0.0, 4_000.0], 2_000.0, 1.0, &cursor), 0);
}
