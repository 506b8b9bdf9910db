//! Body of the `h1_request` fuzz target (`fuzz/fuzz_targets/h1_request.rs`): a client's request
//! head and body framing, read the way the connection reads them (`h1.rs`), over any bytes a
//! client could send. Properties: nothing panics, and the outcome does not depend on how the
//! bytes were split into reads (a front proxy and Lumen must agree on where a request ends,
//! whatever the packet boundaries).

use bytes::BytesMut;

use super::EARLY_PARSE;
use super::head::{self, Refusal};
use super::recv::{self, Step};

/// What the reader made of the bytes.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The head (method, target, framing, close, expect), or why it was refused; `Ok(None)`
    /// when the bytes ended first.
    head: Result<Option<String>, Refusal>,
    body: Vec<u8>,
    /// `Some(Ok(rest))`: the body ended, and `rest` bytes followed it (the next request);
    /// `Some(Err)`: its framing was refused; `None`: the bytes ended inside it.
    end: Option<Result<Vec<u8>, recv::FramingError>>,
}

/// Feeds `chunks` as successive reads.
fn run(chunks: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut scanned = 0;
    let mut chunks = chunks.iter();
    let mut outcome = Outcome {
        head: Ok(None),
        body: Vec::new(),
        end: None,
    };
    let mut framing = loop {
        let end = head::end_of_head(&buf, scanned);
        scanned = buf.len();
        if !buf.is_empty() && (end.is_some() || buf.len() <= EARLY_PARSE) {
            match head::parse(&buf) {
                Ok(Some((h, len))) => {
                    assert!(len <= buf.len());
                    outcome.head = Ok(Some(format!(
                        "{} {} {:?} close={} expect={}",
                        h.parts.method, h.parts.uri, h.framing, h.close, h.expect_continue
                    )));
                    let _ = buf.split_to(len);
                    break h.framing;
                }
                Ok(None) => {}
                Err(r) => {
                    outcome.head = Err(r);
                    return outcome;
                }
            }
        }
        if buf.len() > head::MAX_HEAD_BYTES {
            outcome.head = Err(Refusal::TooLarge);
            return outcome;
        }
        match chunks.next() {
            Some(c) => buf.extend_from_slice(c),
            None => return outcome,
        }
    };
    loop {
        match recv::decode(&mut framing, &mut buf) {
            Ok(Step::Data(d)) => outcome.body.extend_from_slice(&d),
            Ok(Step::End) => {
                let mut rest = buf.to_vec();
                chunks.for_each(|c| rest.extend_from_slice(c));
                outcome.end = Some(Ok(rest));
                return outcome;
            }
            Ok(Step::More) => match chunks.next() {
                Some(c) => buf.extend_from_slice(c),
                None => return outcome,
            },
            Err(e) => {
                outcome.end = Some(Err(e));
                return outcome;
            }
        }
    }
}

/// Whether two readings of the same bytes agree on everything that is served: a head both
/// parsed, its body and where it ended. A head refused in one reading may still be incomplete
/// in the other (garbage is refused on an early read, or only at a deadline when it came in
/// one large read): nothing is served either way.
fn agree(a: &Outcome, b: &Outcome) -> bool {
    match (&a.head, &b.head) {
        (Ok(Some(_)), Ok(Some(_))) => a == b,
        (Ok(Some(_)), _) | (_, Ok(Some(_))) => false,
        _ => true,
    }
}

/// The property: the same outcome whole, split in two at a point the input picks, and a byte
/// at a time (for inputs short enough to make that cheap).
pub fn request(data: &[u8]) {
    let whole = run(&[data]);
    let at = data
        .first()
        .map_or(0, |b| usize::from(*b) * data.len() / 256);
    let (a, b) = data.split_at(at.min(data.len()));
    let split = run(&[a, b]);
    assert!(
        agree(&whole, &split),
        "split at {at}: {whole:?} against {split:?}"
    );
    if data.len() <= 4096 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        let dribbled = run(&bytes);
        assert!(
            agree(&whole, &dribbled),
            "a byte at a time: {whole:?} against {dribbled:?}"
        );
    }
}
