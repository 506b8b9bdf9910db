use super::*;

fn l(occupancy: f64, queue: f64, kv: Option<f64>, fresh: bool) -> Load {
    Load {
        occupancy,
        queue,
        kv,
        fresh,
    }
}

#[test]
fn the_lowest_expected_wait_wins() {
    let cursor = AtomicU64::new(0);
    // Fewer requests but a queue (not started yet) loses to more requests all running.
    let loads = [
        l(20.0, 0.0, Some(0.3), true),
        l(14.0, 8.0, Some(0.3), true),
        l(19.0, 0.0, Some(0.3), true),
    ];
    for _ in 0..5 {
        assert_eq!(decide(&loads, 1.0, &cursor), 2);
    }
    // A KV cache about to overflow costs more than a few requests.
    let loads = [
        l(10.0, 0.0, Some(0.97), true),
        l(14.0, 0.0, Some(0.4), true),
    ];
    assert_eq!(decide(&loads, 1.0, &cursor), 1);
    // Weight 0 ignores it.
    assert_eq!(decide(&loads, 0.0, &cursor), 0);
}

#[test]
fn ties_take_turns_among_themselves() {
    let cursor = AtomicU64::new(0);
    let loads = [l(3.0, 0.0, None, false); 3];
    let picks: Vec<usize> = (0..6).map(|_| decide(&loads, 1.0, &cursor)).collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    // Two idle next to a busy one: they alternate (a rotation over all three would give the
    // first idle one two turns in three).
    let loads = [
        l(8.0, 0.0, None, true),
        l(0.0, 0.0, None, true),
        l(0.0, 0.0, None, true),
    ];
    let picks: Vec<usize> = (0..6).map(|_| decide(&loads, 1.0, &cursor)).collect();
    assert_eq!(picks, vec![1, 2, 1, 2, 1, 2]);
}
