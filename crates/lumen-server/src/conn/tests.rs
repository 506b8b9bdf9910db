use super::*;

const DATE: &str = "date: Tue, 01 Jul 2025 00:00:00 GMT\r\n";

#[test]
fn hyper_bare_answers_are_recognised() {
    for (status, reason) in [
        (400, "Bad Request"),
        (414, "URI Too Long"),
        (431, "Request Header Fields Too Large"),
    ] {
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n"
        );
        assert_eq!(bare_answer(head.as_bytes()), Some(status), "{head}");
    }
}

#[test]
fn lumen_answers_are_never_taken_for_bare_ones() {
    for head in [
        // Lumen's own errors carry a type, a length and a request id.
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: a\r\ncontent-length: 9\r\n{DATE}\r\n"
        ),
        // An empty answer with a request id (`/health`, or a 400 that had no body).
        format!("HTTP/1.1 400 Bad Request\r\nx-request-id: a\r\ncontent-length: 0\r\n{DATE}\r\n"),
        // Other statuses.
        format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{DATE}\r\n"),
        format!("HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n{DATE}\r\n"),
        // A body follows the head.
        format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{DATE}\r\nx"),
        format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n{DATE}\r\n"),
        // Not a whole head.
        "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n".to_owned(),
        "HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_owned(),
        "data: HTTP/1.1 400 \r\n\r\n".to_owned(),
        String::new(),
    ] {
        assert_eq!(bare_answer(head.as_bytes()), None, "{head:?}");
    }
}

#[test]
fn the_replacement_is_a_json_error_that_closes() {
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
