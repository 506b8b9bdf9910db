use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::head::{self, Refusal};
use super::recv::{self, Framing, FramingError, Step};
use super::send::{self, Facts, Out, Plan};

fn parse(text: &str) -> Result<head::Head, Refusal> {
    match head::parse(text.as_bytes()) {
        Ok(Some((h, len))) => {
            assert_eq!(len, text.find("\r\n\r\n").unwrap() + 4, "{text:?}");
            Ok(h)
        }
        Ok(None) => panic!("partial: {text:?}"),
        Err(r) => Err(r),
    }
}

fn post(headers: &str) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{headers}\r\n")
}

#[test]
fn a_plain_head_becomes_a_request() {
    let h = parse(&post("content-length: 12\r\nx-a: é\r\n")).unwrap();
    assert_eq!(h.parts.method, Method::POST);
    assert_eq!(h.parts.uri.path(), "/v1/chat/completions");
    assert_eq!(h.parts.version, Version::HTTP_11);
    assert_eq!(h.parts.headers["x-a"].as_bytes(), "é".as_bytes());
    assert_eq!(h.framing, Framing::Length(12));
    assert!(!h.close && !h.expect_continue);
}

#[test]
fn framing_follows_rfc_9112() {
    // Both framings: chunked wins, Content-Length is dropped, and the connection closes.
    let h = parse(&post("content-length: 4\r\ntransfer-encoding: chunked\r\n")).unwrap();
    assert_eq!(h.framing, Framing::chunked());
    assert!(h.close);
    assert!(!h.parts.headers.contains_key("content-length"));
    // Codings before chunked are the application's to refuse (415), not framing's.
    let h = parse(&post("transfer-encoding: gzip, CHUNKED\r\n")).unwrap();
    assert_eq!(h.framing, Framing::chunked());
    // Copies of one length agree.
    let h = parse(&post("content-length: 3\r\ncontent-length: 3, 3\r\n")).unwrap();
    assert_eq!(h.framing, Framing::Length(3));
    assert_eq!(parse(&post("")).unwrap().framing, Framing::Length(0));
    for bad in [
        "content-length: 2\r\ncontent-length: 3\r\n",
        "content-length: +2\r\n",
        "content-length: -1\r\n",
        "content-length: 1 2\r\n",
        "content-length:\r\n",
        "content-length: 18446744073709551616\r\n",
        "transfer-encoding: gzip\r\n",
        "transfer-encoding: chunked, gzip\r\n",
        "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
        "transfer-encoding: chunked, chunked\r\n",
    ] {
        assert_eq!(parse(&post(bad)).err(), Some(Refusal::Malformed), "{bad:?}");
    }
    let old = "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_eq!(parse(old).err(), Some(Refusal::Malformed));
}

#[test]
fn connection_and_expect_are_read_as_tokens() {
    assert!(
        parse(&post("connection: keep-alive, Close\r\n"))
            .unwrap()
            .close
    );
    assert!(!parse(&post("connection: keep-alive\r\n")).unwrap().close);
    assert!(parse("GET / HTTP/1.0\r\n\r\n").unwrap().close);
    assert!(
        parse(&post("expect: 100-Continue\r\n"))
            .unwrap()
            .expect_continue
    );
    assert!(
        !parse("GET / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n")
            .unwrap()
            .expect_continue
    );
}

#[test]
fn oversized_and_broken_heads_are_refused() {
    let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
    assert_eq!(parse(&post(&many)).err(), Some(Refusal::TooLarge));
    let hundred: String = (0..99).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(parse(&post(&hundred)).is_ok());
    for bad in [
        "GET /v1/models\r\n\r\n",
        "GET /v1/models HTTP/3.0\r\n\r\n",
        "G@T / HTTP/1.1\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nx bad: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nx: a\x7fb\r\n\r\n",
        "GET / HTTP/1.1\r\nx: 1\r\n folded\r\n\r\n",
    ] {
        assert_eq!(parse(bad).err(), Some(Refusal::Malformed), "{bad:?}");
    }
}

#[test]
fn the_end_of_a_head_is_found_however_it_arrives() {
    let text = b"GET / HTTP/1.1\r\nhost: x\r\n\r\nBODY";
    let want = text.len() - 4;
    assert_eq!(head::end_of_head(text, 0), Some(want));
    // Scanned in every split: the caller's `from` is what it had before the last read.
    for split in 0..text.len() {
        let first = head::end_of_head(&text[..split], 0);
        let found = first.or_else(|| head::end_of_head(text, split));
        assert_eq!(found, Some(want), "split at {split}");
    }
    assert_eq!(
        head::end_of_head(b"GET / HTTP/1.1\nhost: x\n\n", 0),
        Some(24)
    );
    assert_eq!(head::end_of_head(b"GET / HTTP/1.1\r\nhost: x\r\n", 0), None);
}

/// Decodes `wire` fed in pieces of `step` bytes: the body, and the bytes left after it.
fn decode_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), FramingError> {
    let mut framing = Framing::chunked();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match recv::decode(&mut framing, &mut buf)? {
            Step::Data(d) => body.extend_from_slice(&d),
            Step::End => return Ok((body, [&buf[..], &wire[fed..]].concat())),
            Step::More => {
                assert!(fed < wire.len(), "ran out of input");
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_the_same_in_any_split() {
    let wire = b"5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
    for step in 1..wire.len() {
        let (body, rest) = decode_in_steps(wire, step).unwrap();
        assert_eq!(
            body,
            b"helloabcdefghijklmnopqrstuvwxyz".to_vec(),
            "step {step}"
        );
        assert_eq!(rest, b"NEXT".to_vec());
    }
}

#[test]
fn chunked_framing_is_strict() {
    let cases: [(&[u8], FramingError); 8] = [
        (b"5\nhello\r\n0\r\n\r\n", FramingError::ChunkSize),
        (b"zz\r\n", FramingError::ChunkSize),
        (b"-2\r\n", FramingError::ChunkSize),
        (b" 5\r\n", FramingError::ChunkSize),
        (b"fffffffffffffffff\r\n", FramingError::ChunkSize),
        (b"5 \r\nhello\r\n", FramingError::ChunkSize),
        (b"5\r\nhelloXY0\r\n\r\n", FramingError::ChunkEnd),
        (b"0\r\nnot a trailer\r\n\r\n", FramingError::Trailers),
    ];
    for (wire, want) in cases {
        for step in [1, wire.len()] {
            assert_eq!(
                decode_in_steps(wire, step).err(),
                Some(want),
                "{:?} in steps of {step}",
                String::from_utf8_lossy(wire)
            );
        }
    }
    // Sixteen hex digits is the most a size may have (and `u64` holds them).
    let mut framing = Framing::chunked();
    let mut buf = BytesMut::from(&b"000000000000000a\r\n"[..]);
    assert_eq!(recv::decode(&mut framing, &mut buf), Ok(Step::More));
    assert_eq!(framing, Framing::Chunked(recv::Chunked::Data(10)));
    // Trailers are bounded.
    let mut wire = b"0\r\n".to_vec();
    for _ in 0..2_000 {
        wire.extend_from_slice(b"x-trailer: 0123456789\r\n");
    }
    assert_eq!(
        decode_in_steps(&wire, 4096).err(),
        Some(FramingError::Trailers)
    );
}

#[test]
fn length_framing_hands_over_exactly_the_body() {
    let mut framing = Framing::Length(5);
    let mut buf = BytesMut::from(&b"helloGET"[..]);
    assert_eq!(
        recv::decode(&mut framing, &mut buf),
        Ok(Step::Data(Bytes::from_static(b"hello")))
    );
    assert_eq!(recv::decode(&mut framing, &mut buf), Ok(Step::End));
    assert_eq!(&buf[..], b"GET");
}

fn facts<'a>(headers: &'a HeaderMap, method: &'a Method) -> Facts<'a> {
    Facts {
        version: Version::HTTP_11,
        method,
        status: StatusCode::OK,
        headers,
        exact: None,
        request_close: false,
        request_read: true,
        closing: false,
    }
}

#[test]
fn the_response_plan() {
    let h = HeaderMap::new();
    let get = Method::GET;
    let keep = |out| Plan {
        out,
        keep_alive: true,
    };
    assert_eq!(send::plan(&facts(&h, &get)), keep(Out::Chunked));
    assert_eq!(
        send::plan(&Facts {
            exact: Some(7),
            ..facts(&h, &get)
        }),
        keep(Out::Length(7))
    );
    assert_eq!(
        send::plan(&Facts {
            method: &Method::HEAD,
            exact: Some(7),
            ..facts(&h, &get)
        }),
        keep(Out::Head(Some(7)))
    );
    assert_eq!(
        send::plan(&Facts {
            status: StatusCode::NO_CONTENT,
            ..facts(&h, &get)
        }),
        keep(Out::Empty)
    );
    // HTTP/1.0 has no chunked framing: the body ends with the connection.
    assert_eq!(
        send::plan(&Facts {
            version: Version::HTTP_10,
            request_close: true,
            ..facts(&h, &get)
        }),
        Plan {
            out: Out::UntilClose,
            keep_alive: false
        }
    );
    // Each reason to close closes.
    for f in [
        Facts {
            request_close: true,
            ..facts(&h, &get)
        },
        Facts {
            request_read: false,
            ..facts(&h, &get)
        },
        Facts {
            closing: true,
            ..facts(&h, &get)
        },
    ] {
        assert!(!send::plan(&f).keep_alive, "{f:?}");
    }
    let mut close = HeaderMap::new();
    close.insert("connection", HeaderValue::from_static("close"));
    close.insert("content-length", HeaderValue::from_static("3"));
    assert_eq!(
        send::plan(&facts(&close, &get)),
        Plan {
            out: Out::Length(3),
            keep_alive: false
        }
    );
}

#[test]
fn the_response_head_carries_the_plan() {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("transfer-encoding", HeaderValue::from_static("gzip"));
    h.insert("content-length", HeaderValue::from_static("99"));
    let head = send::encode_head(
        StatusCode::OK,
        &h,
        Plan {
            out: Out::Chunked,
            keep_alive: false,
        },
    );
    let text = String::from_utf8(head).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("\r\ncontent-type: text/event-stream\r\n"),
        "{text}"
    );
    assert!(
        text.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text}"
    );
    assert!(!text.contains("gzip") && !text.contains("99"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(
        text.contains("\r\ndate: ") && text.contains(" GMT\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"), "{text}");
}

#[test]
fn chunk_size_lines() {
    for n in [0usize, 1, 15, 16, 255, 4096, usize::MAX] {
        let (line, len) = send::chunk_line(n);
        assert_eq!(
            std::str::from_utf8(&line[..len]).unwrap(),
            format!("{n:x}\r\n")
        );
    }
}

/// A connection's future lives as long as the connection, and a stream's whole life is spent
/// in it: every byte of it counts in the memory of each open stream (issue 24).
#[tokio::test]
#[allow(clippy::print_stdout)]
async fn the_connection_future_stays_small() {
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let activity = Arc::new(crate::conn::Activity::default());
    let deadlines = crate::conn::Deadlines::from_config(&crate::config::ServerConfig::default());
    let conn = crate::conn::Conn::new(stream, activity.clone(), deadlines);
    let gw = crate::Gateway::builder().build().unwrap();
    let api = crate::Api::new(gw, crate::Surface::Api { operational: true });
    let (_closing, closing) = tokio::sync::watch::channel(false);
    let serve = super::serve(conn, api, activity, closing);
    let size = std::mem::size_of_val(&serve);
    println!("h1::serve's future: {size} bytes");
    // 2,016 bytes as an `async fn` (debug build), 1,536 as a block that uses its captures
    // in place.
    assert!(size <= 1600, "h1::serve's future is {size} bytes");
}

/// A socket that records each write it is given (vectored or not) as one entry.
#[derive(Default, Clone)]
struct Recorder {
    writes: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl tokio::io::AsyncRead for Recorder {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes.lock().unwrap().push(buf.to_vec());
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let n = all.len();
        self.writes.lock().unwrap().push(all);
        std::task::Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A body of given pieces that says it has ended as soon as its last piece is taken (as the
/// SSE body does with its last frame).
struct Pieces(std::collections::VecDeque<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A chunked body costs one write per piece, the head riding with the first and the
/// terminator with the last: a stream's end is not a write of its own.
#[tokio::test]
async fn a_chunked_body_ends_in_its_last_pieces_write() {
    use http_body_util::BodyExt;
    use std::sync::Arc;
    let activity = Arc::new(crate::conn::Activity::default());
    let deadlines = crate::conn::Deadlines::from_config(&crate::config::ServerConfig::default());
    let send = async |pieces: &[&'static str]| {
        let socket = Recorder::default();
        let io = crate::conn::Conn::new(socket.clone(), activity.clone(), deadlines);
        let mut conn = super::Connection {
            io,
            buf: BytesMut::new(),
            scanned: 0,
        };
        let body = Pieces(
            pieces
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        );
        let body = crate::conn::Tracked::new(body.boxed_unsync(), activity.begin());
        let plan = Plan {
            out: Out::Chunked,
            keep_alive: true,
        };
        conn.send(b"HEAD\r\n\r\n".to_vec(), body, plan)
            .await
            .unwrap();
        let writes = socket.writes.lock().unwrap().clone();
        writes
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        send(&["data: a\n\n", "data: [DONE]\n\n"]).await,
        [
            "HEAD\r\n\r\n9\r\ndata: a\n\n\r\n",
            "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
        ]
    );
    assert_eq!(
        send(&["data: [DONE]\n\n"]).await,
        ["HEAD\r\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"],
        "a whole body in one write"
    );
    assert_eq!(send(&[]).await, ["HEAD\r\n\r\n0\r\n\r\n"], "an empty body");
}
