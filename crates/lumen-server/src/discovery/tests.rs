use super::*;
use crate::config::BackendConfig;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| a(s)).collect()
}

#[test]
fn an_answer_adds_keeps_and_drains() {
    let old = addrs(&["10.0.0.1:80", "10.0.0.2:80"]);
    let new = addrs(&["10.0.0.3:80", "10.0.0.2:80"]);
    let (c, problem) = decide(&old, Ok(&new), 256);
    assert_eq!(problem, None);
    assert_eq!(c.add, addrs(&["10.0.0.3:80"]));
    assert_eq!(c.keep, addrs(&["10.0.0.2:80"]));
    assert_eq!(c.drain, addrs(&["10.0.0.1:80"]));
    assert!(!c.is_empty());
}

#[test]
fn the_same_answer_in_another_order_changes_nothing() {
    let old = addrs(&["10.0.0.1:80", "10.0.0.2:80"]);
    let new = addrs(&["10.0.0.2:80", "10.0.0.1:80", "10.0.0.1:80"]);
    let (c, problem) = decide(&old, Ok(&new), 256);
    assert_eq!(problem, None);
    assert!(c.is_empty());
    assert_eq!(c.keep, old);
}

#[test]
fn a_failed_or_empty_answer_keeps_the_known_set() {
    let old = addrs(&["10.0.0.1:80", "10.0.0.2:80"]);
    for (answer, expected) in [
        (Ok(&[][..]), Problem::Empty),
        (Err(LookupError::NoRecords), Problem::Empty),
        (Err(LookupError::Failed("timeout".into())), Problem::Failed),
    ] {
        let (c, problem) = decide(&old, answer, 256);
        assert_eq!(problem, Some(expected));
        assert!(c.is_empty(), "{expected:?} must change nothing: {c:?}");
        assert_eq!(c.keep, old);
    }
}

#[test]
fn the_cap_keeps_known_addresses_first_then_the_lowest_new_ones() {
    let old = addrs(&["10.0.0.9:80"]);
    let new = addrs(&["10.0.0.3:80", "10.0.0.9:80", "10.0.0.1:80", "10.0.0.2:80"]);
    let (c, problem) = decide(&old, Ok(&new), 3);
    assert_eq!(problem, Some(Problem::Capped));
    assert_eq!(c.keep, addrs(&["10.0.0.9:80"]));
    assert_eq!(c.add, addrs(&["10.0.0.1:80", "10.0.0.2:80"]));
    assert!(c.drain.is_empty());
    // The next round, with the set at the cap, changes nothing.
    let now = addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.9:80"]);
    let (c, problem) = decide(&now, Ok(&new), 3);
    assert_eq!(problem, Some(Problem::Capped));
    assert!(c.is_empty());
}

#[test]
fn a_lowered_cap_drains_what_is_past_it() {
    let old = addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
    let (c, problem) = decide(&old, Ok(&old), 2);
    assert_eq!(problem, Some(Problem::Capped));
    assert_eq!(c.keep, addrs(&["10.0.0.1:80", "10.0.0.2:80"]));
    assert_eq!(c.drain, addrs(&["10.0.0.3:80"]));
    assert!(c.add.is_empty());
}

#[test]
fn an_address_replaces_host_and_port_and_keeps_the_rest() {
    let v4 = a("10.1.2.3:8000");
    assert_eq!(
        with_address("http://engine.ns.svc:8000/v1", v4),
        "http://10.1.2.3:8000/v1"
    );
    assert_eq!(
        with_address("https://user:pw@engine:9/x?y=1", v4),
        "https://user:pw@10.1.2.3:8000/x?y=1"
    );
    assert_eq!(with_address("http://engine", v4), "http://10.1.2.3:8000");
    assert_eq!(
        with_address("http://engine/v1", a("[fd00::1]:8000")),
        "http://[fd00::1]:8000/v1"
    );
    assert_eq!(
        discovered_name("vllm", a("[fd00::1]:8000")),
        "vllm@[fd00::1]:8000"
    );
}

/// A discovered https engine keeps its host name in the URL (its certificate names it, and
/// TLS sends it as SNI) with the address's port, and is reached at the address; a plain one
/// gets the address in its URL.
#[test]
fn a_discovered_https_engine_keeps_its_name_for_tls() {
    let v4 = a("10.1.2.3:8443");
    let t = Target::discovered(2, "tls", "https://user:pw@engine.ns.svc:9/x?y=1", v4);
    assert_eq!(
        t,
        Target {
            index: 2,
            name: "tls@10.1.2.3:8443".into(),
            url: "https://user:pw@engine.ns.svc:8443/x?y=1".into(),
            connect_to: Some(v4),
        }
    );
    assert_eq!(
        Target::discovered(0, "tls", "https://engine/v1", v4).url,
        "https://engine:8443/v1"
    );
    assert_eq!(
        Target::discovered(0, "tls", "HTTPS://engine/v1", v4).connect_to,
        Some(v4),
        "the scheme in any case"
    );
    let plain = Target::discovered(0, "p", "http://engine:9/v1", v4);
    assert_eq!(
        (plain.url.as_str(), plain.connect_to),
        ("http://10.1.2.3:8443/v1", None)
    );
}

#[test]
fn the_port_to_resolve_comes_from_the_url_or_its_scheme() {
    assert_eq!(
        host_and_port("http://engine.ns.svc:8000/v1"),
        ("engine.ns.svc".to_owned(), 8000)
    );
    assert_eq!(host_and_port("http://engine/v1"), ("engine".to_owned(), 80));
    assert_eq!(
        host_and_port("https://u:p@engine"),
        ("engine".to_owned(), 443)
    );
}

fn config() -> LumenConfig {
    LumenConfig {
        backends: vec![
            BackendConfig {
                url: "http://10.9.9.9:8000".into(),
                name: Some("static".into()),
                ..BackendConfig::default()
            },
            BackendConfig {
                url: "http://engine.ns.svc:8000/v1".into(),
                name: Some("pool".into()),
                discovery: Discovery::Dns,
                ..BackendConfig::default()
            },
        ],
        ..LumenConfig::default()
    }
}

#[test]
fn a_discovered_backend_expands_into_its_known_addresses() {
    let cfg = config();
    let mut state = State::default();
    assert_eq!(
        state.targets(&cfg),
        vec![Target {
            index: 0,
            name: "static".into(),
            url: "http://10.9.9.9:8000".into(),
            connect_to: None,
        }],
        "no address known yet: only the static backend"
    );
    state.remember(&cfg);
    state.set(
        "pool",
        Source::of(&cfg, 1),
        addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]),
    );
    let names: Vec<(String, String)> = state
        .targets(&cfg)
        .into_iter()
        .map(|t| (t.name, t.url))
        .collect();
    assert_eq!(
        names,
        vec![
            ("static".into(), "http://10.9.9.9:8000".into()),
            (
                "pool@10.0.0.1:8000".into(),
                "http://10.0.0.1:8000/v1".into()
            ),
            (
                "pool@10.0.0.2:8000".into(),
                "http://10.0.0.2:8000/v1".into()
            ),
        ]
    );
}

#[test]
fn a_reload_keeps_the_addresses_unless_the_backend_changed() {
    let cfg = config();
    let mut state = State::default();
    state.remember(&cfg);
    state.set("pool", Source::of(&cfg, 1), addrs(&["10.0.0.1:8000"]));
    // The same backend (another setting changed): the set stays.
    let mut same = cfg.clone();
    same.backends[1].weight = 3;
    state.remember(&same);
    assert_eq!(state.targets(&same).len(), 2);
    // Another host: the set answered another name, and is dropped.
    let mut moved = cfg.clone();
    moved.backends[1].url = "http://other.ns.svc:8000/v1".into();
    assert_eq!(state.targets(&moved).len(), 1, "not used for another URL");
    state.remember(&moved);
    assert!(state.sets.is_empty());
    // Gone from the configuration: dropped too.
    state.set("pool", Source::of(&moved, 1), addrs(&["10.0.0.1:8000"]));
    let mut gone = moved.clone();
    gone.backends.truncate(1);
    state.remember(&gone);
    assert!(state.sets.is_empty());
}

#[test]
fn passthrough_to_a_discovered_backend_means_its_addresses() {
    let mut cfg = config();
    cfg.routing.passthrough.enabled = true;
    cfg.routing.passthrough.backends = vec!["pool".into(), "static".into()];
    let mut state = State::default();
    state.remember(&cfg);
    let g = governance(&cfg, &state.targets(&cfg));
    assert_eq!(g.passthrough.backends, vec!["static".to_owned()]);
    assert!(g.passthrough.enabled);
    state.set("pool", Source::of(&cfg, 1), addrs(&["10.0.0.1:8000"]));
    let g = governance(&cfg, &state.targets(&cfg));
    assert_eq!(
        g.passthrough.backends,
        vec!["pool@10.0.0.1:8000".to_owned(), "static".to_owned()]
    );
    // Only the discovered one listed, and no address: passthrough waits for one.
    cfg.routing.passthrough.backends = vec!["pool".into()];
    let g = governance(&cfg, &State::default().targets(&cfg));
    assert!(!g.passthrough.enabled);
}

#[test]
fn discovery_needs_a_host_name_and_names_without_at() {
    let mut cfg = config();
    assert!(cfg.validate().is_ok());
    cfg.backends[1].url = "http://10.0.0.1:8000".into();
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.starts_with("backends[1].discovery"), "{e}");
    let mut cfg = config();
    cfg.backends[0].name = Some("a@b".into());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.starts_with("backends[0].name"), "{e}");
    let mut cfg = config();
    cfg.dns.max_addresses = 0;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.starts_with("dns.max_addresses"), "{e}");
}

/// SRV names cannot name https engines: TLS would check their certificates against the SRV
/// name. A careless configuration is refused, not left failing every probe.
#[test]
fn srv_discovery_of_https_engines_is_refused() {
    let mut cfg = LumenConfig::default();
    cfg.backends.push(BackendConfig {
        url: "https://_https._tcp.engines.ns.svc:443/v1".into(),
        discovery: Discovery::Srv,
        ..BackendConfig::default()
    });
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("backends[0].discovery:") && err.contains("srv cannot name https"),
        "{err}"
    );
    cfg.backends[0].discovery = Discovery::Dns;
    cfg.backends[0].url = "https://engines.ns.svc/v1".into();
    cfg.validate().unwrap();
}
