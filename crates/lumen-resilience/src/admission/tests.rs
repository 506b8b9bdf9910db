use super::*;

#[tokio::test(start_paused = true)]
async fn cap_queue_and_timeout() {
    let a = Arc::new(Admission::new(Some(2), 1, Duration::from_secs(5)));
    let p1 = a.acquire().await.unwrap();
    let _p2 = a.acquire().await.unwrap();
    // Third waits in the queue; fourth finds the queue full.
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move { a.acquire().await.map(|p| (p, tokio::time::Instant::now())) })
    };
    tokio::task::yield_now().await;
    assert_eq!(a.queued(), 1);
    assert!(matches!(
        a.acquire().await,
        Err(AdmissionError::QueueFull { .. })
    ));
    let start = tokio::time::Instant::now();
    tokio::time::advance(Duration::from_secs(2)).await;
    drop(p1);
    let (_p3, admitted_at) = waiter.await.unwrap().unwrap();
    assert_eq!(
        admitted_at - start,
        Duration::from_secs(2),
        "admitted when a slot freed"
    );
    assert_eq!(a.queued(), 0);
    // With both slots held, a queued request gives up after the queue timeout.
    let start = tokio::time::Instant::now();
    let r = a.acquire().await;
    assert!(
        matches!(r, Err(AdmissionError::QueueTimeout { .. })),
        "{r:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn queue_is_fifo() {
    let a = Arc::new(Admission::new(Some(1), 10, Duration::from_secs(60)));
    let first = a.acquire().await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (a, order) = (a.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let p = a.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(p);
        }));
        tokio::task::yield_now().await;
    }
    drop(first);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn unlimited_never_waits() {
    let a = Admission::unlimited();
    let held: Vec<_> = futures::future::join_all((0..1000).map(|_| a.acquire())).await;
    assert!(held.iter().all(Result::is_ok));
}

/// A waiter that is cancelled (its client went away) gives its queue place back; before the
/// fix the place leaked and the queue looked full for ever.
#[tokio::test(start_paused = true)]
async fn cancelled_waits_release_their_queue_places() {
    let a = Arc::new(Admission::new(Some(1), 2, Duration::from_secs(60)));
    let held = a.acquire().await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.acquire().await.map(|_| ()) })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(a.queued(), 2);
    for w in waiters {
        w.abort();
        let _ = w.await;
    }
    assert_eq!(a.queued(), 0, "cancelled waits hold no queue place");
    // The next request waits (it is not refused as queue_full) and is served once the slot frees.
    let next = {
        let a = a.clone();
        tokio::spawn(async move { a.acquire().await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(a.queued(), 1);
    drop(held);
    assert_eq!(next.await.unwrap(), Ok(()));
    assert_eq!(a.queued(), 0);
}
