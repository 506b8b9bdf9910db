//! Body of the `h1_response` fuzz target (`fuzz/fuzz_targets/h1_response.rs`): the client's
//! response parsing (head, content-length, chunked framing, trailers, until-close) over bytes
//! an engine could send, as a plain function so that an ordinary test replays its corpus
//! (`fuzz/corpus/h1_response/`) without a fuzzer.

use bytes::BytesMut;

use super::{Framing, Step, decode, parse_head};

/// Status, `Retry-After` in seconds, framing, and whether the connection closes after.
type Parsed = (u16, Option<u64>, Framing, bool);

/// What the client made of a whole response.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// The head, or why it was refused; `Ok(None)` when the connection closed before a
    /// complete head.
    head: Result<Option<Parsed>, String>,
    /// Bytes of the head, when it was complete.
    head_len: usize,
    body: Vec<u8>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    /// No head, so no body.
    NoBody,
    /// The framing said the body is complete (or the engine closed an until-close body).
    Complete,
    /// The connection closed before the framing's end.
    Truncated,
    Refused(&'static str),
}

/// Feeds `chunks` as successive reads, then the end of the connection.
fn run(chunks: &[&[u8]], head_request: bool) -> Outcome {
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    let mut head = None;
    let mut body = Vec::new();
    let mut framing = Framing::Eof;
    let finish = |head, head_len, body, end| Outcome {
        head,
        head_len,
        body,
        end,
    };
    for c in chunks {
        buf.extend_from_slice(c);
        if head.is_none() {
            let before = buf.len();
            let parsed = parse_head(&mut buf);
            consumed += before - buf.len();
            match parsed {
                Ok(None) => continue,
                Ok(Some((h, f, close))) => {
                    framing = if head_request { Framing::Length(0) } else { f };
                    head = Some((h.status, h.retry_after.map(|d| d.as_secs()), framing, close));
                }
                Err(e) => return finish(Err(e), 0, body, End::NoBody),
            }
        }
        loop {
            match decode(&mut framing, &mut buf) {
                Ok(Step::Data(d)) => {
                    assert!(!d.is_empty(), "empty data step");
                    body.extend_from_slice(&d);
                }
                Ok(Step::More) => break,
                Ok(Step::End) => return finish(Ok(head), consumed, body, End::Complete),
                Err(e) => return finish(Ok(head), consumed, body, End::Refused(e)),
            }
        }
    }
    let end = match (&head, framing) {
        (None, _) => End::NoBody,
        (Some(_), Framing::Eof) => End::Complete,
        (Some(_), _) => End::Truncated,
    };
    finish(Ok(head), consumed, body, end)
}

/// Piece lengths from a small generator: many single bytes, some runs.
fn pieces(seed: u64, data: &[u8]) -> Vec<&[u8]> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = match state % 3 {
            0 => 1,
            1 => 2 + (state >> 8) as usize % 7,
            _ => 1 + (state >> 8) as usize % 128,
        };
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// An independent reading of chunked framing over a whole body (the same leniencies: bare LF,
/// extensions, up to 16 hex digits, lines of at most 4 KiB): the data and whether it ended.
fn chunked_reference(mut rest: &[u8]) -> (Vec<u8>, Result<bool, ()>) {
    let mut out = Vec::new();
    let line = |rest: &mut &[u8]| -> Result<Option<Vec<u8>>, ()> {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return if rest.len() > super::MAX_CHUNK_LINE {
                Err(())
            } else {
                Ok(None)
            };
        };
        if end > super::MAX_CHUNK_LINE {
            return Err(());
        }
        let mut l = rest[..end].to_vec();
        if l.last() == Some(&b'\r') {
            l.pop();
        }
        *rest = &rest[end + 1..];
        Ok(Some(l))
    };
    loop {
        let Some(size_line) = (match line(&mut rest) {
            Ok(l) => l,
            Err(()) => return (out, Err(())),
        }) else {
            return (out, Ok(false));
        };
        let hex = size_line.split(|&b| b == b';').next().unwrap_or(&[]);
        let hex = hex.trim_ascii();
        if hex.is_empty() || hex.len() > 16 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return (out, Err(()));
        }
        let Some(size) = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            return (out, Err(()));
        };
        if size == 0 {
            loop {
                match line(&mut rest) {
                    Ok(Some(l)) if l.is_empty() => return (out, Ok(true)),
                    Ok(Some(_)) => {}
                    Ok(None) => return (out, Ok(false)),
                    Err(()) => return (out, Err(())),
                }
            }
        }
        let n = usize::try_from(size).unwrap_or(usize::MAX);
        if rest.len() < n {
            out.extend_from_slice(rest);
            return (out, Ok(false));
        }
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if let Some(r) = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
        {
            rest = r;
        } else if rest.len() < 2 {
            return (out, Ok(false));
        } else {
            return (out, Err(()));
        }
    }
}

/// `h1_response`: the first byte says whether the request was `HEAD` and picks a split
/// pattern; the rest is what the engine sent before closing. Read whole, in pieces and a byte
/// at a time, the client must see the same head, the same body and the same end; a sized body
/// is exactly its bytes, an until-close body everything after the head, a chunked body what
/// an independent reading of the framing gives.
pub(crate) fn h1_response(data: &[u8]) {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let head_request = ctl & 1 == 1;
    let whole = run(&[input], head_request);
    let split = run(&pieces(u64::from(ctl >> 1), input), head_request);
    assert_eq!(whole, split, "split changed the result");
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        whole,
        run(&bytewise, head_request),
        "byte-at-a-time changed the result"
    );

    let Ok(Some((_, _, framing, close))) = whole.head else {
        assert!(whole.body.is_empty());
        return;
    };
    let after = &input[whole.head_len..];
    match framing {
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            assert_eq!(whole.body, after[..n.min(after.len())], "sized body");
            let end = if n <= after.len() {
                End::Complete
            } else {
                End::Truncated
            };
            assert_eq!(whole.end, end);
        }
        Framing::Eof => {
            assert!(close, "an until-close body must close the connection");
            assert_eq!(whole.body, after, "until-close body");
            assert_eq!(whole.end, End::Complete);
        }
        Framing::Chunked(_) => {
            let (body, end) = chunked_reference(after);
            assert_eq!(whole.body, body, "chunked body");
            match end {
                Ok(true) => assert_eq!(whole.end, End::Complete),
                Ok(false) => assert_eq!(whole.end, End::Truncated),
                Err(()) => assert!(matches!(whole.end, End::Refused(_))),
            }
        }
    }
}
