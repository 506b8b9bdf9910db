use super::*;

#[test]
fn plain_http_is_told_apart_from_tls_and_from_noise() {
    let http = [
        &b"GET /health HTTP/1.1\r\n"[..],
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n",
        b"OPTIONS * HTTP/1.1",
        b"GET http://lumen:8443/v1/models HTTP/1.1",
        b"CONNECT lumen:8443 HTTP/1.1",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"PROPFIND ",
        b"M-SEARCH * HTTP/1.1",
    ];
    for b in http {
        assert_eq!(
            opening(b),
            Opening::PlainHttp,
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
    let other = [
        // a TLS 1.2/1.3 ClientHello record header, and an SSLv2-style one
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"\x80\x2e\x01\x03\x01",
        b"",
        b"GET",
        b"GET/ HTTP/1.1",
        b" GET / HTTP/1.1",
        b"G\x00T / HTTP/1.1",
        b"GET \x16",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"AVERYLONGMETHODNAMEOVERTWENTY / HTTP/1.1",
    ];
    for b in other {
        assert_eq!(opening(b), Opening::Other, "{b:?}");
    }
}
