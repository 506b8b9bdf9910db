//! Lumen's own HTTP/1.1 server connection (`lumen-server`'s `h1.rs`) over raw TCP: what hyper
//! did for the clients and must still happen, byte for byte on the wire. The bad-input campaign
//! (`bad_input.rs`) covers what it refuses, `streaming.rs` clients that go away; these cover
//! what it serves.

use std::time::Duration;

use lumen_sim::SimConfig;
use lumen_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#;
const STREAM: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true}"#;

/// Reads exactly one answer from `s`, keeping what follows it in `buf`.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> WireAnswer {
    async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        more(s, buf).await;
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut answer = WireAnswer {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = answer.header("content-length") {
        let len: usize = len.parse().unwrap();
        while buf.len() < len {
            more(s, buf).await;
        }
        answer.body = buf.drain(..len).collect();
    } else if answer.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                more(s, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                more(s, buf).await;
            }
            assert_eq!(&buf[line_end + 2 + size..line_end + 4 + size], b"\r\n");
            answer
                .body
                .extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 4 + size);
            if size == 0 {
                break;
            }
        }
    } else if answer.status != 100 {
        // Until the connection closes.
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(buf)).await;
        answer.body = std::mem::take(buf);
    }
    answer
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: lumen\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}

/// Lumen in front of a simulator serving `m`, and a connection to it.
async fn connected() -> (Lumen, lumen_sim::Simulator, TcpStream) {
    let (url, sim) = sim(&["m"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let s = TcpStream::connect(lumen.addr).await.unwrap();
    (lumen, sim, s)
}

/// The connection answers one more request.
async fn still_serves(s: &mut TcpStream, buf: &mut Vec<u8>) {
    s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: lumen\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(s, buf).await.status, 200);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_lumen, sim, mut s) = connected().await;
    let mut all = b"GET /v1/models HTTP/1.1\r\nhost: lumen\r\nx-request-id: one\r\n\r\n".to_vec();
    all.extend_from_slice(&post("/v1/chat/completions", CHAT));
    all.extend_from_slice(&post("/v1/chat/completions", STREAM));
    all.extend_from_slice(b"GET /v1/models HTTP/1.1\r\nhost: lumen\r\nx-request-id: four\r\n\r\n");
    s.write_all(&all).await.unwrap();
    let mut buf = Vec::new();
    let models = read_answer(&mut s, &mut buf).await;
    assert_eq!(models.status, 200);
    assert_eq!(models.header("x-request-id"), Some("one"));
    let chat = read_answer(&mut s, &mut buf).await;
    assert_eq!(chat.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&chat.body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    let stream = read_answer(&mut s, &mut buf).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    let text = String::from_utf8(stream.body).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let last = read_answer(&mut s, &mut buf).await;
    assert_eq!(last.header("x-request-id"), Some("four"));
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    assert_eq!(sim.generation_count(), 2);
    // Still open for more.
    still_serves(&mut s, &mut buf).await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_wanted() {
    let (_lumen, sim, mut s) = connected().await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: lumen\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        CHAT.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let interim = read_answer(&mut s, &mut buf).await;
    assert_eq!(interim.status, 100);
    assert!(buf.is_empty());
    s.write_all(CHAT.as_bytes()).await.unwrap();
    let answer = read_answer(&mut s, &mut buf).await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(sim.generation_count(), 1);
    // A client that sends its body without waiting gets no `100`.
    let mut all = head.into_bytes();
    all.extend_from_slice(CHAT.as_bytes());
    s.write_all(&all).await.unwrap();
    assert_eq!(read_answer(&mut s, &mut buf).await.status, 200);
}

#[tokio::test]
async fn a_chunked_body_dribbled_a_byte_at_a_time_is_served() {
    let (_lumen, sim, mut s) = connected().await;
    s.set_nodelay(true).unwrap();
    let mut wire = b"POST /v1/chat/completions HTTP/1.1\r\nhost: lumen\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for piece in CHAT.as_bytes().chunks(7) {
        wire.extend_from_slice(format!("{:x};n=1\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\nx-trailer: yes\r\n\r\n");
    for b in &wire {
        s.write_all(std::slice::from_ref(b)).await.unwrap();
    }
    let mut buf = Vec::new();
    let answer = read_answer(&mut s, &mut buf).await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(sim.generation_count(), 1);
    // The framing ended exactly: the connection serves the next request.
    still_serves(&mut s, &mut buf).await;
}

#[tokio::test]
async fn http_1_0_gets_a_delimited_answer_and_a_close() {
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    for body in [CHAT, STREAM] {
        let mut s = TcpStream::connect(lumen.addr).await.unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let answer = read_answer(&mut s, &mut buf).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("connection"), Some("close"));
        assert_eq!(
            answer.header("transfer-encoding"),
            None,
            "no chunked framing on 1.0"
        );
        assert!(!answer.body.is_empty());
        assert!(closed(&mut s).await);
    }
}

#[tokio::test]
async fn stream_events_go_out_as_they_come() {
    let (url, _sim) = sim_with(SimConfig {
        models: vec!["m".into()],
        itl: Duration::from_millis(400),
        ..SimConfig::default()
    })
    .await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    let start = tokio::time::Instant::now();
    s.write_all(&post("/v1/chat/completions", STREAM))
        .await
        .unwrap();
    // The head and the first event, while the engine still has two tokens to go (800 ms).
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("data: {") {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let mut buf = got;
    // The rest: the whole answer reads back as one chunked body.
    let mut rest = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("0\r\n\r\n") {
        let n = s.read(&mut rest).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&rest[..n]);
    }
    let answer = read_answer(&mut s, &mut buf).await;
    assert!(String::from_utf8_lossy(&answer.body).contains("[DONE]"));
}

/// Events the engine sent together (a whole stream in one write) go out as one chunk, and the
/// stream's last chunk carries the terminator: a few writes for 41 events, not 42.
#[tokio::test]
async fn events_ready_together_go_out_in_one_chunk() {
    let url = one_write_engine(40).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    s.write_all(&post("/v1/chat/completions", STREAM))
        .await
        .unwrap();
    let mut wire = Vec::new();
    while !wire.ends_with(b"\r\n0\r\n\r\n") {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("the whole stream within 10 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&wire));
        wire.extend_from_slice(&chunk[..n]);
    }
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let (mut at, mut sizes, mut body) = (head_end, Vec::new(), Vec::new());
    loop {
        let line = wire[at..].windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&wire[at..at + line]).unwrap(), 16).unwrap();
        at += line + 2;
        body.extend_from_slice(&wire[at..at + size]);
        at += size + 2;
        if size == 0 {
            break;
        }
        sizes.push(size);
    }
    assert_eq!(at, wire.len(), "nothing after the terminator");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(body.matches("data: ").count(), 41, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"));
    // The commit point reads the first event on its own; the rest were ready together.
    assert!(
        sizes.len() <= 3,
        "{} chunks for 41 events: {sizes:?}",
        sizes.len()
    );
}

#[tokio::test]
async fn head_answers_carry_the_length_a_get_would_have() {
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::in_front_of(&[&url]).await;
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: lumen\r\n\r\nHEAD /v1/models HTTP/1.1\r\nhost: lumen\r\n\r\nGET /v1/models HTTP/1.1\r\nhost: lumen\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let get = read_answer(&mut s, &mut buf).await;
    // A HEAD answer's length says what a GET's body would be, and no body follows it: the
    // third answer is read right after its head.
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf.drain(..end + 4).collect()).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}\r\n", get.body.len())),
        "{head}"
    );
    let again = read_answer(&mut s, &mut buf).await;
    assert_eq!(again.body, get.body);
}

/// Lumen whose head deadline is 1 s and idle deadline far away, with a grace of 30 s.
async fn with_short_head_deadline() -> (Lumen, lumen_sim::Simulator) {
    let (url, sim) = sim(&["m"]).await;
    let lumen = Lumen::start(
        builder(&[&url])
            .header_read_timeout(Duration::from_secs(1))
            .idle_timeout(Duration::from_secs(60))
            .shutdown_grace(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
    .await;
    (lumen, sim)
}

#[tokio::test]
async fn part_of_a_head_sent_during_an_answer_gets_the_head_deadline() {
    let (lumen, _sim) = with_short_head_deadline().await;
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    let mut all = post("/v1/chat/completions", STREAM);
    all.extend_from_slice(b"GET /v1/mo");
    s.write_all(&all).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut buf = Vec::new();
    assert_eq!(read_answer(&mut s, &mut buf).await.status, 200);
    // The rest of that head never comes: 408 at the head deadline, not the idle one.
    let timeout = read_answer(&mut s, &mut buf).await;
    assert_eq!(timeout.status, 408);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(closed(&mut s).await);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_head_that_is_not_all_here() {
    let (mut lumen, _sim) = with_short_head_deadline().await;
    let mut s = TcpStream::connect(lumen.addr).await.unwrap();
    s.write_all(b"GET /v1/models HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = tokio::time::Instant::now();
    let serve = lumen.begin_shutdown();
    assert!(closed(&mut s).await);
    serve.await.unwrap().unwrap();
    // Not the 30 s grace, nor the head deadline.
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

/// A client that reads its stream's head and then nothing more: once the socket's buffers are
/// full, `server.write_timeout_ms` later the connection is closed, and with it the engine's
/// request and its admission slot. Without the deadline it would hold them for as long as it
/// liked (an engine slot per connection, for a client that costs nothing to run).
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_write_deadline() {
    use std::sync::atomic::Ordering;
    let engine = endless_engine().await;
    let lumen = engine.behind_lumen(Duration::from_secs(2)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(lumen.addr).await.unwrap();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":true}"#;
    s.write_all(&post("/v1/chat/completions", body))
        .await
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let start = tokio::time::Instant::now();
    // Buffers fill at once; the stream is held (not buffered) until the deadline.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(engine.streaming.load(Ordering::SeqCst), 1, "held, not cut");
    let held = engine.written.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        engine.written.load(Ordering::SeqCst) - held < 1024 * 1024,
        "the engine was held back"
    );
    engine.all_cut(Duration::from_secs(20)).await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_slots_released(&lumen, "the engine slot was given back").await;
    // The connection is gone: what the client reads now ends.
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the connection was left open");
}
