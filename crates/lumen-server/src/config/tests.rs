// figment::Jail closures must return figment::Error, which is large by figment's design.
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;

fn load_in(jail: &Jail, file: Option<&str>) -> Result<LumenConfig, ConfigError> {
    let path = file.map(|f| jail.directory().join(f));
    load(path.as_deref(), &Overrides::default())
}

#[test]
fn environment_alone_is_enough() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "LUMEN_BACKENDS",
            "http://127.0.0.1:8000, http://127.0.0.1:8001/v1",
        );
        jail.set_env("LUMEN_SERVER__LISTEN", "0.0.0.0:9000");
        jail.set_env("LUMEN_TIMEOUTS__FIRST_BYTE_MS", "1500");
        jail.set_env("LUMEN_SIM_LISTEN", "127.0.0.1:1"); // the simulator's, ignored here
        let cfg = load_in(jail, None).unwrap();
        assert_eq!(cfg.backends.len(), 2);
        assert_eq!(cfg.backends[1].url, "http://127.0.0.1:8001/v1");
        assert_eq!(cfg.backend_name(0), "127.0.0.1:8000");
        assert_eq!(cfg.server.listen.port(), 9000);
        assert_eq!(cfg.timeouts.first_byte_ms, Some(1500));
        assert_eq!(cfg.timeouts.idle_ms, None, "unset: the profile decides");
        Ok(())
    });
}

#[test]
fn backends_as_tables_from_the_environment() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "LUMEN_BACKENDS",
            r#"[{name="gpu-a", url="http://10.0.0.1:8000", api_key="sk-up", models=["m1"], kind="sglang"}, "http://10.0.0.2:8000"]"#,
        );
        let cfg = load_in(jail, None).unwrap();
        assert_eq!(cfg.backends[0].name.as_deref(), Some("gpu-a"));
        assert_eq!(cfg.backends[0].api_key.as_ref().unwrap().expose(), "sk-up");
        assert_eq!(
            cfg.backends[0].models.as_deref(),
            Some(&["m1".to_owned()][..])
        );
        assert_eq!(cfg.backends[0].kind, EngineKind::Sglang);
        assert_eq!(cfg.backends[1].url, "http://10.0.0.2:8000");
        assert!(
            !format!("{cfg:?}").contains("sk-up"),
            "secrets are redacted in Debug"
        );
        Ok(())
    });
}

#[test]
fn file_then_environment_then_flags() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "lumen.toml",
            r#"
            [server]
            listen = "127.0.0.1:7000"
            max_body_bytes = 1024
            [[backends]]
            name = "a"
            url = "http://127.0.0.1:8000"
            [routing]
            default_model = "m"
            "#,
        )?;
        jail.set_env("LUMEN_SERVER__MAX_BODY_BYTES", "2048");
        let cfg = load_in(jail, Some("lumen.toml")).unwrap();
        assert_eq!(cfg.server.listen.port(), 7000);
        assert_eq!(cfg.server.max_body_bytes, 2048, "env wins over the file");
        assert_eq!(cfg.routing.default_model.as_deref(), Some("m"));
        let flags = Overrides {
            listen: Some("127.0.0.1:7001".parse().unwrap()),
            backends: vec!["http://127.0.0.1:9999".into()],
        };
        let cfg = load(Some(&jail.directory().join("lumen.toml")), &flags).unwrap();
        assert_eq!(cfg.server.listen.port(), 7001, "flags win over everything");
        assert_eq!(cfg.backends[0].url, "http://127.0.0.1:9999");
        Ok(())
    });
}

#[test]
fn errors_name_the_key() {
    Jail::expect_with(|jail| {
        jail.set_env("LUMEN_BACKENDS", "http://127.0.0.1:8000");
        jail.set_env("LUMEN_SERVER__LISTEN", "not-an-address");
        let err = load_in(jail, None).unwrap_err().to_string().to_lowercase();
        assert!(err.contains("server.listen"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.create_file(
            "bad.toml",
            "[server]\nlisten_port = 1\n[[backends]]\nurl = \"http://x:1\"\n",
        )?;
        let err = load_in(jail, Some("bad.toml")).unwrap_err().to_string();
        assert!(err.contains("listen_port"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("LUMEN_TIMEOUTS__IDLE_MS", "-5");
        jail.set_env("LUMEN_BACKENDS", "http://127.0.0.1:8000");
        let err = load_in(jail, None).unwrap_err().to_string().to_lowercase();
        assert!(err.contains("timeouts.idle_ms"), "{err}");
        Ok(())
    });
}

#[test]
fn validation_failures() {
    Jail::expect_with(|jail| {
        let err = load_in(jail, None).unwrap_err().to_string();
        assert!(err.starts_with("backends:"), "{err}");
        jail.set_env(
            "LUMEN_BACKENDS",
            r#"[{name="a", url="http://x:1"}, {name="a", url="http://y:1"}]"#,
        );
        let err = load_in(jail, None).unwrap_err().to_string();
        assert!(err.starts_with("backends[1].name:"), "{err}");
        let err = load_in(jail, Some("missing.toml")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        Ok(())
    });
}

#[test]
fn governance_from_the_environment_alone() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "LUMEN_BACKENDS",
            r#"[{name="a", url="http://a:1", weight=3}, {name="b", url="http://b:1"}]"#,
        );
        jail.set_env("LUMEN_ROUTING__DEFAULT_MODEL", "chat");
        jail.set_env("LUMEN_ROUTING__EXPOSED_MODELS", "[llama, chat]");
        jail.set_env(
            "LUMEN_ROUTING__ALIASES",
            "{chat=\"meta-llama/Llama-3.1-8B-Instruct\"}",
        );
        jail.set_env("LUMEN_ROUTING__AUTO__PREFERENCE", "[chat, llama]");
        jail.set_env("LUMEN_ROUTING__PASSTHROUGH__ENABLED", "true");
        jail.set_env("LUMEN_ROUTING__PASSTHROUGH__BACKENDS", "[b]");
        jail.set_env("LUMEN_ROUTING__POLICY", "prefix_affinity");
        jail.set_env("LUMEN_ROUTING__MODELS", "{llama={policy=\"power_of_two\"}}");
        let cfg = load_in(jail, None).unwrap();
        let r = &cfg.routing;
        assert_eq!(cfg.backends[0].weight, 3);
        assert_eq!(cfg.backends[1].weight, 1);
        assert_eq!(r.default_model.as_deref(), Some("chat"));
        assert_eq!(
            r.exposed_models.as_deref(),
            Some(&["llama".to_owned(), "chat".to_owned()][..])
        );
        assert_eq!(r.aliases["chat"], "meta-llama/Llama-3.1-8B-Instruct");
        assert_eq!(r.auto.preference, vec!["chat", "llama"]);
        assert!(r.passthrough.enabled);
        assert_eq!(r.passthrough.backends, vec!["b"]);
        assert_eq!(r.policy, lumen_governance::Policy::PrefixAffinity);
        assert_eq!(
            r.models["llama"].policy,
            Some(lumen_governance::Policy::PowerOfTwo)
        );
        jail.set_env("LUMEN_ROUTING__PASSTHROUGH__BACKENDS", "[nope]");
        let err = load_in(jail, None).unwrap_err().to_string();
        assert!(err.starts_with("routing.passthrough.backends:"), "{err}");
        Ok(())
    });
}

#[test]
fn profiles_supply_defaults_and_explicit_settings_win() {
    use crate::config::Operation;
    Jail::expect_with(|jail| {
        jail.set_env("LUMEN_BACKENDS", "http://a:1");
        jail.set_env("LUMEN_PROFILE", "large");
        let r = load_in(jail, None).unwrap().resolved().unwrap();
        let chat = r.timeouts(Operation::Chat, "m", "m", None);
        assert_eq!(chat.first_byte, Some(std::time::Duration::from_secs(180)));
        assert_eq!(r.retry(Operation::Chat).max_attempts, 4);
        assert_eq!(r.queue_size, 1_024);

        jail.set_env("LUMEN_TIMEOUTS__FIRST_BYTE_MS", "20000");
        jail.set_env("LUMEN_TIMEOUTS__CHAT__FIRST_BYTE_MS", "9000");
        jail.set_env(
            "LUMEN_TIMEOUTS__PER_MODEL",
            "{slow={first_byte_ms=600000, idle_ms=0}}",
        );
        jail.set_env("LUMEN_RETRY__MAX_ATTEMPTS", "2");
        jail.set_env("LUMEN_RETRY__EMBEDDINGS_ATTEMPTS", "1");
        jail.set_env("LUMEN_ADMISSION__MAX_CONCURRENT", "0");
        let r = load_in(jail, None).unwrap().resolved().unwrap();
        let ms = |v| Some(std::time::Duration::from_millis(v));
        assert_eq!(
            r.timeouts(Operation::Chat, "m", "m", None).first_byte,
            ms(9_000),
            "operation beats global"
        );
        assert_eq!(
            r.timeouts(Operation::Completions, "m", "m", None)
                .first_byte,
            ms(20_000),
            "global beats profile"
        );
        let slow = r.timeouts(Operation::Chat, "slow", "engine-id", None);
        assert_eq!(
            (slow.first_byte, slow.idle),
            (ms(600_000), None),
            "per model beats operation; 0 disables"
        );
        let capped = r.timeouts(
            Operation::Chat,
            "m",
            "m",
            Some(std::time::Duration::from_secs(2)),
        );
        assert_eq!(
            (capped.first_byte, capped.total),
            (ms(2_000), ms(2_000)),
            "the caller's cap only lowers"
        );
        assert_eq!(r.retry(Operation::Chat).max_attempts, 2);
        assert_eq!(r.retry(Operation::Embeddings).max_attempts, 1);
        assert_eq!(r.max_concurrent, None, "0 = unlimited");

        jail.set_env("LUMEN_RETRY__MAX_ATTEMPTS", "0");
        let err = load_in(jail, None).unwrap_err().to_string();
        assert!(err.starts_with("retry.chat_attempts:"), "{err}");
        Ok(())
    });
}

/// Kubernetes' service links for a Service named `lumen` (and `lumen-redis`) and a stray
/// variable: none of them stops the load; only the stray one is reported.
#[test]
fn unknown_environment_variables_are_not_fatal() {
    Jail::expect_with(|jail| {
        jail.set_env("LUMEN_BACKENDS", "http://127.0.0.1:8000");
        jail.set_env("LUMEN_PORT", "tcp://10.96.0.12:8080");
        jail.set_env("LUMEN_PORT_8080_TCP_ADDR", "10.96.0.12");
        jail.set_env("LUMEN_SERVICE_HOST", "10.96.0.12");
        jail.set_env("LUMEN_SERVICE_PORT_HTTP", "8080");
        jail.set_env("LUMEN_REDIS_SERVICE_PORT", "6379");
        jail.set_env("LUMEN_SERVER__LISTN", "0.0.0.0:1");
        jail.set_env("LUMEN_SERVER__LISTEN", "0.0.0.0:9000");
        let cfg = load_in(jail, None).unwrap();
        assert_eq!(cfg.server.listen.port(), 9000, "known keys still apply");
        let mut unknown = unknown_env();
        unknown.sort();
        assert_eq!(
            unknown,
            [
                "port",
                "port_8080_tcp_addr",
                "redis_service_port",
                "server.listn",
                "service_host",
                "service_port_http"
            ]
        );
        let stray: Vec<_> = unknown
            .iter()
            .filter(|k| !is_kubernetes_service_link(k))
            .collect();
        assert_eq!(stray, ["server.listn"]);
        Ok(())
    });
}

#[test]
fn unknown_keys_in_a_file_stay_errors() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "lumen.toml",
            "backends = [\"http://127.0.0.1:8000\"]\n[server]\nlistn = \"0.0.0.0:1\"\n",
        )?;
        let err = load_in(jail, Some("lumen.toml")).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
        Ok(())
    });
}

#[test]
fn service_link_names() {
    for k in [
        "port",
        "port_80_tcp",
        "port_80_udp_proto",
        "service_host",
        "service_port",
        "service_port_grpc",
        "api_service_host",
        "redis_port_6379_tcp_port",
    ] {
        assert!(is_kubernetes_service_link(k), "{k}");
    }
    for k in [
        "server.listen",
        "listen",
        "port_x_tcp",
        "port_80_tcp_host",
        "backend",
    ] {
        assert!(!is_kubernetes_service_link(k), "{k}");
    }
}

#[test]
fn a_zero_answer_cap_is_refused() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "lumen.toml",
            "[[backends]]\nurl = \"http://127.0.0.1:8000\"\nmax_response_bytes = 0\n",
        )?;
        let err = load_in(jail, Some("lumen.toml")).unwrap_err().to_string();
        assert!(err.contains("backends[0].max_response_bytes"), "{err}");
        Ok(())
    });
}

#[test]
fn stream_continuation_from_a_file_and_the_environment() {
    use lumen_backend::Continuation;
    Jail::expect_with(|jail| {
        jail.create_file(
            "lumen.toml",
            r#"
            [routing]
            stream_continuation = false
            [routing.models.big]
            stream_continuation = true
            [[backends]]
            url = "http://10.0.0.1:8000"
            [[backends]]
            url = "http://10.0.0.2:8080"
            kind = "llamacpp"
            [[backends]]
            url = "http://10.0.0.3:8080"
            kind = "tgi"
            [[backends]]
            url = "http://10.0.0.4:8000"
            continuation = "none"
            "#,
        )?;
        let cfg = load_in(jail, Some("lumen.toml")).unwrap();
        assert!(cfg.routing.continues_streams("big", "big"));
        assert!(!cfg.routing.continues_streams("small", "small"));
        let styles: Vec<_> = cfg
            .backends
            .iter()
            .map(BackendConfig::effective_continuation)
            .collect();
        assert_eq!(
            styles,
            [
                Continuation::ContinueFinalMessage,
                // llama.cpp too: a bare prefill comes back repeated (issue 20).
                Continuation::ContinueFinalMessage,
                Continuation::None,
                Continuation::None
            ]
        );
        jail.set_env("LUMEN_ROUTING__STREAM_CONTINUATION", "true");
        let cfg = load_in(jail, Some("lumen.toml")).unwrap();
        assert!(cfg.routing.continues_streams("small", "small"));
        jail.create_file(
            "bad.toml",
            "[[backends]]\nurl = \"http://h:1\"\ncontinuation = \"sometimes\"\n",
        )?;
        assert!(load_in(jail, Some("bad.toml")).is_err());
        Ok(())
    });
}

/// Which engines get Messages requests as they came: by `kind` unless set.
#[test]
fn native_messages_defaults_by_kind() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "lumen.toml",
            r#"
            [[backends]]
            url = "http://10.0.0.1:8000"
            [[backends]]
            url = "http://10.0.0.2:8000"
            kind = "sglang"
            [[backends]]
            url = "http://10.0.0.3:8080"
            kind = "llamacpp"
            [[backends]]
            url = "http://10.0.0.4:8080"
            kind = "tgi"
            [[backends]]
            url = "http://10.0.0.5:11434"
            kind = "ollama"
            [[backends]]
            url = "http://10.0.0.6:8000"
            kind = "openai-compatible"
            [[backends]]
            url = "http://10.0.0.7:8000"
            native_messages = false
            [[backends]]
            url = "http://10.0.0.8:8000"
            kind = "ollama"
            native_messages = true
            "#,
        )?;
        let cfg = load_in(jail, Some("lumen.toml")).unwrap();
        let native: Vec<bool> = cfg
            .backends
            .iter()
            .map(BackendConfig::effective_native_messages)
            .collect();
        assert_eq!(native, [true, true, true, false, false, false, false, true]);
        Ok(())
    });
}

/// No engine kind gets Responses requests as they came unless the backend says so: an engine
/// that keeps no responses would break `previous_response_id`.
#[test]
fn native_responses_is_off_unless_set() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "lumen.toml",
            r#"
            [[backends]]
            url = "http://10.0.0.1:8000"
            [[backends]]
            url = "http://10.0.0.2:8000"
            kind = "sglang"
            [[backends]]
            url = "http://10.0.0.3:8080"
            kind = "llamacpp"
            [[backends]]
            url = "http://10.0.0.7:8000"
            native_responses = true
            "#,
        )?;
        let cfg = load_in(jail, Some("lumen.toml")).unwrap();
        let native: Vec<bool> = cfg.backends.iter().map(|b| b.native_responses).collect();
        assert_eq!(native, [false, false, false, true]);
        Ok(())
    });
}

/// The connection deadlines are read from the file and the environment, and 0 (no deadline,
/// or every connection closed at once) is refused like `body_read_timeout_ms`.
#[test]
fn connection_deadlines_are_settable_and_never_zero() {
    Jail::expect_with(|jail| {
        jail.set_env("LUMEN_BACKENDS", "http://127.0.0.1:8000");
        let cfg = load_in(jail, None).unwrap();
        assert_eq!(cfg.server.header_read_timeout_ms, 30_000);
        assert_eq!(cfg.server.idle_timeout_ms, 30_000);
        assert_eq!(cfg.server.write_timeout_ms, 60_000);
        jail.create_file(
            "lumen.toml",
            "[server]\nheader_read_timeout_ms = 5000\nidle_timeout_ms = 75000\nwrite_timeout_ms = 9000\n",
        )?;
        let cfg = load_in(jail, Some("lumen.toml")).unwrap();
        assert_eq!(cfg.server.header_read_timeout_ms, 5_000);
        assert_eq!(cfg.server.idle_timeout_ms, 75_000);
        assert_eq!(cfg.server.write_timeout_ms, 9_000);
        for key in [
            "header_read_timeout_ms",
            "idle_timeout_ms",
            "write_timeout_ms",
            "body_read_timeout_ms",
        ] {
            jail.set_env(format!("LUMEN_SERVER__{}", key.to_uppercase()), "0");
            let err = load_in(jail, Some("lumen.toml")).unwrap_err().to_string();
            assert!(err.contains(&format!("server.{key}")), "{err}");
            jail.set_env(format!("LUMEN_SERVER__{}", key.to_uppercase()), "1000");
        }
        Ok(())
    });
}

/// A backend without a name is named after its URL's host and port: that name is a metric
/// label and in every log line about the backend, so the URL's credentials must not reach it
/// (`user:SECRET@gpu:8000` was the name).
#[test]
fn a_name_taken_from_the_url_holds_no_credentials() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "LUMEN_BACKENDS",
            "http://user:SECRET@gpu-1:8000/v1,http://:SE/C?R#ET@gpu-2:8000,http://gpu-3:8000?api_key=SECRET",
        );
        let cfg = load_in(jail, None).unwrap();
        let names: Vec<String> = (0..3).map(|i| cfg.backend_name(i)).collect();
        assert_eq!(names, ["gpu-1:8000", "gpu-2:8000", "gpu-3:8000"]);
        Ok(())
    });
}

/// Issue 20, item 8: the body budget is settable, and one that could not hold a body at the cap
/// (which would be refused with 503 forever) is refused at load, naming the key.
#[test]
fn the_body_budget_holds_a_body_at_the_cap() {
    Jail::expect_with(|jail| {
        jail.set_env("LUMEN_BACKENDS", "http://127.0.0.1:8000");
        let cfg = load_in(jail, None).unwrap();
        assert_eq!(cfg.server.body_budget_bytes, DEFAULT_BODY_BUDGET_BYTES);
        assert!(cfg.server.body_budget_bytes >= cfg.server.max_body_bytes as u64);
        assert_eq!(cfg.server.body_budget_wait_ms, 5_000);
        jail.create_file(
            "lumen.toml",
            "[server]\nmax_body_bytes = 1000\nbody_budget_bytes = 1000\nbody_budget_wait_ms = 0\n",
        )?;
        let cfg = load_in(jail, Some("lumen.toml")).unwrap();
        assert_eq!(
            (cfg.server.body_budget_bytes, cfg.server.body_budget_wait_ms),
            (1000, 0)
        );
        jail.set_env("LUMEN_SERVER__BODY_BUDGET_BYTES", "999");
        let err = load_in(jail, Some("lumen.toml")).unwrap_err().to_string();
        assert!(err.starts_with("server.body_budget_bytes:"), "{err}");
        assert!(err.contains("server.max_body_bytes (1000)"), "{err}");
        Ok(())
    });
}

mod sizing;

#[test]
fn a_zero_backlog_is_refused() {
    let mut cfg = LumenConfig {
        backends: vec![BackendConfig {
            url: "http://127.0.0.1:8000".into(),
            ..BackendConfig::default()
        }],
        ..LumenConfig::default()
    };
    assert!(cfg.validate().is_ok());
    cfg.server.backlog = 0;
    let e = cfg.validate().unwrap_err();
    assert!(e.to_string().contains("server.backlog"), "{e}");
}

#[test]
fn redis_leases_are_on_at_one_percent_by_default_and_checked() {
    Jail::expect_with(|jail| {
        jail.set_env("LUMEN_BACKENDS", "http://127.0.0.1:8000");
        let cfg = load_in(jail, None).unwrap();
        assert!(cfg.redis.lease.enabled(), "on unless turned off");
        assert_eq!(cfg.redis.lease.fraction, 0.01);
        jail.create_file("exact.toml", "[redis.lease]\nfraction = 0\n")?;
        let cfg = load_in(jail, Some("exact.toml")).unwrap();
        assert!(!cfg.redis.lease.enabled(), "fraction 0: exact");
        jail.create_file(
            "lumen.toml",
            "[redis.lease]\nfraction = 0.02\nmax_requests = 50\n",
        )?;
        let cfg = load_in(jail, Some("lumen.toml")).unwrap();
        assert_eq!(cfg.redis.lease.fraction, 0.02);
        assert_eq!(cfg.redis.lease.max_requests, 50);
        assert_eq!(cfg.redis.lease.max_tokens, 1_000_000, "the default");
        jail.set_env("LUMEN_REDIS__LEASE__FRACTION", "0.75");
        let err = load_in(jail, Some("lumen.toml")).unwrap_err().to_string();
        assert!(err.starts_with("redis.lease.fraction:"), "{err}");
        assert!(err.contains("0 (leases off) to 0.5"), "{err}");
        jail.set_env("LUMEN_REDIS__LEASE__FRACTION", "0.1");
        jail.set_env("LUMEN_REDIS__LEASE__MAX_TOKENS", "0");
        let err = load_in(jail, Some("lumen.toml")).unwrap_err().to_string();
        assert!(err.starts_with("redis.lease.max_tokens:"), "{err}");
        jail.set_env("LUMEN_REDIS__LEASE__MAX_TOKENS", "1000");
        jail.create_file("typo.toml", "[redis.lease]\nfractoin = 0.1\n")?;
        let err = load_in(jail, Some("typo.toml")).unwrap_err().to_string();
        assert!(err.contains("fractoin"), "{err}");
        Ok(())
    });
}
