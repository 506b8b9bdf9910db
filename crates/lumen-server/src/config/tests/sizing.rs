//! The shipped Kubernetes manifest and the defaults tell one story (docs/deploy.md, "Sizing"):
//! every term of Lumen's memory has a setting that bounds it, and the pod's limit holds the sum
//! of their worst cases for the configuration the manifest ships. A default raised without the
//! manifest (or the other way round) fails here.

use std::path::{Path, PathBuf};

use super::*;

/// Measured figures behind the sum (docs/deploy.md, "Sizing"; release build, `benches/sizing.py`).
/// RSS after start, rounded up.
const BASE: u64 = 20_000_000;
/// RSS per request admitted or queued: a held stream measured 42–46 KB.
const PER_REQUEST: u64 = 50_000;
/// Peak RSS per byte of request body in flight: a body costs at most this many times its size
/// while it is read and parsed (5.5 for 30 MB of escaped text, the worst shape measured), and
/// less once parsed.
const PER_BODY_BYTE: u64 = 6;
/// RSS per byte the in-memory cache counts when full (1.33–1.49 measured with 41 KB answers:
/// moka's entries and the allocator's share of evicted answers).
const PER_CACHED_BYTE_PERCENT: u64 = 150;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `resources.<section>.memory` of the Lumen container, in bytes.
fn memory(deployment: &str, section: &str) -> u64 {
    let mut lines = deployment
        .lines()
        .skip_while(|l| l.trim() != "resources:")
        .skip_while(|l| l.trim() != format!("{section}:"));
    let value = lines
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .unwrap_or_else(|| panic!("no {section}.memory"))
        .trim();
    let (n, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unit {other}"),
    }
}

/// The `lumen.toml` the ConfigMap ships.
fn shipped_config() -> LumenConfig {
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let toml: String = configmap
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("lumen.toml: |"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let cfg: LumenConfig = Figment::new().merge(Toml::string(&toml)).extract().unwrap();
    cfg.validate().unwrap();
    cfg
}

/// The most memory `cfg` lets Lumen use: requests admitted and queued, bodies in flight at
/// their worst, a full in-memory cache.
fn worst_case(cfg: &LumenConfig) -> u64 {
    let r = cfg.resolved().unwrap();
    let admitted = r
        .max_concurrent
        .expect("an admission cap bounds the streams") as u64;
    let requests = (admitted + r.queue_size as u64) * PER_REQUEST;
    let bodies = cfg.server.body_budget_bytes * PER_BODY_BYTE;
    let cache = if cfg.redis.url.is_none() {
        cfg.cache.max_bytes * PER_CACHED_BYTE_PERCENT / 100
    } else {
        0
    };
    BASE + requests + bodies + cache
}

#[test]
fn the_manifest_limit_holds_the_shipped_configuration_at_its_worst() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let (request, limit) = (
        memory(&deployment, "requests"),
        memory(&deployment, "limits"),
    );
    let mut cfg = shipped_config();
    // Redis may be down or dropped from the manifest: then the cache is in memory.
    cfg.redis.url = None;
    let worst = worst_case(&cfg);
    assert!(
        worst <= limit,
        "worst case {} MB > limit {} MB",
        worst / 1_000_000,
        limit / 1_000_000
    );
    // The request covers the streams the replica admits and queues, without bodies or cache.
    let r = cfg.resolved().unwrap();
    let in_flight = r.max_concurrent.unwrap_or(0) as u64 + r.queue_size as u64;
    assert!(
        BASE + in_flight * PER_REQUEST <= request,
        "{in_flight} requests > request {} MB",
        request / 1_000_000
    );
}

/// What the manifest ships is the defaults, as far as memory goes: no setting that bounds a
/// term above is changed there, so the sum holds for a replica run with defaults too.
#[test]
fn the_manifest_runs_the_memory_defaults() {
    let cfg = shipped_config();
    let defaults = LumenConfig::default();
    assert_eq!(
        cfg.server.body_budget_bytes,
        defaults.server.body_budget_bytes
    );
    assert_eq!(cfg.server.max_body_bytes, defaults.server.max_body_bytes);
    assert_eq!(cfg.cache.max_bytes, defaults.cache.max_bytes);
    assert_eq!(cfg.admission, defaults.admission);
    assert_eq!(cfg.profile, defaults.profile);
}
