//! The server's gateway: Lumen's routing core (`lumen_gateway::Gateway`) plus what the HTTP
//! server adds around it: shared state (keys, limits, cache, on Redis or in memory), the
//! Prometheus registry, request-body settings and the shutdown signal for open streams.
//!
//! An embedder who wants HTTP uses this type with `serve`; one who wants only routing and
//! retries depends on `lumen-gateway` directly.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lumen_backend::{Backend, SharedBackend};
use lumen_governance::{BackendSpec, GovernanceConfig};
use lumen_resilience::{BreakerState, Timeouts};

pub use lumen_gateway::{GatewayError, GatewayStream, Upstream};

use crate::config::{
    AdmissionConfig, AuthConfig, BreakerSettings, CacheConfig, ConfigError, HealthConfig,
    LimitsConfig, LumenConfig, Probe, Profile, RedisConfig, RetryConfig, TimeoutsConfig,
};
use crate::discovery::{Book, Source, Target};
use crate::metrics::{BackendLabel, BackendModel, Metrics, ResultLabel};
use crate::observe::ServerObserver;
use crate::shared::Stores;

/// How long shutdown waits for the settlements and usage records still queued for Redis.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// Server settings that a reload may change; read once per request.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) max_body_bytes: usize,
    /// `/tokenize` and `/detokenize` bodies (at most `max_body_bytes`).
    pub(crate) max_tokenizer_body_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) body_budget_wait: Duration,
    pub(crate) conn: crate::conn::Deadlines,
    pub(crate) max_n: u32,
    pub(crate) shutdown_grace: Duration,
    /// The API listener's TLS, when `server.tls` is set; rebuilt on reload.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// SHA-256 of the admin key (`auth.admin_key_sha256`); `None`: no admin API.
    pub(crate) admin_digest: Option<[u8; 32]>,
    /// `/ready` fails while Redis is unreachable (`redis.required` with a URL).
    pub(crate) redis_required: bool,
    /// Prices per model for the usage history's `cost` (`accounting.prices`).
    pub(crate) prices: Arc<lumen_governance::accounting::PriceTable>,
    /// `server.extra_json_paths`, interned ([`intern`]).
    pub(crate) extra_paths: Arc<[&'static str]>,
}

impl Settings {
    /// The configured extra JSON path `path` is, if it is one.
    pub(crate) fn extra_path(&self, path: &str) -> Option<&'static str> {
        self.extra_paths.iter().copied().find(|p| *p == path)
    }

    /// How a request body may be read now.
    pub(crate) fn body_limits(&self) -> crate::body::BodyLimits {
        crate::body::BodyLimits {
            max_bytes: self.max_body_bytes,
            read_timeout: self.body_read_timeout,
            budget_wait: self.body_budget_wait,
        }
    }
}

/// A configured path as the `&'static str` the engine call takes. Each distinct path is leaked
/// once and then reused, so reloads cost nothing more: what leaks is bounded by the distinct
/// paths ever configured (configuration only, never a client's string).
pub(crate) fn intern(paths: &[String]) -> Arc<[&'static str]> {
    static INTERNED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut known = INTERNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    paths
        .iter()
        .map(|p| match known.iter().find(|k| **k == p.as_str()) {
            Some(k) => *k,
            None => {
                let leaked: &'static str = Box::leak(p.clone().into_boxed_str());
                known.push(leaked);
                leaked
            }
        })
        .collect()
}

/// Lumen as an HTTP server sees it. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) core: lumen_gateway::Gateway,
    pub(crate) settings: ArcSwap<Settings>,
    pub(crate) metrics: Arc<Metrics>,
    /// Redis, when shared state lives there (`/health/redis`, `/ready`).
    pub(crate) redis: Option<Arc<lumen_redis::RedisState>>,
    /// The in-memory cache, for its size in `/metrics` (`None` on Redis).
    pub(crate) memory_cache: Option<Arc<lumen_governance::cache::MemoryCache>>,
    /// Request body bytes in flight (`server.body_budget_bytes`).
    pub(crate) body_budget: Arc<crate::body::BodyBudget>,
    /// Set when the shutdown grace has run out: open SSE bodies end with an error event.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// OTLP trace export, when configured.
    pub(crate) tracer: Option<Arc<crate::otel::Tracer>>,
    /// Addresses of backends discovered by DNS, and the configuration they expand.
    pub(crate) discovery: Book,
}

/// Builds a [`Gateway`] from parts, for embedders that do not use [`LumenConfig`].
pub struct GatewayBuilder {
    core: lumen_gateway::GatewayBuilder,
    max_body_bytes: usize,
    max_tokenizer_body_bytes: usize,
    extra_json_paths: Vec<String>,
    body_read_timeout: Duration,
    body_budget_bytes: u64,
    body_budget_wait: Duration,
    conn: crate::conn::Deadlines,
    max_n: u32,
    shutdown_grace: Duration,
    tls: Option<crate::config::TlsConfig>,
    auth: AuthConfig,
    limits: LimitsConfig,
    cache: CacheConfig,
    redis: RedisConfig,
    accounting: crate::config::AccountingConfig,
    otel: crate::config::OtelConfig,
    /// Engine URLs by backend name, for trace spans' `server.address`.
    urls: Vec<(String, String)>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        let cfg = LumenConfig::default();
        Self {
            core: lumen_gateway::Gateway::builder()
                .profile(cfg.profile)
                .timeouts_config(cfg.timeouts)
                .retry(cfg.retry)
                .breaker(cfg.breaker)
                .admission(cfg.admission)
                .health(cfg.health)
                .discovery_interval(Duration::from_millis(cfg.routing.discovery_interval_ms)),
            max_body_bytes: cfg.server.max_body_bytes,
            max_tokenizer_body_bytes: cfg.server.max_tokenizer_body_bytes,
            extra_json_paths: Vec::new(),
            body_read_timeout: Duration::from_millis(cfg.server.body_read_timeout_ms),
            body_budget_bytes: cfg.server.body_budget_bytes,
            body_budget_wait: Duration::from_millis(cfg.server.body_budget_wait_ms),
            conn: crate::conn::Deadlines::from_config(&cfg.server),
            max_n: cfg.server.max_n,
            shutdown_grace: Duration::from_millis(cfg.server.shutdown_grace_ms),
            tls: None,
            auth: cfg.auth,
            limits: cfg.limits,
            cache: cfg.cache,
            redis: cfg.redis,
            accounting: cfg.accounting,
            otel: cfg.otel,
            urls: Vec::new(),
        }
    }
}

impl GatewayBuilder {
    /// Adds a backend with weight 1. `models: None` means "discover them from the engine".
    pub fn backend(
        mut self,
        name: impl Into<String>,
        backend: impl Backend,
        models: Option<Vec<String>>,
    ) -> Self {
        self.core = self.core.backend(name, backend, models);
        self
    }

    pub fn shared_backend(
        mut self,
        name: impl Into<String>,
        backend: SharedBackend,
        weight: u32,
        models: Option<Vec<String>>,
    ) -> Self {
        self.core = self.core.shared_backend(name, backend, weight, models);
        self
    }

    /// API keys (off by default).
    pub fn auth(mut self, a: AuthConfig) -> Self {
        self.auth = a;
        self
    }

    pub fn limits(mut self, l: LimitsConfig) -> Self {
        self.limits = l;
        self
    }

    /// The exact-match response cache (off by default).
    pub fn cache(mut self, c: CacheConfig) -> Self {
        self.cache = c;
        self
    }

    /// Shared state on Redis; without a URL everything stays in memory. Needs a Tokio runtime
    /// at [`build`](Self::build) time.
    /// Usage accounting: retention, in-memory bound, prices (`[accounting]`).
    pub fn accounting(mut self, a: crate::config::AccountingConfig) -> Self {
        self.accounting = a;
        self
    }

    pub fn redis(mut self, r: RedisConfig) -> Self {
        self.redis = r;
        self
    }

    /// Background health checking: interval, thresholds, startup grace, required models.
    pub fn health(mut self, h: HealthConfig) -> Self {
        self.core = self.core.health(h);
        self
    }

    /// Model governance: allowlist, default, aliases, `auto`, passthrough, balancing.
    pub fn governance(mut self, cfg: GovernanceConfig) -> Self {
        self.core = self.core.governance(cfg);
        self
    }

    pub fn default_model(mut self, model: Option<String>) -> Self {
        self.core = self.core.default_model(model);
        self
    }

    /// The tuning preset every unset resilience setting comes from.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.core = self.core.profile(profile);
        self
    }

    /// Deadlines for chat, completions and embeddings (overriding the profile; `None`
    /// disables one).
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.core = self.core.timeouts(t);
        self
    }

    pub fn timeouts_config(mut self, t: TimeoutsConfig) -> Self {
        self.core = self.core.timeouts_config(t);
        self
    }

    pub fn retry(mut self, r: RetryConfig) -> Self {
        self.core = self.core.retry(r);
        self
    }

    pub fn breaker(mut self, b: BreakerSettings) -> Self {
        self.core = self.core.breaker(b);
        self
    }

    pub fn admission(mut self, a: AdmissionConfig) -> Self {
        self.core = self.core.admission(a);
        self
    }

    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Engine-specific JSON paths routed by `model` (`server.extra_json_paths`); checked by
    /// [`build`](Self::build).
    pub fn extra_json_paths(mut self, paths: Vec<String>) -> Self {
        self.extra_json_paths = paths;
        self
    }

    /// Cap on `/tokenize` and `/detokenize` bodies (never above [`Self::max_body_bytes`]).
    pub fn max_tokenizer_body_bytes(mut self, bytes: usize) -> Self {
        self.max_tokenizer_body_bytes = bytes;
        self
    }

    /// Request body bytes all requests may hold at once (`server.body_budget_bytes`): at least
    /// [`max_body_bytes`](Self::max_body_bytes).
    pub fn body_budget_bytes(mut self, bytes: u64) -> Self {
        self.body_budget_bytes = bytes;
        self
    }

    /// Longest wait for room in the body budget before 503 (`server.body_budget_wait_ms`).
    pub fn body_budget_wait(mut self, wait: Duration) -> Self {
        self.body_budget_wait = wait;
        self
    }

    /// Longest time to receive a request body after its headers (408 beyond it).
    pub fn body_read_timeout(mut self, limit: Duration) -> Self {
        self.body_read_timeout = limit;
        self
    }

    /// Longest time for a request head to arrive once its first byte has (then the connection
    /// is closed).
    pub fn header_read_timeout(mut self, limit: Duration) -> Self {
        self.conn.header = limit;
        self
    }

    /// Longest time a connection may wait for its next request (then it is closed).
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.conn.idle = limit;
        self
    }

    /// Longest time a write to a client may make no progress (then the connection is closed).
    pub fn write_timeout(mut self, limit: Duration) -> Self {
        self.conn.write = limit;
        self
    }

    /// HTTP/2 on the listener (`server.http2`).
    pub fn http2(mut self, http2: crate::config::Http2Config) -> Self {
        self.conn.http2 = http2;
        self
    }

    /// Largest `n` accepted (400 above it).
    pub fn max_n(mut self, n: u32) -> Self {
        self.max_n = n;
        self
    }

    pub fn discovery_interval(mut self, every: Duration) -> Self {
        self.core = self.core.discovery_interval(every);
        self
    }

    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Serve the API listener over TLS with these PEM files.
    pub fn tls(mut self, tls: Option<crate::config::TlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Trace export (`OTEL_*`; see docs/observability.md). Without the `otel` feature an
    /// endpoint here is ignored (the binary warns about it).
    pub fn otel(mut self, otel: crate::config::OtelConfig) -> Self {
        self.otel = otel;
        self
    }

    /// Where backend `name` is (its base URL), so its attempt spans carry `server.address`
    /// and `server.port`. [`Gateway::from_config`] sets it for every configured backend.
    pub fn backend_url(mut self, name: impl Into<String>, url: impl Into<String>) -> Self {
        self.urls.push((name.into(), url.into()));
        self
    }

    pub fn build(self) -> Result<Gateway, ConfigError> {
        crate::config::check_body_budget(&crate::config::ServerConfig {
            max_body_bytes: self.max_body_bytes,
            body_budget_bytes: self.body_budget_bytes,
            ..Default::default()
        })?;
        crate::config::check_extra_paths(&self.extra_json_paths)?;
        let metrics = Arc::new(Metrics::new());
        let body_budget = crate::body::BodyBudget::new(
            self.body_budget_bytes,
            metrics.body_bytes.clone(),
            metrics.rejected_for("body_budget"),
        );
        let tracer = crate::otel::Tracer::start(&self.otel, &metrics)?;
        if let Some(t) = &tracer {
            t.set_backends(self.urls);
        }
        let stores = Stores::new(&self.redis, &self.cache, &self.accounting)?;
        let observer = Arc::new(ServerObserver::new(
            metrics.clone(),
            self.accounting.key_metrics,
        ));
        if let Some(redis) = &stores.redis {
            // Settlements and usage records Redis writes without a caller waiting: their
            // failures are counted and logged as the request path's own are.
            let observer = observer.clone();
            redis.report_write_errors(Arc::new(move |op, e| {
                tracing::warn!(op, error = %e, "shared-state store error");
                lumen_gateway::Observer::event(
                    observer.as_ref(),
                    &lumen_gateway::Event::StoreFailed { op },
                );
            }));
        }
        let core = self
            .core
            .observer(observer)
            .policy(
                stores.policy,
                policy_settings(&self.auth, &self.limits, &self.cache, &self.redis)?,
            )
            .build()
            .map_err(|e| ConfigError::invalid(e.key(), e.reason()))?;
        let h2 = self.conn.http2.enabled;
        let tls = self
            .tls
            .as_ref()
            .map(|t| crate::tls::acceptor(t, h2))
            .transpose()?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                core,
                settings: ArcSwap::from_pointee(Settings {
                    max_body_bytes: self.max_body_bytes,
                    max_tokenizer_body_bytes: self.max_tokenizer_body_bytes,
                    body_read_timeout: self.body_read_timeout,
                    body_budget_wait: self.body_budget_wait,
                    conn: self.conn,
                    max_n: self.max_n,
                    shutdown_grace: self.shutdown_grace,
                    tls,
                    admin_digest: admin_digest(&self.auth),
                    redis_required: self.redis.required && self.redis.url.is_some(),
                    prices: Arc::new(self.accounting.prices.clone()),
                    extra_paths: intern(&self.extra_json_paths),
                }),
                redis: stores.redis,
                memory_cache: stores.memory_cache,
                body_budget,
                metrics,
                closing: tokio::sync::watch::Sender::new(false),
                tracer,
                discovery: Book::default(),
            }),
        })
    }
}

/// One OpenAI-compatible HTTP backend per configured engine.
/// The core's policy settings from the configuration's `[auth]`, `[limits]`, `[cache]` and
/// `redis.fail_closed`.
fn policy_settings(
    auth: &AuthConfig,
    limits: &LimitsConfig,
    cache: &CacheConfig,
    redis: &RedisConfig,
) -> Result<lumen_gateway::PolicySettings, ConfigError> {
    lumen_gateway::PolicySettings::new(auth, limits, cache, redis.fail_closed)
        .map_err(|e| ConfigError::invalid(e.key, e.reason))
}

fn admin_digest(auth: &AuthConfig) -> Option<[u8; 32]> {
    auth.admin_key_sha256
        .as_deref()
        .and_then(lumen_governance::keys::parse_hex)
}

/// Reads every backend's CA file, discovered backends' included (built only once an address is
/// known): one that cannot be used is a configuration error at start and refuses a reload.
fn check_ca_files(cfg: &LumenConfig) -> Result<(), ConfigError> {
    for (i, b) in cfg.backends.iter().enumerate() {
        if let Some(ca) = &b.ca_file {
            lumen_backend_vllm::ca_roots(ca)
                .map_err(|e| ConfigError::invalid(format!("backends[{i}].ca_file"), e))?;
        }
    }
    Ok(())
}

/// One backend per target: the configured ones, and each address of the discovered ones.
pub(crate) fn backend_specs(
    cfg: &LumenConfig,
    targets: &[Target],
) -> Result<Vec<(BackendSpec<SharedBackend>, Probe)>, ConfigError> {
    let resolved = cfg.resolved()?;
    targets
        .iter()
        .map(|t| {
            let (i, bc) = (t.index, &cfg.backends[t.index]);
            let name = t.name.clone();
            let mut vc = lumen_backend_vllm::VllmConfig::new(name.clone(), t.url.clone());
            vc.api_key = bc.api_key.as_ref().map(|s| s.expose().to_owned());
            vc.max_response_bytes = bc.max_response_bytes;
            vc.continuation = bc.effective_continuation();
            vc.dialect = bc.kind.dialect();
            vc.send_priority = bc.send_priority;
            vc.native_messages = bc.effective_native_messages();
            vc.native_responses = bc.native_responses;
            vc.pool_idle_timeout = Duration::from_millis(bc.pool_idle_timeout_ms);
            vc.connect_to = t.connect_to;
            vc.ca_file = bc.ca_file.clone();
            if let Some(connect) = resolved.connect {
                vc.connect_timeout = connect;
            }
            let backend = lumen_backend_vllm::VllmBackend::new(vc).map_err(|e| {
                let tls = matches!(e, lumen_backend_vllm::VllmConfigError::Tls { .. });
                let field = if tls && bc.ca_file.is_some() {
                    "ca_file"
                } else {
                    "url"
                };
                ConfigError::invalid(format!("backends[{i}].{field}"), e.to_string())
            })?;
            // What makes two configs "the same backend" for reload: target and credentials.
            let key = format!(
                "{}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{}|{}|{:x}",
                t.url,
                t.connect_to,
                bc.ca_file,
                bc.kind,
                bc.effective_continuation(),
                bc.effective_native_messages(),
                bc.native_responses,
                resolved.connect,
                bc.max_response_bytes,
                bc.pool_idle_timeout_ms,
                bc.api_key.as_ref().map_or(0, |k| fingerprint(k.expose()))
            );
            let spec = BackendSpec {
                name,
                backend: Arc::new(backend) as SharedBackend,
                weight: bc.weight,
                models: bc.models.clone(),
                key,
            };
            Ok((spec, bc.probe.unwrap_or(bc.kind.default_probe())))
        })
        .collect()
}

/// Each backend's name and URL.
fn backend_urls(targets: &[Target]) -> Vec<(String, String)> {
    targets
        .iter()
        .map(|t| (t.name.clone(), t.url.clone()))
        .collect()
}

/// A non-reversible fingerprint, so a key change is noticed without keeping the key twice.
fn fingerprint(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The default wiring: one OpenAI-compatible HTTP backend per configured engine.
    pub fn from_config(cfg: &LumenConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        check_ca_files(cfg)?;
        // Discovered backends have no address yet: the discovery loop's first round adds them.
        let targets = crate::discovery::State::default().targets(cfg);
        let mut b = Self::builder()
            .governance(crate::discovery::governance(cfg, &targets))
            .profile(cfg.profile)
            .timeouts_config(cfg.timeouts.clone())
            .retry(cfg.retry.clone())
            .breaker(cfg.breaker.clone())
            .admission(cfg.admission.clone())
            .max_body_bytes(cfg.server.max_body_bytes)
            .max_tokenizer_body_bytes(cfg.server.max_tokenizer_body_bytes)
            .extra_json_paths(cfg.server.extra_json_paths.clone())
            .body_budget_bytes(cfg.server.body_budget_bytes)
            .body_budget_wait(Duration::from_millis(cfg.server.body_budget_wait_ms))
            .body_read_timeout(Duration::from_millis(cfg.server.body_read_timeout_ms))
            .header_read_timeout(Duration::from_millis(cfg.server.header_read_timeout_ms))
            .idle_timeout(Duration::from_millis(cfg.server.idle_timeout_ms))
            .write_timeout(Duration::from_millis(cfg.server.write_timeout_ms))
            .max_n(cfg.server.max_n)
            .shutdown_grace(Duration::from_millis(cfg.server.shutdown_grace_ms))
            .tls(cfg.server.tls.clone())
            .health(cfg.health.clone())
            .auth(cfg.auth.clone())
            .limits(cfg.limits.clone())
            .cache(cfg.cache.clone())
            .redis(cfg.redis.clone())
            .accounting(cfg.accounting.clone())
            .otel(cfg.otel.clone());
        for (spec, probe) in backend_specs(cfg, &targets)? {
            b.core = b.core.backend_spec(spec, probe);
        }
        b.urls = backend_urls(&targets);
        let gateway = b.build()?;
        gateway.inner.discovery.lock().remember(cfg);
        Ok(gateway)
    }

    /// The routing and retry core this server wraps.
    pub fn core(&self) -> &lumen_gateway::Gateway {
        &self.inner.core
    }

    /// Hot reload: validate `cfg`, then swap routing, backends, deadlines, retry and admission
    /// settings atomically. Requests in flight finish on what they started with; unchanged
    /// backends keep their connection pools, in-flight counts, breakers and discovered models.
    /// On error nothing changes.
    pub fn reload(&self, cfg: &LumenConfig) -> Result<(), ConfigError> {
        // Held until the swap is done, so a discovery change cannot interleave with it.
        let mut book = self.inner.discovery.lock();
        let targets = book.targets(cfg);
        let result = cfg.validate().and_then(|()| {
            check_ca_files(cfg)?;
            let resolved = cfg.resolved()?;
            let shared = policy_settings(&cfg.auth, &cfg.limits, &cfg.cache, &cfg.redis)?;
            let tls = cfg
                .server
                .tls
                .as_ref()
                .map(|t| crate::tls::acceptor(t, cfg.server.http2.enabled))
                .transpose()?;
            let core = lumen_gateway::Settings {
                resolved,
                discovery_interval: Duration::from_millis(cfg.routing.discovery_interval_ms),
                discovery_timeout: self.inner.core.settings().discovery_timeout,
                health: cfg.health.clone(),
            };
            self.inner
                .core
                .reload(
                    crate::discovery::governance(cfg, &targets),
                    backend_specs(cfg, &targets)?,
                    core,
                )
                .map_err(|e| ConfigError::invalid(e.key(), e.reason()))?;
            Ok((shared, tls))
        });
        match result {
            Ok((shared, tls)) => {
                self.inner
                    .body_budget
                    .set_capacity(cfg.server.body_budget_bytes);
                self.inner.settings.store(Arc::new(Settings {
                    max_body_bytes: cfg.server.max_body_bytes,
                    max_tokenizer_body_bytes: cfg.server.max_tokenizer_body_bytes,
                    body_read_timeout: Duration::from_millis(cfg.server.body_read_timeout_ms),
                    body_budget_wait: Duration::from_millis(cfg.server.body_budget_wait_ms),
                    conn: crate::conn::Deadlines::from_config(&cfg.server),
                    max_n: cfg.server.max_n,
                    shutdown_grace: Duration::from_millis(cfg.server.shutdown_grace_ms),
                    tls,
                    admin_digest: admin_digest(&cfg.auth),
                    redis_required: cfg.redis.required && cfg.redis.url.is_some(),
                    prices: Arc::new(cfg.accounting.prices.clone()),
                    extra_paths: intern(&cfg.server.extra_json_paths),
                }));
                self.inner.core.policy().replace_settings(shared);
                if let Some(t) = &self.inner.tracer {
                    t.set_backends(backend_urls(&targets));
                }
                book.remember(cfg);
                drop(book);
                // A backend may have gained discovery or a new name to resolve: at once.
                self.inner.discovery.changed.notify_one();
                self.reload_counter("ok").inc();
                Ok(())
            }
            Err(e) => {
                self.reload_counter("rejected").inc();
                Err(e)
            }
        }
    }

    /// Swaps in a new address set for discovered backend `name` (resolved from `source`),
    /// with the configuration in force otherwise unchanged. A backend that left the
    /// configuration since the lookup began is left alone. On error nothing changes.
    pub(crate) fn apply_discovered(
        &self,
        name: &str,
        source: Source,
        addrs: Vec<std::net::SocketAddr>,
    ) -> Result<(), ConfigError> {
        let mut book = self.inner.discovery.lock();
        let Some(cfg) = book.cfg() else {
            return Ok(());
        };
        let live = (0..cfg.backends.len()).any(|i| {
            cfg.backend_name(i) == name
                && cfg.backends[i].url == source.url
                && cfg.backends[i].discovery == source.discovery
        });
        if !live {
            return Ok(());
        }
        let previous = book.set(name, source, addrs);
        let targets = book.targets(&cfg);
        let core = (*self.inner.core.settings()).clone();
        let applied = backend_specs(&cfg, &targets).and_then(|specs| {
            self.inner
                .core
                .reload(crate::discovery::governance(&cfg, &targets), specs, core)
                .map_err(|e| ConfigError::invalid(e.key(), e.reason()))
        });
        match applied {
            Ok(()) => {
                if let Some(t) = &self.inner.tracer {
                    t.set_backends(backend_urls(&targets));
                }
                Ok(())
            }
            Err(e) => {
                book.restore(name, previous);
                Err(e)
            }
        }
    }

    fn reload_counter(&self, result: &str) -> prometheus_client::metrics::counter::Counter {
        self.inner
            .metrics
            .reloads
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .clone()
    }

    /// Reads the configuration again (file, environment, flags) and [`reload`](Self::reload)s
    /// it. A file that does not parse counts as a rejected reload, like one that does not
    /// validate.
    pub fn reload_from(
        &self,
        path: Option<&std::path::Path>,
        overrides: &crate::config::Overrides,
    ) -> Result<(), ConfigError> {
        match crate::config::load(path, overrides) {
            Ok(cfg) => self.reload(&cfg),
            Err(e) => {
                self.reload_counter("rejected").inc();
                Err(e)
            }
        }
    }

    /// (successful, rejected) reloads since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reload_counter("ok").get(),
            self.reload_counter("rejected").get(),
        )
    }

    /// The Prometheus text exposition, with live gauges (in flight, breakers, queue) refreshed.
    pub fn render_metrics(&self) -> String {
        let m = &self.inner.metrics;
        let routing = self.inner.core.router().config();
        let scraped = self.inner.core.router().scrapes_signals();
        let now_ms = self.inner.core.now_ms();
        for slot in self.inner.core.router().slots() {
            let label = BackendLabel {
                backend: slot.name.clone(),
            };
            if scraped {
                m.engine
                    .set(&slot, &label, now_ms, routing.signals.stale_ms);
            }
            m.in_flight
                .get_or_create(&label)
                .set(slot.in_flight() as i64);
            let gauge = |s: BreakerState| match s {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            m.breaker
                .get_or_create(&label)
                .set(gauge(slot.backend.breaker.state()));
            // Model ids here come from configuration and discovery (passthrough names never
            // get a breaker), so the label set stays bounded.
            for (model, state) in slot.backend.models.states() {
                m.model_breaker
                    .get_or_create(&BackendModel {
                        backend: slot.name.clone(),
                        model,
                    })
                    .set(gauge(state));
            }
            let up = slot.is_available() && slot.backend.breaker.allows();
            m.healthy.get_or_create(&label).set(i64::from(up));
        }
        m.queue_depth.set(self.inner.core.queued() as i64);
        m.engine
            .index_entries
            .set(self.inner.core.router().indexed_entries() as i64);
        let cache_bytes = self
            .inner
            .memory_cache
            .as_ref()
            .map_or(0, |c| c.weighted_bytes());
        m.cache_bytes
            .set(i64::try_from(cache_bytes).unwrap_or(i64::MAX));
        m.render()
    }

    /// Writes what requests queued for Redis just before the end (settlements and usage
    /// records go in batches, off the request path), so they are not lost with the process.
    /// Waits at most [`FLUSH_AT_SHUTDOWN`]; a batch that fails is retried in the background
    /// while the runtime lives.
    pub async fn flush_shared_state(&self) {
        let Some(redis) = self.inner.redis.as_ref() else {
            return;
        };
        match tokio::time::timeout(FLUSH_AT_SHUTDOWN, redis.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not write the last settlements to Redis")
            }
            Err(_) => tracing::warn!("gave up writing the last settlements to Redis"),
        }
    }

    /// `/health/redis`: PING latency, or why Redis cannot be reached. `None` without Redis.
    pub async fn redis_health(
        &self,
    ) -> Option<Result<Duration, lumen_governance::store::StoreError>> {
        let redis = self.inner.redis.as_ref()?;
        Some(redis.ping().await)
    }

    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.inner.settings.load_full()
    }

    pub fn max_body_bytes(&self) -> usize {
        self.inner.settings.load().max_body_bytes
    }

    /// Request body bytes held by requests in flight now (read, or parsed and not yet dropped).
    pub fn body_bytes_in_flight(&self) -> u64 {
        self.inner.body_budget.held()
    }

    pub fn shutdown_grace(&self) -> Duration {
        self.inner.settings.load().shutdown_grace
    }

    /// The API listener's TLS acceptor, when configured (the current one after a reload).
    pub(crate) fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.inner.settings.load().tls.clone()
    }

    /// Ends every open SSE stream served by this gateway's HTTP surface: each gets one in-band
    /// error event (503 `server_shutting_down`) and `data: [DONE]`, then its body ends cleanly,
    /// so a client can tell a cut answer from a finished one. `serve` calls it when the
    /// shutdown grace runs out; it cannot be undone.
    pub fn end_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Sends every span still queued to the collector and waits for its answer (at most the
    /// OTLP timeout per batch); a no-op without trace export. Call it after `serve` returns,
    /// under a deadline of your own.
    pub async fn flush_traces(&self) {
        if let Some(t) = &self.inner.tracer {
            t.flush().await;
        }
    }

    /// Whether spans are exported (the `otel` feature is built in and an endpoint is set).
    pub fn traces_enabled(&self) -> bool {
        self.inner.tracer.is_some()
    }

    /// The deep report behind `/health/inference`.
    pub fn inference_report(&self) -> crate::health::InferenceReport {
        crate::health::inference_report(&self.inner.core)
    }

    /// Readiness, behind `/ready`.
    pub fn ready_report(&self) -> crate::health::ReadyReport {
        crate::health::ready_report(&self.inner.core)
    }
}
