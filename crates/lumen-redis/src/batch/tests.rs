use std::sync::{Arc, Mutex};

use super::*;

/// A flush that records each batch and answers every item with itself doubled, after
/// `gate` opens (so a test can hold a batch in flight).
fn recording(
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Flush<u32, u32> {
    Box::new(move |items: Vec<u32>| {
        let (batches, gate) = (batches.clone(), gate.clone());
        Box::pin(async move {
            let _permit = gate.acquire().await;
            batches.lock().unwrap().push(items.clone());
            Ok(items.into_iter().map(|i| i * 2).collect())
        })
    })
}

fn shape(capacity: usize, skip_abandoned: bool) -> Shape {
    Shape {
        capacity,
        max_batch: 8,
        skip_abandoned,
    }
}

#[tokio::test]
async fn what_queues_while_a_batch_is_out_goes_in_the_next_one() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let q = Queue::start(shape(64, false), recording(batches.clone(), gate.clone())).unwrap();
    let Submitted::Queued(first) = q.submit(1) else {
        panic!("queued")
    };
    // The first goes alone (nothing else was waiting) and is held in flight.
    tokio::task::yield_now().await;
    let rest: Vec<_> = (2..=20)
        .map(|i| match q.submit(i) {
            Submitted::Queued(r) => r,
            Submitted::Alone(_) => panic!("room in the queue"),
        })
        .collect();
    gate.add_permits(100);
    assert_eq!(first.await.unwrap().unwrap(), 2);
    for (i, r) in (2..=20).zip(rest) {
        assert_eq!(
            r.await.unwrap().unwrap(),
            i * 2,
            "each its own reply, in order"
        );
    }
    let b = batches.lock().unwrap().clone();
    assert_eq!(b[0], [1]);
    assert_eq!(
        b[1],
        (2..=9).collect::<Vec<_>>(),
        "at most max_batch together"
    );
    assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 20, "every item once");
    assert_eq!(b.len(), 4);
}

#[tokio::test]
async fn a_full_queue_hands_the_item_back() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let q = Queue::start(shape(2, false), recording(batches, gate.clone())).unwrap();
    let _held = q.submit(0);
    tokio::task::yield_now().await;
    let _a = q.submit(1);
    let _b = q.submit(2);
    assert!(matches!(q.submit(3), Submitted::Alone(3)), "bounded");
    assert!(matches!(
        Queue::<u32, u32>::submit_to(None, 4),
        Submitted::Alone(4)
    ));
    gate.add_permits(10);
}

#[tokio::test]
async fn a_failed_batch_fails_each_of_its_items_and_the_queue_goes_on() {
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let flush: Flush<u32, u32> = Box::new(move |items: Vec<u32>| {
        let c = c.clone();
        Box::pin(async move {
            *c.lock().unwrap() += 1;
            if items.contains(&13) {
                Err(StoreError::Timeout)
            } else {
                Ok(items)
            }
        })
    });
    let q = Queue::start(shape(8, false), flush).unwrap();
    let Submitted::Queued(bad) = q.submit(13) else {
        panic!()
    };
    assert_eq!(bad.await.unwrap(), Err(StoreError::Timeout));
    let Submitted::Queued(good) = q.submit(7) else {
        panic!()
    };
    assert_eq!(good.await.unwrap(), Ok(7));
    assert_eq!(*calls.lock().unwrap(), 2);
}

#[tokio::test]
async fn abandoned_items_are_skipped_only_when_asked() {
    for skip in [true, false] {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let q = Queue::start(shape(8, skip), recording(batches.clone(), gate.clone())).unwrap();
        let held = q.submit(1);
        tokio::task::yield_now().await;
        drop(q.submit(2)); // the caller gave up
        let Submitted::Queued(kept) = q.submit(3) else {
            panic!()
        };
        gate.add_permits(10);
        assert_eq!(kept.await.unwrap().unwrap(), 6);
        drop(held);
        let b = batches.lock().unwrap().clone();
        let want: Vec<u32> = if skip { vec![3] } else { vec![2, 3] };
        assert_eq!(b[1], want, "skip_abandoned={skip}");
    }
}

/// Items no one waits for go in the same batches; a failed batch reports each of them, by
/// label, to the queue (and a waiting caller still gets the error itself).
#[tokio::test]
async fn the_queue_reports_what_no_one_waits_for() {
    let reported = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let batches = Arc::new(Mutex::new(Vec::new()));
    let flush: Flush<u32, u32> = {
        let (fail, batches) = (fail.clone(), batches.clone());
        Box::new(move |items: Vec<u32>| {
            let (fail, batches) = (fail.clone(), batches.clone());
            Box::pin(async move {
                batches.lock().unwrap().push(items.clone());
                if fail.load(std::sync::atomic::Ordering::SeqCst) {
                    Err(StoreError::Timeout)
                } else {
                    Ok(items)
                }
            })
        })
    };
    let unwaited = Unwaited {
        label: |i: &u32| if i % 2 == 0 { "even" } else { "odd" },
        report: Box::new({
            let reported = reported.clone();
            move |label, e: &StoreError| reported.lock().unwrap().push((label, e.clone()))
        }),
    };
    let q = Queue::start_with(shape(64, true), flush, Some(unwaited)).unwrap();
    q.send(1).unwrap();
    q.send(2).unwrap();
    let Submitted::Queued(r) = q.submit(3) else {
        panic!("queued")
    };
    assert_eq!(r.await.unwrap().unwrap(), 3);
    assert!(reported.lock().unwrap().is_empty(), "nothing failed");
    assert_eq!(batches.lock().unwrap().concat(), [1, 2, 3]);
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    q.send(4).unwrap();
    q.send(5).unwrap();
    let Submitted::Queued(r) = q.submit(6) else {
        panic!("queued")
    };
    assert_eq!(r.await.unwrap(), Err(StoreError::Timeout));
    let mut got = reported.lock().unwrap().clone();
    got.sort_by_key(|(label, _)| *label);
    assert_eq!(
        got,
        [("even", StoreError::Timeout), ("odd", StoreError::Timeout)],
        "4 and 5 reported by the queue, 6 by its caller"
    );
}
