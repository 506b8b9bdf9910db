//! Prometheus metrics. Names follow the OpenTelemetry GenAI semantic conventions where one
//! exists (time to first token, time per output token) and Prometheus naming rules otherwise.
//! Labels stay low-cardinality: model, backend, endpoint, status class, kinds — never request
//! ids or keys. docs/observability.md lists every metric.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

mod engine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub model: String,
    pub backend: String,
    pub endpoint: String,
    pub status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelEndpoint {
    pub model: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KeyLabel {
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KeyTokenLabels {
    pub key: String,
    pub token_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub model: String,
    pub token_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabel {
    pub backend: String,
}

/// A broken stream's continuation: the serving model (configured or discovered; every
/// passthrough name is `passthrough`), the failure's kind and whether another engine took over.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ContinuationLabels {
    pub model: String,
    pub reason: String,
    pub outcome: String,
}

/// Both models come from `routing.fallbacks` / `routing.context_fallbacks` (configuration).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FallbackLabels {
    pub from: String,
    pub to: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendModel {
    pub backend: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendReason {
    pub backend: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendResult {
    pub backend: String,
    pub result: String,
}

/// A discovered backend's configured name and a problem Lumen names (`discovery::Problem`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendProblem {
    pub backend: String,
    pub problem: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabel {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub result: String,
}

fn latency() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn fine() -> Histogram {
    // 1 ms .. ~1 s: time between tokens
    Histogram::new(exponential_buckets(0.001, 2.0, 11))
}

fn micro() -> Histogram {
    // 5 µs .. ~20 ms: Lumen's own overhead
    Histogram::new(exponential_buckets(0.000_005, 2.0, 13))
}

/// Every metric Lumen exports, registered once per gateway.
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<ModelEndpoint, Histogram, fn() -> Histogram>,
    pub ttft: Family<ModelLabel, Histogram, fn() -> Histogram>,
    pub tpot: Family<ModelLabel, Histogram, fn() -> Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    /// Requests and tokens per API key (names from the configuration and the admin API only),
    /// as counted for the usage history; off with `accounting.key_metrics = false`.
    pub key_requests: Family<KeyLabel, Counter>,
    pub key_tokens: Family<KeyTokenLabels, Counter>,
    pub retries: Family<BackendReason, Counter>,
    pub attempt_errors: Family<BackendReason, Counter>,
    pub timeouts: Family<KindLabel, Counter>,
    pub rejected: Family<ReasonLabel, Counter>,
    pub retry_budget_exhausted: Counter,
    pub fallbacks: Family<FallbackLabels, Counter>,
    pub continuations: Family<ContinuationLabels, Counter>,
    pub queue_wait: Histogram,
    pub overhead: Histogram,
    pub reloads: Family<ResultLabel, Counter>,
    pub health_checks: Family<BackendResult, Counter>,
    pub cache: Family<ResultLabel, Counter>,
    pub rate_limited: Family<ReasonLabel, Counter>,
    pub redis_errors: Family<OpLabel, Counter>,
    // Gauges refreshed from live state at scrape time.
    pub in_flight: Family<BackendLabel, Gauge>,
    pub breaker: Family<BackendLabel, Gauge>,
    pub model_breaker: Family<BackendModel, Gauge>,
    pub healthy: Family<BackendLabel, Gauge>,
    pub queue_depth: Gauge,
    /// The engines' load reports and routing's estimate, per backend.
    pub engine: engine::EngineGauges,
    /// Request body bytes held by requests in flight; kept current by the body budget.
    pub body_bytes: Gauge,
    /// Bytes of answers in the in-memory response cache (0 with Redis), refreshed at scrape.
    pub cache_bytes: Gauge,
    /// Spans sent to the OTLP collector, and spans dropped (`queue_full`, `export_failed`).
    pub trace_spans_exported: Counter,
    pub trace_spans_dropped: Family<ReasonLabel, Counter>,
    /// DNS discovery, by configured backend name: answers not taken as they came, and the
    /// addresses in use.
    pub dns_problems: Family<BackendProblem, Counter>,
    pub dns_addresses: Family<BackendLabel, Gauge>,
    /// Per-request metric handles by label set, so the hot path neither allocates label
    /// strings nor hashes them into every family on each request and stream chunk.
    /// Keyed by an FNV hash of the labels already, so the map itself only needs Fx.
    handles: std::sync::RwLock<rustc_hash::FxHashMap<u64, Arc<Handles>>>,
}

/// The per-request metrics of one (model, backend, endpoint, status class).
pub(crate) struct Handles {
    labels: (String, String, &'static str, u16),
    pub requests: Counter,
    pub duration: Histogram,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub tokens_in: Counter,
    pub tokens_out: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let requests = Family::default();
        r.register(
            "lumen_requests",
            "Requests by model, backend, endpoint and status class",
            requests.clone(),
        );
        let duration = Family::new_with_constructor(latency as fn() -> Histogram);
        r.register_with_unit(
            "lumen_request_duration",
            "Request duration, to the last byte",
            Unit::Seconds,
            duration.clone(),
        );
        let ttft = Family::new_with_constructor(latency as fn() -> Histogram);
        r.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time from request to the first output token (OTel gen_ai.server.time_to_first_token)",
            Unit::Seconds,
            ttft.clone(),
        );
        let tpot = Family::new_with_constructor(fine as fn() -> Histogram);
        r.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Inter-token latency of streams (OTel gen_ai.server.time_per_output_token)",
            Unit::Seconds,
            tpot.clone(),
        );
        let tokens = Family::default();
        r.register(
            "lumen_tokens",
            "Tokens from the engines' usage, by type: input or output",
            tokens.clone(),
        );
        let key_requests = Family::default();
        r.register(
            "lumen_key_requests",
            "Requests per API key, as the usage history counts them",
            key_requests.clone(),
        );
        let key_tokens = Family::default();
        r.register(
            "lumen_key_tokens",
            "Tokens per API key and type (input, output), as the usage history counts them",
            key_tokens.clone(),
        );
        let retries = Family::default();
        r.register(
            "lumen_retries",
            "Retries, by the backend that failed and the reason",
            retries.clone(),
        );
        let attempt_errors = Family::default();
        r.register(
            "lumen_attempt_errors",
            "Failed attempts against a backend, by reason",
            attempt_errors.clone(),
        );
        let timeouts = Family::default();
        r.register(
            "lumen_timeouts",
            "Deadline expiries by kind: connect, first_byte, idle, total",
            timeouts.clone(),
        );
        let rejected = Family::default();
        r.register(
            "lumen_rejected",
            "Requests refused before reaching an engine: queue_full, queue_timeout, no_healthy_backend, body_budget",
            rejected.clone(),
        );
        let fallbacks = Family::default();
        r.register(
            "lumen_fallbacks",
            "Requests moved to a fallback model, by the model they left, the one they moved to and why",
            fallbacks.clone(),
        );
        let continuations = Family::default();
        r.register(
            "lumen_stream_continuations",
            "Streams that broke after commit, by model and failure, and whether another engine continued them (outcome resumed) or none could (failed)",
            continuations.clone(),
        );
        let retry_budget_exhausted = Counter::default();
        r.register(
            "lumen_retry_budget_exhausted",
            "Retries refused by the retry budget",
            retry_budget_exhausted.clone(),
        );
        let queue_wait = latency();
        r.register_with_unit(
            "lumen_queue_wait",
            "Time spent waiting for an admission slot",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let overhead = micro();
        r.register_with_unit(
            "lumen_overhead",
            "Time spent inside Lumen per request, excluding the wait for the engine and retry backoff",
            Unit::Seconds,
            overhead.clone(),
        );
        let reloads = Family::default();
        r.register(
            "lumen_config_reloads",
            "Configuration reloads by result: ok or rejected",
            reloads.clone(),
        );
        let health_checks = Family::default();
        r.register(
            "lumen_health_checks",
            "Background health probes by backend and result",
            health_checks.clone(),
        );
        let cache = Family::default();
        r.register(
            "lumen_cache_requests",
            "Response cache lookups: hit, miss, refresh (no-cache)",
            cache.clone(),
        );
        let rate_limited = Family::default();
        r.register(
            "lumen_rate_limited",
            "Requests refused by per-key limits: requests, tokens, concurrent_requests, quota, suspended (a limit of 0)",
            rate_limited.clone(),
        );
        let redis_errors = Family::default();
        r.register(
            "lumen_redis_errors",
            "Shared-state store failures by operation",
            redis_errors.clone(),
        );
        let in_flight = Family::default();
        r.register(
            "lumen_backend_in_flight",
            "Requests in flight per backend",
            in_flight.clone(),
        );
        let breaker = Family::default();
        r.register(
            "lumen_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 half-open, 2 open",
            breaker.clone(),
        );
        let model_breaker = Family::default();
        r.register(
            "lumen_model_breaker_state",
            "Circuit breaker per backend and model: 0 closed, 1 half-open, 2 open",
            model_breaker.clone(),
        );
        let healthy = Family::default();
        r.register(
            "lumen_backend_up",
            "1 when the backend is in rotation (health and breaker), else 0",
            healthy.clone(),
        );
        let queue_depth = Gauge::default();
        r.register(
            "lumen_queue_depth",
            "Requests waiting for an admission slot",
            queue_depth.clone(),
        );
        let engine = engine::EngineGauges::register(&mut r);
        let body_bytes = Gauge::default();
        r.register_with_unit(
            "lumen_request_body",
            "Request body bytes held by requests in flight (read, or parsed and not yet dropped), against server.body_budget_bytes",
            Unit::Bytes,
            body_bytes.clone(),
        );
        let cache_bytes = Gauge::default();
        r.register_with_unit(
            "lumen_cache",
            "Bytes the in-memory response cache holds (each answer plus 64 bytes), against cache.max_bytes; 0 with Redis",
            Unit::Bytes,
            cache_bytes.clone(),
        );
        let trace_spans_exported = Counter::default();
        r.register(
            "lumen_trace_spans_exported",
            "Spans the OTLP collector accepted",
            trace_spans_exported.clone(),
        );
        let trace_spans_dropped = Family::default();
        r.register(
            "lumen_trace_spans_dropped",
            "Spans not exported: queue_full (the export queue was full, the request did not wait) \
             or export_failed (the collector refused, failed or timed out)",
            trace_spans_dropped.clone(),
        );
        let dns_problems = Family::default();
        r.register(
            "lumen_dns_problems",
            "DNS discovery answers not taken as they came, by configured backend: failed or \
             empty (the known addresses stay), capped (past dns.max_addresses), probe_failed \
             (a new address not admitted yet)",
            dns_problems.clone(),
        );
        let dns_addresses = Family::default();
        r.register(
            "lumen_dns_addresses",
            "Addresses in use per DNS-discovered backend (configured name)",
            dns_addresses.clone(),
        );
        Self {
            registry: r,
            requests,
            duration,
            ttft,
            tpot,
            tokens,
            key_requests,
            key_tokens,
            retries,
            attempt_errors,
            timeouts,
            rejected,
            retry_budget_exhausted,
            fallbacks,
            continuations,
            queue_wait,
            overhead,
            reloads,
            health_checks,
            cache,
            rate_limited,
            redis_errors,
            in_flight,
            breaker,
            model_breaker,
            healthy,
            queue_depth,
            engine,
            body_bytes,
            cache_bytes,
            trace_spans_exported,
            trace_spans_dropped,
            dns_problems,
            dns_addresses,
            handles: std::sync::RwLock::new(rustc_hash::FxHashMap::default()),
        }
    }

    /// `lumen_rejected_total{reason}` for a reason Lumen names (never a client string).
    pub fn rejected_for(&self, reason: &'static str) -> Counter {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .clone()
    }

    /// The handles for one label set, created on first use.
    pub fn handles(
        &self,
        model: &str,
        backend: &str,
        endpoint: &'static str,
        status: u16,
    ) -> Arc<Handles> {
        let class = status / 100;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for part in [
            model.as_bytes(),
            b"\0",
            backend.as_bytes(),
            b"\0",
            endpoint.as_bytes(),
        ] {
            for b in part {
                h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        h ^= u64::from(class);
        let same = |x: &Handles| {
            x.labels.0 == model
                && x.labels.1 == backend
                && x.labels.2 == endpoint
                && x.labels.3 == class
        };
        if let Ok(map) = self.handles.read() {
            if let Some(x) = map.get(&h).filter(|x| same(x)) {
                return x.clone();
            }
        }
        // One statement per family: a family's read guard must be dropped before the next
        // `get_or_create` on it, which may need its write lock.
        let requests = self
            .requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                backend: backend.to_owned(),
                endpoint: endpoint.to_owned(),
                status_class: format!("{class}xx"),
            })
            .clone();
        let duration = self
            .duration
            .get_or_create(&ModelEndpoint {
                model: model.to_owned(),
                endpoint: endpoint.to_owned(),
            })
            .clone();
        let ttft = self
            .ttft
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .clone();
        let tpot = self
            .tpot
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .clone();
        let token = |kind: &str| {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.to_owned(),
                    token_type: kind.to_owned(),
                })
                .clone()
        };
        let tokens_in = token("input");
        let tokens_out = token("output");
        let created = Arc::new(Handles {
            labels: (model.to_owned(), backend.to_owned(), endpoint, class),
            requests,
            duration,
            ttft,
            tpot,
            tokens_in,
            tokens_out,
        });
        if let Ok(mut map) = self.handles.write() {
            // Bounded: label values are routed model and backend names, but never trust that.
            if map.len() < 10_000 {
                map.insert(h, created.clone());
            }
        }
        created
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn observe(h: &Histogram, d: Duration) {
        h.observe(d.as_secs_f64());
    }
}
