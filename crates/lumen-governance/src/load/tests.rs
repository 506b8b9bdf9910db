use super::*;

fn snap(running: u32, waiting: u32, base: u32, at_ms: u64) -> Snapshot {
    Snapshot {
        running,
        waiting,
        kv_usage: Some(0.5),
        at_ms,
        base_in_flight: base,
        capacity: None,
    }
}

#[test]
fn without_a_fresh_report_the_load_is_lumens_own_never_idle() {
    let none = estimate(None, 7, 10_000, 2_000);
    assert_eq!((none.occupancy, none.queue, none.fresh), (7.0, 0.0, false));
    let stale = estimate(Some(snap(0, 0, 0, 1_000)), 7, 10_000, 2_000);
    assert_eq!((stale.occupancy, stale.fresh, stale.kv), (7.0, false, None));
}

#[test]
fn what_lumen_sent_since_the_report_counts_at_once() {
    // The engine looked idle; Lumen then sent it a burst of 30.
    let l = estimate(Some(snap(0, 0, 0, 1_000)), 30, 1_200, 2_000);
    assert_eq!((l.occupancy, l.fresh), (30.0, true));
    // Lumen had 10 there when it asked; 4 of them finished since, 2 new were sent.
    let l = estimate(Some(snap(25, 5, 10, 1_000)), 8, 1_200, 2_000);
    assert_eq!(l.occupancy, 28.0);
    // A queue at the report means the batch was full at 25: the rest waits.
    assert_eq!(l.queue, 3.0);
    // Never below zero.
    assert_eq!(
        estimate(Some(snap(1, 0, 10, 1_000)), 0, 1_200, 2_000).occupancy,
        0.0
    );
}

#[test]
fn the_batch_limit_learned_from_a_queue_holds_until_the_next() {
    let s = EngineState::default();
    assert_eq!(s.snapshot(), None);
    let report = |running, waiting| EngineReport {
        running,
        waiting,
        kv_usage: Some(0.8),
    };
    s.record(&report(32.0, 6.0), 4, 100);
    assert_eq!(s.snapshot().unwrap().capacity, Some(32));
    s.record(&report(20.0, 0.0), 4, 200);
    let snap = s.snapshot().unwrap();
    assert_eq!(
        (snap.capacity, snap.running, snap.kv_usage),
        (Some(32), 20, Some(0.8))
    );
    // 20 running plus 16 Lumen sent since: 4 past the limit wait.
    let l = estimate(Some(snap), 20, 300, 2_000);
    assert_eq!((l.occupancy, l.queue), (36.0, 4.0));
    // Nonsense from an engine is clamped, not trusted.
    s.record(
        &EngineReport {
            running: -3.0,
            waiting: f64::NAN,
            kv_usage: Some(7.0),
        },
        0,
        400,
    );
    let snap = s.snapshot().unwrap();
    assert_eq!(
        (snap.running, snap.waiting, snap.kv_usage),
        (0, 0, Some(1.0))
    );
}

#[test]
fn failures_are_counted_until_a_report_arrives() {
    let s = EngineState::default();
    s.record_failure("refused".into());
    s.record_failure("refused again".into());
    assert_eq!(s.failures(), (2, Some("refused again".into())));
    s.record(&EngineReport::default(), 0, 5);
    assert_eq!(s.failures(), (0, None));
}

#[test]
fn cost_is_requests_ahead_plus_a_kv_barrier() {
    let l = |occupancy, queue, kv| Load {
        occupancy,
        queue,
        waiting: 0.0,
        kv,
        fresh: true,
        since: 0.0,
    };
    assert_eq!(cost(&l(10.0, 0.0, None), 1.0), 10.0);
    assert_eq!(cost(&l(10.0, 4.0, Some(0.5)), 1.0), 15.0);
    assert!(cost(&l(0.0, 0.0, Some(0.99)), 1.0) > 90.0);
    assert!(cost(&l(0.0, 0.0, Some(1.0)), 1.0).is_finite());
}

#[test]
fn saturated_only_when_every_backend_reports_a_queue() {
    let q = |queue, fresh| Load {
        occupancy: 50.0,
        queue,
        waiting: 0.0,
        kv: None,
        fresh,
        since: 0.0,
    };
    assert!(saturated(&[q(9.0, true), q(8.0, true)], 8));
    assert!(!saturated(&[q(9.0, true), q(7.0, true)], 8));
    assert!(
        !saturated(&[q(9.0, true), q(99.0, false)], 8),
        "unknown is not full"
    );
    assert!(!saturated(&[q(9.0, true)], 0), "0 is off");
    assert!(!saturated(&[], 8));
}

#[test]
fn kv_use_grows_with_what_lumen_sent_since_the_report() {
    let l = |occupancy, kv, since| Load {
        occupancy,
        queue: 0.0,
        waiting: 0.0,
        kv,
        fresh: true,
        since,
    };
    assert_eq!(kv_now(&l(10.0, Some(0.4), 0.0)), Some(0.4));
    // Ten more on an engine that held ten at 40%: about 80% now.
    assert_eq!(kv_now(&l(20.0, Some(0.4), 10.0)), Some(0.8));
    // Five of its ten finished: 20%.
    assert_eq!(kv_now(&l(5.0, Some(0.4), -5.0)), Some(0.2));
    // Never past full; an engine that held nothing keeps its report; no report, none.
    assert_eq!(kv_now(&l(40.0, Some(0.5), 30.0)), Some(1.0));
    assert_eq!(kv_now(&l(3.0, Some(0.1), 3.0)), Some(0.1));
    assert_eq!(kv_now(&l(3.0, None, 3.0)), None);
}

#[test]
fn the_kv_barrier_counts_in_whole_requests() {
    let l = |occupancy, kv, since| Load {
        occupancy,
        queue: 0.0,
        waiting: 0.0,
        kv,
        fresh: true,
        since,
    };
    // 30% and 45% cost the same (nothing): their difference is not worth a prompt.
    assert_eq!(kv_steps(&l(10.0, Some(0.3), 0.0), 1.0), 0.0);
    assert_eq!(kv_steps(&l(10.0, Some(0.45), 0.0), 1.0), 0.0);
    assert_eq!(kv_steps(&l(10.0, Some(0.5), 0.0), 1.0), 1.0);
    assert_eq!(kv_steps(&l(10.0, Some(0.9), 0.0), 1.0), 9.0);
    assert_eq!(kv_steps(&l(10.0, Some(0.3), 0.0), 10.0), 4.0);
    // What Lumen sent since counts: 45% with ten more on ten is 90%.
    assert_eq!(kv_steps(&l(20.0, Some(0.45), 10.0), 1.0), 9.0);
    assert_eq!(kv_steps(&l(10.0, None, 0.0), 1.0), 0.0);
}
