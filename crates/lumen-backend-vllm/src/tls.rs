//! `https` engines: the rustls connector, whose roots are the system's (or one CA file), and
//! the resolver that lets a discovered engine be reached at its address under its name.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::VllmConfigError;

pub(crate) type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector<Resolver>>;

/// Where an https engine's host name leads. A backend found by DNS discovery is one address
/// of a name: it is reached at that address, while TLS still checks the certificate against
/// the name (and sends it as SNI), as it would for the name itself. Putting the address in
/// the URL instead made TLS expect a certificate for the IP, which engines' certificates do
/// not name.
#[derive(Clone)]
pub(crate) enum Resolver {
    /// The system's resolver, per connection.
    System(GaiResolver),
    /// This address, whatever the name.
    Fixed(SocketAddr),
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::System(gai) => gai.poll_ready(cx),
            Self::Fixed(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match self {
            Self::System(gai) => {
                let lookup = gai.call(name);
                Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
            }
            Self::Fixed(addr) => {
                let addr = *addr;
                Box::pin(async move { Ok(vec![addr].into_iter()) })
            }
        }
    }
}

/// The CAs of a PEM file, for a backend's `ca_file`: at least one, every one usable. The
/// message says what is wrong without repeating the file's content.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read the CA file: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("the CA file is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate in the CA file: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no certificate".to_owned());
    }
    Ok(roots)
}

/// https through rustls with the ring provider (named explicitly so another provider linked
/// into the same binary cannot make the choice ambiguous). With `ca_file`, only the CAs in it
/// are trusted (as `curl --cacert`): an internal CA that signs the engines' certificates.
/// Otherwise the system roots first, since self-hosted engines often sit behind an internal CA
/// the system trusts, and the bundled web PKI roots when the system has none.
pub(crate) fn connector(
    http: HttpConnector<Resolver>,
    name: &str,
    ca_file: Option<&Path>,
) -> Result<HttpsConnector, VllmConfigError> {
    let tls = |reason: String| VllmConfigError::Tls {
        name: name.to_owned(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match ca_file {
        Some(path) => {
            let roots = roots(path).map_err(tls)?;
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
        None => hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
            .or_else(|_| {
                hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider)
            })
            .map_err(|e| tls(e.to_string()))?,
    };
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}
