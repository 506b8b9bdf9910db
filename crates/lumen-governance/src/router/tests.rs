use std::collections::{BTreeMap, HashMap, VecDeque};

use super::*;
use crate::config::{AutoConfig, ModelConfig, PassthroughConfig};

fn spec(name: &str, models: Option<&[&str]>, weight: u32) -> BackendSpec<String> {
    BackendSpec {
        name: name.to_owned(),
        backend: name.to_owned(),
        weight,
        models: models.map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
        key: format!("http://{name}"),
    }
}

fn three(policy: Policy) -> Router<String> {
    let cfg = GovernanceConfig {
        policy,
        seed: Some(7),
        ..GovernanceConfig::default()
    };
    let m: &[&str] = &["m"];
    Router::new(
        cfg,
        vec![
            spec("a", Some(m), 1),
            spec("b", Some(m), 1),
            spec("c", Some(m), 1),
        ],
    )
    .unwrap()
}

fn req(model: &str) -> RouteRequest<'_> {
    RouteRequest {
        model,
        ..RouteRequest::default()
    }
}

/// Routes `n` requests, holding each lease for `hold(i)` further requests, and counts picks.
fn distribution(
    r: &Router<String>,
    n: usize,
    hold: impl Fn(usize) -> usize,
    mk: impl Fn(usize) -> (Option<String>, Option<Vec<u8>>),
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut held: VecDeque<(usize, Lease<String>)> = VecDeque::new();
    for i in 0..n {
        while held.front().is_some_and(|(until, _)| *until <= i) {
            held.pop_front();
        }
        let (session, prefix) = mk(i);
        let route = r
            .route(&RouteRequest {
                model: "m",
                session: session.as_deref(),
                prefix: prefix.as_deref(),
                exclude: &[],
                ..RouteRequest::default()
            })
            .unwrap();
        *counts.entry(route.lease.name.clone()).or_insert(0) += 1;
        held.push_back((i + hold(i), route.lease));
        held.make_contiguous().sort_by_key(|(until, _)| *until);
    }
    drop(held);
    assert!(
        r.slots().iter().all(|s| s.in_flight() == 0),
        "leases released"
    );
    counts
}

fn counts_of(c: &BTreeMap<String, usize>) -> Vec<usize> {
    c.values().copied().collect()
}

#[test]
fn weighted_round_robin_is_exact() {
    let m: &[&str] = &["m"];
    let r = Router::new(
        GovernanceConfig {
            policy: Policy::RoundRobin,
            ..GovernanceConfig::default()
        },
        vec![
            spec("a", Some(m), 1),
            spec("b", Some(m), 2),
            spec("c", Some(m), 1),
        ],
    )
    .unwrap();
    let c = distribution(&r, 10_000, |_| 0, |_| (None, None));
    println!("round_robin (weights 1,2,1): {c:?}");
    assert_eq!(counts_of(&c), vec![2_500, 5_000, 2_500]);
}

#[test]
fn least_in_flight_always_picks_the_least_loaded() {
    let r = three(Policy::LeastInFlight);
    let even = distribution(&r, 10_000, |_| 3, |_| (None, None));
    println!("least_in_flight (equal holds): {even:?}");
    for n in counts_of(&even) {
        assert!((3_333..=3_334).contains(&n), "{even:?}");
    }
    // Uneven holds: counts may differ, but every pick must go to a least-loaded backend.
    let mut held: VecDeque<(usize, Lease<String>)> = VecDeque::new();
    let mut counts = BTreeMap::new();
    for i in 0..10_000 {
        while held.front().is_some_and(|(until, _)| *until <= i) {
            held.pop_front();
        }
        let min = r.slots().iter().map(|s| s.in_flight()).min().unwrap();
        let route = r.route(&req("m")).unwrap();
        assert_eq!(
            route.lease.in_flight() - 1,
            min,
            "picked a least-loaded backend"
        );
        *counts.entry(route.lease.name.clone()).or_insert(0) += 1;
        held.push_back((i + (i * 7919) % 13, route.lease));
        held.make_contiguous().sort_by_key(|(until, _)| *until);
    }
    println!("least_in_flight (uneven holds): {counts:?}");
}

#[test]
fn power_of_two_is_seeded_and_balanced() {
    let a = distribution(
        &three(Policy::PowerOfTwo),
        10_000,
        |i| (i * 7919) % 13,
        |_| (None, None),
    );
    let b = distribution(
        &three(Policy::PowerOfTwo),
        10_000,
        |i| (i * 7919) % 13,
        |_| (None, None),
    );
    println!("power_of_two: {a:?}");
    assert_eq!(a, b, "same seed, same choices");
    for n in counts_of(&a) {
        assert!((3_000..=3_666).contains(&n), "{a:?}");
    }
}

#[test]
fn session_affinity_is_sticky_spread_and_moves_minimally() {
    let r = three(Policy::SessionAffinity);
    let c = distribution(&r, 10_000, |_| 0, |i| (Some(format!("session-{i}")), None));
    println!("session_affinity (10,000 sessions): {c:?}");
    for n in counts_of(&c) {
        assert!((3_000..=3_666).contains(&n), "{c:?}");
    }
    let pick = |r: &Router<String>, s: &str| {
        r.route(&RouteRequest {
            model: "m",
            session: Some(s),
            ..RouteRequest::default()
        })
        .unwrap()
        .lease
        .name
        .clone()
    };
    let before: Vec<String> = (0..3_000).map(|i| pick(&r, &format!("u{i}"))).collect();
    assert!(
        (0..3_000).all(|i| pick(&r, &format!("u{i}")) == before[i]),
        "sticky"
    );
    // Backend c leaves: only c's sessions move.
    let m: &[&str] = &["m"];
    let cfg = GovernanceConfig {
        policy: Policy::SessionAffinity,
        ..GovernanceConfig::default()
    };
    r.reconfigure(cfg, vec![spec("a", Some(m), 1), spec("b", Some(m), 1)])
        .unwrap();
    let mut moved = 0;
    for (i, was) in before.iter().enumerate() {
        let now = pick(&r, &format!("u{i}"));
        if was != "c" {
            assert_eq!(&now, was, "a session not on the removed backend stayed put");
        } else {
            moved += 1;
        }
    }
    println!("session_affinity: {moved} of 3000 sessions moved when 1 of 3 backends left");
}

#[test]
fn prefix_affinity_keeps_prefixes_together_within_the_load_bound() {
    let r = three(Policy::PrefixAffinity);
    let mut per_prefix: HashMap<usize, HashMap<String, usize>> = HashMap::new();
    let mut held: VecDeque<Lease<String>> = VecDeque::new();
    let mut peak = 0;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..10_000usize {
        // 30 distinct system prompts; the server passes the shared leading content.
        let p = (i * 31) % 30;
        let prompt = format!("system: you are assistant #{p}, answer briefly.");
        let route = r
            .route(&RouteRequest {
                model: "m",
                prefix: Some(prompt.as_bytes()),
                ..RouteRequest::default()
            })
            .unwrap();
        let name = route.lease.name.clone();
        *per_prefix
            .entry(p)
            .or_default()
            .entry(name.clone())
            .or_insert(0) += 1;
        *counts.entry(name).or_insert(0) += 1;
        held.push_back(route.lease);
        if held.len() > 12 {
            held.pop_front();
        }
        peak = peak.max(r.slots().iter().map(|s| s.in_flight()).max().unwrap_or(0));
    }
    println!(
        "prefix_affinity (30 prefixes, 12 in flight): {counts:?}, peak in flight per backend {peak}"
    );
    let sticky: usize = per_prefix
        .values()
        .map(|m| m.values().max().copied().unwrap_or(0))
        .sum();
    println!("prefix_affinity: {sticky} of 10000 requests on their prefix's main backend");
    assert!(
        sticky as f64 / 10_000.0 > 0.8,
        "most requests land on their prefix's backend ({sticky})"
    );
    assert!(peak <= 6, "load bound: ceil(1.25 * 13 / 3) = 6, saw {peak}");
}

#[test]
fn one_hot_prefix_cannot_overload_one_engine() {
    let r = three(Policy::PrefixAffinity);
    let mut held = Vec::new();
    for _ in 0..30 {
        let route = r
            .route(&RouteRequest {
                model: "m",
                prefix: Some(b"the same system prompt"),
                ..RouteRequest::default()
            })
            .unwrap();
        held.push(route.lease);
    }
    let loads: Vec<usize> = r.slots().iter().map(|s| s.in_flight()).collect();
    println!("hot prefix, 30 concurrent: {loads:?}");
    // Bound: ceil(1.25 x (29 + 1) / 3) = 13; without it one engine would hold all 30.
    assert!(loads.iter().all(|l| *l <= 13), "{loads:?}");
    assert!(
        loads.iter().filter(|l| **l > 0).count() >= 2,
        "spilled: {loads:?}"
    );
}

#[test]
fn in_flight_is_exact_under_concurrency() {
    for policy in [
        Policy::RoundRobin,
        Policy::LeastInFlight,
        Policy::PowerOfTwo,
        Policy::SessionAffinity,
        Policy::PrefixAffinity,
    ] {
        let r = Arc::new(three(policy));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut n = BTreeMap::new();
                    let mut held = Vec::new();
                    for i in 0..2_000 {
                        let key = format!("{t}-{i}");
                        let route = r
                            .route(&RouteRequest {
                                model: "m",
                                session: Some(&key),
                                prefix: Some(key.as_bytes()),
                                exclude: &[],
                                ..RouteRequest::default()
                            })
                            .unwrap();
                        *n.entry(route.lease.name.clone()).or_insert(0usize) += 1;
                        held.push(route.lease);
                        if held.len() > 5 {
                            held.remove(i % 5);
                        }
                    }
                    n
                })
            })
            .collect();
        let mut total: BTreeMap<String, usize> = BTreeMap::new();
        for t in threads {
            for (k, v) in t.join().unwrap() {
                *total.entry(k).or_insert(0) += v;
            }
        }
        println!("{} under 8 threads: {total:?}", policy.as_str());
        assert_eq!(total.values().sum::<usize>(), 16_000);
        assert!(
            r.slots().iter().all(|s| s.in_flight() == 0),
            "{policy:?}: counts returned to zero"
        );
    }
}

fn governed() -> Router<String> {
    let cfg = GovernanceConfig {
        default_model: Some("chat".into()),
        exposed_models: Some(vec!["llama".into(), "qwen".into(), "chat".into()]),
        aliases: BTreeMap::from([("chat".into(), "llama".into())]),
        auto: AutoConfig {
            preference: vec!["qwen".into(), "llama".into()],
        },
        passthrough: PassthroughConfig {
            enabled: true,
            backends: vec!["c".into()],
        },
        models: BTreeMap::from([(
            "qwen".into(),
            ModelConfig {
                policy: Some(Policy::LeastInFlight),
                ..ModelConfig::default()
            },
        )]),
        ..GovernanceConfig::default()
    };
    let r = Router::new(
        cfg,
        vec![spec("a", None, 1), spec("b", None, 1), spec("c", None, 1)],
    )
    .unwrap();
    let model = |id: &str| {
        let mut m = Model::new(id);
        m.extra.insert("max_model_len".into(), 4096.into());
        m
    };
    r.set_discovered("a", vec![model("llama"), model("hidden")]);
    r.set_discovered("b", vec![model("llama"), model("qwen")]);
    r.set_discovered("c", vec![model("qwen")]);
    r
}

#[test]
fn allowlist_aliases_auto_default_and_listing() {
    let r = governed();
    let ids: Vec<String> = r.models().into_iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        vec!["chat", "llama", "qwen", "auto"],
        "exposed and routable only"
    );
    let chat = r.model("chat").unwrap();
    assert_eq!(
        chat.extra["max_model_len"], 4096,
        "engine metadata kept on aliases"
    );
    assert_eq!(chat.extra["root"], "llama");

    let route = r.route(&req("chat")).unwrap();
    assert_eq!(
        (route.public_model.as_str(), route.engine_model.as_str()),
        ("chat", "llama")
    );
    assert!(route.rewrites_model());
    assert!(["a", "b"].contains(&route.lease.name.as_str()));

    let route = r.route(&req("")).unwrap();
    assert_eq!(route.public_model, "chat", "default model");

    let route = r.route(&req("auto")).unwrap();
    assert_eq!(route.public_model, "qwen", "first preference");
    assert_eq!(route.policy, Policy::LeastInFlight, "per-model policy");

    // "hidden" is served but not exposed: with passthrough on it goes to the passthrough pool.
    let route = r.route(&req("hidden")).unwrap();
    assert_eq!(route.lease.name, "c");
    assert_eq!(route.engine_model, "hidden");
    let route = r.route(&req("anything-else")).unwrap();
    assert_eq!(
        (route.lease.name.as_str(), route.engine_model.as_str()),
        ("c", "anything-else")
    );
}

#[test]
fn auto_skips_models_without_a_healthy_backend() {
    let r = governed();
    for s in r.slots() {
        if s.name == "b" || s.name == "c" {
            s.set_available(false);
        }
    }
    let route = r.route(&req("auto")).unwrap();
    assert_eq!(
        (route.public_model.as_str(), route.lease.name.as_str()),
        ("llama", "a")
    );
    for s in r.slots() {
        s.set_available(false);
    }
    assert_eq!(
        r.route(&req("auto")).unwrap_err(),
        GovernanceError::NoHealthyBackend {
            model: "auto".into()
        }
    );
    assert_eq!(
        r.route(&req("llama")).unwrap_err(),
        GovernanceError::NoHealthyBackend {
            model: "llama".into()
        }
    );
}

#[test]
fn unknown_ids_are_refused_without_passthrough() {
    let m: &[&str] = &["m"];
    let r = Router::new(
        GovernanceConfig::default(),
        vec![spec("a", Some(m), 1), spec("b", Some(&["n"]), 1)],
    )
    .unwrap();
    assert_eq!(
        r.route(&req("zzz")).unwrap_err(),
        GovernanceError::ModelNotFound {
            model: "zzz".into()
        }
    );
    assert_eq!(
        r.route(&req("")).unwrap_err(),
        GovernanceError::ModelRequired
    );
    let single = Router::new(GovernanceConfig::default(), vec![spec("a", Some(m), 1)]).unwrap();
    assert_eq!(single.route(&req("")).unwrap().public_model, "m");
}

#[test]
fn retries_avoid_tried_backends_while_others_exist() {
    let r = three(Policy::RoundRobin);
    let first = r.route(&req("m")).unwrap();
    let tried = [first.lease.id];
    for _ in 0..20 {
        let again = r
            .route(&RouteRequest {
                model: "m",
                exclude: &tried,
                ..RouteRequest::default()
            })
            .unwrap();
        assert_ne!(again.lease.id, first.lease.id);
    }
    let all: Vec<u64> = r.slots().iter().map(|s| s.id).collect();
    let again = r
        .route(&RouteRequest {
            model: "m",
            exclude: &all,
            ..RouteRequest::default()
        })
        .unwrap();
    assert!(
        all.contains(&again.lease.id),
        "with every backend tried, one is reused"
    );
}

#[test]
fn reload_keeps_unchanged_slots_and_rejects_bad_config() {
    let r = governed();
    let before = r.slots();
    let lease = r.route(&req("llama")).unwrap().lease;
    let cfg = GovernanceConfig {
        policy: Policy::LeastInFlight,
        ..GovernanceConfig::default()
    };
    r.reconfigure(
        cfg,
        vec![spec("a", None, 1), spec("b", None, 1), spec("c", None, 1)],
    )
    .unwrap();
    let after = r.slots();
    for (x, y) in before.iter().zip(&after) {
        assert!(Arc::ptr_eq(x, y), "same backend, same slot");
    }
    assert_eq!(
        after.iter().map(|s| s.in_flight()).sum::<usize>(),
        1,
        "in-flight count carried over"
    );
    drop(lease);
    assert!(
        r.models().iter().any(|m| m.id == "qwen"),
        "discovered models carried over"
    );

    let bad = GovernanceConfig {
        passthrough: PassthroughConfig {
            enabled: true,
            backends: vec!["nope".into()],
        },
        ..GovernanceConfig::default()
    };
    let err = r.reconfigure(bad, vec![spec("a", None, 1)]).unwrap_err();
    assert_eq!(err.key, "routing.passthrough.backends");
    assert_eq!(r.slots().len(), 3, "old table stays live");
}

#[test]
fn a_pool_of_one_makes_no_policy_work() {
    // One engine a model: nothing to choose, so the gateway need not read the prompt and the
    // router records nothing in the cache-aware index.
    let m: &[&str] = &["m"];
    let one = Router::new(GovernanceConfig::default(), vec![spec("a", Some(m), 1)]).unwrap();
    assert!(!one.has_choice());
    let mut h = crate::prefix::PromptHasher::new(1 << 16, 256);
    h.message(
        "user",
        "a question long enough to fill a block "
            .repeat(40)
            .as_bytes(),
    );
    let key = h.finish(None);
    let name = |r: &Router<String>| {
        r.route(&RouteRequest {
            model: "m",
            prompt: Some(&key),
            now_ms: 1,
            ..RouteRequest::default()
        })
        .unwrap()
        .lease
        .name
        .clone()
    };
    assert_eq!(name(&one), "a");
    assert_eq!(one.indexed_entries(), 0);
    // Two engines serving different models: still no choice within any pool.
    let apart = Router::new(
        GovernanceConfig::default(),
        vec![spec("a", Some(&["m"]), 1), spec("b", Some(&["n"]), 1)],
    )
    .unwrap();
    assert!(!apart.has_choice());
    // Nothing to choose: the default policy asks for no scrape, unless configured.
    assert!(!one.scrapes_signals() && !apart.scrapes_signals());
    let asked = Router::new(
        GovernanceConfig {
            signals: crate::config::SignalsConfig {
                enabled: Some(true),
                ..Default::default()
            },
            ..GovernanceConfig::default()
        },
        vec![spec("a", Some(m), 1)],
    )
    .unwrap();
    assert!(asked.scrapes_signals());
    let two = Router::new(
        GovernanceConfig::default(),
        vec![spec("a", Some(m), 1), spec("b", Some(m), 1)],
    )
    .unwrap();
    assert!(two.has_choice() && two.scrapes_signals());
    name(&two);
    assert!(two.indexed_entries() > 0, "a choice is recorded");
}
