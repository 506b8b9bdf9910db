//! DNS discovery of engines: a backend whose URL names a set of engines (a Kubernetes
//! headless Service, or SRV records) becomes one backend per address, re-resolved on
//! `dns.interval_ms`.
//!
//! Why at the edge: resolving names is IO with a resolver crate (hickory), and the core crates
//! stay embeddable without it. Discovery feeds the core through what a config reload already
//! uses (`lumen_gateway::Gateway::reload` with the expanded backend list), so the core's
//! guarantees hold unchanged: an address that stays keeps its slot (pool, in-flight count,
//! breaker), one that leaves is out of the next table at once while the requests and streams
//! that started on it finish on what they hold, and a new one gets a fresh slot.
//!
//! Decisions are values: [`decide`] turns the known set and a DNS answer into [`Changes`]
//! without IO, and is tested alone. The loop (`run`) only resolves (`dns`), probes the new
//! addresses (a new address gets traffic only after its probe passes), and applies.
//!
//! # Layout
//! - here: the book of known addresses ([`Book`]), the decision ([`decide`]), and how a
//!   configured backend expands into backends ([`Book::targets`]).
//! - `dns`: the resolver (hickory) and its lookups.
//! - `run`: the background loop that `serve` runs beside the health checker.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lumen_governance::GovernanceConfig;

use crate::config::{Discovery, LumenConfig};

mod dns;
pub(crate) mod run;

pub(crate) use dns::LookupError;

/// One backend as the core will see it: a configured backend, or one address of a discovered
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Index in `backends`.
    pub(crate) index: usize,
    /// The configured name, or `<name>@<ip>:<port>` for a discovered address.
    pub(crate) name: String,
    /// The URL to send to: the configured one, or for a discovered address its host and port
    /// replaced by the address (`https`: only its port; see `connect_to`).
    pub(crate) url: String,
    /// A discovered `https` engine's address: reached there, while its URL keeps the host name
    /// for TLS to check the certificate against and send as SNI.
    pub(crate) connect_to: Option<SocketAddr>,
}

impl Target {
    /// Address `addr` of discovered backend `index`, named `name` and configured with `url`.
    /// An `https` engine's certificate names its host, not its address: putting the address
    /// in the URL would make every handshake fail.
    pub(crate) fn discovered(index: usize, name: &str, url: &str, addr: SocketAddr) -> Self {
        let (url, connect_to) = if crate::config::is_https(url) {
            (with_port(url, addr.port()), Some(addr))
        } else {
            (with_address(url, addr), None)
        };
        Self {
            index,
            name: discovered_name(name, addr),
            url,
            connect_to,
        }
    }
}

/// What a discovered set was resolved from: a set is dropped when its backend's URL or mode
/// changes on reload, since it answers another question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) url: String,
    pub(crate) discovery: Discovery,
}

impl Source {
    fn of(cfg: &LumenConfig, i: usize) -> Self {
        Self {
            url: cfg.backends[i].url.clone(),
            discovery: cfg.backends[i].discovery,
        }
    }
}

/// Addresses known per discovered backend, and the configuration they expand. Its lock is
/// held while the core's backends are swapped, so a config reload and a discovery change
/// never interleave (each would otherwise undo the other).
#[derive(Default)]
pub(crate) struct Book {
    state: Mutex<State>,
    /// Wakes the loop when a reload may have added a backend to resolve.
    pub(crate) changed: tokio::sync::Notify,
}

#[derive(Default)]
pub(crate) struct State {
    /// The configuration in force (`None` for a gateway built without one: no discovery).
    cfg: Option<Arc<LumenConfig>>,
    /// By backend name.
    sets: HashMap<String, (Source, Vec<SocketAddr>)>,
}

impl Book {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configuration in force, if any backend of it is discovered.
    pub(crate) fn config(&self) -> Option<Arc<LumenConfig>> {
        self.lock()
            .cfg
            .clone()
            .filter(|c| c.backends.iter().any(|b| b.discovery != Discovery::None))
    }
}

impl State {
    /// Every backend `cfg` expands to with the addresses known now, in configuration order
    /// (addresses sorted).
    pub(crate) fn targets(&self, cfg: &LumenConfig) -> Vec<Target> {
        let mut out = Vec::with_capacity(cfg.backends.len());
        for (i, b) in cfg.backends.iter().enumerate() {
            let name = cfg.backend_name(i);
            if b.discovery == Discovery::None {
                out.push(Target {
                    index: i,
                    name,
                    url: b.url.clone(),
                    connect_to: None,
                });
                continue;
            }
            for addr in self.addresses(&name, &Source::of(cfg, i)) {
                out.push(Target::discovered(i, &name, &b.url, addr));
            }
        }
        out
    }

    /// The known addresses of backend `name`, if they were resolved from `source`.
    pub(crate) fn addresses(&self, name: &str, source: &Source) -> Vec<SocketAddr> {
        match self.sets.get(name) {
            Some((s, addrs)) if s == source => addrs.clone(),
            _ => Vec::new(),
        }
    }

    /// Records `cfg` as the one in force, and forgets the sets of backends it no longer has
    /// (or resolves from another URL or mode).
    pub(crate) fn remember(&mut self, cfg: &LumenConfig) {
        let live: HashMap<String, Source> = (0..cfg.backends.len())
            .filter(|&i| cfg.backends[i].discovery != Discovery::None)
            .map(|i| (cfg.backend_name(i), Source::of(cfg, i)))
            .collect();
        self.sets
            .retain(|name, (source, _)| live.get(name) == Some(source));
        self.cfg = Some(Arc::new(cfg.clone()));
    }

    /// Replaces one backend's set; returns the previous one, to put back if applying fails.
    pub(crate) fn set(
        &mut self,
        name: &str,
        source: Source,
        addrs: Vec<SocketAddr>,
    ) -> Option<(Source, Vec<SocketAddr>)> {
        self.sets.insert(name.to_owned(), (source, addrs))
    }

    pub(crate) fn restore(&mut self, name: &str, previous: Option<(Source, Vec<SocketAddr>)>) {
        match previous {
            Some(p) => self.sets.insert(name.to_owned(), p),
            None => self.sets.remove(name),
        };
    }

    pub(crate) fn cfg(&self) -> Option<Arc<LumenConfig>> {
        self.cfg.clone()
    }
}

/// `<name>@<ip>:<port>` (`[v6]` bracketed): bounded by `dns.max_addresses` per backend.
pub(crate) fn discovered_name(name: &str, addr: SocketAddr) -> String {
    format!("{name}@{addr}")
}

/// `url` with its host and port replaced by `addr`: scheme, userinfo, path and query stay.
pub(crate) fn with_address(url: &str, addr: SocketAddr) -> String {
    with_authority(url, |_| addr.to_string())
}

/// `url` with its port set to `port`: scheme, userinfo, host, path and query stay. (Discovery
/// URLs name a host, never an address, so a ':' in the host part starts the port.)
pub(crate) fn with_port(url: &str, port: u16) -> String {
    with_authority(url, |host_port| {
        let host = host_port.split_once(':').map_or(host_port, |(h, _)| h);
        format!("{host}:{port}")
    })
}

/// `url` with the host and port of its authority (after any userinfo) replaced by what
/// `replace` makes of them; scheme, userinfo, path and query stay.
fn with_authority(url: &str, replace: impl FnOnce(&str) -> String) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut out = String::with_capacity(url.len() + 16);
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    if let Some(u) = userinfo {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(&replace(host_port));
    out.push_str(tail);
    out
}

/// The host and port to resolve for a backend URL: the port given, else the scheme's.
pub(crate) fn host_and_port(url: &str) -> (String, u16) {
    // Discovery URLs name a host, never an address (validated), so a ':' starts the port.
    let authority = crate::config::host_port(url);
    let default = if crate::config::is_https(url) {
        443
    } else {
        80
    };
    match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(default)),
        None => (authority.to_owned(), default),
    }
}

/// The governance settings with a discovered backend's name in `routing.passthrough.backends`
/// replaced by the names of its addresses. When none remains of a non-empty list, passthrough
/// is off until an address is known (an empty list would mean "every backend").
pub(crate) fn governance(cfg: &LumenConfig, targets: &[Target]) -> GovernanceConfig {
    let mut g = cfg.routing.clone();
    if g.passthrough.backends.is_empty() {
        return g;
    }
    let mut names = Vec::new();
    for listed in &g.passthrough.backends {
        let discovered = (0..cfg.backends.len()).find(|&i| {
            cfg.backends[i].discovery != Discovery::None && &cfg.backend_name(i) == listed
        });
        match discovered {
            Some(i) => names.extend(
                targets
                    .iter()
                    .filter(|t| t.index == i)
                    .map(|t| t.name.clone()),
            ),
            None => names.push(listed.clone()),
        }
    }
    if names.is_empty() {
        g.passthrough.enabled = false;
    }
    g.passthrough.backends = names;
    g
}

/// What one DNS round changes for a backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// New addresses: probed before they join.
    pub(crate) add: Vec<SocketAddr>,
    /// Known and still answered.
    pub(crate) keep: Vec<SocketAddr>,
    /// Known and no longer answered: out of the table, their requests finish.
    pub(crate) drain: Vec<SocketAddr>,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.add.is_empty() && self.drain.is_empty()
    }
}

/// Why an answer was not taken as it came: each is logged and counted
/// (`lumen_dns_problems_total{backend,problem}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The lookup failed (timeout, server failure): the known set stays.
    Failed,
    /// The name has no address now: the known set stays, since an empty answer during a
    /// rollout or a resolver hiccup must not drop the whole pool.
    Empty,
    /// More addresses than `dns.max_addresses`: the rest were left out.
    Capped,
    /// A new address failed its admission probe: asked again next round.
    ProbeFailed,
}

impl Problem {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Empty => "empty",
            Self::Capped => "capped",
            Self::ProbeFailed => "probe_failed",
        }
    }
}

/// The changes an answer makes to the known set `old`. A failed or empty answer changes
/// nothing. Addresses kept count first against `cap`, then new ones in address order, so a
/// capped set is stable from round to round.
pub(crate) fn decide(
    old: &[SocketAddr],
    answer: Result<&[SocketAddr], LookupError>,
    cap: usize,
) -> (Changes, Option<Problem>) {
    let answer = match answer {
        Err(LookupError::NoRecords) => return (unchanged(old), Some(Problem::Empty)),
        Err(LookupError::Failed(_)) => return (unchanged(old), Some(Problem::Failed)),
        Ok([]) => return (unchanged(old), Some(Problem::Empty)),
        Ok(a) => a,
    };
    let new: BTreeSet<SocketAddr> = answer.iter().copied().collect();
    let old_set: BTreeSet<SocketAddr> = old.iter().copied().collect();
    let mut keep: Vec<SocketAddr> = old_set.intersection(&new).copied().collect();
    let mut add: Vec<SocketAddr> = new.difference(&old_set).copied().collect();
    let mut drain: Vec<SocketAddr> = old_set.difference(&new).copied().collect();
    let capped = keep.len() + add.len() > cap;
    // Only when the cap was lowered by a reload: kept addresses past it leave too.
    let over = keep.split_off(cap.min(keep.len()));
    if !over.is_empty() {
        drain.extend(over);
        drain.sort_unstable();
    }
    add.truncate(cap - keep.len());
    (
        Changes { add, keep, drain },
        capped.then_some(Problem::Capped),
    )
}

fn unchanged(old: &[SocketAddr]) -> Changes {
    let mut keep = old.to_vec();
    keep.sort_unstable();
    keep.dedup();
    Changes {
        keep,
        ..Changes::default()
    }
}

#[cfg(test)]
mod tests;
