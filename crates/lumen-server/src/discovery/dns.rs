//! The resolver: hickory's, on tokio, asking `dns.server` or `/etc/resolv.conf`'s
//! nameservers. Why hickory rather than `tokio::net::lookup_host`: the system resolver cannot
//! be pointed at a given server (tests, operators), does not do SRV, and tells a name with no
//! address from a failed lookup only through platform error codes.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;

use crate::config::{Discovery, DnsConfig};

/// Why a lookup gave no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupError {
    /// The name exists with no such records, or does not exist.
    #[error("no records")]
    NoRecords,
    /// The lookup itself failed (timeout, refused, server failure, bad name).
    #[error("{0}")]
    Failed(String),
}

/// A resolver built from `[dns]`; rebuilt when those settings change.
pub(crate) struct Resolver {
    inner: TokioResolver,
    settings: DnsConfig,
}

impl Resolver {
    pub(crate) fn new(settings: &DnsConfig) -> Result<Self, LookupError> {
        let mut builder = match settings.server {
            Some(addr) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                let mut b = TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    TokioConnectionProvider::default(),
                );
                // The operator named the server: ask it, not /etc/hosts.
                b.options_mut().use_hosts_file = ResolveHosts::Never;
                b
            }
            None => TokioResolver::builder_tokio().map_err(|e| {
                LookupError::Failed(format!("cannot read the system DNS configuration: {e}"))
            })?,
        };
        let opts = builder.options_mut();
        opts.timeout = Duration::from_millis(settings.timeout_ms);
        // Answers change when pods come and go: a long TTL must not hide that for longer than
        // the interval the operator chose.
        let interval = Duration::from_millis(settings.interval_ms);
        opts.positive_max_ttl = Some(interval);
        opts.negative_max_ttl = Some(interval);
        Ok(Self {
            inner: builder.build(),
            settings: settings.clone(),
        })
    }

    pub(crate) fn settings(&self) -> &DnsConfig {
        &self.settings
    }

    /// The addresses `host` names: A and AAAA records on `port` (`dns`), or every SRV
    /// target's addresses on the record's port (`srv`). Sorted, without repeats. An SRV target
    /// whose lookup fails fails the whole answer, so that a partial answer never drains the
    /// targets it could not resolve.
    pub(crate) async fn lookup(
        &self,
        mode: Discovery,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, LookupError> {
        let mut out: Vec<SocketAddr> = match mode {
            Discovery::None => return Ok(Vec::new()),
            Discovery::Dns => self
                .inner
                .lookup_ip(host)
                .await
                .map_err(classify)?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            Discovery::Srv => {
                let srv = self.inner.srv_lookup(host).await.map_err(classify)?;
                let mut out = Vec::new();
                // Bounded: more targets than addresses kept would be cut anyway.
                for record in srv.iter().take(self.settings.max_addresses) {
                    // `.` as target: "the service is not available at this domain".
                    if record.target().is_root() {
                        continue;
                    }
                    match self.inner.lookup_ip(record.target().clone()).await {
                        Ok(ips) => {
                            out.extend(ips.iter().map(|ip| SocketAddr::new(ip, record.port())))
                        }
                        Err(e) => match classify(e) {
                            LookupError::NoRecords => {}
                            failed => return Err(failed),
                        },
                    }
                }
                out
            }
        };
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// Only an answer that says "no such records" (`NOERROR` without them, or `NXDOMAIN`) is
/// empty: hickory reports a `SERVFAIL` or `REFUSED` as "no records found" too, and those are
/// failures of the resolver, not news about the engines.
fn classify(e: hickory_resolver::ResolveError) -> LookupError {
    use hickory_resolver::proto::ProtoErrorKind;
    use hickory_resolver::proto::op::ResponseCode;
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. })
            if matches!(
                *response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            ) =>
        {
            LookupError::NoRecords
        }
        _ => LookupError::Failed(e.to_string()),
    }
}
