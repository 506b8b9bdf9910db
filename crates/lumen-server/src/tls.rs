//! TLS on Lumen's listener: PEM certificate chain and private key, read at start and on every
//! reload, served with rustls (ring). Off unless `server.tls` is set.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, TlsConfig};

/// Builds the acceptor, naming the setting at fault when a file is missing or unusable.
pub(crate) fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, ConfigError> {
    let certs = read_certs(&cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        ConfigError::invalid(
            "server.tls.key_file",
            format!("{}: {e}", cfg.key_file.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("server.tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::invalid("server.tls", e.to_string()))?;
    let mut server = server;
    // HTTP/1.1 only, like the plain listener.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let invalid = |reason: String| ConfigError::invalid("server.tls.cert_file", reason);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}
