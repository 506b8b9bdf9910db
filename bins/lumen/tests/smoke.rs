//! Spawns the real `lumen` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn lumen() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lumen"));
    c.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("LUMEN_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c
}

/// Reads stderr until the "listening" line and returns the address; the rest keeps draining.
fn wait_listening(child: &mut Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.strip_prefix("lumen listening on http://") {
                    tx.send(url.to_owned()).unwrap();
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("lumen did not report its address")
}

fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn demo_serves_streamed_tokens_and_stops_on_sigterm() {
    let mut child = lumen()
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let addr = wait_listening(&mut child);
    let body = r#"{"model":"lumen-demo","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = http(
        &addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("text/event-stream"), "{resp}");
    assert!(resp.contains("\"content\":\"Lumen\""), "{resp}");
    assert!(resp.contains("data: [DONE]"), "{resp}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "graceful exit: {code:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lumen did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn environment_variables_alone_configure_it() {
    // A simulator binary-free check: point at a closed port; the server still starts, and
    // /v1/models is empty until the engine appears.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = lumen()
        .env("LUMEN_BACKENDS", format!("http://127.0.0.1:{port}"))
        .env("LUMEN_SERVER__LISTEN", "127.0.0.1:0")
        .env("LUMEN_LOG__FORMAT", "json")
        .spawn()
        .unwrap();
    let addr = wait_listening(&mut child);
    let resp = http(
        &addr,
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with(r#"{"object":"list","data":[]}"#), "{resp}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Reads stderr until the "listening" line; returns the address and every line before it.
fn wait_listening_with_log(child: &mut Child) -> (String, Vec<String>) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut before = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.strip_prefix("lumen listening on http://") {
                    tx.send((url.to_owned(), std::mem::take(&mut before)))
                        .unwrap();
                    sent = true;
                } else {
                    before.push(line);
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("lumen did not report its address")
}

/// A Kubernetes Service named `lumen` puts `LUMEN_PORT=tcp://...` and friends into every pod of
/// the namespace; Lumen exited 64 on them. Now they are ignored silently, and a stray variable
/// that is not a service link is named in one warning.
#[test]
fn kubernetes_service_links_do_not_stop_it_from_starting() {
    let mut child = lumen()
        .env("LUMEN_BACKENDS", "http://127.0.0.1:1")
        .env("LUMEN_SERVER__LISTEN", "127.0.0.1:0")
        .env("LUMEN_LOG__FORMAT", "json")
        .env("LUMEN_PORT", "tcp://10.96.0.12:8080")
        .env("LUMEN_PORT_8080_TCP", "tcp://10.96.0.12:8080")
        .env("LUMEN_PORT_8080_TCP_PROTO", "tcp")
        .env("LUMEN_PORT_8080_TCP_PORT", "8080")
        .env("LUMEN_PORT_8080_TCP_ADDR", "10.96.0.12")
        .env("LUMEN_SERVICE_HOST", "10.96.0.12")
        .env("LUMEN_SERVICE_PORT", "8080")
        .env("LUMEN_SERVICE_PORT_HTTP", "8080")
        .env("LUMEN_REDIS_SERVICE_HOST", "10.96.0.13")
        .env("LUMEN_REDIS_PORT_6379_TCP_ADDR", "10.96.0.13")
        .env("LUMEN_TYPO_SETTING", "1")
        .spawn()
        .unwrap();
    let (addr, log) = wait_listening_with_log(&mut child);
    let resp = http(
        &addr,
        "GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    child.kill().unwrap();
    child.wait().unwrap();
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("environment variables"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {log:?}");
    assert!(warnings[0].contains("LUMEN_TYPO_SETTING"), "{log:?}");
    assert!(
        !warnings[0].contains("LUMEN_PORT") && !warnings[0].contains("SERVICE"),
        "service links are not reported: {log:?}"
    );
}

/// Every stderr line, collected in the background until the process ends.
fn collect_log(child: &mut Child) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("lumen listening on http://") {
                let _ = tx.send(url.to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("lumen did not report its address");
    (addr, lines)
}

/// A passthrough model name with a newline and a request id with `key=value` text forged
/// log lines and fields in the text format; values are now quoted and escaped.
#[test]
fn client_strings_cannot_forge_log_lines() {
    let mut child = lumen()
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .env("LUMEN_ROUTING__PASSTHROUGH__ENABLED", "true")
        .env("LUMEN_LOG__FORMAT", "text")
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap();
    let (addr, log) = collect_log(&mut child);
    let body = r#"{"model":"evil\nINFO lumen::access: forged=1","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = http(
        &addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: r1 status=999\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 "), "{resp}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let access = loop {
        let found = log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("r1 status=999") && l.contains("access"))
            .cloned();
        if let Some(l) = found {
            break l;
        }
        assert!(tokio::time::Instant::now() < deadline, "no access line");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = log.lock().unwrap().clone();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("INFO lumen::access: forged")),
        "no forged line: {lines:#?}"
    );
    assert!(access.contains(r#"id="r1 status=999""#), "{access}");
    assert!(
        access.contains(r#"model="evil\nINFO lumen::access: forged=1""#),
        "{access}"
    );
}

/// 1,100 half-sent bodies under a 1,024-descriptor limit made `/health` time out and wrote
/// 1,518 "accept failed" lines in 15 s. With a body deadline the stalled connections are shed,
/// and out of descriptors the listener pauses with one warning instead of a storm.
#[test]
fn descriptor_exhaustion_recovers_without_a_warning_storm() {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {} --demo --listen 127.0.0.1:0",
            env!("CARGO_BIN_EXE_lumen")
        ))
        .env("LUMEN_SERVER__BODY_READ_TIMEOUT_MS", "1000")
        .env("LUMEN_LOG__FORMAT", "text")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, log) = collect_log(&mut child);
    let mut stalled = Vec::new();
    for _ in 0..120 {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            break;
        };
        let _ = s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        );
        stalled.push(s);
    }
    // Every stalled connection is answered (408) or closed by Lumen; none is kept.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    drop(stalled);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = TcpStream::connect(&addr).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.starts_with("HTTP/1.1 200").then_some(())
        });
        if ok.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health never recovered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = log.lock().unwrap().clone();
    let warnings = lines.iter().filter(|l| l.contains("cannot accept")).count();
    let storm = lines.iter().filter(|l| l.contains("accept failed")).count();
    assert!(warnings >= 1, "the limit was reached: {lines:#?}");
    assert!(warnings <= 2 && storm == 0, "no storm: {lines:#?}");
}

#[test]
fn bad_config_names_the_key_and_exits_64() {
    let out = lumen()
        .env("LUMEN_BACKENDS", "http://127.0.0.1:1")
        .env("LUMEN_TIMEOUTS__IDLE_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("timeouts.idle_ms"), "{err}");

    let out = lumen().output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backends: at least one backend"));

    let out = lumen()
        .args(["--config", "/nonexistent/lumen.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let out = lumen().args(["--backend", "ftp://x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backends[0].url"));
}

#[test]
fn sighup_reloads_the_config_file_and_keeps_it_on_a_bad_one() {
    let dir = std::env::temp_dir().join(format!("lumen-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lumen.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let write = |models: &str| {
        std::fs::write(
            &file,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n[[backends]]\nurl = \"http://127.0.0.1:{port}\"\nmodels = [{models}]\n"),
        )
        .unwrap();
    };
    write("\"first\"");
    let mut child = lumen().arg("--config").arg(&file).spawn().unwrap();
    let addr = wait_listening(&mut child);
    let models = || {
        http(
            &addr,
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
    };
    assert!(models().contains("\"first\""));
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    let wait_for = |needle: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !models().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "reload to {needle} not seen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    write("\"second\"");
    hup();
    wait_for("\"second\"");
    std::fs::write(&file, "[[backends]]\nurl = 42\n").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        models().contains("\"second\""),
        "a bad file leaves the old config live"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real redis-server on a free port for the multi-process test; killed on drop.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/run.sh installs it)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_limit_is_exact_across_three_replicas_sharing_redis() {
    use lumen_backend::{Backend, BackendError, RequestContext};
    use lumen_backend_vllm::{VllmBackend, VllmConfig};

    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sim_addr, _sim) = rt
        .block_on(lumen_sim::spawn(lumen_sim::SimConfig {
            models: vec!["m1".into()],
            ..Default::default()
        }))
        .unwrap();
    let secret = "sk-replica-test";
    let digest = lumen_governance::keys::to_hex(&lumen_governance::keys::digest(secret));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let mut child = lumen()
            .env("LUMEN_BACKENDS", format!("http://{sim_addr}"))
            .env("LUMEN_SERVER__LISTEN", "127.0.0.1:0")
            .env("LUMEN_AUTH__ENABLED", "true")
            .env(
                "LUMEN_AUTH__KEYS",
                format!(r#"[{{name="team", sha256="{digest}", limits={{rpm=100}}}}]"#),
            )
            .env("LUMEN_REDIS__URL", format!("redis://127.0.0.1:{}", redis.1))
            .env("LUMEN_REDIS__TIMEOUT_MS", "2000")
            // A Redis call that times out on a starved machine must refuse (503, reported
            // below), never admit without counting: that would hide a real overshoot.
            .env("LUMEN_REDIS__FAIL_CLOSED", "true")
            .env("LUMEN_LOG__LEVEL", "warn")
            .spawn()
            .unwrap();
        let addr = wait_listening(&mut child);
        replicas.push((child, addr));
    }
    let clients: Vec<VllmBackend> = replicas
        .iter()
        .map(|(_, addr)| {
            let mut cfg = VllmConfig::new("lumen", format!("http://{addr}"));
            cfg.api_key = Some(secret.to_owned());
            VllmBackend::new(cfg).unwrap()
        })
        .collect();
    let started = tokio::time::Instant::now();
    let (ok, limited, other) = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..1_000usize {
            let client = clients[i % 3].clone();
            tasks.push(tokio::spawn(async move {
                let req = lumen_openai_types::ChatCompletionRequest {
                    model: "m1".into(),
                    messages: vec![lumen_openai_types::ChatMessage::new("user", "hi")].into(),
                    max_tokens: Some(1),
                    ..Default::default()
                };
                client
                    .chat(req, &RequestContext::new(format!("r{i}")))
                    .await
            }));
        }
        let (mut ok, mut limited, mut other) = (0, 0, Vec::new());
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(BackendError::Upstream { status: 429, .. }) => limited += 1,
                Err(e) => other.push(e.to_string()),
            }
        }
        (ok, limited, other)
    });
    for (mut child, _) in replicas {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(other.is_empty(), "{other:?}");
    // The rpm window is 60 s from the key's first request: on a machine slow enough that the
    // 1,000 requests outlast it, each further window admits its own 100.
    let windows = (started.elapsed().as_secs() / 60 + 1) as usize;
    if windows == 1 {
        assert_eq!(
            (ok, limited),
            (100, 900),
            "exactly the limit, across 3 processes"
        );
    } else {
        eprintln!("the run spanned {windows} rpm windows: {ok} admitted");
        assert!(
            (100..=100 * windows).contains(&ok) && ok + limited == 1_000,
            "at most the limit per window, across 3 processes: {ok} admitted in {windows} windows"
        );
    }
}

/// A copy of the binary any user can run (the build directory may not be readable by them).
fn image_like_binary(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let bin = dir.join("lumen");
    std::fs::copy(env!("CARGO_BIN_EXE_lumen"), &bin).unwrap();
    let mut perms = std::fs::metadata(dir).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir, perms).unwrap();
    bin
}

/// `setpriv` to drop to nobody when the tests run as root, as the image runs as uid 65532.
/// Also says whether privileges are dropped (root without setpriv: a note, and they are not).
fn unprivileged(bin: &std::path::Path) -> (Command, bool) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match (root, setpriv) {
        (true, Some(setpriv)) => {
            let mut c = Command::new(setpriv);
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin);
            (c, true)
        }
        (true, None) => {
            eprintln!("note: running as root and setpriv is missing; not dropping privileges");
            (Command::new(bin), false)
        }
        (false, _) => (Command::new(bin), true),
    }
}

/// What the container image does: no environment but `LUMEN_*` settings (and the service
/// links a Service named `lumen` injects), not root, listening on every interface, with an
/// admin port; `/health`, `/ready` and `lumen health` answer, and SIGTERM exits cleanly.
#[test]
fn runs_like_the_container_image() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sim_addr, _sim) = rt
        .block_on(lumen_sim::spawn(lumen_sim::SimConfig {
            models: vec!["m1".into()],
            ..Default::default()
        }))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("lumen-image-{}", std::process::id()));
    let bin = image_like_binary(&dir);
    let (mut command, dropped) = unprivileged(&bin);
    let mut child = command
        .env_clear()
        .env("LUMEN_SERVER__LISTEN", "0.0.0.0:0")
        .env("LUMEN_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("LUMEN_BACKENDS", format!("http://{sim_addr}"))
        .env("LUMEN_LOG__FORMAT", "json")
        .env("LUMEN_PORT", "tcp://10.0.0.1:8080")
        .env("LUMEN_PORT_8080_TCP", "tcp://10.0.0.1:8080")
        .env("LUMEN_PORT_8080_TCP_ADDR", "10.0.0.1")
        .env("LUMEN_PORT_8080_TCP_PORT", "8080")
        .env("LUMEN_PORT_8080_TCP_PROTO", "tcp")
        .env("LUMEN_PORT_9090_TCP", "tcp://10.0.0.1:9090")
        .env("LUMEN_SERVICE_HOST", "10.0.0.1")
        .env("LUMEN_SERVICE_PORT", "8080")
        .env("LUMEN_SERVICE_PORT_HTTP", "8080")
        .env("LUMEN_SERVICE_PORT_ADMIN", "9090")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, log) = collect_log(&mut child);
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let api = format!("127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let admin = loop {
        let found = log.lock().unwrap().iter().find_map(|l| {
            l.strip_prefix("lumen admin listening on http://")
                .map(str::to_owned)
        });
        if let Some(a) = found {
            break a;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let get = |addr: &str, path: &str| {
        http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        )
    };
    assert!(get(&api, "/health").starts_with("HTTP/1.1 200"));
    assert!(get(&admin, "/health").starts_with("HTTP/1.1 200"));
    loop {
        let ready = get(&admin, "/ready");
        if ready.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The image's HEALTHCHECK: the same binary, no curl.
    let probe = |url: String| {
        Command::new(&bin)
            .env_clear()
            .args(["health", "--url", &url])
            .output()
            .unwrap()
    };
    assert!(probe(format!("http://{api}/health")).status.success());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = probe(format!("http://{closed}/health"));
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("--url"));

    let uid = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|u| u.split_whitespace().next().unwrap_or("").to_owned())
        })
        .unwrap_or_default();
    eprintln!("lumen ran as uid {uid}");
    assert!(!dropped || uid != "0", "not as root");
    let lines = log.lock().unwrap().clone();
    assert!(
        !lines.iter().any(|l| l.contains("LUMEN_PORT")),
        "service links are ignored silently: {lines:?}"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lumen-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn config_check_lists_every_wrong_key_and_exits_64() {
    let good = scratch(
        "good.toml",
        "[[backends]]\nurl = \"http://127.0.0.1:1\"\n[server]\nlisten = \"0.0.0.0:8080\"\n",
    );
    let out = lumen()
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("OK"), "{stdout}");

    let bad = scratch(
        "bad.toml",
        "[[backends]]\nurl = \"http://127.0.0.1:1\"\n[server]\nlisten = \"nowhere\"\n\
         [cache]\nenable = true\n[timeouts]\nidle_ms = \"soon\"\n",
    );
    let out = lumen()
        .env("LUMEN_RETRY__MAX_ATTEMPTS", "lots")
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "cache.enable",
        "timeouts.idle_ms",
        "retry.max_attempts",
        "LUMEN_RETRY__MAX_ATTEMPTS",
        "bad.toml",
    ] {
        assert!(err.contains(key), "{key} missing: {err}");
    }
    assert!(err.contains("4 error(s)"), "{err}");
    // A semantic error (not a type error) is reported too, with its key.
    let dup = scratch(
        "dup.toml",
        "[[backends]]\nurl = \"http://a:1\"\nname = \"x\"\n[[backends]]\nurl = \"http://b:1\"\nname = \"x\"\n",
    );
    let out = lumen()
        .args(["config", "check"])
        .arg(&dup)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backends[1].name"));
    // Nothing was bound: a missing file is one clear error.
    let out = lumen()
        .args(["config", "check", "/nonexistent/lumen.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// The `lumen.toml` shipped in the Kubernetes ConfigMap is a valid configuration.
#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let manifest = include_str!("../../../deploy/kubernetes/configmap.yaml");
    let (_, body) = manifest.split_once("lumen.toml: |\n").unwrap();
    let toml: String = body
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(toml.contains("[[backends]]"), "{toml}");
    let file = scratch("configmap.toml", &toml);
    let out = lumen()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn config_print_shows_sources_and_redacts_secrets() {
    let file = scratch(
        "print.toml",
        "[[backends]]\nname = \"gpu\"\nurl = \"http://127.0.0.1:1\"\napi_key = \"sk-upstream-secret\"\n\
         [routing.aliases]\n\"meta/llama\" = \"m1\"\n",
    );
    let out = lumen()
        .env("LUMEN_REDIS__URL", "redis://:hunter2@redis:6379/0")
        .env("LUMEN_PROFILE", "small")
        .args(["--listen", "127.0.0.1:9999", "config", "print", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("sk-upstream-secret"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("redis://<redacted>@redis:6379/0"), "{text}");
    assert!(text.contains("api_key = \"<redacted>\""), "{text}");
    assert!(text.contains("profile = \"small\""), "{text}");
    assert!(text.contains("# from LUMEN_PROFILE"), "{text}");
    assert!(text.contains("# from command line"), "{text}");
    assert!(
        text.contains(&format!("# from file {}", file.display())),
        "{text}"
    );
    assert!(text.contains("\"meta/llama\" = \"m1\""), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:9999\""), "{text}");

    let out = lumen()
        .env("LUMEN_TIMEOUTS__IDLE_MS", "soon")
        .args(["--backend", "http://127.0.0.1:1", "config", "print"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeouts.idle_ms"));
}

/// The binary exports traces by default (feature `otel`): the endpoint variable alone turns it
/// on, and the last spans are sent on SIGTERM. The collector here is raw TCP: it checks the
/// OTLP/HTTP request line and content type (tests/it/tracing.rs decodes the spans themselves).
#[test]
fn the_endpoint_variable_alone_exports_traces() {
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", collector.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut sock, _) = collector.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        tx.send(String::from_utf8_lossy(&head).to_ascii_lowercase())
            .unwrap();
    });
    let mut child = lumen()
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
        // Spans wait for the shutdown flush, not for a batch timer.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .spawn()
        .unwrap();
    let addr = wait_listening(&mut child);
    let body =
        r#"{"model":"lumen-demo","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = http(
        &addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let head = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no export reached the collector");
    assert!(head.starts_with("post /v1/traces http/1.1"), "{head}");
    assert!(
        head.contains("content-type: application/x-protobuf"),
        "{head}"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn config_check_warns_about_unusable_otel_settings_but_passes() {
    let good = scratch("otel.toml", "[[backends]]\nurl = \"http://127.0.0.1:1\"\n");
    let out = lumen()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_TRACES_SAMPLER", "sometimes")
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{err}");
    assert!(err.contains("OTEL_TRACES_SAMPLER=sometimes"), "{err}");
}

/// Container log collectors store stderr as written: text logs sent to a pipe must carry no
/// ANSI escape codes (they did: every level and field name was wrapped in `ESC[..m`).
#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let mut child = lumen()
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .env("LUMEN_LOG__FORMAT", "text")
        .env_remove("NO_COLOR")
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let mut told = false;
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            // The demo's own request has been served and logged: enough to judge.
            if !told && String::from_utf8_lossy(&all).contains("lumen::access") {
                let _ = tx.send(());
                told = true;
            }
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("no access line on stderr");
    child.kill().unwrap();
    child.wait().unwrap();
    let log = reader.join().unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("INFO") && text.contains("ready"), "{text}");
    assert!(
        !log.contains(&0x1b),
        "escape codes in a piped log: {text:?}"
    );
}

/// Runs `lumen config check FILE` and `lumen config print --config FILE` with `env`; returns
/// both exit codes and everything both wrote.
fn check_and_print(file: &std::path::Path, env: &[(&str, &str)]) -> ((i32, i32), String) {
    let run = |args: &[&str]| {
        let mut c = lumen();
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(args).arg(file).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap(), text)
    };
    let (check, a) = run(&["config", "check"]);
    let (print, b) = run(&["config", "print", "--config"]);
    ((check, print), format!("{a}{b}"))
}

/// No output shows a secret held in a URL, wherever it sits: `?pass=` of a `redis+unix` URL,
/// passwords with unencoded `/ # ?` (which no Redis client can parse: `print` exits 64 like
/// `check`, where it exited 0 and printed the password), a backend URL's userinfo and
/// `?api_key=` (echoed by `check`), and the backend name taken from such a URL.
#[test]
fn config_check_and_print_never_show_a_secret_in_a_url() {
    /// File name, its text, the exit codes of `check` and `print`, text the output must hold.
    type Case = (&'static str, String, (i32, i32), &'static [&'static str]);
    let redis = |url: &str| {
        format!("[[backends]]\nurl = \"http://127.0.0.1:1\"\n[redis]\nurl = \"{url}\"\n")
    };
    let cases: &[Case] = &[
        (
            "unix.toml",
            redis("redis+unix:///run/redis.sock?db=0&pass=SECRET"),
            (0, 0),
            &["redis+unix:///run/redis.sock?db=<redacted>&pass=<redacted>"],
        ),
        (
            "slash.toml",
            redis("redis://:SEC/RET@redis:6379/0"),
            (64, 64),
            &["redis.url"],
        ),
        (
            "hash.toml",
            redis("redis://:SEC#RET@redis:6379/0"),
            (64, 64),
            &["redis.url"],
        ),
        (
            "question.toml",
            redis("redis://:SEC?RET@redis:6379/0"),
            (64, 64),
            &["redis.url"],
        ),
        (
            "query.toml",
            "[[backends]]\nurl = \"http://user:SECRET@127.0.0.1:1/?api_key=SECRET\"\n".to_owned(),
            (64, 64),
            &["backends[0].url", "127.0.0.1:1", "query string"],
        ),
        (
            "userinfo.toml",
            "[[backends]]\nurl = \"http://user:SECRET@127.0.0.1:1\"\n\
             [[backends]]\nurl = \"http://user:SECRET@127.0.0.1:1\"\n"
                .to_owned(),
            (64, 64),
            &["duplicate backend name \"127.0.0.1:1\""],
        ),
        (
            "printed.toml",
            "[[backends]]\nurl = \"http://user:SECRET@127.0.0.1:1/v1\"\n".to_owned(),
            (0, 0),
            &["url = \"http://<redacted>@127.0.0.1:1/v1\""],
        ),
    ];
    for (name, toml, codes, expect) in cases {
        let file = scratch(name, toml);
        let (got, text) = check_and_print(&file, &[]);
        assert_eq!(got, *codes, "{name}: {text}");
        assert!(!text.contains("SEC"), "{name}: {text}");
        assert!(!text.contains("RET"), "{name}: {text}");
        for e in *expect {
            assert!(text.contains(e), "{name}: {e} missing: {text}");
        }
    }
}

/// The OTLP settings are logged at start: the endpoint without its userinfo, and a malformed
/// `OTEL_EXPORTER_OTLP_HEADERS` entry by position only (it printed the entry, a bearer token).
#[test]
fn otel_credentials_stay_out_of_the_start_up_log_and_config_check() {
    let env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:SECRET1@127.0.0.1:1",
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization Bearer SECRET2,x-team: SECRET3=1",
        ),
    ];
    let mut c = lumen();
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap();
    let (_, before) = wait_listening_with_log(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let log = before.join("\n");
    assert!(
        log.contains("endpoint=http://<redacted>@127.0.0.1:1/v1/traces"),
        "{log}"
    );
    assert!(log.contains("OTEL_EXPORTER_OTLP_HEADERS: entry 1"), "{log}");
    assert!(log.contains("OTEL_EXPORTER_OTLP_HEADERS: entry 2"), "{log}");
    assert!(!log.contains("SECRET"), "{log}");

    let file = scratch(
        "otel-secrets.toml",
        "[[backends]]\nurl = \"http://127.0.0.1:1\"\n",
    );
    let (codes, text) = check_and_print(&file, &env);
    assert_eq!(codes, (0, 0), "{text}");
    assert!(text.contains("entry 1 is not key=value"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}

/// `lumen health` repeats its `--url` when the probe fails: redacted, like every URL shown.
#[test]
fn the_health_probe_shows_its_url_redacted() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = lumen()
        .args(["health", "--url"])
        .arg(format!(
            "http://probe:SECRET@127.0.0.1:{port}/health?token=SECRET"
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "http://<redacted>@127.0.0.1:{port}/health?token=<redacted>"
        )),
        "{err}"
    );
    assert!(!err.contains("SECRET"), "{err}");
}

/// `lumen usage` reads a running Lumen's usage history: the demo engine's answers to a key,
/// as a table with a total, and as CSV.
#[test]
fn usage_prints_the_history_of_a_running_lumen() {
    let sha = |s: &str| lumen_governance::keys::to_hex(&lumen_governance::keys::digest(s));
    let mut child = lumen()
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .env("LUMEN_AUTH__ENABLED", "true")
        .env(
            "LUMEN_AUTH__KEYS",
            format!(r#"[{{name="finance-demo", sha256="{}"}}]"#, sha("sk-usage")),
        )
        .env("LUMEN_AUTH__ADMIN_KEY_SHA256", sha("sk-usage-admin"))
        .spawn()
        .unwrap();
    let addr = wait_listening(&mut child);
    let body =
        r#"{"model":"lumen-demo","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..2 {
        let resp = http(
            &addr,
            &format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-usage\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    let usage = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lumen"));
        c.env_clear()
            .args([
                "usage",
                "--url",
                &format!("http://{addr}"),
                "--admin-key",
                "sk-usage-admin",
            ])
            .args(extra);
        c.output().unwrap()
    };
    let table = usage(&["--key", "finance-demo"]);
    let out = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(out.lines().next().unwrap().starts_with("day"), "{out}");
    assert!(
        out.contains("finance-demo") && out.contains("lumen-demo"),
        "{out}"
    );
    let total = out.lines().find(|l| l.starts_with("total")).unwrap();
    assert_eq!(total.split_whitespace().nth(1), Some("2"), "{out}");
    let csv = usage(&["--csv"]);
    let out = String::from_utf8_lossy(&csv.stdout);
    assert!(out.starts_with("day,key,model"), "{out}");
    let wrong = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .env_clear()
        .args([
            "usage",
            "--url",
            &format!("http://{addr}"),
            "--admin-key",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
    child.kill().unwrap();
    child.wait().unwrap();
}
