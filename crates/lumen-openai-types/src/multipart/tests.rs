use super::*;
use crate::HasModel;

const CT: &str = "multipart/form-data; boundary=XyZ";

fn form(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in parts {
        out.extend_from_slice(b"--XyZ\r\n");
        if *name == "file" {
            out.extend_from_slice(
                b"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
                  Content-Type: audio/wav\r\n\r\n",
            );
        } else {
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        }
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--XyZ--\r\n");
    out
}

/// Feeds `body` in frames of `step` bytes.
fn scan(body: &[u8], step: usize) -> Result<FormFields, FormError> {
    let mut s = FormScanner::new(CT)?;
    for frame in body.chunks(step.max(1)) {
        if !s.feed(frame) {
            break;
        }
    }
    s.finish()
}

#[test]
fn the_model_is_found_at_any_frame_size_and_wherever_it_is() {
    // A file that contains the boundary's text without the CRLF before it, and CRs.
    let file: Vec<u8> = b"RIFF--XyZ\r\r\n-"
        .iter()
        .copied()
        .cycle()
        .take(5000)
        .collect();
    for order in [0, 1] {
        let parts: Vec<(&str, &[u8])> = if order == 0 {
            vec![("model", b"whisper"), ("file", &file), ("stream", b"true")]
        } else {
            vec![("file", &file), ("language", b"en"), ("model", b"whisper")]
        };
        let body = form(&parts);
        for step in [1, 2, 3, 7, 64, 1000, body.len()] {
            let f = scan(&body, step).unwrap();
            assert_eq!(f.model, "whisper", "step {step}");
            assert_eq!(&body[f.model_at.0..f.model_at.1], b"whisper");
            assert_eq!(f.stream, order == 0);
        }
    }
}

#[test]
fn a_rewritten_model_is_spliced_without_touching_the_rest() {
    let body = Bytes::from(form(&[("file", b"\x00\x01abc"), ("model", b"alias")]));
    let mut r = FormRequest::parse(CT, body.clone()).unwrap();
    assert_eq!(r.segments(), vec![body.clone()]);
    *r.model_mut() = "engine-model".into();
    let sent: Vec<u8> = r.segments().concat();
    let expected = String::from_utf8_lossy(&body).replace("alias", "engine-model");
    assert_eq!(sent, expected.as_bytes());
    assert_eq!(r.len(), sent.len());
    // And the result is a form whose model is the new one.
    let again = FormRequest::parse(CT, Bytes::from(sent)).unwrap();
    assert_eq!(again.model, "engine-model");
}

#[test]
fn bad_forms_are_refused_with_the_reason() {
    assert_eq!(
        FormScanner::new("application/json").unwrap_err(),
        FormError::NotMultipart
    );
    assert_eq!(
        FormScanner::new("multipart/form-data").unwrap_err(),
        FormError::NoBoundary
    );
    assert_eq!(
        FormScanner::new("multipart/form-data; boundary=").unwrap_err(),
        FormError::NoBoundary
    );
    let long = format!("multipart/form-data; boundary={}", "a".repeat(71));
    assert_eq!(FormScanner::new(&long).unwrap_err(), FormError::NoBoundary);
    assert!(FormScanner::new("Multipart/Form-Data; boundary=\"a b\"").is_ok());

    assert_eq!(
        scan(&form(&[("file", b"x")]), 5),
        Err(FormError::MissingModel)
    );
    assert_eq!(
        scan(&form(&[("model", b"")]), 5),
        Err(FormError::MissingModel)
    );
    assert_eq!(
        scan(&form(&[("model", b"a"), ("model", b"b")]), 5),
        Err(FormError::Duplicate("model"))
    );
    assert_eq!(
        scan(&form(&[("model", &[b'm'; 2000])]), 100),
        Err(FormError::FieldTooLarge("model"))
    );
    assert_eq!(
        scan(&form(&[("model", b"\xff")]), 5),
        Err(FormError::NotUtf8("model"))
    );
    // No closing delimiter: the body was cut.
    let mut cut = form(&[("model", b"m")]);
    cut.truncate(cut.len() - 9);
    assert!(matches!(scan(&cut, 4), Err(FormError::Malformed(_))));
    // A header line without a colon, a part without a name, junk after a boundary.
    for bad in [
        &b"--XyZ\r\nbroken header\r\n\r\nv\r\n--XyZ--"[..],
        b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XyZ--",
        b"--XyZ\r\nContent-Type: text/plain\r\n\r\nv\r\n--XyZ--",
        b"--XyZjunk\r\n",
    ] {
        assert!(
            matches!(scan(bad, 3), Err(FormError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn a_huge_part_header_is_refused_without_holding_it() {
    let mut s = FormScanner::new(CT).unwrap();
    assert!(s.feed(b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"; x=\""));
    let filler = [b'a'; 1024];
    let mut fed = 0;
    while s.feed(&filler) {
        fed += filler.len();
        assert!(fed <= MAX_PART_HEADER + filler.len());
    }
    assert_eq!(s.error(), Some(&FormError::HeaderTooLarge));
    assert!(s.pending.capacity() == 0);
}

#[test]
fn a_large_file_leaves_little_pending() {
    let mut s = FormScanner::new(CT).unwrap();
    assert!(s.feed(b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n"));
    let frame = [7u8; 16 * 1024];
    for _ in 0..100 {
        assert!(s.feed(&frame));
        assert!(s.pending.len() < 16);
    }
}

/// A content type an engine's parser (python-multipart under vLLM's FastAPI) could read
/// another boundary from, or decode names with another charset, is refused: otherwise a client
/// shows Lumen a form whose `model` is one it may use and the engine another form, with a model
/// outside the key's list (each of these reached the engine with the other model).
#[test]
fn a_content_type_an_engine_could_read_otherwise_is_refused() {
    for ct in [
        "multipart/form-data; boundary=AAA; boundary=BBB",
        "multipart/form-data; boundary=\"q;r\"",
        "multipart/form-data; boundary=\"x\\\"y\"",
        "multipart/form-data; boundary=\"a\"b\"",
        "multipart/form-data; boundary=\"ab",
        "multipart/form-data; boundary=XyZ; charset=utf-7",
        "multipart/form-data; boundary*=UTF-8''XyZ; boundary=XyZ",
        "multipart/form-data; boundary=a\"b",
        "multipart/form-data; boundary=\"ab \"",
    ] {
        assert_eq!(
            FormScanner::new(ct).unwrap_err(),
            FormError::NoBoundary,
            "{ct}"
        );
    }
    for (ct, b) in [
        ("multipart/form-data; boundary=XyZ; charset=UTF-8", "XyZ"),
        ("multipart/form-data;boundary=\"a b\"", "a b"),
        (
            "multipart/form-data; charset=\"utf-8\"; boundary=----x+y",
            "----x+y",
        ),
    ] {
        assert_eq!(boundary(ct), Ok(b), "{ct}");
    }
}

/// A part whose name an engine could read as `model` while Lumen read another (a quoted `;`,
/// a second `name`, RFC 2231's `name*`, escapes) is either read as Lumen's `model` too (then
/// two `model`s are refused) or refused.
#[test]
fn a_part_name_an_engine_could_read_otherwise_is_refused() {
    let with = |disposition: &str| {
        let mut body = form(&[("model", b"allowed")]);
        body.truncate(body.len() - b"--XyZ--\r\n".len());
        body.extend_from_slice(
            format!("--XyZ\r\nContent-Disposition: {disposition}\r\n\r\nforbidden\r\n--XyZ--\r\n")
                .as_bytes(),
        );
        body
    };
    assert_eq!(
        scan(&with("form-data; name=\"model\"; x=\"a;name=zz\""), 7),
        Err(FormError::Duplicate("model"))
    );
    for bad in [
        "form-data; name=zz; name*=UTF-8''model",
        "form-data; name=\"zz\"; name=\"model\"",
        "form-data; name=\"mo\\del\"",
        "form-data; name=\"zz\"; x=\"a\\\";name=model\"",
        "form-data; name=\"zz",
    ] {
        assert!(
            matches!(scan(&with(bad), 7), Err(FormError::Malformed(_))),
            "{bad}"
        );
    }
    // A quoted `;` in a file name is an ordinary file name.
    let ok = with("form-data; name=\"file\"; filename=\"a;b.wav\"");
    assert_eq!(scan(&ok, 7).unwrap().model, "allowed");
}

/// A frame of many tiny parts is scanned in one pass (consumed bytes are dropped once per
/// frame): the fields are found and nothing but the unfinished tail stays pending.
#[test]
fn a_frame_of_many_tiny_parts_is_scanned_whole() {
    let mut body = Vec::new();
    for _ in 0..20_000 {
        body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n");
    }
    body.extend_from_slice(&form(&[("model", b"m")]));
    let mut s = FormScanner::new(CT).unwrap();
    let (head, tail) = body.split_at(body.len() - 3);
    assert!(s.feed(head));
    assert!(s.pending.len() < 16 && s.read == 0);
    assert!(s.feed(tail));
    assert_eq!(s.finish().unwrap().model, "m");
}
