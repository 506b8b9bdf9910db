use super::*;

#[test]
fn an_unparsable_request_gets_a_json_error_that_closes() {
    let out = String::from_utf8(crate::error::unparsable_request(431)).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{head}"
    );
    assert!(head.contains("\r\nx-request-id: "), "{head}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "request_headers_too_large");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["param"].is_null());
}

fn deadlines() -> Deadlines {
    Deadlines::from_config(&crate::config::ServerConfig::default())
}

/// Reads everything `conn` gives until the peer closes.
async fn read_all<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn the_http2_preface_is_recognised_even_split_and_given_back_whole() {
    use tokio::io::AsyncWriteExt;
    let (client, server) = tokio::io::duplex(1024);
    let mut conn = Conn::new(server, Arc::new(Activity::default()), deadlines());
    let writer = tokio::spawn(async move {
        let mut client = client;
        for part in [
            &H2_PREFACE[..3],
            &H2_PREFACE[3..20],
            &H2_PREFACE[20..],
            b"frames",
        ] {
            client.write_all(part).await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(conn.sniff().await.unwrap(), Protocol::Http2);
    writer.await.unwrap();
    let all = read_all(&mut conn).await;
    assert_eq!(&all[..24], &H2_PREFACE[..]);
    assert_eq!(&all[24..], b"frames");
}

#[tokio::test]
async fn http1_is_recognised_at_its_first_differing_byte() {
    use tokio::io::AsyncWriteExt;
    for request in [
        &b"GET /health HTTP/1.1\r\n\r\n"[..],
        // Shares the preface's first byte.
        &b"POST /v1/chat/completions HTTP/1.1\r\n\r\n"[..],
        // The preface's first bytes, then HTTP/1 after all.
        &b"PRI /x HTTP/1.1\r\n\r\n"[..],
    ] {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut conn = Conn::new(server, Arc::new(Activity::default()), deadlines());
        client.write_all(request).await.unwrap();
        drop(client);
        assert_eq!(conn.sniff().await.unwrap(), Protocol::Http1);
        assert_eq!(read_all(&mut conn).await, request);
    }
}

#[tokio::test]
async fn a_connection_closed_before_any_byte_is_http1_with_nothing_to_read() {
    let (client, server) = tokio::io::duplex(1024);
    drop(client);
    let mut conn = Conn::new(server, Arc::new(Activity::default()), deadlines());
    assert_eq!(conn.sniff().await.unwrap(), Protocol::Http1);
    assert!(read_all(&mut conn).await.is_empty());
}

/// Over HTTP/2 the idle deadline asks for a graceful close first (the flag `serve.rs` takes),
/// then cuts the connection one idle period later; bytes from the client (pings) do not
/// postpone either.
#[tokio::test(start_paused = true)]
async fn http2_idle_asks_for_a_graceful_close_then_cuts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(1024);
    let activity = Arc::new(Activity::default());
    let mut conn = Conn::new(server, activity.clone(), deadlines());
    client.write_all(H2_PREFACE).await.unwrap();
    assert_eq!(conn.sniff().await.unwrap(), Protocol::Http2);
    let mut buf = [0u8; 64];
    assert_eq!(conn.read(&mut buf).await.unwrap(), 24);
    let idle = deadlines().idle;
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf).await {
                Ok(n) => assert!(n > 0),
                Err(e) => return e.kind(),
            }
        }
    });
    // A ping's worth of bytes halfway through changes nothing.
    tokio::time::sleep(idle / 2).await;
    client.write_all(b"ping").await.unwrap();
    tokio::time::sleep(idle / 2 + Duration::from_millis(1)).await;
    assert!(
        activity.take_idle_expired(),
        "asked to close at the deadline"
    );
    assert!(!reader.is_finished());
    let kind = reader.await.unwrap();
    assert_eq!(kind, io::ErrorKind::TimedOut);
    let took = Instant::now() - start;
    assert!(
        took >= idle * 2 && took < idle * 2 + Duration::from_millis(50),
        "{took:?}"
    );
}

/// A client that stops reading: the write deadline runs from the first write the socket cannot
/// take, restarts when the client reads a little, and ends the write with `TimedOut`.
#[tokio::test(start_paused = true)]
async fn a_write_the_client_does_not_read_ends_at_the_write_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(64);
    let d = deadlines();
    assert_eq!(d.write, Duration::from_secs(60));
    let mut conn = Conn::new(server, Arc::new(Activity::default()), d);
    let start = Instant::now();
    // 30 s in, the client reads what the socket holds, and then nothing more.
    let reader = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let mut got = [0u8; 64];
        client.read_exact(&mut got).await.unwrap();
        client
    });
    let err = conn.write_all(&[b'x'; 256]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_secs(90), "30 s, then 60 s");
    // The client is still connected: the deadline, not a closed socket, ended the write.
    let _client = reader.await.unwrap();
}

/// A socket that takes every write at once never starts the deadline, however long it lives.
#[tokio::test(start_paused = true)]
async fn writes_that_go_through_never_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(64);
    let mut conn = Conn::new(server, Arc::new(Activity::default()), deadlines());
    for _ in 0..5 {
        conn.write_all(&[b'y'; 64]).await.unwrap();
        let mut got = [0u8; 64];
        client.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(Duration::from_secs(61)).await;
    }
    assert!(conn.write_timer.is_none());
}

/// The HTTP/2 window watchdog: a stream whose body last gave data and has not been polled
/// since is stalled at the third tick that sees it so; a stream waiting for its engine (last
/// poll pending), or one still moving, never is; an ended stream leaves the list.
#[test]
fn the_window_watchdog_finds_a_stream_the_client_gives_no_window() {
    let activity = Arc::new(Activity::default());
    let (_waiting_req, waiting) = activity.begin_watched();
    let (_moving_req, moving) = activity.begin_watched();
    let (_stuck_req, stuck) = activity.begin_watched();
    let poll = |p: &AtomicU64, gave: bool| {
        let polls = (p.load(Ordering::Relaxed) >> 1) + 1;
        p.store(polls << 1 | u64::from(gave), Ordering::Relaxed);
    };
    poll(&waiting, false);
    poll(&stuck, true);
    // The moving stream sends between every two ticks.
    let tick = || {
        poll(&moving, true);
        activity.window_stalled()
    };
    let ticks: Vec<bool> = (0..3).map(|_| tick()).collect();
    assert_eq!(ticks, [false, false, true], "stalled at the third tick");
    // Polled again (the client granted window): no longer stalled.
    poll(&stuck, false);
    assert!(!tick());
    // An ended stream's entry goes at the next tick.
    drop((stuck, _stuck_req));
    assert!(!tick());
    assert_eq!(activity.watched.lock().unwrap().len(), 2);
    // The moving stream stops being polled after giving data: stalled two ticks later.
    assert!(!activity.window_stalled());
    assert!(activity.window_stalled());
}
