//! The export task: batches spans from the bounded queue and POSTs them to the collector, one
//! request at a time, each under the OTLP timeout. A failed export is dropped and counted, never
//! retried: while it is in flight the queue absorbs new spans, and once that is full they are
//! dropped on the request path instead of waiting (`Tracer::submit`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::proto::{self, Resource, Span};
use crate::config::OtelConfig;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Most of a collector's answer Lumen reads (a partial-success message); the rest is dropped.
const MAX_ANSWER: usize = 64 * 1024;

pub(super) struct Exporter {
    client: Client<Connector, Full<Bytes>>,
    endpoint: http::Uri,
    /// The endpoint as logs show it ([`crate::redact::url`]): a collector's token is often its
    /// user name or a query value.
    shown: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    resource: Resource,
    batch: usize,
    delay: Duration,
    exported: Counter,
    failed: Counter,
    /// Whether the last export failed: a collector that stays down is logged once, not per batch.
    failing: bool,
}

impl Exporter {
    pub(super) fn new(
        endpoint: String,
        cfg: &OtelConfig,
        exported: Counter,
        failed: Counter,
    ) -> Result<Self, String> {
        let shown = crate::redact::url(&endpoint);
        let endpoint: http::Uri = endpoint
            .parse()
            .map_err(|_| format!("`{shown}` is not a URL"))?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.timeout));
        http.enforce_http(false);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
            .or_else(|_| {
                hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider)
            })
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let headers = cfg
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v.expose()).ok()?,
                ))
            })
            .collect();
        let mut resource = vec![("service.name".to_owned(), cfg.service_name.clone())];
        resource.extend(cfg.resource.iter().cloned());
        resource.push(("telemetry.sdk.name".to_owned(), "lumen".to_owned()));
        resource.push(("telemetry.sdk.language".to_owned(), "rust".to_owned()));
        resource.push((
            "telemetry.sdk.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ));
        Ok(Self {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(tls),
            endpoint,
            shown,
            headers,
            timeout: cfg.timeout,
            resource: Resource { attrs: resource },
            batch: cfg.max_export_batch_size.max(1),
            delay: cfg.schedule_delay,
            exported,
            failed,
            failing: false,
        })
    }

    /// Runs until the gateway (every sender) is gone, then exports what is left.
    pub(super) async fn run(
        mut self,
        mut spans: mpsc::Receiver<Span>,
        mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let mut batch: Vec<Span> = Vec::with_capacity(self.batch);
        loop {
            tokio::select! {
                n = spans.recv_many(&mut batch, self.batch) => if n == 0 { break },
                Some(done) = flushes.recv() => {
                    self.drain(&mut spans, &mut batch).await;
                    let _ = done.send(());
                    continue;
                }
            }
            // The first span of a batch waits at most `delay` for the batch to fill, or until
            // a flush asks for everything now.
            let due = tokio::time::Instant::now() + self.delay;
            let mut flushed = None;
            while batch.len() < self.batch {
                let room = self.batch - batch.len();
                tokio::select! {
                    n = spans.recv_many(&mut batch, room) => if n == 0 { break },
                    () = tokio::time::sleep_until(due) => break,
                    Some(done) = flushes.recv() => {
                        flushed = Some(done);
                        break;
                    }
                }
            }
            match flushed {
                Some(done) => {
                    self.drain(&mut spans, &mut batch).await;
                    let _ = done.send(());
                }
                None => self.export(&mut batch).await,
            }
        }
        self.drain(&mut spans, &mut batch).await;
    }

    /// Exports everything queued now, batch by batch.
    async fn drain(&mut self, spans: &mut mpsc::Receiver<Span>, batch: &mut Vec<Span>) {
        loop {
            while batch.len() < self.batch {
                match spans.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.export(batch).await;
        }
    }

    async fn export(&mut self, batch: &mut Vec<Span>) {
        let n = batch.len() as u64;
        let body = proto::export_request(&self.resource, batch);
        batch.clear();
        match tokio::time::timeout(self.timeout, self.send(body)).await {
            Ok(Ok(())) => {
                self.exported.inc_by(n);
                if self.failing {
                    tracing::info!(endpoint = %self.shown, "trace export recovered");
                    self.failing = false;
                }
            }
            Ok(Err(why)) => self.failed(n, &why),
            Err(_) => self.failed(n, &format!("no answer within {:?}", self.timeout)),
        }
    }

    fn failed(&mut self, n: u64, why: &str) {
        self.failed.inc_by(n);
        if !self.failing {
            tracing::warn!(
                endpoint = %self.shown,
                error = %lumen_gateway::Text(why),
                spans = n,
                "trace export failed; spans are dropped until the collector answers \
                 (lumen_trace_spans_dropped_total)"
            );
            self.failing = true;
        }
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let mut req = http::Request::post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let resp = self.client.request(req).await.map_err(|e| {
            // hyper-util's error says "client error (Connect)"; the cause says why.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        })?;
        let status = resp.status();
        // Read (a bounded part of) the answer so the connection can be reused.
        let _ = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {status}"))
        }
    }
}
