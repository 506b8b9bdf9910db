//! The per-request record behind the access log line and the request metrics.
//!
//! The HTTP layer opens it, the gateway's attempt loop fills in what it learns (backend,
//! attempts, time spent waiting on engines) through a task-local, and it is closed when the
//! response is complete — for a stream, when the stream ends, however it ends.

use std::cell::RefCell;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Metrics;

tokio::task_local! {
    static CURRENT: RefCell<Access>;
}

#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub start: Instant,
    pub request_id: String,
    pub trace_id: String,
    pub endpoint: &'static str,
    /// The public model, once routed ("unknown" otherwise, to keep label cardinality bounded).
    pub model: Option<String>,
    /// The model is a passthrough name, chosen by the caller: logged, but never a label.
    pub passthrough: bool,
    /// The resolved model the caller asked for; `model` is the one that served (they differ
    /// after a fallback).
    pub requested: Option<String>,
    pub backend: Option<String>,
    pub attempts: u32,
    /// Time spent waiting on engine calls (for streams: until the first chunk).
    pub upstream: Duration,
    /// Deliberate waits: retry backoff and admission queueing.
    pub waited: Duration,
    pub ttft: Option<Duration>,
    pub tokens: Option<(u64, u64)>,
    /// `tokens` is Lumen's estimate (a stream whose usage never arrived: the prompt estimate
    /// and the output it relayed), not the engine's count.
    pub tokens_estimated: bool,
    /// Every backend that served a part of a continued stream, in order (`backend` is the
    /// last, which finished it).
    pub backends: Option<String>,
    /// Times a broken stream was continued on another engine.
    pub continuations: u32,
    /// What the response cache did for this request: `bypass`, `hit`, `miss` or `refresh`.
    pub cache: &'static str,
    /// The request's spans while it runs, when it is sampled and trace export is on.
    pub trace: Option<Box<crate::otel::RequestTrace>>,
    /// A request to no endpoint: its method and path (the path cut at [`MAX_ROUTE_BYTES`]),
    /// so an operator sees what a client tried (Claude Code's `HEAD /`, a wrong base URL).
    /// Logged only, never a metric label.
    pub unknown_route: Option<(String, String)>,
}

/// How much of an unknown request's path the access line keeps: enough to tell a wrong base
/// URL, not a client's 64 KB URL in every line.
pub(crate) const MAX_ROUTE_BYTES: usize = 256;

/// The method and path for [`Access::unknown_route`], the path cut at a character boundary.
pub(crate) fn unknown_route(method: &str, path: &str) -> (String, String) {
    let mut end = path.len().min(MAX_ROUTE_BYTES);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < path.len() { "…" } else { "" };
    (method.to_owned(), format!("{}{cut}", &path[..end]))
}

impl Default for Access {
    /// An empty record (no allocation): what is left in the task-local once the record is
    /// taken out at the end of a request.
    fn default() -> Self {
        Self::new(String::new(), String::new(), "unknown")
    }
}

impl Access {
    pub fn new(request_id: String, trace_id: String, endpoint: &'static str) -> Self {
        Self {
            start: Instant::now(),
            request_id,
            trace_id,
            endpoint,
            model: None,
            passthrough: false,
            requested: None,
            backend: None,
            attempts: 0,
            upstream: Duration::ZERO,
            waited: Duration::ZERO,
            ttft: None,
            tokens: None,
            tokens_estimated: false,
            backends: None,
            continuations: 0,
            cache: "bypass",
            trace: None,
            unknown_route: None,
        }
    }

    /// Runs `fut` with this record as the current request's. Not an `async fn`, which would
    /// hold a second, dead copy of the record beside the scope's for as long as `fut` runs.
    pub fn scope<F: std::future::Future>(
        self,
        fut: F,
    ) -> impl std::future::Future<Output = (F::Output, Access)> {
        use futures::FutureExt;
        CURRENT.scope(
            RefCell::new(self),
            fut.map(|out| (out, CURRENT.with(|c| c.take()))),
        )
    }

    /// Lumen's own time so far: elapsed minus engine waits and deliberate waits.
    pub fn overhead(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(self.upstream)
            .saturating_sub(self.waited)
    }

    /// The model as a metric label: from configuration or discovery only. Every passthrough
    /// name shares one label, so callers cannot grow the label set (or a scrape) at will.
    pub fn model_label(&self) -> &str {
        match &self.model {
            Some(_) if self.passthrough => "passthrough",
            Some(m) => m,
            None => "unknown",
        }
    }

    /// Records the request metrics, writes the access line and queues the request's spans.
    pub fn finish(&mut self, metrics: &Metrics, status: u16, outcome: &str, overhead: Duration) {
        if let Some(t) = self.trace.take() {
            t.finish(crate::otel::Summary {
                request_id: &self.request_id,
                requested: self.requested.as_deref(),
                served: self.model.as_deref(),
                backend: self.backend.as_deref(),
                status,
                outcome,
                tokens: self.tokens,
                streamed: self.ttft.is_some(),
            });
        }
        let model = self.model.as_deref().unwrap_or("unknown");
        let backend = self.backend.as_deref().unwrap_or("none");
        let duration = self.start.elapsed();
        let h = metrics.handles(self.model_label(), backend, self.endpoint, status);
        h.requests.inc();
        Metrics::observe(&h.duration, duration);
        Metrics::observe(&metrics.overhead, overhead);
        if let Some(t) = self.ttft {
            Metrics::observe(&h.ttft, t);
        }
        if let Some((input, output)) = self.tokens {
            h.tokens_in.inc_by(input);
            h.tokens_out.inc_by(output);
        }
        tracing::info!(
            target: "lumen::access",
            id = %lumen_gateway::Text(&self.request_id),
            trace_id = %lumen_gateway::Text(&self.trace_id),
            endpoint = self.endpoint,
            model = %lumen_gateway::Text(model),
            requested_model = %lumen_gateway::Text(self.requested.as_deref().unwrap_or(model)),
            backend = %lumen_gateway::Text(backend),
            status,
            outcome,
            duration_ms = duration.as_secs_f64() * 1e3,
            ttft_ms = self.ttft.map(|t| t.as_secs_f64() * 1e3),
            input_tokens = self.tokens.map(|t| t.0),
            output_tokens = self.tokens.map(|t| t.1),
            tokens_estimated = self.tokens_estimated,
            backends = self.backends.as_deref().map(|b| tracing::field::display(lumen_gateway::Text(b))),
            attempts = self.attempts,
            continuations = self.continuations,
            overhead_us = overhead.as_micros() as u64,
            cache = self.cache,
            method = self.unknown_route.as_ref().map(|r| tracing::field::display(lumen_gateway::Text(&r.0))),
            path = self.unknown_route.as_ref().map(|r| tracing::field::display(lumen_gateway::Text(&r.1))),
            "access"
        );
    }
}

/// Updates the current request's record, if there is one (embedders calling the gateway
/// directly have none).
pub(crate) fn note(f: impl FnOnce(&mut Access)) {
    let _ = CURRENT.try_with(|c| f(&mut c.borrow_mut()));
}
