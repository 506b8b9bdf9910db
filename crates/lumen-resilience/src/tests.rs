use super::*;
use futures::stream;
use lumen_openai_types::ChatCompletionChunk;

type C = ChatCompletionChunk;

fn chunk() -> Result<Chunk<C>, BackendError> {
    Ok(Chunk::new(C::default()))
}

/// A stream that yields one chunk after each delay.
fn delayed(delays: Vec<u64>) -> ChunkStream<C> {
    Box::pin(stream::iter(delays).then(|ms| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        chunk()
    }))
}

fn timeouts(first: u64, idle: u64, total: u64) -> Timeouts {
    Timeouts {
        first_byte: Some(Duration::from_millis(first)),
        idle: Some(Duration::from_millis(idle)),
        total: Some(Duration::from_millis(total)),
    }
}

fn kind(r: Result<impl Sized, BackendError>) -> TimeoutKind {
    match r {
        Err(BackendError::Timeout { kind }) => kind,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("expected a timeout"),
    }
}

#[tokio::test(start_paused = true)]
async fn slow_first_chunk_is_a_first_byte_timeout_before_commit() {
    let start = Instant::now();
    let r = open_stream(
        async { Ok(delayed(vec![500, 1])) },
        &timeouts(100, 50, 10_000),
    )
    .await;
    assert_eq!(kind(r), TimeoutKind::FirstByte);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_stream_within_deadlines_passes_through_whole() {
    let s = open_stream(
        async { Ok(delayed(vec![80, 40, 40, 40])) },
        &timeouts(100, 50, 10_000),
    )
    .await
    .unwrap();
    let items: Vec<_> = s.collect().await;
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(Result::is_ok));
}

#[tokio::test(start_paused = true)]
async fn idle_gap_after_commit_is_reported_in_band_once() {
    let s = open_stream(
        async { Ok(delayed(vec![10, 10, 200, 10])) },
        &timeouts(100, 50, 10_000),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let items: Vec<_> = s.collect().await;
    assert_eq!(items.len(), 3, "first, second, then the idle error");
    assert!(items[..2].iter().all(Result::is_ok));
    assert!(matches!(
        items[2],
        Err(BackendError::Timeout {
            kind: TimeoutKind::Idle
        })
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(60));
}

#[tokio::test(start_paused = true)]
async fn total_deadline_cuts_a_long_stream() {
    let s = open_stream(
        async { Ok(delayed(vec![10; 100])) },
        &timeouts(100, 50, 255),
    )
    .await
    .unwrap();
    let items: Vec<_> = s.collect().await;
    assert_eq!(items.len(), 26);
    assert!(matches!(
        items[25],
        Err(BackendError::Timeout {
            kind: TimeoutKind::Total
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn total_shorter_than_first_byte_reports_total() {
    let r = open_stream(async { Ok(delayed(vec![500])) }, &timeouts(1_000, 50, 200)).await;
    assert_eq!(kind(r), TimeoutKind::Total);
}

#[tokio::test(start_paused = true)]
async fn error_as_first_event_is_returned_before_commit() {
    let failing: ChunkStream<C> = Box::pin(stream::iter(vec![Err(BackendError::Protocol {
        backend: "b".into(),
        message: "garbage".into(),
    })]));
    let r = open_stream(async { Ok(failing) }, &Timeouts::default()).await;
    assert!(matches!(r, Err(BackendError::Protocol { .. })));
}

#[tokio::test(start_paused = true)]
async fn unary_total_deadline() {
    let start = Instant::now();
    let r = unary(
        async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, BackendError>(1)
        },
        &timeouts(1, 1, 300),
    )
    .await;
    assert_eq!(kind(r), TimeoutKind::Total);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(
        unary(async { Ok::<_, BackendError>(7) }, &Timeouts::default())
            .await
            .unwrap(),
        7
    );
}
