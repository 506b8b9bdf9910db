//! The server's observer of the core: Prometheus counters and histograms, and the request's
//! access record (through its task-local, since the core reports events in the request's task).

use std::sync::Arc;

use lumen_gateway::{Event, Observer};

use crate::access;
use crate::metrics::{
    BackendReason, BackendResult, ContinuationLabels, FallbackLabels, KeyLabel, KeyTokenLabels,
    KindLabel, Metrics, OpLabel, ReasonLabel, ResultLabel,
};

pub(crate) struct ServerObserver {
    metrics: Arc<Metrics>,
    /// Write the per-key counters (`accounting.key_metrics`).
    key_metrics: bool,
}

impl ServerObserver {
    pub(crate) fn new(metrics: Arc<Metrics>, key_metrics: bool) -> Self {
        Self {
            metrics,
            key_metrics,
        }
    }
}

impl Observer for ServerObserver {
    fn event(&self, event: &Event<'_>) {
        let m = &self.metrics;
        match event {
            Event::Resolved { model } => access::note(|a| a.requested = Some((*model).to_owned())),
            Event::Queued { waited } => {
                Metrics::observe(&m.queue_wait, *waited);
                access::note(|a| a.waited += *waited);
            }
            Event::Rejected { reason } => {
                m.rejected
                    .get_or_create(&ReasonLabel {
                        reason: (*reason).to_owned(),
                    })
                    .inc();
            }
            Event::AttemptStarted {
                attempt,
                model,
                passthrough,
                backend,
            } => access::note(|a| {
                if let Some(t) = a.trace.as_deref_mut() {
                    t.attempt_started(*attempt, model, backend);
                }
                a.model = Some((*model).to_owned());
                a.passthrough = *passthrough;
                a.backend = Some((*backend).to_owned());
                a.attempts = *attempt;
            }),
            Event::BackendQueued { waited } => access::note(|a| a.waited += *waited),
            Event::AttemptFinished {
                backend,
                elapsed,
                error,
            } => {
                access::note(|a| {
                    a.upstream += *elapsed;
                    if let Some(t) = a.trace.as_deref_mut() {
                        t.attempt_finished(error.map(|e| e.kind()));
                    }
                });
                if let Some(e) = error {
                    m.attempt_errors
                        .get_or_create(&BackendReason {
                            backend: (*backend).to_owned(),
                            reason: e.kind().to_owned(),
                        })
                        .inc();
                }
            }
            Event::Timeout { kind } => {
                m.timeouts
                    .get_or_create(&KindLabel {
                        kind: kind.as_str().to_owned(),
                    })
                    .inc();
            }
            Event::Retrying {
                backend,
                reason,
                delay,
            } => {
                m.retries
                    .get_or_create(&BackendReason {
                        backend: (*backend).to_owned(),
                        reason: (*reason).to_owned(),
                    })
                    .inc();
                access::note(|a| {
                    a.waited += *delay;
                    if let Some(t) = a.trace.as_deref_mut() {
                        t.retrying(*delay);
                    }
                });
            }
            Event::Fallback { from, to, reason } => {
                access::note(|a| {
                    if let Some(t) = a.trace.as_deref_mut() {
                        t.fallback(from, to, reason);
                    }
                });
                m.fallbacks
                    .get_or_create(&FallbackLabels {
                        from: (*from).to_owned(),
                        to: (*to).to_owned(),
                        reason: (*reason).to_owned(),
                    })
                    .inc();
            }
            Event::Continued {
                model,
                passthrough,
                to,
                reason,
                ..
            } => {
                m.continuations
                    .get_or_create(&ContinuationLabels {
                        model: if *passthrough { "passthrough" } else { model }.to_owned(),
                        reason: (*reason).to_owned(),
                        outcome: if to.is_some() { "resumed" } else { "failed" }.to_owned(),
                    })
                    .inc();
            }
            Event::RetryBudgetExhausted { .. } => {
                m.retry_budget_exhausted.inc();
            }
            Event::HealthChecked { backend, ok } => {
                m.health_checks
                    .get_or_create(&BackendResult {
                        backend: (*backend).to_owned(),
                        result: if *ok { "ok" } else { "failed" }.to_owned(),
                    })
                    .inc();
            }
            Event::Accounted { key, counts } if self.key_metrics => {
                m.key_requests
                    .get_or_create(&KeyLabel {
                        key: (*key).to_owned(),
                    })
                    .inc_by(counts.requests);
                for (kind, n) in [
                    ("input", counts.input_tokens),
                    ("output", counts.output_tokens),
                ] {
                    if n > 0 {
                        m.key_tokens
                            .get_or_create(&KeyTokenLabels {
                                key: (*key).to_owned(),
                                token_type: kind.to_owned(),
                            })
                            .inc_by(n);
                    }
                }
            }
            Event::StoreFailed { op } => {
                m.redis_errors
                    .get_or_create(&OpLabel {
                        op: (*op).to_owned(),
                    })
                    .inc();
            }
            Event::RateLimited { reason } => {
                m.rate_limited
                    .get_or_create(&ReasonLabel {
                        reason: reason.replace(' ', "_"),
                    })
                    .inc();
            }
            Event::Cache { result } => {
                m.cache
                    .get_or_create(&ResultLabel {
                        result: (*result).to_owned(),
                    })
                    .inc();
                access::note(|a| a.cache = result);
            }
            // The access record closes streams itself (time to first token, tokens, outcome).
            _ => {}
        }
    }
}
