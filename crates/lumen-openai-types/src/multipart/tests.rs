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
