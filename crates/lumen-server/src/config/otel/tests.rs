use super::*;

fn from(vars: &[(&str, &str)]) -> OtelConfig {
    OtelConfig::from_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
}

#[test]
fn nothing_set_means_no_export() {
    let cfg = from(&[("OTEL_SERVICE_NAME", "x"), ("LUMEN_OTEL", "y")]);
    assert_eq!(cfg.endpoint, None);
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(cfg.sampler, Sampler::default());
}

#[test]
fn the_base_endpoint_gets_the_traces_path_and_the_signal_endpoint_is_used_as_is() {
    let cfg = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
    assert_eq!(
        cfg.endpoint.as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    let cfg = from(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://otlp.example/api/traces",
        ),
    ]);
    assert_eq!(
        cfg.endpoint.as_deref(),
        Some("https://otlp.example/api/traces")
    );
    // An empty value is unset.
    let cfg = from(&[
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
    ]);
    assert_eq!(cfg.endpoint.as_deref(), Some("http://c:4318/v1/traces"));
}

#[test]
fn export_can_be_switched_off_and_bad_urls_are_reported() {
    let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    assert_eq!(from(&[on, ("OTEL_SDK_DISABLED", "true")]).endpoint, None);
    assert_eq!(from(&[on, ("OTEL_TRACES_EXPORTER", "none")]).endpoint, None);
    let cfg = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
    assert_eq!(cfg.endpoint, None);
    assert!(
        cfg.warnings[0].contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{:?}",
        cfg.warnings
    );
}

#[test]
fn unsupported_protocols_warn_and_fall_back_to_http_protobuf() {
    let cfg = from(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ]);
    assert!(cfg.endpoint.is_some());
    assert!(
        cfg.warnings[0].contains("http/protobuf"),
        "{:?}",
        cfg.warnings
    );
    let cfg = from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
    assert!(cfg.warnings.is_empty());
}

#[test]
fn headers_resource_and_service_name() {
    let cfg = from(&[
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=abc%3D%3D, bad header=1, team=a",
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "team=b"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-resource,k8s.pod.name=lumen-0",
        ),
    ]);
    let headers: Vec<(&str, &str)> = cfg
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(headers, [("x-api-key", "abc=="), ("team", "b")]);
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    assert!(
        cfg.warnings[0].contains("entry 2") && !cfg.warnings[0].contains("bad header"),
        "{:?}",
        cfg.warnings
    );
    assert_eq!(cfg.service_name, "from-resource");
    assert_eq!(
        cfg.resource,
        [("k8s.pod.name".to_owned(), "lumen-0".to_owned())]
    );
    assert!(
        !format!("{cfg:?}").contains("abc"),
        "header values are not printed"
    );
    let cfg = from(&[
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-resource"),
        ("OTEL_SERVICE_NAME", "lumen-eu"),
    ]);
    assert_eq!(cfg.service_name, "lumen-eu", "OTEL_SERVICE_NAME wins");
}

#[test]
fn batching_and_timeouts() {
    let cfg = from(&[
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "500"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
    ]);
    assert_eq!(cfg.timeout, Duration::from_millis(500));
    assert_eq!(cfg.schedule_delay, Duration::from_millis(100));
    assert_eq!(cfg.max_queue_size, 64);
    assert_eq!(
        cfg.max_export_batch_size, 64,
        "a batch never exceeds the queue"
    );
    let cfg = from(&[
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
    ]);
    assert_eq!(cfg.max_queue_size, 2048);
    assert_eq!(cfg.schedule_delay, Duration::from_secs(5));
    assert_eq!(cfg.warnings.len(), 2);
}

#[test]
fn samplers() {
    let s = |name: &str, arg: &str| {
        let cfg = from(&[
            ("OTEL_TRACES_SAMPLER", name),
            ("OTEL_TRACES_SAMPLER_ARG", arg),
        ]);
        (cfg.sampler, cfg.warnings.len())
    };
    let id = [0xffu8; 16];
    let low = {
        let mut t = [0xffu8; 16];
        t[9..].fill(0);
        t
    };
    let (on, _) = s("always_on", "");
    assert!(
        on.sampled(Some(false), || id),
        "always_on ignores the parent"
    );
    let (off, _) = s("always_off", "");
    assert!(!off.sampled(Some(true), || id));
    let (pb, _) = s("parentbased_always_off", "");
    assert!(pb.sampled(Some(true), || id) && !pb.sampled(None, || id));
    let (ratio, w) = s("traceidratio", "0.5");
    assert_eq!(w, 0);
    assert!(ratio.sampled(None, || low), "the last 56 bits decide");
    assert!(!ratio.sampled(None, || id));
    let (pbr, _) = s("parentbased_traceidratio", "0.5");
    assert!(
        pbr.sampled(Some(true), || id),
        "the parent decides when there is one"
    );
    let (bad, w) = s("traceidratio", "2");
    assert_eq!((bad.ratio, w), (1.0, 1));
    let (unknown, w) = s("jaeger_remote", "");
    assert_eq!((unknown, w), (Sampler::default(), 1));
}

/// Warnings are logged at start and printed by `lumen config check`: a header entry written
/// the wrong way is usually a credential (`Authorization: Bearer ...`), and a collector's
/// token is often in its URL. None of it may appear in a warning.
#[test]
fn debug_shows_the_endpoint_redacted() {
    let cfg = from(&[(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "https://token:SECRET@otlp.example/v1/traces?key=SECRET",
    )]);
    assert!(
        cfg.endpoint.as_deref().unwrap().contains("SECRET"),
        "kept for use"
    );
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(
        shown.contains("https://<redacted>@otlp.example/v1/traces"),
        "{shown}"
    );
}

#[test]
fn warnings_never_show_a_header_value_or_the_endpoint_credentials() {
    let cfg = from(&[
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization Bearer SECRET1,Authorization: Bearer SECRET2=x,x-key=SECRET3\u{7f}",
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-token=%0aSECRET4"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "grpc://user:SECRET5@collector:4317?token=SECRET6",
        ),
    ]);
    assert_eq!(cfg.endpoint, None);
    assert!(cfg.headers.is_empty());
    assert_eq!(cfg.warnings.len(), 5, "{:?}", cfg.warnings);
    for w in &cfg.warnings {
        assert!(!w.contains("SECRET"), "{w}");
    }
    assert!(
        cfg.warnings[0].contains("grpc://<redacted>@collector:4317?token=<redacted>"),
        "{:?}",
        cfg.warnings
    );
}

/// `OTEL_TRACES_SAMPLER_ARG=0` alone leaves the default `parentbased_always_on` in charge: every
/// request is recorded and every sampled `traceparent` is followed. The specification has the
/// argument ignored there, and logged; it was ignored silently.
#[test]
fn a_ratio_the_sampler_does_not_read_is_a_warning() {
    let alone = from(&[("OTEL_TRACES_SAMPLER_ARG", "0.0")]);
    assert_eq!(alone.sampler, Sampler::default());
    assert_eq!(alone.warnings.len(), 1, "{:?}", alone.warnings);
    assert!(
        alone.warnings[0].contains("OTEL_TRACES_SAMPLER_ARG=0.0 is ignored")
            && alone.warnings[0].contains("parentbased_always_on"),
        "{:?}",
        alone.warnings
    );
    let off = from(&[
        ("OTEL_TRACES_SAMPLER", "always_off"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ]);
    assert_eq!(off.sampler.ratio, 0.0);
    assert!(
        off.warnings[0].contains("OTEL_TRACES_SAMPLER=always_off takes no argument"),
        "{:?}",
        off.warnings
    );
    for name in ["traceidratio", "parentbased_traceidratio"] {
        let read = from(&[
            ("OTEL_TRACES_SAMPLER", name),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        assert_eq!(read.sampler.ratio, 0.25, "{name}");
        assert!(read.warnings.is_empty(), "{name}: {:?}", read.warnings);
    }
}
