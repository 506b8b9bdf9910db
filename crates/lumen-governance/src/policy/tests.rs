use super::*;

#[test]
fn smooth_schedule_interleaves_by_weight() {
    assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(smooth_schedule(&[1, 1, 1]), vec![0, 1, 2]);
    assert_eq!(smooth_schedule(&[2, 1]).len(), 3);
    assert_eq!(smooth_schedule(&[100_000, 1]).len(), 4096);
}

#[test]
fn bounded_rendezvous_spills_a_hot_key() {
    let loads = [10usize, 0, 0];
    let cands = [0, 1, 2];
    let node = |k: usize| hash::fnv1a(format!("b{k}").as_bytes());
    // Find a key whose first choice is backend 0.
    let key = (0u64..)
        .find(|key| {
            let v = View {
                cands: &cands,
                in_flight: &|_| 0,
                weight: &|_| 1,
                node: &node,
            };
            rendezvous(&v, *key) == 0
        })
        .unwrap();
    let v = View {
        cands: &cands,
        in_flight: &|k| loads[k],
        weight: &|_| 1,
        node: &node,
    };
    assert_ne!(
        bounded_rendezvous(&v, key, 1.25),
        0,
        "an overloaded first choice is skipped"
    );
    let idle = View {
        cands: &cands,
        in_flight: &|_| 0,
        weight: &|_| 1,
        node: &node,
    };
    assert_eq!(
        bounded_rendezvous(&idle, key, 1.25),
        0,
        "an idle first choice is kept"
    );
}

#[test]
fn least_in_flight_ties_take_turns_among_the_tied_only() {
    let cands = [0, 1, 2, 3];
    let loads = [0usize, 0, 5, 5];
    let v = View {
        cands: &cands,
        in_flight: &|k| loads[k],
        weight: &|_| 1,
        node: &|k| k as u64,
    };
    let cursor = AtomicU64::new(0);
    let picks: Vec<usize> = (0..8).map(|_| least_in_flight(&v, &cursor)).collect();
    // A rotation over all four, taking the first least loaded from where it starts, gives
    // backend 0 every turn that starts on 0, 2 or 3: three in four.
    assert_eq!(picks, vec![0, 1, 0, 1, 0, 1, 0, 1]);
}
