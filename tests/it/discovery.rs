//! DNS discovery (issue 21): a backend named by a host name (a Kubernetes headless Service) or
//! by SRV records becomes one backend per address. A DNS server on 127.0.0.1 that the test
//! scripts answers Lumen's resolver (never the system's); engines are simulators on 127.0.0.x.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use http_body_util::BodyExt;
use lumen_server::Gateway;
use lumen_server::config::{BackendConfig, Discovery, DnsConfig, LumenConfig};
use lumen_sim::{SimConfig, Simulator};
use lumen_tests::{Lumen, eventually, metric, no_health_checks, post, post_streaming};

/// What the test DNS server answers.
#[derive(Clone, Default)]
struct Zone {
    records: HashMap<(String, RecordType), Vec<RData>>,
    /// Answer every query with SERVFAIL.
    fail: bool,
}

/// A DNS server on `127.0.0.1:0` (UDP) answering from a [`Zone`] the test changes, with TTL 0.
struct Dns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
}

impl Dns {
    async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let queries = Arc::new(AtomicU64::new(0));
        let (z, q) = (zone.clone(), queries.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                let zone = z.lock().unwrap().clone();
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(true)
                    .set_recursion_available(true)
                    .set_authoritative(true);
                for question in query.queries() {
                    reply.add_query(question.clone());
                    let key = (
                        question.name().to_ascii().to_ascii_lowercase(),
                        question.query_type(),
                    );
                    for rdata in zone.records.get(&key).into_iter().flatten() {
                        reply.add_answer(Record::from_rdata(
                            question.name().clone(),
                            0,
                            rdata.clone(),
                        ));
                    }
                }
                reply.set_response_code(if zone.fail {
                    ResponseCode::ServFail
                } else {
                    ResponseCode::NoError
                });
                let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
            }
        });
        Self {
            addr,
            zone,
            queries,
        }
    }

    /// Sets the A records of `name` (fully qualified, with the final dot).
    fn set_a(&self, name: &str, ips: &[&str]) {
        let records = ips
            .iter()
            .map(|ip| RData::A(A(ip.parse().unwrap())))
            .collect();
        self.zone
            .lock()
            .unwrap()
            .records
            .insert((name.to_owned(), RecordType::A), records);
    }

    /// Sets the SRV records of `name`: (target, port) each.
    fn set_srv(&self, name: &str, targets: &[(&str, u16)]) {
        let records = targets
            .iter()
            .map(|(t, port)| RData::SRV(SRV::new(0, 0, *port, Name::from_ascii(t).unwrap())))
            .collect();
        self.zone
            .lock()
            .unwrap()
            .records
            .insert((name.to_owned(), RecordType::SRV), records);
    }

    fn fail(&self, fail: bool) {
        self.zone.lock().unwrap().fail = fail;
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// A simulator serving `m1` on `addr` (port 0 for any), each token 20 ms apart.
async fn engine_on(addr: SocketAddr) -> (SocketAddr, Simulator) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = Simulator::new(SimConfig {
        models: vec!["m1".to_owned()],
        itl: Duration::from_millis(20),
        ttft: Duration::from_millis(1),
        record: 1024,
        ..SimConfig::default()
    });
    let served = sim.clone();
    tokio::spawn(async move { lumen_sim::serve(listener, served, std::future::pending()).await });
    (addr, sim)
}

/// Lumen with one backend, `pool`, discovered at `url` from `dns`, re-resolved every 50 ms.
fn config(url: &str, discovery: Discovery, dns: &Dns) -> LumenConfig {
    LumenConfig {
        backends: vec![BackendConfig {
            name: Some("pool".to_owned()),
            url: url.to_owned(),
            discovery,
            ..BackendConfig::default()
        }],
        dns: DnsConfig {
            interval_ms: 50,
            timeout_ms: 500,
            server: Some(dns.addr),
            ..DnsConfig::default()
        },
        health: no_health_checks(),
        ..LumenConfig::default()
    }
}

/// The backend names in the routing table now, sorted.
fn backends(lumen: &Lumen) -> Vec<String> {
    let mut names: Vec<String> = lumen
        .gateway
        .core()
        .router()
        .slots()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names
}

const CHAT: &str = r#"{"model":"m1","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#;

/// Sends `n` chat requests; every one must succeed.
async fn chat(lumen: &Lumen, n: usize) {
    for _ in 0..n {
        let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

const LIMIT: Duration = Duration::from_secs(10);

async fn wait_for_backends(lumen: &Lumen, expected: &[String]) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while backends(lumen) != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "backends {:?}, expected {expected:?}",
            backends(lumen)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `m1` is routable (the new backends' models were discovered).
async fn wait_routable(lumen: &Lumen) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let r = post(&lumen.url("/v1/chat/completions"), CHAT).await;
        if r.status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "m1 never routable: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn problems(lumen: &Lumen, problem: &str) -> f64 {
    metric(
        &lumen.gateway.render_metrics(),
        &format!("lumen_dns_problems_total{{backend=\"pool\",problem=\"{problem}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_come_and_go_with_the_dns_answer() {
    let dns = Dns::start().await;
    let (a, sim_a) = engine_on("127.0.0.2:0".parse().unwrap()).await;
    let port = a.port();
    let (b, sim_b) = engine_on(SocketAddr::new("127.0.0.3".parse().unwrap(), port)).await;
    dns.set_a("engines.test.", &["127.0.0.2", "127.0.0.3"]);
    let cfg = config(
        &format!("http://engines.test:{port}/v1"),
        Discovery::Dns,
        &dns,
    );
    let lumen = Lumen::start(Gateway::from_config(&cfg).unwrap()).await;
    let name = |addr: SocketAddr| format!("pool@{addr}");

    // Both addresses become backends, and both get traffic.
    wait_for_backends(&lumen, &[name(a), name(b)]).await;
    wait_routable(&lumen).await;
    chat(&lumen, 20).await;
    assert!(sim_a.request_count() > 0 && sim_b.request_count() > 0);

    // A stream is open on one of them when the answer drops it.
    let body = r#"{"model":"m1","stream":true,"max_tokens":30,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = post_streaming(&lumen.url("/v1/chat/completions"), body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let first = stream.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let (_gone, gone_sim, stays, stays_sim) = if sim_a.running() == 1 {
        (a, &sim_a, b, &sim_b)
    } else {
        assert_eq!(sim_b.running(), 1, "the stream runs on one engine");
        (b, &sim_b, a, &sim_a)
    };
    dns.set_a("engines.test.", &[&stays.ip().to_string()]);
    wait_for_backends(&lumen, &[name(stays)]).await;
    // Nothing new reaches the drained address...
    let before = gone_sim.request_count();
    chat(&lumen, 10).await;
    assert_eq!(
        gone_sim.request_count(),
        before,
        "new requests went to a drained address"
    );
    assert!(stays_sim.request_count() > 0);
    // ...while its stream finishes whole.
    let rest = stream.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&first.into_data().unwrap()).into_owned()
        + &String::from_utf8_lossy(&rest);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("error"), "{text}");

    // A new address gets traffic only once its probe passes: nothing listens there yet.
    let fresh: SocketAddr = SocketAddr::new("127.0.0.4".parse().unwrap(), port);
    dns.set_a("engines.test.", &[&stays.ip().to_string(), "127.0.0.4"]);
    let seen = problems(&lumen, "probe_failed");
    eventually(LIMIT, || problems(&lumen, "probe_failed") > seen).await;
    assert_eq!(
        backends(&lumen),
        vec![name(stays)],
        "admitted before its probe passed"
    );
    let (_, sim_c) = engine_on(fresh).await;
    wait_for_backends(&lumen, &{
        let mut v = vec![name(stays), name(fresh)];
        v.sort();
        v
    })
    .await;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while sim_c.request_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new address got no traffic"
        );
        chat(&lumen, 2).await;
    }

    // A failing resolver, then an empty answer, keep the known set.
    let known = backends(&lumen);
    dns.fail(true);
    eventually(LIMIT, || problems(&lumen, "failed") >= 1.0).await;
    assert_eq!(backends(&lumen), known);
    chat(&lumen, 2).await;
    dns.fail(false);
    dns.set_a("engines.test.", &[]);
    eventually(LIMIT, || problems(&lumen, "empty") >= 1.0).await;
    assert_eq!(backends(&lumen), known);
    chat(&lumen, 2).await;

    // A reload keeps the discovered addresses, and a changed answer still applies after it.
    let mut reloaded = cfg.clone();
    reloaded.retry.max_attempts = Some(2);
    lumen.gateway.reload(&reloaded).unwrap();
    assert_eq!(
        backends(&lumen),
        known,
        "a reload dropped discovered addresses"
    );
    dns.set_a("engines.test.", &["127.0.0.4"]);
    wait_for_backends(&lumen, &[name(fresh)]).await;

    // The loop stops with the server.
    lumen.shutdown().await;
    let asked = dns.queries();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dns.queries(), asked, "DNS queries after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_each_target_and_port_a_backend() {
    let dns = Dns::start().await;
    let (a, sim_a) = engine_on("127.0.0.1:0".parse().unwrap()).await;
    let (b, sim_b) = engine_on("127.0.0.1:0".parse().unwrap()).await;
    dns.set_srv(
        "_http._tcp.engines.test.",
        &[
            ("e1.engines.test.", a.port()),
            ("e2.engines.test.", b.port()),
        ],
    );
    dns.set_a("e1.engines.test.", &["127.0.0.1"]);
    dns.set_a("e2.engines.test.", &["127.0.0.1"]);
    let cfg = config("http://_http._tcp.engines.test/v1", Discovery::Srv, &dns);
    let lumen = Lumen::start(Gateway::from_config(&cfg).unwrap()).await;
    let mut both = vec![format!("pool@{a}"), format!("pool@{b}")];
    both.sort();
    wait_for_backends(&lumen, &both).await;
    wait_routable(&lumen).await;
    chat(&lumen, 20).await;
    assert!(sim_a.request_count() > 0 && sim_b.request_count() > 0);

    dns.set_srv(
        "_http._tcp.engines.test.",
        &[("e2.engines.test.", b.port())],
    );
    wait_for_backends(&lumen, &[format!("pool@{b}")]).await;
    let before = sim_a.request_count();
    chat(&lumen, 10).await;
    assert_eq!(sim_a.request_count(), before);
    lumen.shutdown().await;
}

#[test]
fn discovery_settings_come_from_the_file() {
    let dir = std::env::temp_dir().join(format!("lumen-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lumen.toml");
    std::fs::write(
        &path,
        r#"
[[backends]]
name = "vllm"
url = "http://vllm-engines.default.svc.cluster.local:8000"
discovery = "dns"

[dns]
interval_ms = 5000
server = "10.96.0.10:53"
max_addresses = 64
"#,
    )
    .unwrap();
    let cfg = lumen_server::config::load(Some(&path), &Default::default()).unwrap();
    assert_eq!(cfg.backends[0].discovery, Discovery::Dns);
    assert_eq!(cfg.dns.interval_ms, 5000);
    assert_eq!(
        cfg.dns.server,
        Some(SocketAddr::new(IpAddr::from([10, 96, 0, 10]), 53))
    );
    assert_eq!(cfg.dns.max_addresses, 64);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An https engine behind `addr`'s TLS, with a certificate for `name` alone (signed by
/// itself): TLS in front of a simulator, as an engine behind its own TLS terminator. Returns
/// the TLS address, the simulator, and the certificate as PEM (the client's CA file).
async fn tls_engine_on(addr: SocketAddr, name: &str) -> (SocketAddr, Simulator, String) {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let (engine, sim) = engine_on("127.0.0.1:0".parse().unwrap()).await;
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let pem = generated.cert.pem();
    let key =
        PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![generated.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A handshake that fails (a client that asked for another name) just ends.
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(engine).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, sim, pem)
}

/// A discovered https engine is reached at its address while TLS checks its certificate
/// against the URL's host name (an engine's certificate names its host, not the addresses it
/// resolves to), trusting the backend's `ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_https_engine_is_checked_against_its_name() {
    let dns = Dns::start().await;
    let (a, sim, pem) = tls_engine_on("127.0.0.2:0".parse().unwrap(), "engines.test").await;
    dns.set_a("engines.test.", &["127.0.0.2"]);
    let dir = std::env::temp_dir().join(format!("lumen-dns-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let mut cfg = config(
        &format!("https://engines.test:{}/v1", a.port()),
        Discovery::Dns,
        &dns,
    );
    // A careless operator: a CA file that is not there, or one on a plain engine.
    cfg.backends[0].ca_file = Some(dir.join("missing.pem"));
    let err = Gateway::from_config(&cfg).err().unwrap().to_string();
    assert!(
        err.starts_with("backends[0].ca_file:") && err.contains("cannot read the CA file"),
        "{err}"
    );
    let mut plain = cfg.clone();
    plain.backends[0].url = format!("http://engines.test:{}/v1", a.port());
    let err = plain.validate().unwrap_err().to_string();
    assert!(err.starts_with("backends[0].ca_file:"), "{err}");
    cfg.backends[0].ca_file = Some(ca.clone());
    cfg.validate().unwrap();
    let lumen = Lumen::start(Gateway::from_config(&cfg).unwrap()).await;
    wait_for_backends(&lumen, &[format!("pool@{a}")]).await;
    wait_routable(&lumen).await;
    chat(&lumen, 3).await;
    assert!(sim.request_count() >= 3, "served over TLS by the engine");

    // Without the CA the system does not trust the engine's certificate: no answer from it.
    let mut untrusted = cfg.clone();
    untrusted.backends[0].ca_file = None;
    let lumen = Lumen::start(Gateway::from_config(&untrusted).unwrap()).await;
    wait_for_backends(&lumen, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        backends(&lumen).is_empty(),
        "an address that fails its probe is not added"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
