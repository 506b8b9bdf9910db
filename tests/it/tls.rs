//! TLS on the API listener, with a certificate the test generates and a client that trusts it.

use std::sync::Arc;

use lumen_server::config::TlsConfig;
use lumen_tests::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost`, written as PEM files; returns the files and the
/// certificate for the client's trust store.
fn certificate(dir: &std::path::Path) -> (TlsConfig, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = generated.cert.pem();
    let key_pem = generated.signing_key.serialize_pem();
    std::fs::create_dir_all(dir).unwrap();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, key_pem).unwrap();
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    (
        TlsConfig {
            cert_file,
            key_file,
        },
        der,
    )
}

async fn https(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
    request: &str,
) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_api_listener_serves_tls_with_the_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("lumen-tls-{}", std::process::id()));
    let (tls, trust) = certificate(&dir);
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&url]).tls(Some(tls)).build().unwrap()).await;
    let health = https(
        lumen.addr,
        &trust,
        "GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let chat = https(
        lumen.addr,
        &trust,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(chat.starts_with("HTTP/1.1 200"), "{chat}");
    assert!(chat.contains("\"model\":\"m\""), "{chat}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Everything a client gets back on a new plain TCP connection after sending `bytes`.
async fn plain(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

/// Plain HTTP on the TLS port got a bare TLS alert (`curl` prints "Empty reply from server");
/// now a 400 in Lumen's JSON says to use https. Bytes that are not plainly HTTP still get
/// rustls's alert, and the port keeps serving TLS.
#[tokio::test]
async fn plain_http_on_the_tls_port_is_answered_400_in_json() {
    let dir = std::env::temp_dir().join(format!("lumen-tls-plain-{}", std::process::id()));
    let (tls, trust) = certificate(&dir);
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&url]).tls(Some(tls)).build().unwrap()).await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for request in [
        "GET /health HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    ] {
        let out = plain(lumen.addr, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&out);
        let (head, json) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-request-id: "), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["code"], "https_required", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("https://"),
            "{v}"
        );
    }
    // Not HTTP: no HTTP answer (a TLS alert, then the connection closes).
    let out = plain(lumen.addr, b"\x00\x01\x02 hello\r\n").await;
    assert!(!out.starts_with(b"HTTP/"), "{out:?}");
    let health = https(
        lumen.addr,
        &trust,
        "GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_certificate_names_the_setting() {
    let err = builder(&["http://127.0.0.1:1"])
        .tls(Some(TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
        }))
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("server.tls.cert_file"), "{err}");
}

/// A reload reads the PEM files again: a rotated certificate is served without a restart.
#[tokio::test]
async fn a_reload_serves_a_rotated_certificate() {
    let dir = std::env::temp_dir().join(format!("lumen-tls-rot-{}", std::process::id()));
    let (first, trust_first) = certificate(&dir.join("a"));
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&url]).tls(Some(first)).build().unwrap()).await;
    let get = "GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    assert!(
        https(lumen.addr, &trust_first, get)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let (second, trust_second) = certificate(&dir.join("b"));
    let file = dir.join("lumen.toml");
    std::fs::write(
        &file,
        format!(
            "backends = [\"{url}\"]\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            second.cert_file, second.key_file
        ),
    )
    .unwrap();
    lumen
        .gateway
        .reload_from(Some(&file), &lumen_server::Overrides::default())
        .unwrap();
    assert!(
        https(lumen.addr, &trust_second, get)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        try_https(lumen.addr, &trust_first).await.is_err(),
        "the old certificate is no longer served"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The handshake alone, reporting a certificate the client does not trust as an error.
async fn try_https(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
) -> std::io::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map(|_| ())
}

/// A reload with a certificate rustls cannot serve was reported as "invalid peer certificate:
/// BadEncoding" (rustls's words for a client checking a server). The error now names the
/// setting and the file and says what is wrong; the running certificate stays.
#[tokio::test]
async fn a_bad_certificate_on_reload_names_the_file_and_why() {
    let dir = std::env::temp_dir().join(format!("lumen-tls-bad-{}", std::process::id()));
    let (good, trust) = certificate(&dir.join("good"));
    let (other, _) = certificate(&dir.join("other"));
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&url]).tls(Some(good.clone())).build().unwrap()).await;
    // A well-formed PEM block whose content is not a certificate.
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQoLDA0ODw==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let reload = |cert: &std::path::Path, key: &std::path::Path| {
        let file = dir.join("lumen.toml");
        std::fs::write(
            &file,
            format!(
                "backends = [\"{url}\"]\n[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n"
            ),
        )
        .unwrap();
        lumen
            .gateway
            .reload_from(Some(&file), &lumen_server::Overrides::default())
            .expect_err("the reload is refused")
            .to_string()
    };
    let cases = [
        (
            reload(&garbage, &good.key_file),
            "server.tls.cert_file",
            garbage.display().to_string(),
            "not a valid X.509 certificate",
        ),
        (
            reload(&good.cert_file, &other.key_file),
            "server.tls.key_file",
            other.key_file.display().to_string(),
            "does not belong to the certificate",
        ),
        (
            reload(&good.cert_file, &good.cert_file),
            "server.tls.key_file",
            good.cert_file.display().to_string(),
            "no PEM private key found",
        ),
        (
            reload(&good.key_file, &good.key_file),
            "server.tls.cert_file",
            good.key_file.display().to_string(),
            "no PEM certificate found",
        ),
    ];
    for (err, key, file, why) in &cases {
        assert!(err.contains(key), "{err}");
        assert!(err.contains(file.as_str()), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!err.contains("peer"), "{err}");
        assert!(
            !err.contains("PRIVATE KEY"),
            "never the key's content: {err}"
        );
    }
    let health = https(
        lumen.addr,
        &trust,
        "GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "the old certificate is still served"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS connection offering `alpn`; returns it with the protocol the server chose.
async fn tls_with_alpn(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Option<Vec<u8>>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (tls, chosen)
}

/// Issue 24: ALPN offers `h2` before `http/1.1`; a client that takes it is served HTTP/2 (a
/// chat and a stream), one that offers only HTTP/1.1 gets that, and with `server.http2` off
/// only `http/1.1` is offered.
#[tokio::test]
async fn alpn_h2_is_served_over_tls() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let dir = std::env::temp_dir().join(format!("lumen-tls-h2-{}", std::process::id()));
    let (tls, trust) = certificate(&dir);
    let (url, _sim) = sim(&["m"]).await;
    let lumen = Lumen::start(builder(&[&url]).tls(Some(tls.clone())).build().unwrap()).await;

    let (stream, chosen) = tls_with_alpn(lumen.addr, &trust, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    let (mut send, _conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(_conn);
    for stream in [false, true] {
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":4,"stream":{stream}}}"#
        );
        let req = http::Request::post(format!(
            "https://localhost:{}/v1/chat/completions",
            lumen.addr.port()
        ))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert!(text.contains("chat.completion"), "{text}");
        }
    }

    let (_, chosen) = tls_with_alpn(lumen.addr, &trust, &[b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));

    let off = Lumen::start(
        builder(&[&url])
            .tls(Some(tls))
            .http2(lumen_server::config::Http2Config {
                enabled: false,
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let (_, chosen) = tls_with_alpn(off.addr, &trust, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
}
