use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::*;

fn budget(capacity: u64) -> (Arc<BodyBudget>, Gauge, Counter) {
    let (gauge, refused) = (Gauge::default(), Counter::default());
    (
        BodyBudget::new(capacity, gauge.clone(), refused.clone()),
        gauge,
        refused,
    )
}

fn limits(max_bytes: usize) -> BodyLimits {
    BodyLimits {
        max_bytes,
        read_timeout: Duration::from_secs(30),
        budget_wait: Duration::from_secs(2),
    }
}

/// A chunked body: these frames, no declared length.
fn frames(
    parts: Vec<Bytes>,
) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
    StreamBody::new(futures::stream::iter(
        parts.into_iter().map(|b| Ok(Frame::data(b))),
    ))
}

#[test]
fn the_decision_at_its_edges() {
    assert_eq!(decide(0, 100, 0, 100), Decision::Take, "exactly the budget");
    assert_eq!(
        decide(60, 100, 0, 40),
        Decision::Take,
        "exactly what is left"
    );
    assert_eq!(decide(61, 100, 0, 40), Decision::Wait, "one byte short");
    assert_eq!(decide(0, 100, 0, 101), Decision::Refuse, "never fits");
    assert_eq!(
        decide(90, 100, 90, 11),
        Decision::Refuse,
        "a growing body that alone would pass the budget"
    );
    assert_eq!(decide(u64::MAX, 100, 0, u64::MAX), Decision::Refuse);
    assert_eq!(
        decide(u64::MAX - 1, u64::MAX, 0, 2),
        Decision::Wait,
        "no overflow into room"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permit_holds_its_bytes_until_dropped_and_the_gauge_follows() {
    let (b, gauge, _) = budget(100);
    let body = Full::new(Bytes::from_static(&[b'x'; 60]));
    let (bytes, permit) = read(body, Some(60), limits(100), &b).await.unwrap();
    assert_eq!(bytes.len(), 60);
    assert_eq!((b.held(), permit.bytes, gauge.get()), (60, 60, 60));
    drop(bytes);
    assert_eq!(
        b.held(),
        60,
        "the bytes go, the share stays with the permit"
    );
    drop(permit);
    assert_eq!((b.held(), gauge.get()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn over_the_budget_a_request_waits_and_gets_room_when_it_is_given_back() {
    let (b, _, refused) = budget(100);
    let (_, first) = read(
        Full::new(Bytes::from(vec![b'a'; 70])),
        Some(70),
        limits(100),
        &b,
    )
    .await
    .unwrap();
    let b2 = b.clone();
    let second = tokio::spawn(async move {
        read(
            Full::new(Bytes::from(vec![b'b'; 50])),
            Some(50),
            limits(100),
            &b2,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "waits while the first holds 70 of 100"
    );
    drop(first);
    let (bytes, permit) = second.await.unwrap().unwrap();
    assert_eq!((bytes.len(), permit.bytes, b.held()), (50, 50, 50));
    assert_eq!(refused.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_bounded_then_refused_and_nothing_is_taken() {
    let (b, gauge, refused) = budget(100);
    let (_, held) = read(
        Full::new(Bytes::from(vec![b'a'; 70])),
        Some(70),
        limits(100),
        &b,
    )
    .await
    .unwrap();
    let start = Instant::now();
    let err = read(
        Full::new(Bytes::from(vec![b'b'; 50])),
        Some(50),
        limits(100),
        &b,
    )
    .await
    .unwrap_err();
    assert_eq!(err, BodyError::OverBudget { budget: 100 });
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "server.body_budget_wait_ms"
    );
    assert_eq!((b.held(), gauge.get(), refused.get()), (70, 70, 1));
    drop(held);
    assert_eq!(b.held(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_chunked_body_takes_its_share_as_it_arrives_and_gives_it_back_when_refused() {
    let (b, _, refused) = budget(100);
    let (_, held) = read(
        Full::new(Bytes::from(vec![b'a'; 40])),
        Some(40),
        limits(100),
        &b,
    )
    .await
    .unwrap();
    // 3 × 25 bytes: the first two fit beside the 40 held, the third does not.
    let body = frames(vec![Bytes::from(vec![b'c'; 25]); 3]);
    let err = read(body, None, limits(100), &b).await.unwrap_err();
    assert_eq!(err, BodyError::OverBudget { budget: 100 });
    assert_eq!(b.held(), 40, "the refused body's 50 bytes came back");
    assert_eq!(refused.get(), 1);
    drop(held);
    let body = frames(vec![Bytes::from(vec![b'c'; 25]); 3]);
    let (bytes, permit) = read(body, None, limits(100), &b).await.unwrap();
    assert_eq!((bytes.len(), permit.bytes), (75, 75));
}

#[tokio::test(start_paused = true)]
async fn a_body_larger_than_the_whole_budget_is_refused_without_waiting() {
    let (b, _, _) = budget(100);
    let start = Instant::now();
    let body = frames(vec![Bytes::from(vec![b'c'; 60]); 2]);
    let err = read(body, None, limits(1_000), &b).await.unwrap_err();
    assert_eq!(err, BodyError::OverBudget { budget: 100 });
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(b.held(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_cap_and_the_deadline_still_hold() {
    let (b, _, _) = budget(1_000);
    let err = read(Full::new(Bytes::new()), Some(101), limits(100), &b)
        .await
        .unwrap_err();
    assert_eq!(err, BodyError::TooLarge { limit: 100 });
    let body = frames(vec![Bytes::from(vec![b'c'; 60]); 2]);
    let err = read(body, None, limits(100), &b).await.unwrap_err();
    assert_eq!(err, BodyError::TooLarge { limit: 100 });
    let stalled = StreamBody::new(futures::stream::pending::<
        Result<Frame<Bytes>, std::io::Error>,
    >());
    let err = read(stalled, Some(10), limits(100), &b).await.unwrap_err();
    assert_eq!(err, BodyError::Timeout(Duration::from_secs(30)));
    assert_eq!(b.held(), 0, "every failure gave its share back");
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_grows_the_budget_wakes_the_waiters() {
    let (b, _, _) = budget(100);
    let (_, _held) = read(
        Full::new(Bytes::from(vec![b'a'; 70])),
        Some(70),
        limits(100),
        &b,
    )
    .await
    .unwrap();
    let b2 = b.clone();
    let waiting = tokio::spawn(async move {
        read(
            Full::new(Bytes::from(vec![b'b'; 50])),
            Some(50),
            limits(100),
            &b2,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.set_capacity(200);
    let (_, permit) = waiting.await.unwrap().unwrap();
    assert_eq!((permit.bytes, b.held()), (50, 120));
}

#[tokio::test]
async fn chunked_bytes_arrive_intact_in_any_framing() {
    let (b, _, _) = budget(u64::MAX);
    let want: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    // One byte per frame, ragged frames, frames larger than a segment.
    for sizes in [
        vec![1usize],
        vec![1, 7, 8_191, 8_193, 300_000],
        vec![2_000_000],
    ] {
        let mut parts = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < want.len() {
            let n = sizes[i % sizes.len()].min(want.len() - at);
            parts.push(Bytes::copy_from_slice(&want[at..at + n]));
            at += n;
            i += 1;
        }
        let n = parts.len();
        let (bytes, permit) = read(frames(parts), None, limits(usize::MAX), &b)
            .await
            .unwrap();
        assert_eq!(bytes.len(), want.len(), "{n} frames");
        assert!(bytes[..] == want[..], "{n} frames");
        assert_eq!(permit.bytes, want.len() as u64);
    }
}

#[tokio::test]
async fn a_declared_body_arrives_whole_from_many_frames() {
    let (b, _, _) = budget(1 << 20);
    let parts = vec![Bytes::from(vec![b'x'; 1000]); 100];
    let (bytes, _) = read(frames(parts), Some(100_000), limits(1 << 20), &b)
        .await
        .unwrap();
    assert_eq!(bytes.len(), 100_000);
    assert!(bytes.iter().all(|b| *b == b'x'));
}
