//! Admission's cost per request: acquire + release of a slot with `Admission` (one FIFO
//! queue on tokio's semaphore) and `FairAdmission` (per-flow deficit round robin behind a
//! mutex), uncontended (a free slot: the path nearly every request takes) and through the
//! queue (the slot held, a waiter queued, the slot handed over on release). Each future is
//! polled by hand with a no-op waker, so no executor cost is counted. Run with
//! `cargo bench -p lumen-benches --bench admission`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lumen_resilience::{Admission, FairAdmission, Ticket};
use tokio::time::Instant;

fn time(name: &str, n: u32, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{name:<52} {ns:>9.0} ns");
}

/// Polls a future that must be ready at once.
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected a free slot"),
    }
}

fn main() {
    // The queued path arms a timer: it needs a runtime's time driver in context.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _rt = rt.enter();
    let n = 2_000_000;
    let timeout = Duration::from_secs(60);

    let fifo = Admission::new(Some(64), 1024, timeout);
    time("Admission: acquire + release, uncontended", n, || {
        drop(black_box(now(fifo.acquire()).unwrap()));
    });
    let fair = FairAdmission::new(Some(64), 1024, timeout);
    time("FairAdmission: acquire + release, uncontended", n, || {
        drop(black_box(now(fair.acquire(Ticket::new("team-a"))).unwrap()));
    });
    // 63 of 64 slots held by other flows: the fast path does not depend on who holds slots.
    let held: Vec<_> = (0..63)
        .map(|i| now(fair.acquire(Ticket::new(&format!("k{i}")))).unwrap())
        .collect();
    time("FairAdmission: same, 63 of 64 slots held", n, || {
        drop(black_box(now(fair.acquire(Ticket::new("team-a"))).unwrap()));
    });
    drop(held);

    let n = 200_000;
    let fifo = Admission::new(Some(1), 1024, timeout);
    let mut slot = Some(now(fifo.acquire()).unwrap());
    time("Admission: queue, hand the slot over on release", n, || {
        let mut waiting = pin!(fifo.acquire());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        drop(slot.take());
        let Poll::Ready(p) = waiting.as_mut().poll(&mut cx) else {
            panic!("handed over")
        };
        slot = Some(p.unwrap());
    });
    let fair = FairAdmission::new(Some(1), 1024, timeout);
    let mut slot = Some(now(fair.acquire(Ticket::new("team-a"))).unwrap());
    let mut i = 0u32;
    let flows: Vec<String> = (0..16).map(|k| format!("team-{k}")).collect();
    time(
        "FairAdmission: queue, hand the slot over on release",
        n,
        || {
            i = i.wrapping_add(1);
            let flow = &flows[i as usize % flows.len()];
            let mut waiting = pin!(fair.acquire(Ticket::new(flow)));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
            drop(slot.take());
            let Poll::Ready(p) = waiting.as_mut().poll(&mut cx) else {
                panic!("handed over")
            };
            slot = Some(p.unwrap());
        },
    );
}
