//! OpenTelemetry traces (cargo feature `otel`): one SERVER span per inference request and one
//! CLIENT span per attempt, with the GenAI semantic conventions' attributes, exported over
//! OTLP/HTTP (protobuf) by a background task.
//!
//! Spans are built from what the request already records, not by instrumenting the pipeline:
//! the core's observer events (attempt started and finished, retrying, fallback) land in the
//! request's access record through its task-local (`observe.rs`), and when the record closes
//! (`Access::finish`, for a stream when the stream ends) the spans are assembled and handed to
//! the exporter with a non-blocking `try_send`. A request that is not sampled carries no trace
//! state at all. Nothing on the request path waits on the collector: the queue is bounded and a
//! full queue drops the span and counts it (`lumen_trace_spans_dropped_total`).

// Without the exporter, spans are built by nothing: their types are compiled but unused.
#![cfg_attr(not(feature = "otel"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{ConfigError, OtelConfig, Sampler};
use crate::metrics::{Metrics, ReasonLabel};

// The only place the `otel` feature is read: without it nothing is exported (no HTTP client
// is built in), and everything else compiles the same, with no tracer ever started.
#[cfg(feature = "otel")]
mod export;
mod proto;

use proto::{Attr, Kind, Span, SpanEvent, Value};

/// The export's counters: spans the collector accepted, spans it refused or that failed, spans
/// dropped because the queue was full.
struct Counters {
    exported: Counter,
    failed: Counter,
    queue_full: Counter,
}

/// The process's trace exporter: sampler, bounded queue, and the engine addresses that
/// attempt spans name (`server.address`).
pub(crate) struct Tracer {
    spans: mpsc::Sender<Span>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    sampler: Sampler,
    /// Backend name → (host, port), from the configured URLs; replaced on reload.
    addresses: ArcSwap<HashMap<String, (String, u16)>>,
    queue_full: Counter,
}

impl Tracer {
    /// Starts the export task on the current Tokio runtime; `None` when `cfg` exports nothing
    /// (or the build has no exporter).
    pub(crate) fn start(
        cfg: &OtelConfig,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Self>>, ConfigError> {
        let Some(endpoint) = cfg.endpoint.clone() else {
            return Ok(None);
        };
        let dropped = |reason: &str| {
            metrics
                .trace_spans_dropped
                .get_or_create(&ReasonLabel {
                    reason: reason.to_owned(),
                })
                .clone()
        };
        let counters = Counters {
            exported: metrics.trace_spans_exported.clone(),
            failed: dropped("export_failed"),
            queue_full: dropped("queue_full"),
        };
        #[cfg(not(feature = "otel"))]
        {
            let _ = (endpoint, counters);
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no trace export (feature `otel`); no spans are sent"
            );
            Ok(None)
        }
        #[cfg(feature = "otel")]
        Self::spawn(endpoint, cfg, counters)
    }

    /// Starts the export task; its queue and flush channel are the tracer's.
    #[cfg(feature = "otel")]
    fn spawn(
        endpoint: String,
        cfg: &OtelConfig,
        counters: Counters,
    ) -> Result<Option<Arc<Self>>, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::invalid(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "trace export needs a Tokio runtime when the gateway is built",
            )
        })?;
        let exporter = export::Exporter::new(endpoint, cfg, counters.exported, counters.failed)
            .map_err(|reason| ConfigError::invalid("OTEL_EXPORTER_OTLP_ENDPOINT", reason))?;
        let (spans, rx) = mpsc::channel(cfg.max_queue_size.max(1));
        let (flush, flush_rx) = mpsc::channel(1);
        runtime.spawn(exporter.run(rx, flush_rx));
        Ok(Some(Arc::new(Self {
            spans,
            flush,
            sampler: cfg.sampler,
            addresses: ArcSwap::from_pointee(HashMap::new()),
            queue_full: counters.queue_full,
        })))
    }

    pub(crate) fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The engines' addresses by backend name (`server.address` and `server.port`).
    pub(crate) fn set_backends(&self, urls: impl IntoIterator<Item = (String, String)>) {
        let map = urls
            .into_iter()
            .filter_map(|(name, url)| {
                let uri: http::Uri = url.parse().ok()?;
                let host = uri.host()?.trim_matches(['[', ']']).to_owned();
                let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                    Some("https") => 443,
                    _ => 80,
                });
                Some((name, (host, port)))
            })
            .collect();
        self.addresses.store(Arc::new(map));
    }

    /// The trace state of a sampled request that starts now.
    pub(crate) fn begin(
        self: &Arc<Self>,
        cx: &crate::headers::TraceContext,
        operation: &'static str,
        route: &'static str,
        start: Instant,
    ) -> RequestTrace {
        RequestTrace {
            tracer: self.clone(),
            trace_id: cx.trace_id_bytes(),
            span_id: cx.span_id,
            parent: cx.parent,
            flags: cx.flags,
            operation,
            route,
            start,
            start_ns: unix_nanos(),
            attempts: Vec::new(),
            events: Vec::new(),
            error_type: None,
        }
    }

    fn submit(&self, span: Span) {
        if self.spans.try_send(span).is_err() {
            self.queue_full.inc();
        }
    }

    /// Exports every span queued so far; returns when the collector has answered (or the
    /// export failed). Called on shutdown, under the caller's own deadline.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.flush.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One attempt as the observer saw it.
#[derive(Clone)]
struct Attempt {
    number: u32,
    model: String,
    backend: String,
    span_id: u64,
    start: Instant,
    end: Option<Instant>,
    error: Option<&'static str>,
    retry_delay: Option<Duration>,
}

/// A sampled request's trace, carried in its access record until it closes.
#[derive(Clone)]
pub(crate) struct RequestTrace {
    tracer: Arc<Tracer>,
    trace_id: [u8; 16],
    span_id: u64,
    parent: Option<u64>,
    flags: u8,
    operation: &'static str,
    route: &'static str,
    start: Instant,
    start_ns: u64,
    attempts: Vec<Attempt>,
    events: Vec<SpanEvent>,
    error_type: Option<String>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("span_id", &format_args!("{:016x}", self.span_id))
            .field("operation", &self.operation)
            .field("attempts", &self.attempts.len())
            .finish_non_exhaustive()
    }
}

/// What the access record knows when the request ends.
pub(crate) struct Summary<'a> {
    pub request_id: &'a str,
    pub requested: Option<&'a str>,
    pub served: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub status: u16,
    pub outcome: &'a str,
    pub tokens: Option<(u64, u64)>,
    /// A committed stream: its last attempt lasts until the stream ends.
    pub streamed: bool,
}

impl RequestTrace {
    pub(crate) fn attempt_started(&mut self, number: u32, model: &str, backend: &str) {
        self.attempts.push(Attempt {
            number,
            model: model.to_owned(),
            backend: backend.to_owned(),
            span_id: crate::headers::span_id(),
            start: Instant::now(),
            end: None,
            error: None,
            retry_delay: None,
        });
    }

    pub(crate) fn attempt_finished(&mut self, error: Option<&'static str>) {
        if let Some(a) = self.attempts.last_mut().filter(|a| a.end.is_none()) {
            a.end = Some(Instant::now());
            a.error = error;
        }
    }

    pub(crate) fn retrying(&mut self, delay: Duration) {
        if let Some(a) = self.attempts.last_mut() {
            a.retry_delay = Some(delay);
        }
    }

    pub(crate) fn fallback(&mut self, from: &str, to: &str, reason: &'static str) {
        self.events.push(SpanEvent {
            time_ns: self.nanos(Instant::now()),
            name: "lumen.fallback",
            attrs: vec![
                ("lumen.fallback.from", Value::Str(from.to_owned())),
                ("lumen.fallback.to", Value::Str(to.to_owned())),
                ("lumen.fallback.reason", Value::Static(reason)),
            ],
        });
    }

    /// The error the client got (its `code`, else its `type`).
    pub(crate) fn set_error_type(&mut self, kind: &str) {
        self.error_type = Some(kind.to_owned());
    }

    fn nanos(&self, t: Instant) -> u64 {
        self.start_ns
            .saturating_add(t.saturating_duration_since(self.start).as_nanos() as u64)
    }

    /// Builds the request span and its attempt spans and queues them for export.
    pub(crate) fn finish(mut self, s: Summary<'_>) {
        let now = Instant::now();
        let ok = s.status < 400 && matches!(s.outcome, "ok" | "client_disconnected");
        let error = self.error_type.take().or_else(|| {
            (!ok).then(|| match s.outcome {
                "ok" | "error" => s.status.to_string(),
                other => other.to_owned(),
            })
        });
        let trace_id = self.trace_id;
        let parent = self.span_id.to_be_bytes();
        let addresses = self.tracer.addresses.load();
        let last = self.attempts.len();
        for (i, a) in std::mem::take(&mut self.attempts).into_iter().enumerate() {
            let last = i + 1 == last;
            let mut attrs: Vec<Attr> = Vec::with_capacity(10);
            attrs.push(("gen_ai.operation.name", Value::Static(self.operation)));
            attrs.push(("gen_ai.request.model", Value::Str(a.model.clone())));
            if let Some((host, port)) = addresses.get(&a.backend) {
                attrs.push(("server.address", Value::Str(host.clone())));
                attrs.push(("server.port", Value::Int(i64::from(*port))));
            }
            attrs.push(("lumen.backend", Value::Str(a.backend)));
            attrs.push(("lumen.attempt", Value::Int(i64::from(a.number))));
            // A committed stream's attempt lasts until the stream ends, and shares its fate.
            let extends = last && s.streamed && a.error.is_none();
            let end = if extends { now } else { a.end.unwrap_or(now) };
            let answered = a.error.is_none() && a.end.is_some();
            if answered {
                attrs.push(("gen_ai.response.model", Value::Str(a.model.clone())));
                if last {
                    tokens(&mut attrs, s.tokens);
                }
            }
            let kind = match a.error {
                Some(k) => Some(k.to_owned()),
                None if extends => error.clone(),
                None => None,
            };
            if let Some(k) = &kind {
                attrs.push(("error.type", Value::Str(k.clone())));
            }
            if let Some(d) = a.retry_delay {
                attrs.push(("lumen.retry.delay_ms", Value::Int(d.as_millis() as i64)));
            }
            self.tracer.submit(Span {
                trace_id,
                span_id: a.span_id.to_be_bytes(),
                parent: Some(parent),
                flags: self.flags,
                name: format!("{} {}", self.operation, a.model),
                kind: Kind::Client,
                start_ns: self.nanos(a.start),
                end_ns: self.nanos(end),
                attrs,
                events: Vec::new(),
                error: kind,
            });
        }
        let mut attrs: Vec<Attr> = Vec::with_capacity(16);
        attrs.push(("gen_ai.operation.name", Value::Static(self.operation)));
        if let Some(m) = s.requested {
            attrs.push(("gen_ai.request.model", Value::Str(m.to_owned())));
        }
        if ok {
            if let Some(m) = s.served {
                attrs.push(("gen_ai.response.model", Value::Str(m.to_owned())));
            }
        }
        tokens(&mut attrs, s.tokens);
        attrs.push(("http.request.method", Value::Static("POST")));
        attrs.push(("http.route", Value::Static(self.route)));
        attrs.push(("http.response.status_code", Value::Int(i64::from(s.status))));
        attrs.push(("lumen.request_id", Value::Str(s.request_id.to_owned())));
        attrs.push(("lumen.attempts", Value::Int(last as i64)));
        if let Some(b) = s.backend {
            attrs.push(("lumen.backend", Value::Str(b.to_owned())));
        }
        if let (Some(r), Some(m)) = (s.requested, s.served) {
            if r != m {
                attrs.push(("lumen.fallback", Value::Bool(true)));
                attrs.push(("lumen.served_model", Value::Str(m.to_owned())));
            }
        }
        attrs.push(("lumen.outcome", Value::Str(s.outcome.to_owned())));
        if let Some(e) = &error {
            attrs.push(("error.type", Value::Str(e.clone())));
        }
        let name = match s.requested {
            Some(m) => format!("{} {m}", self.operation),
            None => self.operation.to_owned(),
        };
        self.tracer.submit(Span {
            trace_id,
            span_id: parent,
            parent: self.parent.map(u64::to_be_bytes),
            flags: self.flags,
            name,
            kind: Kind::Server,
            start_ns: self.start_ns,
            end_ns: self.nanos(now),
            attrs,
            events: std::mem::take(&mut self.events),
            error,
        });
    }
}

fn tokens(attrs: &mut Vec<Attr>, tokens: Option<(u64, u64)>) {
    if let Some((input, output)) = tokens {
        attrs.push(("gen_ai.usage.input_tokens", Value::Int(input as i64)));
        attrs.push(("gen_ai.usage.output_tokens", Value::Int(output as i64)));
    }
}
