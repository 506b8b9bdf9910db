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
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(lumen.addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out).await;
    assert!(!String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
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
