//! Configuration: defaults, then a TOML file, then `LUMEN_*` environment variables, then flags.
//!
//! Every section is a plain serde struct with defaults, so environment variables alone are enough
//! to run Lumen (`LUMEN_BACKENDS=http://127.0.0.1:8000 lumen`). Nested keys use `__`
//! (`LUMEN_SERVER__LISTEN`), because a single `_` is part of key names. Errors name the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use lumen_governance::GovernanceConfig;

pub use lumen_gateway::{HealthConfig, Probe};
pub use lumen_resilience::config::{
    AdmissionConfig, BackoffKind, BreakerSettings, InvalidSetting, Operation, Preset, Profile,
    Resolved, RetryConfig, TimeoutOverrides, TimeoutsConfig,
};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

mod http2;
mod otel;
pub use http2::{DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, Http2Config};
pub use otel::{OtelConfig, Sampler};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LumenConfig {
    /// Tuning preset (`small`, `medium`, `large`); explicit settings override it.
    pub profile: Profile,
    pub server: ServerConfig,
    /// Engines to route to. Accepts a list of URLs or of tables, or one comma-separated string.
    #[serde(deserialize_with = "backends")]
    pub backends: Vec<BackendConfig>,
    /// Model governance and balancing (`lumen_governance::GovernanceConfig`; see
    /// docs/governance.md).
    pub routing: GovernanceConfig,
    pub timeouts: TimeoutsConfig,
    pub retry: RetryConfig,
    pub breaker: BreakerSettings,
    pub admission: AdmissionConfig,
    pub health: HealthConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub cache: CacheConfig,
    pub redis: RedisConfig,
    /// Usage per key, model and day (`/admin/usage/history`).
    pub accounting: AccountingConfig,
    pub log: LogConfig,
    /// `[dns]`: how backends with `discovery = "dns"` or `"srv"` are re-resolved.
    pub dns: DnsConfig,
    /// Trace export, from the standard `OTEL_*` variables (never from the file or `LUMEN_*`);
    /// read by [`load`] and [`check`], once: a reload does not change it.
    #[serde(skip)]
    pub otel: OtelConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Request bodies above this are refused with 413 before they are read in full.
    pub max_body_bytes: usize,
    /// Request body bytes all requests together may hold at once, from the first byte read
    /// until the parsed request is dropped. A body costs several times its size while it is
    /// parsed, so the per-body cap alone lets a few large bodies at once exhaust memory; over
    /// the budget a request waits [`body_budget_wait_ms`](Self::body_budget_wait_ms), then
    /// gets 503 with `Retry-After`. At least `max_body_bytes`, so a body at the cap can be read.
    pub body_budget_bytes: u64,
    /// Longest wait for room in the body budget before a request is refused with 503
    /// (0: refused at once).
    pub body_budget_wait_ms: u64,
    /// On SIGTERM/SIGINT, in-flight requests and streams get this long to finish.
    pub shutdown_grace_ms: u64,
    /// Reload the config file when it changes, checking this often (0 = only on SIGHUP).
    pub config_watch_ms: u64,
    /// Serve `/metrics`, `/health*` and `/ready` on this separate address instead of `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// Longest time to receive a request body once its headers have arrived; a client that
    /// stalls mid-body gets 408 and its connection is closed, so it cannot hold a descriptor.
    pub body_read_timeout_ms: u64,
    /// Longest time for a request head (request line and headers) to arrive complete, from its
    /// first byte; a client that dribbles its headers is disconnected, so it cannot hold a
    /// descriptor.
    pub header_read_timeout_ms: u64,
    /// Longest time a connection may sit with no request in progress (just accepted, or kept
    /// alive after a response) before its next request starts; then it is closed.
    pub idle_timeout_ms: u64,
    /// Longest time a write to the client may make no progress (its socket's buffers full: the
    /// client reads nothing); then the connection is closed, and with it the stream and its
    /// engine request. Without it, a client that never reads its answer would hold a stream,
    /// an engine slot and its admission place forever (nginx's `send_timeout`, 60 s).
    pub write_timeout_ms: u64,
    /// Largest `n` (choices per request) accepted; above it, 400 before any engine is asked.
    pub max_n: u32,
    /// Request bodies of `/tokenize` and `/detokenize` above this (and never above
    /// `max_body_bytes`) are refused with 413. Tokenizer calls run no model and are charged
    /// no tokens (only a request), so their bodies get a cap of their own.
    pub max_tokenizer_body_bytes: usize,
    /// Serve the API listener over TLS (the admin listener stays plain, for probes).
    pub tls: Option<TlsConfig>,
    /// Connections the kernel queues for the listener before Lumen accepts them (`listen(2)`'s
    /// backlog; the kernel caps it at `net.core.somaxconn`). A burst of clients larger than
    /// this is answered by SYN retransmits, seconds later: sized for bursts of thousands.
    pub backlog: u32,
    /// `[server.http2]`: HTTP/2 on the same listener.
    pub http2: Http2Config,
    /// Engine-specific JSON endpoints Lumen routes by the body's `model`, as the escape hatch
    /// for what it has no operation of its own for: each `POST` path goes to the same path on
    /// the engine through the same keys, model lists, limits and retries, never streamed or
    /// cached. Each must start with `/` and must not be a path Lumen serves itself.
    pub extra_json_paths: Vec<String>,
}

/// `[server.tls]`: PEM files, read again on every reload (certificate rotation).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 private key.
    pub key_file: std::path::PathBuf,
}

/// The largest request body accepted by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// One body at the default cap and 16 MiB of others at once. A body costs up to about 5.5 times
/// its size while it is read and parsed (30 MB of `\u`-escaped text, release build), so this
/// bounds bodies at ≈ 300 MB of peak memory, which the shipped Kubernetes manifest's limit
/// holds beside the default admission's streams and a full cache (docs/deploy.md, Sizing).
pub const DEFAULT_BODY_BUDGET_BYTES: u64 = DEFAULT_MAX_BODY_BYTES as u64 + 16 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_budget_bytes: DEFAULT_BODY_BUDGET_BYTES,
            body_budget_wait_ms: 5_000,
            shutdown_grace_ms: 30_000,
            config_watch_ms: 0,
            admin_listen: None,
            body_read_timeout_ms: 30_000,
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 30_000,
            write_timeout_ms: 60_000,
            tls: None,
            max_n: 128,
            max_tokenizer_body_bytes: DEFAULT_MAX_TOKENIZER_BODY_BYTES,
            backlog: DEFAULT_BACKLOG,
            http2: Http2Config::default(),
            extra_json_paths: Vec::new(),
        }
    }
}

/// The listen backlog: a burst of 4,096 connections waits in the kernel, not in SYN
/// retransmits (tokio's own default is 1,024).
pub const DEFAULT_BACKLOG: u32 = 4_096;

/// 4 MiB: the text of a million-token context, or about half a million token ids to
/// detokenize; the largest contexts served today fit, and a tokenizer call costs at most this.
pub const DEFAULT_MAX_TOKENIZER_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Which engine is behind a backend. All speak the OpenAI API; the kind documents intent and
/// selects engine quirks as they are added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Vllm,
    Sglang,
    Llamacpp,
    Tgi,
    Ollama,
    #[serde(rename = "openai-compatible", alias = "openai")]
    OpenaiCompatible,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Defaults to `host:port` of the URL.
    pub name: Option<String>,
    pub url: String,
    /// Sent upstream as a bearer token; never logged.
    pub api_key: Option<Secret>,
    /// Fixed model list; when absent the models are discovered from the engine's `/v1/models`.
    pub models: Option<Vec<String>>,
    pub kind: EngineKind,
    /// Share of traffic relative to the pool's other backends (round robin, affinity).
    pub weight: u32,
    /// How the background checker probes it; by default `/health` (Ollama: `/v1/models`).
    /// `generate` sends a one-token completion and bills a token per probe.
    pub probe: Option<Probe>,
    /// Cap on a non-streamed engine answer: a broken or hostile engine cannot make Lumen buffer
    /// an endless body. Over it the request fails with 502 `upstream_response_too_large`.
    pub max_response_bytes: usize,
    /// How the engine continues another engine's partial answer, for models with
    /// `stream_continuation` on. By default from `kind`: `continue_final_message` for vLLM,
    /// SGLang and llama.cpp, `none` for the others (unknown, so never asked).
    pub continuation: Option<lumen_backend::Continuation>,
    /// The engine serves Anthropic's `/v1/messages` itself, so Messages requests are forwarded
    /// to it unchanged (usage read from its events) rather than translated to chat completions.
    /// By default from `kind`: yes for vLLM, SGLang and llama.cpp, no for the others.
    pub native_messages: Option<bool>,
    /// The engine serves OpenAI's `/v1/responses` itself and keeps its responses, so
    /// Responses requests are forwarded to it unchanged (usage read from its answer and
    /// events), and `previous_response_id`, `GET`, `DELETE`, `cancel` and `input_items` of its
    /// responses go back to it. Off by default for every kind: vLLM keeps responses only when
    /// started with `VLLM_ENABLE_RESPONSES_API_STORE=1` (off by default), and llama.cpp's
    /// `/v1/responses` keeps none, so a `previous_response_id` would fail there; translated
    /// to chat completions, with Lumen's own store, it works on every engine.
    pub native_responses: bool,
    /// Send each request's priority class to the engine as vLLM's `priority` field (0
    /// interactive, 1 standard, 2 batch), so its own queue agrees with Lumen's. Only for
    /// engines started with `--scheduling-policy priority`: others refuse the field.
    pub send_priority: bool,
    /// Idle pooled connections to the engine are closed after this long, in the background
    /// (and as soon as the engine has closed its end), so a burst leaves no descriptors open.
    pub pool_idle_timeout_ms: u64,
    /// `dns`: the URL's host names a set of engines (a Kubernetes headless Service); every
    /// address it resolves to (A and AAAA) is a backend named `<name>@<ip>:<port>`, re-resolved
    /// every `dns.interval_ms`. `srv`: the host is an SRV name, each target and port a backend.
    /// `none` (default): one backend, the host resolved per connection as usual.
    pub discovery: Discovery,
    /// `https` engines: trust only the CAs in this PEM file (the internal CA that signs the
    /// engines' certificates) instead of the system's roots. Read when the backend is built
    /// (at start and on a reload that changes the backend).
    pub ca_file: Option<std::path::PathBuf>,
}

/// How a backend's URL host becomes engines (`backends[].discovery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    #[default]
    None,
    /// A and AAAA records: one backend per address, on the URL's port.
    Dns,
    /// SRV records: one backend per target address and the record's port.
    Srv,
}

/// `[dns]`: re-resolution of backends with `discovery` set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// How often each discovered backend's name is resolved again. Answers are cached no
    /// longer than this, whatever their TTL.
    pub interval_ms: u64,
    /// Deadline of one lookup (each of the resolver's attempts).
    pub timeout_ms: u64,
    /// The nameserver to ask, `ip:port` (UDP, then TCP on truncation); by default those of
    /// `/etc/resolv.conf`, with its search domains.
    pub server: Option<SocketAddr>,
    /// Addresses kept per backend at most: each is a backend with its own metrics labels, so
    /// the count stays bounded whatever the answer holds. Past it the extra addresses are left
    /// out (lowest addresses first kept) and a warning is logged.
    pub max_addresses: usize,
}

/// Most addresses a discovered backend may have (`dns.max_addresses`).
pub const MAX_DNS_ADDRESSES: usize = 4_096;

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            timeout_ms: 2_000,
            server: None,
            max_addresses: 256,
        }
    }
}

/// 90 s, as common HTTP clients keep idle connections. Engines that close theirs sooner (vLLM
/// and llama.cpp after about 5 s) are noticed by the pool's sweep within seconds.
pub const DEFAULT_POOL_IDLE_TIMEOUT_MS: u64 = 90_000;

/// Well above any real answer (a long completion with logprobs is a few MB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            name: None,
            url: String::new(),
            api_key: None,
            models: None,
            kind: EngineKind::default(),
            weight: 1,
            probe: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            continuation: None,
            native_messages: None,
            native_responses: false,
            send_priority: false,
            pool_idle_timeout_ms: DEFAULT_POOL_IDLE_TIMEOUT_MS,
            discovery: Discovery::None,
            ca_file: None,
        }
    }
}

impl BackendConfig {
    /// `continuation` as set, else what `kind` is known to support.
    pub fn effective_continuation(&self) -> lumen_backend::Continuation {
        self.continuation.unwrap_or(self.kind.continuation())
    }

    /// `native_messages` as set, else whether `kind` serves `/v1/messages` itself.
    pub fn effective_native_messages(&self) -> bool {
        self.native_messages.unwrap_or(self.kind.serves_messages())
    }
}

impl EngineKind {
    /// How this engine is known to continue a partial answer.
    pub fn continuation(self) -> lumen_backend::Continuation {
        use lumen_backend::Continuation;
        match self {
            // llama.cpp continues a bare prefill too, but repeats its text at the start of
            // the answer unless `continue_final_message` is set.
            Self::Vllm | Self::Sglang | Self::Llamacpp => Continuation::ContinueFinalMessage,
            Self::Tgi | Self::Ollama | Self::OpenaiCompatible => Continuation::None,
        }
    }

    /// Whether the engine serves Anthropic's `/v1/messages` itself: vLLM, SGLang and
    /// llama.cpp's `llama-server` do; TGI, Ollama and a generic OpenAI-compatible server are
    /// not known to, so their Messages requests are translated to chat completions.
    pub fn serves_messages(self) -> bool {
        match self {
            Self::Vllm | Self::Sglang | Self::Llamacpp => true,
            Self::Tgi | Self::Ollama | Self::OpenaiCompatible => false,
        }
    }

    /// How the engine's tokenizer endpoints are spoken: llama.cpp's are translated to vLLM's
    /// shapes, the others are forwarded.
    pub fn dialect(self) -> lumen_backend_vllm::Dialect {
        match self {
            Self::Llamacpp => lumen_backend_vllm::Dialect::Llamacpp,
            _ => lumen_backend_vllm::Dialect::Vllm,
        }
    }

    /// The probe that works on this engine without billing tokens.
    pub fn default_probe(self) -> Probe {
        match self {
            Self::Ollama => Probe::Models,
            _ => Probe::Health,
        }
    }
}

pub use lumen_governance::{AuthConfig, CacheConfig, DEFAULT_CACHE_MAX_BYTES, LimitsConfig};

/// `[accounting]`: what finance reads — requests and tokens per key, model and day, kept on
/// Redis when configured (every replica adds to the same rows), else in memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountingConfig {
    /// Days of usage kept; older days are dropped (at most 3,660).
    pub retention_days: u32,
    /// Rows the in-memory store keeps at most (oldest days first out); Redis keeps one hash a
    /// day for `retention_days`.
    pub max_rows: usize,
    /// Prices per model, for a `cost` column: `[accounting.prices."<model>"]` with
    /// `input_per_million`, `output_per_million` (USD) and optionally
    /// `cached_input_per_million`.
    pub prices: lumen_governance::accounting::PriceTable,
    /// Export `lumen_key_requests_total{key}` and `lumen_key_tokens_total{key,token_type}`
    /// (key names come from the configuration and the admin API, never from clients). Read at
    /// start.
    pub key_metrics: bool,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        let bounds = lumen_governance::accounting::UsageBounds::default();
        Self {
            retention_days: bounds.retention_days,
            max_rows: bounds.max_rows,
            prices: lumen_governance::accounting::PriceTable::default(),
            key_metrics: true,
        }
    }
}

impl AccountingConfig {
    pub fn bounds(&self) -> lumen_governance::accounting::UsageBounds {
        lumen_governance::accounting::UsageBounds {
            retention_days: self.retention_days,
            max_rows: self.max_rows,
        }
    }
}

/// `[redis]`: shared state across replicas. Without `url`, everything runs in memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: Option<Secret>,
    /// Deadline of every Redis operation on the request path.
    pub timeout_ms: u64,
    /// When Redis fails: admit (false, the default) or refuse with 503 (true).
    pub fail_closed: bool,
    /// `/ready` fails while Redis is unreachable.
    pub required: bool,
    /// How long a run-time API key looked up in Redis is trusted locally.
    pub key_cache_ms: u64,
    /// `[redis.lease]`: admit `rpm` and `tpm` from blocks of their windows taken from Redis
    /// (blocks of 1 % by default; `fraction = 0`: exact; see `docs/keys-and-limits.md`).
    pub lease: lumen_governance::limits::LeaseSettings,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: 50,
            fail_closed: false,
            required: false,
            key_cache_ms: 5_000,
            lease: lumen_governance::limits::LeaseSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `lumen_server=debug` (`RUST_LOG` wins when set).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// A secret string: redacted in `Debug`, never serialised.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why the configuration cannot be used. Always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(String),
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl From<InvalidSetting> for ConfigError {
    fn from(e: InvalidSetting) -> Self {
        Self::Invalid {
            key: e.key,
            reason: e.reason,
        }
    }
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Command-line overrides, applied over everything else.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
}

/// The layered sources, without extracting. `LUMEN_SIM_*` variables belong to the simulator.
/// `LUMEN_*` variables that name no setting are left out (see [`unknown_env`]).
pub fn figment(path: Option<&Path>) -> Figment {
    let ignored = unknown_env();
    let mut f = Figment::new();
    if let Some(p) = path {
        f = f.merge(Toml::file(p));
    }
    f.merge(lumen_env().filter(move |k| !ignored.iter().any(|i| k == i.as_str())))
}

fn lumen_env() -> Env {
    Env::prefixed("LUMEN_")
        .split("__")
        .filter(|k| !k.as_str().to_ascii_lowercase().starts_with("sim_"))
}

/// `LUMEN_*` variables that name no setting, as dotted keys (`port`, `server.listn`). They are
/// never fatal: Kubernetes injects `LUMEN_PORT=tcp://...`, `LUMEN_SERVICE_HOST` and friends into
/// every pod of a namespace with a Service named `lumen`, and a stray variable must not stop a
/// replica from starting. Unknown keys in a TOML file stay errors: a file is written for Lumen.
///
/// Found by extracting the environment alone and dropping each key serde reports as unknown,
/// so the list always matches the real schema.
pub fn unknown_env() -> Vec<String> {
    let mut ignored: Vec<String> = Vec::new();
    // Each round removes one key; the environment is finite, and the bound keeps it so.
    for _ in 0..256 {
        let skip = ignored.clone();
        let env = lumen_env().filter(move |k| !skip.iter().any(|i| k == i.as_str()));
        let Err(errors) = Figment::new().merge(env).extract::<LumenConfig>() else {
            break;
        };
        let unknown = errors.into_iter().find_map(|e| match &e.kind {
            figment::error::Kind::UnknownField(field, _) => {
                // figment's path already ends with the unknown key; older versions did not.
                let mut key = e.path.clone();
                if key.last() != Some(field) {
                    key.push(field.clone());
                }
                Some(key.join(".").to_ascii_lowercase())
            }
            _ => None,
        });
        match unknown {
            Some(k) if !ignored.contains(&k) => ignored.push(k),
            // Another kind of error: the full load reports it, with the file's context.
            _ => break,
        }
    }
    ignored
}

/// True for the variables Kubernetes' service links create for a Service named `lumen` or
/// `lumen-*`, as keys after the `LUMEN_` prefix: `service_host`, `service_port`,
/// `service_port_<name>`, `port`, `port_<n>_<tcp|udp|sctp>` and its `_proto`, `_port`, `_addr`.
pub fn is_kubernetes_service_link(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let tail = |k: &str| -> bool {
        if k == "service_host" || k == "service_port" || k.starts_with("service_port_") {
            return true;
        }
        if k == "port" {
            return true;
        }
        let Some(rest) = k.strip_prefix("port_") else {
            return false;
        };
        let mut parts = rest.split('_');
        let port_ok = parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let proto_ok = parts
            .next()
            .is_some_and(|p| matches!(p, "tcp" | "udp" | "sctp"));
        let field_ok = match parts.next() {
            None => true,
            Some(f) => matches!(f, "proto" | "port" | "addr") && parts.next().is_none(),
        };
        port_ok && proto_ok && field_ok
    };
    // `lumen-api` gives `LUMEN_API_SERVICE_HOST`: the service's own name may come first.
    !k.contains('.') && (tail(&k) || k.match_indices('_').any(|(i, _)| tail(&k[i + 1..])))
}

/// Loads and validates. A named file that does not exist is an error, not silently skipped.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<LumenConfig, ConfigError> {
    let mut cfg = extract(layered(path, overrides)?)?;
    cfg.otel = otel_env();
    Ok(cfg)
}

/// The `OTEL_*` trace settings of this process's environment.
pub fn otel_env() -> OtelConfig {
    OtelConfig::from_vars(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    )
}

/// Every source in order: file, environment, flags.
fn layered(path: Option<&Path>, overrides: &Overrides) -> Result<Figment, ConfigError> {
    if let Some(p) = path {
        if !p.exists() {
            return Err(ConfigError::MissingFile(p.display().to_string()));
        }
    }
    let mut f = figment(path);
    if let Some(listen) = overrides.listen {
        f = f.merge(Serialized::default("server.listen", listen));
    }
    if !overrides.backends.is_empty() {
        f = f.merge(Serialized::default("backends", &overrides.backends));
    }
    Ok(f)
}

/// Like [`load`], but reports every wrong key rather than the first (`lumen config check`):
/// serde stops at the first bad value, so each bad key is dropped and the rest parsed again.
/// Each error names the key and the file or variable it came from. Validation (ranges,
/// uniqueness) runs on what remains, unless it would only repeat a key already reported.
pub fn check(path: Option<&Path>, overrides: &Overrides) -> Result<LumenConfig, Vec<ConfigError>> {
    let f = layered(path, overrides).map_err(|e| vec![e])?;
    let mut data = f
        .extract::<figment::value::Dict>()
        .map_err(|e| vec![ConfigError::Parse(e.to_string())])?;
    let mut errors = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    // Each round drops at least one key; the bound only guards against a figment surprise.
    for _ in 0..128 {
        let round = Figment::from(Serialized::defaults(&data)).extract::<LumenConfig>();
        let e = match round {
            Ok(mut cfg) => {
                cfg.otel = otel_env();
                if let Err(e) = cfg.validate() {
                    let top = |k: &str| k.split(['.', '[']).next().unwrap_or("").to_owned();
                    let repeated = matches!(&e, ConfigError::Invalid { key, .. }
                        if dropped.iter().any(|d| top(d) == top(key)));
                    if !repeated {
                        errors.push(e);
                    }
                }
                return if errors.is_empty() {
                    Ok(cfg)
                } else {
                    Err(errors)
                };
            }
            Err(e) => e,
        };
        let mut progressed = false;
        for e in e {
            let mut key = e.path.clone();
            if let figment::error::Kind::UnknownField(field, _) = &e.kind {
                if key.last() != Some(field) {
                    key.push(field.clone());
                }
            }
            let dotted = key.join(".");
            let origin = f
                .find_value(&dotted)
                .ok()
                .and_then(|v| f.get_metadata(v.tag()).map(|md| origin(md, &key)))
                .map(|o| format!(" (from {o})"))
                .unwrap_or_default();
            errors.push(ConfigError::invalid(
                if dotted.is_empty() {
                    "(top level)".to_owned()
                } else {
                    dotted.clone()
                },
                format!("{}{origin}", e.kind),
            ));
            if remove_key(&mut data, &key) {
                dropped.push(dotted);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    Err(errors)
}

/// Drops `key` (or the nearest table entry on its path) from `data`; false when nothing was.
fn remove_key(data: &mut figment::value::Dict, key: &[String]) -> bool {
    let Some((first, rest)) = key.split_first() else {
        return false;
    };
    if !rest.is_empty() {
        if let Some(figment::value::Value::Dict(_, inner)) = data.get_mut(first) {
            if remove_key(inner, rest) {
                return true;
            }
        }
    }
    data.remove(first).is_some()
}

/// Where a value came from, for people: the file, the variable, or the command line.
fn origin(md: &figment::Metadata, key: &[String]) -> String {
    if let Some(file) = md.source.as_ref().and_then(|s| s.file_path()) {
        format!("file {}", file.display())
    } else if md.name.contains("environment") {
        // figment's own interpolation drops the prefix and the `__` split.
        format!("LUMEN_{}", key.join("__").to_ascii_uppercase())
    } else {
        "command line".to_owned()
    }
}

/// One top-level setting as `lumen config print` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// `server`, `backends`, ...
    pub key: String,
    /// Where its values came from (files, variables, command line), without repeats.
    pub origins: Vec<String>,
    /// The merged value with secrets (`backends[].api_key`; userinfo, query values and
    /// fragment of `redis.url` and backend URLs: [`crate::redact::url`]) replaced by
    /// `<redacted>`.
    pub value: serde_json::Value,
}

/// The settings given by the file, the environment and the flags after merging, secrets
/// redacted. Settings absent here are at their defaults (docs/config.md); the config types
/// have no `Serialize`, so defaults are not repeated. Fails like [`load`] on a bad config.
pub fn effective(
    path: Option<&Path>,
    overrides: &Overrides,
) -> Result<Vec<Effective>, ConfigError> {
    let f = layered(path, overrides)?;
    check(path, overrides).map_err(|errors| {
        ConfigError::Parse(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let data = f
        .extract::<figment::value::Dict>()
        .map_err(|e| ConfigError::Parse(e.to_string()))?;
    let mut out = Vec::new();
    for (key, value) in data {
        let mut origins = Vec::new();
        collect_origins(&f, &value, &mut vec![key.clone()], &mut origins);
        let mut value = serde_json::to_value(&value)
            .map_err(|e| ConfigError::invalid(key.clone(), e.to_string()))?;
        redact(&key, &mut value);
        out.push(Effective {
            key,
            origins,
            value,
        });
    }
    Ok(out)
}

fn collect_origins(
    f: &Figment,
    v: &figment::value::Value,
    path: &mut Vec<String>,
    out: &mut Vec<String>,
) {
    use figment::value::Value;
    match v {
        Value::Dict(_, d) if !d.is_empty() => {
            for (k, v) in d {
                path.push(k.clone());
                collect_origins(f, v, path, out);
                path.pop();
            }
        }
        _ => {
            if let Some(md) = f.get_metadata(v.tag()) {
                let o = origin(md, path);
                if !out.contains(&o) {
                    out.push(o);
                }
            }
        }
    }
}

/// Secrets out of a top-level value: every `api_key` under `backends` (also inside a
/// `LUMEN_BACKENDS` string that was not parsed into tables), and what [`crate::redact::url`]
/// hides in every backend URL and in `redis.url`.
fn redact(key: &str, v: &mut serde_json::Value) {
    use serde_json::Value;
    match (key, v) {
        ("backends", Value::Array(items)) => {
            for item in items {
                match item {
                    Value::Object(b) => {
                        if let Some(k) = b.get_mut("api_key") {
                            *k = Value::String(crate::redact::REDACTED.to_owned());
                        }
                        if let Some(Value::String(u)) = b.get_mut("url") {
                            *u = crate::redact::url(u);
                        }
                    }
                    Value::String(u) => *u = crate::redact::url(u),
                    _ => {}
                }
            }
        }
        ("backends", Value::String(s)) if s.contains("api_key") => {
            *s = crate::redact::REDACTED.to_owned();
        }
        ("backends", Value::String(s)) => {
            *s = s
                .split(',')
                .map(crate::redact::url)
                .collect::<Vec<_>>()
                .join(",");
        }
        ("redis", Value::Object(r)) => {
            if let Some(Value::String(u)) = r.get_mut("url") {
                *u = crate::redact::url(u);
            }
        }
        _ => {}
    }
}

/// Extracts and validates a prepared figment (tests and embedders build their own).
pub fn extract(f: Figment) -> Result<LumenConfig, ConfigError> {
    let cfg: LumenConfig = f.extract().map_err(|e| {
        ConfigError::Parse(
            e.into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    cfg.validate()?;
    Ok(cfg)
}

impl LumenConfig {
    /// Checks what types cannot: presence, uniqueness, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backends.is_empty() {
            return Err(ConfigError::invalid(
                "backends",
                "at least one backend is required (use --backend URL, LUMEN_BACKENDS=URL, \
                 or [[backends]] in the config file; or try --demo)",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            if b.url.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].url"),
                    "must not be empty",
                ));
            }
            if !names.insert(self.backend_name(i)) {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].name"),
                    format!("duplicate backend name {:?}", self.backend_name(i)),
                ));
            }
            if b.models
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m.trim().is_empty()))
            {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].models"),
                    "model ids must not be empty",
                ));
            }
        }
        if self.server.body_read_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.body_read_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.server.header_read_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.header_read_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.server.idle_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.idle_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.server.write_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.write_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.server.max_n == 0 {
            return Err(ConfigError::invalid("server.max_n", "must be at least 1"));
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        self.accounting
            .bounds()
            .validate()
            .map_err(|e| ConfigError::invalid("accounting", e.to_string()))?;
        self.accounting
            .prices
            .validate()
            .map_err(|e| ConfigError::invalid("accounting.prices", e.to_string()))?;
        self.server.http2.validate()?;
        if self.server.backlog == 0 {
            return Err(ConfigError::invalid(
                "server.backlog",
                "must be greater than 0",
            ));
        }
        check_extra_paths(&self.server.extra_json_paths)?;
        if self.server.max_tokenizer_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.max_tokenizer_body_bytes",
                "must be greater than 0",
            ));
        }
        if let Some(i) = self
            .backends
            .iter()
            .position(|b| b.pool_idle_timeout_ms == 0)
        {
            return Err(ConfigError::invalid(
                format!("backends[{i}].pool_idle_timeout_ms"),
                "must be greater than 0",
            ));
        }
        check_body_budget(&self.server)?;
        self.validate_discovery()?;
        if let Some(i) = self.backends.iter().position(|b| b.max_response_bytes == 0) {
            return Err(ConfigError::invalid(
                format!("backends[{i}].max_response_bytes"),
                "must be greater than 0 (every answer would be refused)",
            ));
        }
        if let Some(i) = self
            .backends
            .iter()
            .position(|b| b.ca_file.is_some() && !is_https(&b.url))
        {
            return Err(ConfigError::invalid(
                format!("backends[{i}].ca_file"),
                "is for https engines; this backend's URL is not https",
            ));
        }
        if let Some(i) = self.backends.iter().position(|b| b.weight == 0) {
            return Err(ConfigError::invalid(
                format!("backends[{i}].weight"),
                "must be at least 1",
            ));
        }
        let names: Vec<String> = (0..self.backends.len())
            .map(|i| self.backend_name(i))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.routing
            .validate(&names)
            .map_err(|e| ConfigError::invalid(e.key, e.reason))?;
        self.resolved()?;
        let h = &self.health;
        if h.interval_ms == 0 || h.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "health",
                "interval_ms and timeout_ms must be greater than 0",
            ));
        }
        if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
            return Err(ConfigError::invalid(
                "health",
                "thresholds must be at least 1",
            ));
        }
        lumen_governance::keys::KeyRing::new(&self.auth.keys)
            .map_err(|e| ConfigError::invalid(e.key, e.reason))?;
        if let Some(h) = &self.auth.admin_key_sha256 {
            if lumen_governance::keys::parse_hex(h).is_none() {
                return Err(ConfigError::invalid(
                    "auth.admin_key_sha256",
                    "must be 64 hex characters (see `lumen keys hash`)",
                ));
            }
        }
        if self.redis.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "redis.timeout_ms",
                "must be greater than 0",
            ));
        }
        self.redis.lease.validate().map_err(|e| {
            ConfigError::invalid(format!("redis.lease.{}", e.field()), e.to_string())
        })?;
        if self.cache.ttl_ms == 0 {
            return Err(ConfigError::invalid(
                "cache.ttl_ms",
                "must be greater than 0",
            ));
        }
        if self.server.admin_listen == Some(self.server.listen) && self.server.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "server.admin_listen",
                "must differ from server.listen",
            ));
        }
        Ok(())
    }

    /// `discovery` needs a host name to resolve, and discovered names (`<name>@<ip>:<port>`)
    /// must not collide with configured ones.
    fn validate_discovery(&self) -> Result<(), ConfigError> {
        if !self.backends.iter().any(|b| b.discovery != Discovery::None) {
            return Ok(());
        }
        let d = &self.dns;
        if d.interval_ms == 0 || d.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "dns",
                "interval_ms and timeout_ms must be greater than 0",
            ));
        }
        if d.max_addresses == 0 || d.max_addresses > MAX_DNS_ADDRESSES {
            return Err(ConfigError::invalid(
                "dns.max_addresses",
                format!("must be between 1 and {MAX_DNS_ADDRESSES}"),
            ));
        }
        for (i, b) in self.backends.iter().enumerate() {
            if self.backend_name(i).contains('@') {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].name"),
                    "must not contain '@' when a backend uses discovery (discovered backends \
                     are named <name>@<ip>:<port>)",
                ));
            }
            if b.discovery == Discovery::None {
                continue;
            }
            let host = host_port(&b.url);
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            if host.is_empty() || host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok()
            {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].discovery"),
                    "needs a host name in the URL to resolve, not an address",
                ));
            }
            if b.discovery == Discovery::Srv && is_https(&b.url) {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].discovery"),
                    "srv cannot name https engines (TLS would check their certificates against \
                     the SRV name); use dns with the Service's name",
                ));
            }
        }
        Ok(())
    }

    /// Resilience settings resolved against the profile.
    pub fn resolved(&self) -> Result<Resolved, ConfigError> {
        Resolved::new(
            self.profile,
            &self.timeouts,
            &self.retry,
            &self.breaker,
            &self.admission,
        )
        .map_err(ConfigError::from)
    }

    /// The configured name, or `host:port` from the URL. The name is a metric label and is in
    /// every log line about the backend, so nothing else of the URL may reach it: not the
    /// userinfo (it was, `user:password@host:8000`), not a query.
    pub fn backend_name(&self, i: usize) -> String {
        let b = &self.backends[i];
        match &b.name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => host_port(&b.url).to_owned(),
        }
    }
}

/// Whether a backend URL is `https` (its scheme in any case, as the URL parser reads it).
pub(crate) fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The authority of `url` without its userinfo: what follows `scheme://` and the last `@`
/// before the path, query or fragment.
pub(crate) fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// The body budget must hold one body at the cap: a smaller one would refuse such a body with
/// 503 forever, which a client would retry forever. (The builder checks the same.)
pub(crate) fn check_body_budget(server: &ServerConfig) -> Result<(), ConfigError> {
    if server.body_budget_bytes < server.max_body_bytes as u64 {
        return Err(ConfigError::invalid(
            "server.body_budget_bytes",
            format!(
                "must be at least server.max_body_bytes ({}), or a body at that cap could never be read",
                server.max_body_bytes
            ),
        ));
    }
    Ok(())
}

/// `backends` accepts `"url"`, `"url1,url2"`, `["url", {url = "...", ...}]`.
fn backends<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BackendConfig>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<BackendConfig>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of backends (URLs or tables) or a comma-separated string of URLs")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| BackendConfig {
                    url: u.to_owned(),
                    ..BackendConfig::default()
                })
                .collect())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<BackendSpec>()? {
                out.push(b.0);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// One backend: a URL string or a full table.
struct BackendSpec(BackendConfig);

impl<'de> Deserialize<'de> for BackendSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BackendSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a backend URL or a table with `url`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<BackendSpec, E> {
                Ok(BackendSpec(BackendConfig {
                    url: s.to_owned(),
                    ..BackendConfig::default()
                }))
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<BackendSpec, M::Error> {
                BackendConfig::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(BackendSpec)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;

/// Paths Lumen serves itself, or whose prefix it owns: an extra path may be none of them.
const OWN_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/models",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/tokenize",
    "/detokenize",
    "/v1/rerank",
    "/rerank",
    "/v2/rerank",
    "/v1/score",
    "/score",
    "/classify",
    "/pooling",
    "/health",
    "/ready",
    "/metrics",
];

/// Prefixes under which Lumen routes paths of its own (ids, admin resources).
const OWN_PREFIXES: &[&str] = &["/admin", "/health/", "/v1/models/", "/v1/responses/"];

/// `server.extra_json_paths`: each an absolute path of printable characters without a query,
/// given once, and none Lumen serves itself (it would be shadowed, or shadow a built-in).
pub(crate) fn check_extra_paths(paths: &[String]) -> Result<(), ConfigError> {
    for (i, p) in paths.iter().enumerate() {
        let key = format!("server.extra_json_paths[{i}]");
        let why = if !p.starts_with('/') || p.len() < 2 {
            Some("must be an absolute path such as \"/v1/foo\"".to_owned())
        } else if p.len() > 256 {
            Some("is longer than 256 characters".to_owned())
        } else if p
            .bytes()
            .any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#' || b == b'%')
        {
            Some("must be printable ASCII without '?', '#' or '%'".to_owned())
        } else if OWN_PATHS.contains(&p.as_str())
            || OWN_PREFIXES.iter().any(|pre| p.starts_with(pre))
        {
            Some(format!("{p} is a path Lumen serves itself"))
        } else if paths[..i].contains(p) {
            Some(format!("{p} is listed twice"))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ConfigError::invalid(key, why));
        }
    }
    Ok(())
}
