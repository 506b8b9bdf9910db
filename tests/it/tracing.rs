//! OpenTelemetry traces: a real OTLP/HTTP receiver on 127.0.0.1:0 decodes what Lumen exports
//! with the official protobuf definitions (`opentelemetry-proto`), and the tests check the
//! spans, their parents and their attributes; a dead and a stalled collector must cost requests
//! nothing, with every span that could not be sent counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lumen_server::Gateway;
use lumen_server::config::{
    BackendConfig, HealthConfig, LumenConfig, OtelConfig, RetryConfig, Sampler,
};
use lumen_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector: every span it receives, with its resource's `service.name`.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let services = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (s, sv, p) = (spans.clone(), services.clone(), paths.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (s, sv, p) = (s.clone(), sv.clone(), p.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (s, sv, p) = (s.clone(), sv.clone(), p.clone());
                        async move {
                            assert_eq!(req.method(), http::Method::POST);
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            p.lock().unwrap().push(req.uri().path().to_owned());
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            for rs in export.resource_spans {
                                let service = rs
                                    .resource
                                    .iter()
                                    .flat_map(|r| &r.attributes)
                                    .find(|kv| kv.key == "service.name")
                                    .and_then(|kv| kv.value.as_ref()?.value.clone());
                                if let Some(Value::StringValue(name)) = service {
                                    sv.lock().unwrap().push(name);
                                }
                                for ss in rs.scope_spans {
                                    assert_eq!(ss.scope.as_ref().unwrap().name, "lumen");
                                    s.lock().unwrap().extend(ss.spans);
                                }
                            }
                            // An empty ExportTraceServiceResponse.
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Self {
            url: format!("http://{addr}/v1/traces"),
            spans,
            services,
            paths,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A span's attributes as strings (ints and bools formatted), for compact assertions.
fn attrs(s: &Span) -> HashMap<String, String> {
    s.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(Value::StringValue(v)) => v,
                Some(Value::IntValue(i)) => format!("int:{i}"),
                Some(Value::BoolValue(b)) => format!("bool:{b}"),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn otel(endpoint: &str) -> OtelConfig {
    OtelConfig {
        endpoint: Some(endpoint.to_owned()),
        service_name: "lumen-test".to_owned(),
        schedule_delay: Duration::from_millis(1),
        ..OtelConfig::default()
    }
}

/// Lumen from a config (so attempt spans know each engine's address), health checks off.
async fn lumen(urls: &[&str], otel: OtelConfig, retry: RetryConfig) -> Lumen {
    let cfg = LumenConfig {
        backends: urls
            .iter()
            .map(|u| BackendConfig {
                url: (*u).to_owned(),
                ..BackendConfig::default()
            })
            .collect(),
        health: HealthConfig {
            enabled: false,
            ..HealthConfig::default()
        },
        retry,
        otel,
        // The first attempt meets the first backend (whose names come from random ports, so
        // a hash placement would pick either).
        routing: lumen_governance::GovernanceConfig {
            policy: lumen_governance::Policy::RoundRobin,
            ..lumen_governance::GovernanceConfig::default()
        },
        ..LumenConfig::default()
    };
    Lumen::start(Gateway::from_config(&cfg).unwrap()).await
}

fn chat(model: &str, extra: &str) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}],"max_tokens":4{extra}}}"#
    )
}

async fn post_with(url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    send(http::Method::POST, url, body, headers).await
}

fn by_kind(spans: &[Span], kind: SpanKind) -> Vec<Span> {
    let mut v: Vec<Span> = spans
        .iter()
        .filter(|s| s.kind == kind as i32)
        .cloned()
        .collect();
    v.sort_by_key(|s| s.start_time_unix_nano);
    v
}

fn port(url: &str) -> String {
    format!("int:{}", url.rsplit(':').next().unwrap())
}

#[tokio::test]
async fn a_request_and_its_attempt_join_the_callers_trace() {
    let collector = Collector::start().await;
    let (a, sa) = sim(&["m1"]).await;
    let lumen = lumen(&[&a], otel(&collector.url), RetryConfig::default()).await;
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let r = post_with(
        &lumen.url("/v1/chat/completions"),
        &chat("m1", ""),
        &[("traceparent", &traceparent), ("x-request-id", "req-1")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    lumen.gateway.flush_traces().await;

    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = &by_kind(&spans, SpanKind::Server)[0];
    let client = &by_kind(&spans, SpanKind::Client)[0];
    assert_eq!(hex(&server.trace_id), TRACE, "the caller's trace");
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT,
        "the caller's span is the parent"
    );
    assert_eq!(hex(&client.trace_id), TRACE);
    assert_eq!(
        client.parent_span_id, server.span_id,
        "attempt under the request"
    );
    assert_ne!(client.span_id, server.span_id);
    assert_eq!(server.name, "chat m1");
    assert_eq!(client.name, "chat m1");
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
    assert!(client.start_time_unix_nano <= client.end_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    // Sampled flag, and "parent is remote" known (bit 8) and set (bit 9) for the server span.
    assert_eq!(server.flags, 0x301);
    assert_eq!(client.flags, 0x101);

    // The engine's parent span is Lumen's request span.
    let forwarded = sa
        .records()
        .iter()
        .rfind(|r| r.method == "POST")
        .and_then(|r| r.header("traceparent").map(str::to_owned))
        .unwrap();
    assert_eq!(forwarded, format!("00-{TRACE}-{}-01", hex(&server.span_id)));

    let usage = &r.json()["usage"];
    let (input, output) = (
        format!("int:{}", usage["prompt_tokens"]),
        format!("int:{}", usage["completion_tokens"]),
    );
    let s = attrs(server);
    assert_eq!(s["gen_ai.operation.name"], "chat");
    assert_eq!(s["gen_ai.request.model"], "m1");
    assert_eq!(s["gen_ai.response.model"], "m1");
    assert_eq!(s["gen_ai.usage.input_tokens"], input);
    assert_eq!(s["gen_ai.usage.output_tokens"], output);
    assert_eq!(s["http.route"], "/v1/chat/completions");
    assert_eq!(s["http.response.status_code"], "int:200");
    assert_eq!(s["lumen.request_id"], "req-1");
    assert_eq!(s["lumen.attempts"], "int:1");
    assert!(!s.contains_key("error.type"), "{s:?}");
    assert!(!s.contains_key("lumen.fallback"), "{s:?}");
    assert_eq!(
        server.status.as_ref().map_or(0, |s| s.code),
        StatusCode::Unset as i32
    );

    let c = attrs(client);
    assert_eq!(c["gen_ai.operation.name"], "chat");
    assert_eq!(c["gen_ai.request.model"], "m1");
    assert_eq!(c["gen_ai.response.model"], "m1");
    assert_eq!(c["gen_ai.usage.input_tokens"], input);
    assert_eq!(c["gen_ai.usage.output_tokens"], output);
    assert_eq!(c["server.address"], "127.0.0.1");
    assert_eq!(c["server.port"], port(&a));
    assert_eq!(c["lumen.attempt"], "int:1");
    assert!(!c.contains_key("error.type"), "{c:?}");

    let services = collector.services.lock().unwrap().clone();
    assert!(
        !services.is_empty() && services.iter().all(|s| s == "lumen-test"),
        "{services:?}"
    );
    let paths = collector.paths.lock().unwrap().clone();
    assert!(paths.iter().all(|p| p == "/v1/traces"), "{paths:?}");
}

#[tokio::test]
async fn a_retried_attempt_is_a_failed_sibling_and_a_stream_span_lasts_to_its_end() {
    let collector = Collector::start().await;
    let (a, sa) = sim(&["m1"]).await;
    let (b, _sb) = sim(&["m1"]).await;
    let retry = RetryConfig {
        max_attempts: Some(2),
        base_ms: Some(1),
        step_ms: Some(0),
        ..Default::default()
    };
    let lumen = lumen(&[&a, &b], otel(&collector.url), retry).await;
    sa.set_faults(Faults {
        fail_next: 1,
        fail_status: Some(502),
        ..Faults::default()
    });
    // No traceparent: Lumen starts the trace, and its span is a root.
    let r = post(
        &lumen.url("/v1/chat/completions"),
        &chat("m1", r#","stream":true"#),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    lumen.gateway.flush_traces().await;

    let spans = collector.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = &by_kind(&spans, SpanKind::Server)[0];
    let attempts = by_kind(&spans, SpanKind::Client);
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(server.flags, 0x01);
    for a in &attempts {
        assert_eq!(a.trace_id, server.trace_id);
        assert_eq!(a.parent_span_id, server.span_id);
    }
    let (first, second) = (attrs(&attempts[0]), attrs(&attempts[1]));
    assert_eq!(first["lumen.attempt"], "int:1");
    assert_eq!(first["error.type"], "upstream_5xx");
    assert_eq!(first["server.port"], port(&a));
    assert!(first.contains_key("lumen.retry.delay_ms"), "{first:?}");
    assert!(!first.contains_key("gen_ai.response.model"));
    let status = attempts[0].status.as_ref().unwrap();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "upstream_5xx");
    assert!(attempts[0].end_time_unix_nano <= attempts[1].start_time_unix_nano);

    assert_eq!(second["lumen.attempt"], "int:2");
    assert_eq!(second["server.port"], port(&b));
    assert!(!second.contains_key("error.type"), "{second:?}");
    assert_eq!(second["gen_ai.usage.output_tokens"], "int:4");
    assert!(second.contains_key("gen_ai.usage.input_tokens"));
    // The committed attempt lasts until the stream ends, with the request.
    assert_eq!(attempts[1].end_time_unix_nano, server.end_time_unix_nano);

    let s = attrs(server);
    assert_eq!(s["lumen.attempts"], "int:2");
    assert_eq!(s["gen_ai.usage.output_tokens"], "int:4");
    assert_eq!(s["lumen.outcome"], "ok");
    assert!(!s.contains_key("error.type"), "{s:?}");
    // The trace id in the access log and the one exported agree with what the engine got.
    let forwarded: Vec<String> = _sb
        .records()
        .iter()
        .filter(|r| r.method == "POST")
        .filter_map(|r| r.header("traceparent").map(str::to_owned))
        .collect();
    assert_eq!(
        forwarded,
        [format!(
            "00-{}-{}-01",
            hex(&server.trace_id),
            hex(&server.span_id)
        )]
    );
}

#[tokio::test]
async fn errors_carry_their_type_on_the_request_and_the_attempt() {
    let collector = Collector::start().await;
    let (a, sa) = sim(&["m1"]).await;
    let retry = RetryConfig {
        max_attempts: Some(1),
        ..Default::default()
    };
    let lumen = lumen(&[&a], otel(&collector.url), retry).await;
    let url = lumen.url("/v1/chat/completions");

    // Refused before any engine is asked: one span, no attempts.
    let r = post(&url, &chat("gpt-9", "")).await;
    assert_eq!(r.status, 404);
    // The engine fails and retries are off.
    sa.set_faults(Faults {
        fail_next: 1,
        fail_status: Some(500),
        ..Faults::default()
    });
    let r = post(&url, &chat("m1", "")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let code = r.json()["error"]["code"].as_str().unwrap().to_owned();
    lumen.gateway.flush_traces().await;

    let spans = collector.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let servers = by_kind(&spans, SpanKind::Server);
    let unknown = attrs(&servers[0]);
    assert_eq!(unknown["error.type"], "model_not_found");
    assert_eq!(unknown["http.response.status_code"], "int:404");
    assert_eq!(unknown["lumen.attempts"], "int:0");
    assert_eq!(
        unknown["gen_ai.request.model"], "gpt-9",
        "what the caller asked for"
    );
    assert!(
        !unknown.contains_key("gen_ai.response.model"),
        "{unknown:?}"
    );
    assert_eq!(servers[0].name, "chat gpt-9");
    let st = servers[0].status.as_ref().unwrap();
    assert_eq!(
        (st.code, st.message.as_str()),
        (StatusCode::Error as i32, "model_not_found")
    );

    let failed = attrs(&servers[1]);
    assert_eq!(failed["error.type"], code);
    assert_eq!(failed["http.response.status_code"], "int:502");
    assert_eq!(failed["gen_ai.request.model"], "m1");
    assert!(!failed.contains_key("gen_ai.response.model"), "{failed:?}");
    let attempt = &by_kind(&spans, SpanKind::Client)[0];
    assert_eq!(attempt.parent_span_id, servers[1].span_id);
    assert_eq!(attrs(attempt)["error.type"], "upstream_5xx");
    assert_eq!(
        attempt.status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );
}

#[tokio::test]
async fn an_unsampled_caller_gets_no_spans_and_passes_its_decision_on() {
    let collector = Collector::start().await;
    let (a, sa) = sim(&["m1"]).await;
    let lumen = lumen(&[&a], otel(&collector.url), RetryConfig::default()).await;
    let url = lumen.url("/v1/chat/completions");
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    assert_eq!(
        post_with(&url, &chat("m1", ""), &[("traceparent", &unsampled)])
            .await
            .status,
        200
    );
    let forwarded = sa
        .records()
        .iter()
        .rfind(|r| r.method == "POST")
        .and_then(|r| r.header("traceparent").map(str::to_owned))
        .unwrap();
    assert!(forwarded.starts_with(&format!("00-{TRACE}-")) && forwarded.ends_with("-00"));
    // A sampled request after it: its spans arrive, the unsampled trace's never do.
    assert_eq!(post(&url, &chat("m1", "")).await.status, 200);
    lumen.gateway.flush_traces().await;
    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| hex(&s.trace_id) != TRACE));

    // `always_off` as the root sampler: Lumen starts traces unsampled, and says so upstream.
    let collector = Collector::start().await;
    let off = OtelConfig {
        sampler: Sampler {
            parent_based: true,
            ratio: 0.0,
        },
        ..otel(&collector.url)
    };
    let lumen = self::lumen(&[&a], off, RetryConfig::default()).await;
    assert_eq!(
        post(&lumen.url("/v1/chat/completions"), &chat("m1", ""))
            .await
            .status,
        200
    );
    let forwarded = sa
        .records()
        .iter()
        .rfind(|r| r.method == "POST")
        .and_then(|r| r.header("traceparent").map(str::to_owned))
        .unwrap();
    assert!(forwarded.ends_with("-00"), "{forwarded}");
    lumen.gateway.flush_traces().await;
    assert!(collector.spans().is_empty());
}

/// Who decides whether a request is recorded, for each sampler the `OTEL_*` variables can
/// name, against the real receiver: a parent-based sampler follows a valid `traceparent`'s
/// sampled flag, a plain one does not, so no caller can force export past `always_off` or
/// `traceidratio` at 0. The `traceparent` sent to the engine carries the same decision. A
/// ratio given to a sampler that reads none is reported (it was ignored silently, leaving
/// `parentbased_always_on` to record every caller that asked).
#[tokio::test]
async fn the_configured_sampler_decides_and_only_parent_based_ones_follow_the_caller() {
    /// The variables, then whether a request is recorded with a sampled `traceparent`, an
    /// unsampled one, and none.
    type Row = (&'static [(&'static str, &'static str)], [bool; 3]);
    const RATIO: &str = "OTEL_TRACES_SAMPLER_ARG";
    const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    let table: &[Row] = &[
        (&[(SAMPLER, "traceidratio"), (RATIO, "0.0")], [false; 3]),
        (&[(SAMPLER, "always_off")], [false; 3]),
        (&[(SAMPLER, "traceidratio"), (RATIO, "1.0")], [true; 3]),
        (&[(SAMPLER, "always_on")], [true; 3]),
        (
            &[(SAMPLER, "parentbased_traceidratio"), (RATIO, "0.0")],
            [true, false, false],
        ),
        (&[(SAMPLER, "parentbased_always_off")], [true, false, false]),
        (
            &[(SAMPLER, "parentbased_traceidratio"), (RATIO, "1.0")],
            [true, false, true],
        ),
        (&[], [true, false, true]),
        (&[(RATIO, "0.0")], [true, false, true]),
    ];
    let collector = Collector::start().await;
    let (a, sa) = sim(&["m1"]).await;
    for (row, (vars, want)) in table.iter().enumerate() {
        let mut env: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.push((
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".to_owned(),
            collector.url.clone(),
        ));
        env.push(("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "1".to_owned()));
        let cfg = OtelConfig::from_vars(env);
        let ignored_ratio = vars.len() == 1 && vars[0].0 == RATIO;
        assert_eq!(
            cfg.warnings.len(),
            usize::from(ignored_ratio),
            "{vars:?}: {:?}",
            cfg.warnings
        );
        let lumen = lumen(&[&a], cfg, RetryConfig::default()).await;
        let url = lumen.url("/v1/chat/completions");
        for (col, flags) in ["01", "00", ""].into_iter().enumerate() {
            let trace = format!("{:032x}", 0xabc0 + row * 4 + col);
            let traceparent = format!("00-{trace}-{PARENT}-{flags}");
            let headers: &[(&str, &str)] = if flags.is_empty() {
                &[]
            } else {
                &[("traceparent", &traceparent)]
            };
            let before = collector.spans().len();
            assert_eq!(post_with(&url, &chat("m1", ""), headers).await.status, 200);
            lumen.gateway.flush_traces().await;
            let spans = collector.spans();
            let recorded = spans.len() > before;
            let case = format!("{vars:?} with traceparent flags {flags:?}");
            assert_eq!(recorded, want[col], "{case}");
            let forwarded = sa
                .records()
                .iter()
                .rfind(|r| r.method == "POST")
                .and_then(|r| r.header("traceparent").map(str::to_owned))
                .unwrap();
            let flag = if want[col] { "-01" } else { "-00" };
            assert!(forwarded.ends_with(flag), "{case}: sent on {forwarded}");
            if recorded && !flags.is_empty() {
                assert!(
                    spans[before..].iter().all(|s| hex(&s.trace_id) == trace),
                    "{case}: the caller's trace"
                );
            }
        }
    }
}

fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// Sends `n` requests with a generous guard: a request that waited on the exporter would
/// hang here (the stalled collector never answers), not merely run slow.
async fn requests_all_succeed(lumen: &Lumen, n: usize) {
    let url = lumen.url("/v1/chat/completions");
    let all = async {
        for _ in 0..n {
            assert_eq!(post(&url, &chat("m1", "")).await.status, 200);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("requests waited on the trace exporter");
}

#[tokio::test]
async fn a_dead_collector_costs_requests_nothing_and_every_lost_span_is_counted() {
    // A port that was bound and released: connections are refused.
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (a, _sa) = sim(&["m1"]).await;
    let cfg = OtelConfig {
        max_queue_size: 4,
        max_export_batch_size: 2,
        ..otel(&format!("http://{dead}/v1/traces"))
    };
    let lumen = lumen(&[&a], cfg, RetryConfig::default()).await;
    requests_all_succeed(&lumen, 20).await;
    lumen.gateway.flush_traces().await;
    let m = lumen.gateway.render_metrics();
    let failed = sample(
        &m,
        r#"lumen_trace_spans_dropped_total{reason="export_failed"}"#,
    );
    let full = sample(
        &m,
        r#"lumen_trace_spans_dropped_total{reason="queue_full"}"#,
    );
    assert!(failed > 0, "{m}");
    assert_eq!(
        failed + full,
        40,
        "two spans per request, all lost and counted: {m}"
    );
    assert_eq!(sample(&m, "lumen_trace_spans_exported_total"), 0);
}

#[tokio::test]
async fn a_stalled_collector_fills_the_queue_then_spans_are_dropped_not_waited_for() {
    // Accepts connections and never reads or answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            h.lock().unwrap().push(sock);
        }
    });
    let (a, _sa) = sim(&["m1"]).await;
    let cfg = OtelConfig {
        max_queue_size: 4,
        max_export_batch_size: 2,
        timeout: Duration::from_secs(3600),
        ..otel(&format!("http://{stalled}/v1/traces"))
    };
    let lumen = lumen(&[&a], cfg, RetryConfig::default()).await;
    requests_all_succeed(&lumen, 20).await;
    let m = lumen.gateway.render_metrics();
    let full = sample(
        &m,
        r#"lumen_trace_spans_dropped_total{reason="queue_full"}"#,
    );
    // 40 spans: at most 4 queued and at least 1, at most 2, in the export that never ends.
    assert!((34..=39).contains(&full), "{full}: {m}");
    assert_eq!(sample(&m, "lumen_trace_spans_exported_total"), 0);
    assert!(!held.lock().unwrap().is_empty(), "the exporter did connect");
}

#[tokio::test]
async fn a_flush_sends_queued_spans_without_waiting_for_the_batch_timer() {
    let collector = Collector::start().await;
    let (a, _sa) = sim(&["m1"]).await;
    let cfg = OtelConfig {
        // Far longer than the test: only the flush can send these spans.
        schedule_delay: Duration::from_secs(3600),
        ..otel(&collector.url)
    };
    let lumen = lumen(&[&a], cfg, RetryConfig::default()).await;
    assert_eq!(
        post(&lumen.url("/v1/chat/completions"), &chat("m1", ""))
            .await
            .status,
        200
    );
    tokio::time::timeout(Duration::from_secs(30), lumen.gateway.flush_traces())
        .await
        .expect("the flush waited for the batch timer");
    assert_eq!(collector.spans().len(), 2);
}
