//! TLS on Lumen's listener: PEM certificate chain and private key, read at start and on every
//! reload, served with rustls (ring). Off unless `server.tls` is set.
//!
//! Two things rustls does not do the way an operator needs:
//! - **Plain HTTP on the TLS port** gets a TLS alert, which `curl http://...` shows as an empty
//!   reply and an SDK as a protocol error. When the first bytes are plainly HTTP (a method token
//!   and a space), Lumen answers `400` in its JSON instead, saying to use `https://`.
//! - **A certificate rustls cannot use** is reported in a client's words ("invalid peer
//!   certificate: BadEncoding"). Lumen names the file and says what is wrong with it.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{CertificateError, InconsistentKeys};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{ConfigError, TlsConfig};

const CERT_KEY: &str = "server.tls.cert_file";
const KEY_KEY: &str = "server.tls.key_file";

/// Builds the acceptor, naming the setting and the file at fault, and why, when a file is
/// missing or unusable.
/// `http2`: offer `h2` in ALPN before `http/1.1` (`server.http2.enabled`).
pub(crate) fn acceptor(cfg: &TlsConfig, http2: bool) -> Result<TlsAcceptor, ConfigError> {
    let certs = read_certs(&cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        ConfigError::invalid(
            KEY_KEY,
            format!(
                "{}: {}",
                cfg.key_file.display(),
                pem_reason(&e, "private key")
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("server.tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| unusable(&e, cfg))?;
    let mut server = server;
    // The plain listener's protocols, HTTP/2 preferred: a client that offers both (curl, Envoy,
    // gRPC-style stacks) gets multiplexing; one that offers only `http/1.1` gets that.
    server.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let invalid = |e: &pem::Error| {
        ConfigError::invalid(
            CERT_KEY,
            format!("{}: {}", path.display(), pem_reason(e, "certificate")),
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    if certs.is_empty() {
        return Err(invalid(&pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// Why a PEM file gave nothing usable, in words. Never quotes the file's content (a key file's
/// content is the key).
fn pem_reason(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("no PEM {what} found in the file"),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::Base64Decode(_) => format!("the PEM {what} is not valid base64"),
        pem::Error::MissingSectionEnd { .. } => format!("the PEM {what} has no END line"),
        other => format!("not a valid PEM file ({})", pem_kind(other)),
    }
}

fn pem_kind(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        pem::Error::SectionTooLarge => "a section over 256 MB",
        _ => "unreadable",
    }
}

/// What rustls refused in the certificate and key pair, as the setting and file at fault.
fn unusable(e: &rustls::Error, cfg: &TlsConfig) -> ConfigError {
    let cert = cfg.cert_file.display();
    let key = cfg.key_file.display();
    match e {
        rustls::Error::InvalidCertificate(CertificateError::BadEncoding) => ConfigError::invalid(
            CERT_KEY,
            format!(
                "{cert}: the first certificate is not a valid X.509 certificate (its DER \
                 encoding does not parse)"
            ),
        ),
        rustls::Error::InvalidCertificate(why) => ConfigError::invalid(
            CERT_KEY,
            format!("{cert}: the first certificate cannot be served ({why:?})"),
        ),
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => ConfigError::invalid(
            KEY_KEY,
            format!("{key}: this private key does not belong to the certificate in {cert}"),
        ),
        rustls::Error::General(why) => {
            ConfigError::invalid(KEY_KEY, format!("{key}: not a usable private key ({why})"))
        }
        other => ConfigError::invalid("server.tls", format!("{cert} and {key}: {other}")),
    }
}

/// Why a connection to the TLS port did not become a TLS stream (logged at debug level).
#[derive(Debug)]
pub(crate) enum Refused {
    /// Plain HTTP: answered 400 and closed.
    PlainHttp,
    Handshake(io::Error),
    TimedOut,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlainHttp => f.write_str("plain HTTP on the TLS port; answered 400"),
            Self::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            Self::TimedOut => f.write_str("TLS handshake not complete within the deadline"),
        }
    }
}

/// The TLS stream of a new connection, under `deadline` (like a request head, so a client that
/// never finishes the handshake cannot hold its connection). A client that speaks plain HTTP
/// is answered 400 in Lumen's JSON and closed.
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> Result<TlsStream<TcpStream>, Refused> {
    let until = Instant::now() + deadline;
    // A peek takes what has arrived: a client writes its request line (or its ClientHello) in
    // one go, so the first segment is enough to tell.
    let mut first = [0u8; 32];
    let seen = match timeout_at(until, stream.peek(&mut first)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(Refused::Handshake(e)),
        Err(_) => return Err(Refused::TimedOut),
    };
    if opening(&first[..seen]) == Opening::PlainHttp {
        refuse_plain_http(stream).await;
        return Err(Refused::PlainHttp);
    }
    match timeout_at(until, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Refused::Handshake(e)),
        Err(_) => Err(Refused::TimedOut),
    }
}

/// What a client's first bytes on the TLS port are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A method token (at most 20 characters), a space, and a request target or nothing yet.
    PlainHttp,
    /// A TLS record (first byte 0x16, never a token character), or anything else: rustls
    /// answers it as before.
    Other,
}

/// The longest method recognised; every registered one is shorter.
const MAX_METHOD: usize = 20;

pub(crate) fn opening(bytes: &[u8]) -> Opening {
    let Some(space) = bytes.iter().position(|b| *b == b' ') else {
        return Opening::Other;
    };
    let method = &bytes[..space];
    let token =
        !method.is_empty() && method.len() <= MAX_METHOD && method.iter().all(|b| tchar(*b));
    // origin-form `/`, asterisk-form `*`, absolute-form `http://`, authority-form `host:port`.
    let target = bytes
        .get(space + 1)
        .is_none_or(|b| matches!(b, b'/' | b'*') || b.is_ascii_alphanumeric());
    if token && target {
        Opening::PlainHttp
    } else {
        Opening::Other
    }
}

/// RFC 9110 token characters.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How long a refused plain-HTTP client gets to read the answer and close.
const LINGER: Duration = Duration::from_secs(2);
/// Most of a refused request read (and discarded) while it lingers.
const MAX_DRAIN: usize = 64 * 1024;

/// Writes the 400 answer, then reads (and discards) what the client sent until it closes: a
/// socket closed with unread bytes sends a reset, which can destroy the answer before the
/// client reads it. Bounded in time and bytes.
async fn refuse_plain_http(mut stream: TcpStream) {
    let answer = crate::error::plain_http_on_tls_port();
    let linger = async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_DRAIN {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
}

#[cfg(test)]
mod tests;
