//! The per-request future is moved by every wrapper around it (the access scope, the span,
//! hyper's dispatcher); each move is a memcpy of its whole size. `handle_on` boxes the large
//! part once so the rest stays small.

#[test]
fn the_request_future_handed_to_hyper_stays_small() {
    let gw = crate::Gateway::builder().build().unwrap();
    let req = http::Request::new(http_body_util::Full::new(bytes::Bytes::new()));
    let handle = gw.handle(req);
    let size = std::mem::size_of_val(&handle);
    // Unboxed it was 27 KB (release) and larger in debug builds.
    assert!(size <= 4096, "handle future is {size} bytes");
}

#[test]
fn log_values_are_quoted_when_they_could_forge_fields() {
    use crate::access::Text;
    assert_eq!(Text("m1").to_string(), "m1");
    assert_eq!(Text("org/model-7b").to_string(), "org/model-7b");
    assert_eq!(Text("").to_string(), r#""""#);
    assert_eq!(Text("a b=c").to_string(), r#""a b=c""#);
    assert_eq!(
        Text("x\nINFO forged=1").to_string(),
        r#""x\nINFO forged=1""#
    );
    assert_eq!(Text("q\"uote").to_string(), r#""q\"uote""#);
}
