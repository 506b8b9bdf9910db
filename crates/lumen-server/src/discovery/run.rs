//! The discovery loop: resolve every discovered backend, [`decide`], probe what is new, apply.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use lumen_backend::{Health, RequestContext};
use lumen_gateway::Probe;

use super::dns::Resolver;
use super::{Changes, Problem, Source, Target, decide, discovered_name, host_and_port};
use crate::config::{Discovery, LumenConfig};
use crate::gateway::{Gateway, backend_specs};
use crate::metrics::{BackendLabel, BackendProblem};

/// Re-resolves every backend of `gateway` with `discovery` set, every `dns.interval_ms`, until
/// `shutdown`; the first round runs at once, and again at once after a reload (a backend may
/// have gained discovery). Does nothing while no backend uses discovery.
pub(crate) async fn run(gateway: &Gateway, shutdown: impl Future<Output = ()>) {
    Run { gw: gateway }.run(shutdown).await;
}

/// The loop's view of the gateway (methods here, not on `Gateway`: no file adds methods to a
/// type defined in another).
struct Run<'a> {
    gw: &'a Gateway,
}

impl Run<'_> {
    async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut resolver: Option<Resolver> = None;
        loop {
            let cfg = self.gw.inner.discovery.config();
            let mut every = Duration::from_millis(crate::config::DnsConfig::default().interval_ms);
            if let Some(cfg) = cfg {
                every = Duration::from_millis(cfg.dns.interval_ms);
                if resolver.as_ref().is_none_or(|r| r.settings() != &cfg.dns) {
                    resolver = match Resolver::new(&cfg.dns) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::warn!(error = %e, "DNS discovery: no resolver; known addresses stay");
                            None
                        }
                    };
                }
                if let Some(r) = &resolver {
                    let rounds = (0..cfg.backends.len())
                        .filter(|&i| cfg.backends[i].discovery != Discovery::None)
                        .map(|i| self.refresh(r, &cfg, i));
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = join_all(rounds) => {}
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.gw.inner.discovery.changed.notified() => {}
            }
        }
    }

    /// One round for backend `i`: resolve, decide, probe the new addresses, apply.
    async fn refresh(&self, resolver: &Resolver, cfg: &Arc<LumenConfig>, i: usize) {
        let b = &cfg.backends[i];
        let name = cfg.backend_name(i);
        let source = Source::of(cfg, i);
        let (host, port) = host_and_port(&b.url);
        let answer = resolver.lookup(b.discovery, &host, port).await;
        let old = self.gw.inner.discovery.lock().addresses(&name, &source);
        let (changes, problem) = decide(
            &old,
            answer.as_deref().map_err(|e| e.clone()),
            cfg.dns.max_addresses,
        );
        if let Some(p) = problem {
            self.count_problem(&name, p);
            match (&answer, p) {
                (Err(e), _) => tracing::warn!(
                    backend = %name, host = %host, error = %e, known = old.len(),
                    "DNS discovery: lookup failed; the known addresses stay"
                ),
                (_, Problem::Empty) => tracing::warn!(
                    backend = %name, host = %host, known = old.len(),
                    "DNS discovery: no address in the answer; the known addresses stay"
                ),
                (_, _) => tracing::warn!(
                    backend = %name, host = %host, max_addresses = cfg.dns.max_addresses,
                    answered = answer.as_ref().map_or(0, Vec::len),
                    "DNS discovery: more addresses than dns.max_addresses; the rest are left out"
                ),
            }
        }
        if changes.is_empty() {
            return;
        }
        let admitted = self.probe_new(cfg, i, &name, &changes.add).await;
        let Changes { keep, drain, .. } = changes;
        if admitted.is_empty() && drain.is_empty() {
            return;
        }
        let mut set = keep;
        set.extend(admitted.iter().copied());
        set.sort_unstable();
        match self.gw.apply_discovered(&name, source, set.clone()) {
            Ok(()) => {
                tracing::info!(
                    backend = %name,
                    added = ?admitted,
                    drained = ?drain,
                    addresses = set.len(),
                    "DNS discovery: backends changed"
                );
                self.forget_labels(&name, &drain);
                self.gw
                    .inner
                    .metrics
                    .dns_addresses
                    .get_or_create(&BackendLabel { backend: name })
                    .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
                if !admitted.is_empty() {
                    // Their models now, not at the next discovery interval: until then a new
                    // address serves nothing.
                    self.gw.inner.core.discover().await;
                }
            }
            Err(e) => {
                tracing::warn!(backend = %name, error = %e, "DNS discovery: could not apply the new addresses");
            }
        }
    }

    /// The new addresses whose probe passes, so none gets traffic before it answers. The
    /// probe is the backend's (`generate` is checked as `models` here: admission should not
    /// bill tokens; the health checker's own probes follow once it is in).
    async fn probe_new(
        &self,
        cfg: &LumenConfig,
        i: usize,
        name: &str,
        add: &[SocketAddr],
    ) -> Vec<SocketAddr> {
        let limit = Duration::from_millis(cfg.health.timeout_ms);
        let url = &cfg.backends[i].url;
        let probes = add.iter().map(|&addr| async move {
            let target = Target::discovered(i, name, url, addr);
            let specs = match backend_specs(cfg, std::slice::from_ref(&target)) {
                Ok(s) => s,
                Err(e) => return (addr, Err(e.to_string())),
            };
            let Some((spec, probe)) = specs.into_iter().next() else {
                return (addr, Err("no backend".to_owned()));
            };
            let backend = spec.backend;
            let run = async {
                match probe {
                    Probe::Health => match backend.health().await {
                        Health::Healthy => Ok(()),
                        Health::Unhealthy { reason } => Err(reason),
                    },
                    Probe::Models | Probe::Generate => {
                        let cx = RequestContext::new(format!("dns-probe-{addr}"));
                        backend
                            .models(&cx)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                }
            };
            let result = tokio::time::timeout(limit, run)
                .await
                .unwrap_or_else(|_| Err(format!("probe timed out after {} ms", limit.as_millis())));
            (addr, result)
        });
        let mut admitted = Vec::new();
        for (addr, result) in join_all(probes).await {
            match result {
                Ok(()) => admitted.push(addr),
                Err(e) => {
                    self.count_problem(name, Problem::ProbeFailed);
                    tracing::info!(
                        backend = %name, address = %addr, error = %e,
                        "DNS discovery: new address not admitted yet, its probe failed"
                    );
                }
            }
        }
        admitted
    }

    fn count_problem(&self, backend: &str, p: Problem) {
        self.gw
            .inner
            .metrics
            .dns_problems
            .get_or_create(&BackendProblem {
                backend: backend.to_owned(),
                problem: p.label(),
            })
            .inc();
    }

    /// Drops the per-backend gauges of drained addresses, so pod churn does not grow
    /// `/metrics` without bound (their counters stay, as Prometheus expects).
    fn forget_labels(&self, name: &str, drained: &[SocketAddr]) {
        let m = &self.gw.inner.metrics;
        for &addr in drained {
            let label = BackendLabel {
                backend: discovered_name(name, addr),
            };
            m.in_flight.remove(&label);
            m.breaker.remove(&label);
            m.healthy.remove(&label);
        }
    }
}
