//! Other routers in Lumen's place (`--peers`): vLLM's router (`vllm-router`, PyPI
//! `vllm-router`) and SGLang's model gateway (`smg`, PyPI `sglang-router`), each a Rust binary
//! inside a Python wheel, run as processes in front of the same fresh engines, with the same
//! arrivals and the same figures, so the table compares routers rather than set-ups.
//!
//! Neither is needed: a router that is not installed is left out with a note, and one that
//! fails to start loses its cells, not the run. Binaries come from `VLLM_ROUTER_BIN` and
//! `SGLANG_ROUTER_BIN`, or from `PATH`.
//!
//! Settings, the same for every peer cell and otherwise each router's defaults (their
//! `cache_aware` thresholds included): loopback only, logs at `error`, the Prometheus
//! listener on a port of its own (both default to 29000, which three replicas would fight
//! over), and `--worker-startup-check-interval 1`. The last matters beyond start-up: both
//! poll their workers' `GET /get_load` on that interval for `power_of_two` (default 30 s,
//! stale for a whole cell). SGLang's router is given engines that answer `/get_load` as
//! SGLang does (`lumen-sim --sglang-get-load`); vLLM's gets engines that answer 404 like vLLM,
//! which leaves its `power_of_two` on its own count of requests in flight.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::procs::{self, Proc};
use crate::soak::client::{Client, Read};

/// A router other than Lumen's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    /// vLLM's router (`pip install vllm-router`).
    Vllm,
    /// SGLang's model gateway (`pip install sglang-router`), formerly SGLang's router.
    Smg,
}

impl Router {
    pub fn name(self) -> &'static str {
        match self {
            Router::Vllm => "vllm-router",
            Router::Smg => "smg",
        }
    }

    /// The variable that names the binary.
    pub fn env(self) -> &'static str {
        match self {
            Router::Vllm => "VLLM_ROUTER_BIN",
            Router::Smg => "SGLANG_ROUTER_BIN",
        }
    }

    /// Executables looked for on `PATH`, in order.
    fn executables(self) -> &'static [&'static str] {
        match self {
            Router::Vllm => &["vllm-router"],
            Router::Smg => &["smg", "sglang-router"],
        }
    }

    /// How to install it, for the note when it is missing.
    pub fn install(self) -> &'static str {
        match self {
            Router::Vllm => "pip install vllm-router==0.1.17",
            Router::Smg => "pip install sglang-router==0.3.2",
        }
    }

    /// The wheel's name in a virtualenv's `site-packages` (`<name>-<version>.dist-info`).
    fn wheel(self) -> &'static str {
        match self {
            Router::Vllm => "vllm_router",
            Router::Smg => "sglang_router",
        }
    }

    /// Extra `lumen-sim` flags for the engines behind it: the endpoints its intended
    /// engines serve that a vLLM does not.
    pub fn engine_args(self) -> &'static [&'static str] {
        match self {
            Router::Vllm => &[],
            Router::Smg => &["--sglang-get-load"],
        }
    }

    /// The command line of one router on `listen`, metrics on `metrics_port`, in front of
    /// `engines`.
    fn args(
        self,
        listen: SocketAddr,
        metrics_port: u16,
        engines: &[SocketAddr],
        policy: &str,
    ) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if self == Router::Smg {
            // `smg` is a launcher with subcommands; `launch` is the router alone.
            a.push("launch".to_owned());
        }
        for s in ["--host", "127.0.0.1", "--port"] {
            a.push(s.to_owned());
        }
        a.push(listen.port().to_string());
        a.push("--worker-urls".to_owned());
        a.extend(engines.iter().map(|e| format!("http://{e}")));
        for s in [
            "--policy",
            policy,
            "--prometheus-host",
            "127.0.0.1",
            "--prometheus-port",
            &metrics_port.to_string(),
            "--worker-startup-check-interval",
            "1",
            "--log-level",
            "error",
        ] {
            a.push(s.to_owned());
        }
        a
    }
}

impl FromStr for Router {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vllm-router" | "vllm" => Ok(Router::Vllm),
            "smg" | "sglang-router" | "sglang" => Ok(Router::Smg),
            other => Err(format!(
                "unknown router {other:?} (expected vllm-router or smg)"
            )),
        }
    }
}

/// One peer configuration: a router and its policy (`smg:cache_aware`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub router: Router,
    pub policy: String,
}

impl PeerPolicy {
    /// What the policy column says: `smg cache_aware`.
    pub fn label(&self) -> String {
        format!("{} {}", self.router.name(), self.policy)
    }

    /// Each router's `cache_aware` and its best load policy. Both have only `power_of_two` as
    /// a load policy (vLLM's `sticky_least_loaded` counts sessions, which these requests do
    /// not name, so it would pick by a hash of the body).
    pub fn defaults() -> Vec<PeerPolicy> {
        [
            (Router::Vllm, "cache_aware"),
            (Router::Vllm, "power_of_two"),
            (Router::Smg, "cache_aware"),
            (Router::Smg, "power_of_two"),
        ]
        .into_iter()
        .map(|(router, policy)| PeerPolicy {
            router,
            policy: policy.to_owned(),
        })
        .collect()
    }
}

impl FromStr for PeerPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (router, policy) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected ROUTER:POLICY, as smg:cache_aware"))?;
        if policy.is_empty()
            || !policy
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!("{s:?}: a policy is a word, as cache_aware"));
        }
        Ok(PeerPolicy {
            router: router.parse()?,
            policy: policy.to_owned(),
        })
    }
}

impl fmt::Display for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.router.name(), self.policy)
    }
}

/// Where the router's binary is: the variable's path if set (it must exist), else the first
/// of its executables on `path` (the `PATH` value). `Err` is the note to print.
pub fn find(router: Router, var: Option<&str>, path: Option<&str>) -> Result<PathBuf, String> {
    if let Some(v) = var.filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{}={v} is not a file; {} cells skipped",
                router.env(),
                router.name()
            ))
        };
    }
    for dir in std::env::split_paths(path.unwrap_or_default()) {
        for exe in router.executables() {
            let p = dir.join(exe);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "{} not found (set {} or put it on PATH; `{}`); its cells skipped",
        router.name(),
        router.env(),
        router.install()
    ))
}

/// What `binary --version` prints (first line), or else the version of the wheel installed
/// beside it (vLLM's router has no `--version`), for the report; empty if neither.
pub async fn version(router: Router, binary: &Path) -> String {
    let printed = printed_version(binary).await;
    if !printed.is_empty() {
        return printed;
    }
    wheel_version(router, binary).map_or_else(String::new, |v| {
        format!("{} {v} per its wheel", router.name())
    })
}

/// The version in `<venv>/lib/python*/site-packages/<wheel>-<version>.dist-info`, for a
/// binary in `<venv>/bin`.
fn wheel_version(router: Router, binary: &Path) -> Option<String> {
    let venv = binary.parent()?.parent()?;
    let prefix = format!("{}-", router.wheel());
    for lib in std::fs::read_dir(venv.join("lib")).ok()?.flatten() {
        let Ok(pkgs) = std::fs::read_dir(lib.path().join("site-packages")) else {
            continue;
        };
        for entry in pkgs.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(v) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".dist-info"))
            {
                return Some(v.to_owned());
            }
        }
    }
    None
}

/// The first line `binary --version` prints; empty if it fails.
async fn printed_version(binary: &Path) -> String {
    let run = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(20), run).await {
        Ok(Ok(out)) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines().next().unwrap_or("").trim().to_owned()
        }
        _ => String::new(),
    }
}

/// How long a router may take to start: a Python interpreter loads the extension first.
const START_LIMIT: Duration = Duration::from_secs(60);

/// `replicas` routers of `peer` in front of `engines`, each ready (every engine registered
/// and healthy) before this returns. Their stderr goes to files in `work`, quoted when one
/// does not come up.
pub async fn start(
    binary: &Path,
    peer: &PeerPolicy,
    engines: &[SocketAddr],
    replicas: usize,
    work: &Path,
) -> Result<Vec<Proc>, String> {
    let mut procs = Vec::new();
    let mut logs = Vec::new();
    // All at once: each spends a second or two importing before it listens.
    for r in 0..replicas {
        let listen = procs::reserve_addr()?;
        let metrics = procs::reserve_addr()?;
        let log = work.join(format!("{}-{r}.log", peer.router.name()));
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.args(
            peer.router
                .args(listen, metrics.port(), engines, &peer.policy),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
        procs.push(procs::spawn(cmd, binary, listen)?);
        logs.push(log);
    }
    for (p, log) in procs.iter().zip(&logs) {
        if let Err(e) = ready(p.addr, engines.len()).await {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "{}: {e}; its log ends: {}",
                peer.label(),
                tail.join(" | ")
            ));
        }
    }
    Ok(procs)
}

/// Waits until the router at `addr` says on `GET /readiness` (both routers serve it) that
/// `engines` workers are healthy: SGLang's registers its workers in the background after it
/// starts listening, and would answer 503 to the first requests.
async fn ready(addr: SocketAddr, engines: usize) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut c = Client::new(addr);
        let answer = c
            .send(
                b"GET /readiness HTTP/1.1\r\nhost: router\r\nconnection: close\r\n\r\n",
                Read::Full,
            )
            .await;
        if let Ok(a) = answer
            && a.status == 200
            && healthy_workers(&a.body) >= Some(engines)
        {
            return Ok(());
        }
        if start.elapsed() > START_LIMIT {
            return Err(format!("{addr} not ready within {START_LIMIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `healthy_workers` of a readiness answer (`{"status":"ready","healthy_workers":4,...}`).
fn healthy_workers(body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("healthy_workers")?.as_u64().map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_policies_parse_as_router_colon_policy() {
        let p: PeerPolicy = "smg:cache_aware".parse().unwrap();
        assert_eq!(
            p,
            PeerPolicy {
                router: Router::Smg,
                policy: "cache_aware".to_owned()
            }
        );
        assert_eq!(p.label(), "smg cache_aware");
        assert_eq!(p.to_string(), "smg:cache_aware");
        assert_eq!(
            "vllm-router:power_of_two"
                .parse::<PeerPolicy>()
                .unwrap()
                .router,
            Router::Vllm
        );
        assert!("smg".parse::<PeerPolicy>().is_err());
        assert!("smg:".parse::<PeerPolicy>().is_err());
        assert!("smg:cache aware".parse::<PeerPolicy>().is_err());
        assert!("nginx:round_robin".parse::<PeerPolicy>().is_err());
        let d = PeerPolicy::defaults();
        assert_eq!(
            d.iter().map(PeerPolicy::label).collect::<Vec<_>>(),
            [
                "vllm-router cache_aware",
                "vllm-router power_of_two",
                "smg cache_aware",
                "smg power_of_two"
            ]
        );
    }

    #[test]
    fn command_lines_bind_loopback_and_a_metrics_port_of_their_own() {
        let engines: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let listen = "127.0.0.1:30001".parse().unwrap();
        let smg = Router::Smg.args(listen, 30002, &engines, "power_of_two");
        assert_eq!(smg[0], "launch");
        let joined = smg.join(" ");
        for part in [
            "--host 127.0.0.1 --port 30001",
            "--worker-urls http://127.0.0.1:1 http://127.0.0.1:2 --policy power_of_two",
            "--prometheus-host 127.0.0.1 --prometheus-port 30002",
            "--worker-startup-check-interval 1",
        ] {
            assert!(joined.contains(part), "{joined}");
        }
        let vllm = Router::Vllm.args(listen, 30002, &engines, "cache_aware");
        assert_eq!(vllm[0], "--host");
        assert_eq!(Router::Smg.engine_args(), ["--sglang-get-load"]);
        assert!(Router::Vllm.engine_args().is_empty());
    }

    #[test]
    fn binaries_come_from_the_variable_or_path() {
        let dir = std::env::temp_dir().join(format!("lumen-peers-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sglang = dir.join("sglang-router");
        std::fs::write(&sglang, "").unwrap();
        let path = std::env::join_paths(["/nonexistent-dir", dir.to_str().unwrap()])
            .unwrap()
            .into_string()
            .unwrap();
        // `smg` is absent, the older name is found.
        assert_eq!(find(Router::Smg, None, Some(&path)), Ok(sglang.clone()));
        assert_eq!(
            find(Router::Smg, Some(sglang.to_str().unwrap()), None),
            Ok(sglang.clone())
        );
        let missing = find(Router::Vllm, None, Some(&path)).unwrap_err();
        assert!(
            missing.contains("VLLM_ROUTER_BIN") && missing.contains("pip install vllm-router"),
            "{missing}"
        );
        assert!(find(Router::Vllm, Some("/nonexistent"), Some(&path)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_is_read_from_the_wheel_beside_the_binary() {
        let venv = std::env::temp_dir().join(format!("lumen-peers-wheel-{}", std::process::id()));
        let site = venv.join("lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("vllm_router-0.1.17.dist-info")).unwrap();
        std::fs::create_dir_all(site.join("vllm_router")).unwrap();
        let bin = venv.join("bin/vllm-router");
        assert_eq!(wheel_version(Router::Vllm, &bin), Some("0.1.17".to_owned()));
        assert_eq!(wheel_version(Router::Smg, &bin), None);
        std::fs::remove_dir_all(&venv).unwrap();
    }

    #[test]
    fn readiness_counts_healthy_workers() {
        assert_eq!(
            healthy_workers(br#"{"status":"ready","healthy_workers":4,"total_workers":4}"#),
            Some(4)
        );
        assert_eq!(healthy_workers(b"All servers healthy"), None);
    }
}
