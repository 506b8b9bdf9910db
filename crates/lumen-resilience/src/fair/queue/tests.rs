use super::*;

use std::time::Duration;

/// Waiters carry their flow's name and a number, so the order they come out in is readable.
type Q = Queue<(&'static str, u32)>;

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn push(q: &mut Q, class: Class, flow: &'static str, weight: u32, n: u32) -> u64 {
    q.push(class, flow, weight, far(), (flow, n)).1
}

fn drain(q: &mut Q, n: usize) -> Vec<&'static str> {
    let now = Instant::now();
    (0..n)
        .map_while(|_| q.pop_next(now, |_| panic!("nothing expires")))
        .map(|(_, w)| w.tx.0)
        .collect()
}

#[test]
fn round_robin_between_equal_flows_fifo_within_each() {
    let mut q = Q::default();
    for i in 0..3 {
        push(&mut q, Class::Standard, "a", 1, i);
    }
    for i in 0..3 {
        push(&mut q, Class::Standard, "b", 1, i);
    }
    let now = Instant::now();
    let order: Vec<_> = std::iter::from_fn(|| q.pop_next(now, |_| {}))
        .map(|(_, w)| w.tx)
        .collect();
    assert_eq!(
        order,
        [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    );
    assert!(q.is_empty());
    assert_eq!(q.flows(), 0, "emptied flows are gone");
}

#[test]
fn weights_give_proportional_turns() {
    let mut q = Q::default();
    for i in 0..8 {
        push(&mut q, Class::Standard, "a", 2, i);
        push(&mut q, Class::Standard, "b", 1, i);
    }
    assert_eq!(
        drain(&mut q, 9),
        ["a", "a", "b", "a", "a", "b", "a", "a", "b"]
    );
}

#[test]
fn a_flow_joining_is_served_before_the_next_turn_of_a_flood() {
    let mut q = Q::default();
    for i in 0..10 {
        push(&mut q, Class::Standard, "flood", 1, i);
    }
    assert_eq!(drain(&mut q, 3), ["flood"; 3]);
    push(&mut q, Class::Standard, "b", 1, 0);
    // "b" had nothing waiting: it takes the next slot, before the flood's next turn.
    assert_eq!(drain(&mut q, 3), ["b", "flood", "flood"]);
    // Fresh flows keep their arrival order, and a flow in the middle of its turn finishes it.
    for i in 0..4 {
        push(&mut q, Class::Standard, "heavy", 3, i);
    }
    // "heavy" is fresh: served at once, and its turn (weight 3) goes on.
    assert_eq!(drain(&mut q, 1), ["heavy"]);
    push(&mut q, Class::Standard, "c", 1, 0);
    push(&mut q, Class::Standard, "d", 1, 0);
    assert_eq!(drain(&mut q, 4), ["heavy", "heavy", "c", "d"]);
}

#[test]
fn a_flow_that_empties_keeps_no_credit() {
    let mut q = Q::default();
    push(&mut q, Class::Standard, "a", 3, 0);
    push(&mut q, Class::Standard, "b", 1, 0);
    push(&mut q, Class::Standard, "b", 1, 1);
    // "a" used one of its three, then emptied: it leaves with its deficit.
    assert_eq!(drain(&mut q, 1), ["a"]);
    for i in 1..4 {
        push(&mut q, Class::Standard, "a", 3, i);
    }
    // "a" rejoins behind "b"; it starts a fresh turn of three after b's turn.
    assert_eq!(drain(&mut q, 5), ["b", "a", "a", "a", "b"]);
}

#[test]
fn higher_class_first_fair_within() {
    let mut q = Q::default();
    push(&mut q, Class::Batch, "a", 1, 0);
    push(&mut q, Class::Standard, "a", 1, 0);
    push(&mut q, Class::Interactive, "a", 1, 0);
    push(&mut q, Class::Interactive, "a", 1, 1);
    push(&mut q, Class::Interactive, "b", 1, 0);
    let now = Instant::now();
    let order: Vec<_> = std::iter::from_fn(|| q.pop_next(now, |_| {}))
        .map(|(c, w)| (c, w.tx.0))
        .collect();
    assert_eq!(
        order,
        [
            (Class::Interactive, "a"),
            (Class::Interactive, "b"),
            (Class::Interactive, "a"),
            (Class::Standard, "a"),
            (Class::Batch, "a"),
        ]
    );
}

#[test]
fn expired_heads_are_dropped_and_not_charged() {
    let mut q = Q::default();
    let now = Instant::now();
    q.push(Class::Standard, "a", 1, now, ("a", 0));
    q.push(
        Class::Standard,
        "a",
        1,
        now + Duration::from_secs(1),
        ("a", 1),
    );
    q.push(Class::Standard, "b", 1, far(), ("b", 0));
    let mut expired = Vec::new();
    let (_, w) = q.pop_next(now, |w| expired.push(w.tx)).unwrap();
    assert_eq!(expired, [("a", 0)], "a deadline at `now` has passed");
    assert_eq!(w.tx, ("a", 1), "the flow still gets its turn");
    assert_eq!(drain(&mut q, 5), ["b"]);
}

#[test]
fn removal_takes_the_place_and_empties_the_flow() {
    let mut q = Q::default();
    let s0 = push(&mut q, Class::Standard, "a", 1, 0);
    let s1 = push(&mut q, Class::Standard, "a", 1, 1);
    push(&mut q, Class::Standard, "b", 1, 0);
    assert_eq!(q.remove(Class::Standard, "a", s1).unwrap().tx, ("a", 1));
    assert!(q.remove(Class::Standard, "a", s1).is_none(), "gone once");
    assert!(q.remove(Class::Batch, "a", s0).is_none(), "wrong class");
    assert_eq!(q.remove(Class::Standard, "a", s0).unwrap().tx, ("a", 0));
    assert_eq!((q.len(), q.flows()), (1, 1));
    assert_eq!(drain(&mut q, 5), ["b"]);
}

#[test]
fn victim_lowest_class_first() {
    let mut q = Q::default();
    // Empty queue: only a newcomer can be refused.
    assert_eq!(q.victim(None), None);
    assert_eq!(q.victim(Some((Class::Batch, "x"))), Some(Victim::Newcomer));
    push(&mut q, Class::Standard, "s", 1, 0);
    push(&mut q, Class::Batch, "b", 1, 0);
    push(&mut q, Class::Interactive, "i", 1, 0);
    let batch_b = Some(Victim::Queued {
        class: Class::Batch,
        flow: "b".into(),
    });
    // A newcomer above the lowest class present displaces it.
    assert_eq!(q.victim(Some((Class::Interactive, "x"))), batch_b);
    assert_eq!(q.victim(Some((Class::Standard, "x"))), batch_b);
    assert_eq!(q.victim(None), batch_b);
    q.pop_newest(Class::Batch, "b").unwrap();
    // Now standard is the lowest: a batch newcomer is refused itself.
    assert_eq!(q.victim(Some((Class::Batch, "x"))), Some(Victim::Newcomer));
}

#[test]
fn victim_within_a_class_is_the_fattest_flows_newest() {
    let mut q = Q::default();
    for i in 0..3 {
        push(&mut q, Class::Batch, "flood", 1, i);
    }
    push(&mut q, Class::Batch, "b", 1, 0);
    let flood = Some(Victim::Queued {
        class: Class::Batch,
        flow: "flood".into(),
    });
    // A small flow's newcomer displaces the flood's newest rather than being locked out...
    assert_eq!(q.victim(Some((Class::Batch, "b"))), flood);
    assert_eq!(q.victim(Some((Class::Batch, "new"))), flood);
    // ...and the flood's own newcomer is refused.
    assert_eq!(
        q.victim(Some((Class::Batch, "flood"))),
        Some(Victim::Newcomer)
    );
    let w = q.pop_newest(Class::Batch, "flood").unwrap();
    assert_eq!(w.tx, ("flood", 2), "the newest goes");
    // Ties: the newest loses; "b" (2) and "flood" (2): b's newest is newer.
    push(&mut q, Class::Batch, "b", 1, 1);
    assert_eq!(
        q.victim(None),
        Some(Victim::Queued {
            class: Class::Batch,
            flow: "b".into()
        })
    );
    assert_eq!(q.victim(Some((Class::Batch, "new"))), {
        // A one-waiter newcomer against flows of two: the fattest sheds.
        Some(Victim::Queued {
            class: Class::Batch,
            flow: "b".into(),
        })
    });
}
