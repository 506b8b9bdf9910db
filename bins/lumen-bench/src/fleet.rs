//! `lumen-bench fleet`: routing policies measured on a simulated fleet (issue 21).
//!
//! Starts four `lumen-sim --engine` processes (vLLM-like engines with a paged KV cache, prefix
//! caching, batching and a queue) and one or three Lumen replicas in front of all of them, each
//! with the same backends and the policy under test, then drives each workload open loop at a
//! share of the fleet's capacity and reports, per (workload, load, policy, replicas): time to
//! first token at the client (p50, p99), throughput, the prefix-cache hit rate from the
//! engines' own counters (delta over the measured window), and load imbalance (the busiest
//! engine's requests over the mean).
//!
//! With `--peers`, vLLM's and SGLang's routers run in Lumen's place as well (`peers.rs`): same
//! engines, arrivals and figures, one row per router and policy.
//!
//! Capacity is estimated before anything starts by running the same requests through the
//! engine model on a virtual clock (`capacity.rs`). Every policy of a (workload, load) pair
//! sees the same requests at the same scheduled instants, and every run starts from fresh
//! engines (empty caches) and fresh replicas.

mod capacity;
mod drive;
mod offline;
mod peers;
mod report;
mod scrape;
mod workload;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lumen_sim::EngineConfig;

use crate::procs;
use workload::{Generator, Kind, Shape};

#[derive(clap::Args, Clone, Debug)]
pub struct FleetArgs {
    /// The short run: 80% load only, 5 s of warm-up and 10 s measured per cell, the workloads
    /// and the KV cache at a quarter of their size (about five minutes for the default
    /// workloads, policies and replica counts).
    #[arg(long)]
    quick: bool,
    /// Run every cell on a virtual clock instead (`fleet/offline.rs`): Lumen's router and the
    /// engine model's scheduler, no processes; deterministic, a second a cell. For tuning a
    /// policy; the live run is the benchmark of record.
    #[arg(long)]
    offline: bool,
    /// With --offline: write every request of every cell here as CSV (cell, arrival, replica,
    /// engine, conversation, prompt and cached tokens, TTFT), to see what makes a tail.
    #[arg(long, requires = "offline")]
    trace: Option<PathBuf>,
    /// Workloads to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "chat,docs,unique"
    )]
    workloads: Vec<Kind>,
    /// Offered loads, percent of the fleet's capacity (default 50,80,95; 80 with --quick).
    #[arg(long, value_delimiter = ',')]
    loads: Option<Vec<u32>>,
    /// Lumen `routing.policy` values to compare (any policy Lumen accepts).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "round_robin,least_in_flight,prefix_affinity"
    )]
    policies: Vec<String>,
    /// Lumen replica counts; requests are dealt round robin over the replicas.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    replicas: Vec<usize>,
    /// Also run other routers in Lumen's place, as ROUTER:POLICY (`vllm-router:cache_aware`,
    /// `smg:power_of_two`); the flag alone runs each one's `cache_aware` and `power_of_two`.
    /// Binaries from VLLM_ROUTER_BIN and SGLANG_ROUTER_BIN, or on PATH (`pip install
    /// vllm-router sglang-router`); a router not found is skipped with a note. Same replica
    /// counts, engines and arrivals as Lumen's cells.
    #[arg(long, value_delimiter = ',', num_args = 0.., conflicts_with = "offline")]
    peers: Option<Vec<peers::PeerPolicy>>,
    /// Simulated engines.
    #[arg(long, default_value_t = 4)]
    engines: usize,
    /// Seconds of load before measuring (default 20; 5 with --quick).
    #[arg(long)]
    warmup: Option<f64>,
    /// Seconds measured (default 60; 10 with --quick).
    #[arg(long)]
    measure: Option<f64>,
    /// KV-cache blocks per engine, 16 tokens each (default: the engine model's 8,192; 2,048
    /// with --quick).
    #[arg(long)]
    kv_blocks: Option<u32>,
    /// Seeds the workloads and the arrival times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests the capacity estimate runs through the engine model.
    #[arg(long, default_value_t = 2000)]
    calibration_requests: usize,
    /// Free text for the report's header (the commit, say).
    #[arg(long, default_value = "")]
    label: String,
    /// Write the markdown report here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The run's settings once `--quick` and the defaults are applied.
struct Plan {
    loads: Vec<u32>,
    warmup: Duration,
    measure: Duration,
    engine: EngineConfig,
    shape: Shape,
}

impl FleetArgs {
    fn plan(&self) -> Result<Plan, String> {
        let full = EngineConfig::default().num_blocks;
        let (loads, warmup, measure, blocks, shape) = if self.quick {
            (vec![80], 5.0, 10.0, full / 4, Shape::quick())
        } else {
            (vec![50, 80, 95], 20.0, 60.0, full, Shape::default())
        };
        let plan = Plan {
            loads: self.loads.clone().unwrap_or(loads),
            warmup: secs(self.warmup.unwrap_or(warmup), "--warmup")?,
            measure: secs(self.measure.unwrap_or(measure), "--measure")?,
            engine: EngineConfig {
                num_blocks: self.kv_blocks.unwrap_or(blocks),
                ..EngineConfig::default()
            },
            shape,
        };
        if plan.measure.is_zero() {
            return Err("--measure must be above 0".to_owned());
        }
        if self.engines == 0 || self.replicas.contains(&0) {
            return Err("--engines and --replicas must be at least 1".to_owned());
        }
        if let Some(l) = plan.loads.iter().find(|l| **l == 0 || **l > 200) {
            return Err(format!("--loads: {l}% is outside 1..=200"));
        }
        plan.engine
            .validate(8192)
            .map_err(|e| format!("--kv-blocks: {e}"))?;
        Ok(plan)
    }
}

fn secs(s: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{flag}: {s} is not a duration"))
}

/// Runs every cell and writes the report.
pub async fn run(args: FleetArgs, dir: &Path) -> Result<(), String> {
    let plan = args.plan()?;
    let load_before = loadavg();
    if !args.offline {
        for policy in &args.policies {
            check_policy(dir, policy).await?;
        }
    }
    let (peer_runs, mut notes) = resolve_peers(args.peers.as_deref()).await;
    for n in &notes {
        eprintln!("note: {n}");
    }
    let mut cells = Vec::new();
    let mut capacities = Vec::new();
    for &kind in &args.workloads {
        let cap = capacity::estimate(
            &plan.engine,
            args.engines,
            kind,
            &plan.shape,
            args.seed,
            args.calibration_requests,
        )?;
        if cap.rate <= 0.0 {
            return Err(format!("{}: no sustainable rate found", kind.name()));
        }
        eprintln!(
            "{}: capacity {:.1} req/s under round robin ({:.0}% prefix-cache hits)",
            kind.name(),
            cap.rate,
            cap.hit_rate * 100.0
        );
        capacities.push((kind, cap));
        for &load in &plan.loads {
            let rate = cap.rate * f64::from(load) / 100.0;
            for policy in &args.policies {
                for &replicas in &args.replicas {
                    let c = if args.offline {
                        offline::cell(&args, &plan, kind, load, rate, policy, replicas)?
                    } else {
                        let front = Front::Lumen(policy);
                        cell(&args, &plan, dir, kind, load, rate, &front, replicas).await?
                    };
                    progress(&c);
                    cells.push(c);
                }
            }
            for run in &peer_runs {
                for &replicas in &args.replicas {
                    let front = Front::Peer(&run.peer, &run.binary);
                    match cell(&args, &plan, dir, kind, load, rate, &front, replicas).await {
                        Ok(c) => {
                            progress(&c);
                            cells.push(c);
                        }
                        // Another project's router failing to start costs its cell, not the
                        // run; the report says so.
                        Err(e) => {
                            let n = format!("{} {load}% ×{replicas}: {e}", kind.name());
                            eprintln!("  note: {n}");
                            notes.push(n);
                        }
                    }
                }
            }
        }
    }
    let loads = (load_before, loadavg());
    let text = render(&args, &plan, &capacities, &cells, &peer_runs, &notes, loads);
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    if let Some(path) = &args.out {
        std::fs::write(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A cell's progress line on stderr.
fn progress(c: &report::Cell) {
    eprintln!(
        "  {:>3}% {:<24} ×{}: p50 {:>6.0} ms, p99 {:>6.0} ms, {:>5.1} req/s, hits {:>5.1}% (answers say {:.1}%), imbalance {:.2}, errors {}",
        c.load,
        c.policy,
        c.replicas,
        c.ttft_p50_ms,
        c.ttft_p99_ms,
        c.throughput,
        c.hit_rate * 100.0,
        c.client_hit_rate * 100.0,
        c.imbalance,
        c.errors
    );
}

/// A peer router and policy that will run, with its binary and what it says its version is.
struct PeerRun {
    peer: peers::PeerPolicy,
    binary: PathBuf,
    version: String,
}

/// The peers asked for (`None`: none; empty: the defaults) whose binaries are found, and a
/// note for each router that is not.
async fn resolve_peers(asked: Option<&[peers::PeerPolicy]>) -> (Vec<PeerRun>, Vec<String>) {
    let Some(asked) = asked else {
        return (Vec::new(), Vec::new());
    };
    let asked = if asked.is_empty() {
        peers::PeerPolicy::defaults()
    } else {
        asked.to_vec()
    };
    let path = std::env::var("PATH").ok();
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    // Each router is looked for once, however many of its policies are asked for.
    let mut found: Vec<(peers::Router, Option<(PathBuf, String)>)> = Vec::new();
    for peer in asked {
        if !found.iter().any(|(r, _)| *r == peer.router) {
            let var = std::env::var(peer.router.env()).ok();
            let binary = match peers::find(peer.router, var.as_deref(), path.as_deref()) {
                Ok(b) => {
                    let v = peers::version(peer.router, &b).await;
                    Some((b, v))
                }
                Err(note) => {
                    notes.push(note);
                    None
                }
            };
            found.push((peer.router, binary));
        }
        if let Some((_, Some((binary, version)))) = found.iter().find(|(r, _)| *r == peer.router) {
            runs.push(PeerRun {
                binary: binary.clone(),
                version: version.clone(),
                peer,
            });
        }
    }
    (runs, notes)
}

/// What routes the requests of a cell.
enum Front<'a> {
    /// Lumen with this `routing.policy`.
    Lumen(&'a str),
    /// Another router, by its binary.
    Peer(&'a peers::PeerPolicy, &'a Path),
}

impl Front<'_> {
    fn label(&self) -> String {
        match self {
            Front::Lumen(policy) => (*policy).to_owned(),
            Front::Peer(peer, _) => peer.label(),
        }
    }
}

/// One run from fresh processes.
#[allow(clippy::too_many_arguments)]
async fn cell(
    args: &FleetArgs,
    plan: &Plan,
    dir: &Path,
    kind: Kind,
    load: u32,
    rate: f64,
    front: &Front<'_>,
    replicas: usize,
) -> Result<report::Cell, String> {
    let mut sim_args: Vec<String> = [
        "--engine",
        "--kv-blocks",
        &plan.engine.num_blocks.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Front::Peer(peer, _) = front {
        sim_args.extend(peer.router.engine_args().iter().map(|s| (*s).to_owned()));
    }
    let mut sims = Vec::new();
    for _ in 0..args.engines {
        sims.push(procs::start_sim_with(dir, "m", &sim_args).await?);
    }
    let engines: Vec<SocketAddr> = sims.iter().map(|s| s.addr).collect();
    let work = std::env::temp_dir().join(format!("lumen-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let routers = match front {
        Front::Lumen(policy) => {
            let mut lumens = Vec::new();
            for r in 0..replicas {
                let addr = procs::reserve_addr()?;
                let config = work.join(format!("lumen-{r}.toml"));
                std::fs::write(&config, lumen_config(addr, &engines, policy))
                    .map_err(|e| format!("{}: {e}", config.display()))?;
                lumens.push(procs::start_lumen_file(dir, &config, addr, &[]).await?);
            }
            Ok(lumens)
        }
        Front::Peer(peer, binary) => peers::start(binary, peer, &engines, replicas, &work).await,
    };
    let _ = std::fs::remove_dir_all(&work);
    let routers = routers?;
    let targets: Vec<SocketAddr> = routers.iter().map(|l| l.addr).collect();

    let until = plan.warmup + plan.measure;
    // Enough arrivals for the run at this rate (the process is the calibration's, scaled).
    let n = ((rate * until.as_secs_f64()) * 1.5) as usize + 100;
    let arrivals = capacity::arrivals(args.seed, rate, n);
    let generator = Generator::new(kind, plan.shape.clone(), args.seed);
    let snapshot = {
        let engines = engines.clone();
        let warmup = plan.warmup;
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            scrape::all(&engines).await
        })
    };
    let outcomes = drive::run(&targets, generator, &arrivals, until).await;
    let before = snapshot
        .await
        .map_err(|e| format!("metrics snapshot: {e}"))??;
    let after = scrape::all(&engines).await?;
    drop(routers);
    drop(sims);
    Ok(report::cell(
        kind,
        load,
        rate,
        &front.label(),
        replicas,
        plan.warmup,
        &outcomes,
        &before,
        &after,
    ))
}

fn lumen_config(listen: SocketAddr, engines: &[SocketAddr], policy: &str) -> String {
    let mut backends = String::new();
    for (i, e) in engines.iter().enumerate() {
        let _ = write!(
            backends,
            "[[backends]]\nname = \"engine-{i}\"\nurl = \"http://{e}\"\n\n"
        );
    }
    // Admission and deadlines far from the load, so only the policy shapes the result.
    format!(
        r#"[server]
listen = "{listen}"

{backends}[routing]
policy = "{policy}"

[admission]
max_concurrent = 0

[log]
level = "error"
"#
    )
}

/// Lumen's own check of a configuration with this policy, so a policy it does not know fails
/// the run at once with Lumen's message.
async fn check_policy(dir: &Path, policy: &str) -> Result<(), String> {
    let engines = ["127.0.0.1:9".parse().map_err(|e| format!("{e}"))?];
    let file = std::env::temp_dir().join(format!(
        "lumen-fleet-check-{}-{policy}.toml",
        std::process::id()
    ));
    std::fs::write(
        &file,
        lumen_config(procs::reserve_addr()?, &engines, policy),
    )
    .map_err(|e| format!("{}: {e}", file.display()))?;
    let out = tokio::process::Command::new(dir.join("lumen"))
        .arg("config")
        .arg("check")
        .arg(&file)
        .output()
        .await;
    let _ = std::fs::remove_file(&file);
    let out = out.map_err(|e| format!("cannot run lumen config check: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "policy {policy}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The 1-minute load average: on a shared machine, how busy the others kept it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// The machine, as the kernel describes it.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {:.0} GiB RAM, Linux {}",
        mem_kb as f64 / 1048576.0,
        kernel.trim()
    )
}

fn render(
    args: &FleetArgs,
    plan: &Plan,
    capacities: &[(Kind, capacity::Capacity)],
    cells: &[report::Cell],
    peer_runs: &[PeerRun],
    notes: &[String],
    (load_before, load_after): (String, String),
) -> String {
    let e = &plan.engine;
    let mut o = String::new();
    let _ = writeln!(o, "# Fleet benchmark: routing on a simulated fleet\n");
    if !args.label.is_empty() {
        let _ = writeln!(o, "{}\n", args.label);
    }
    let _ = writeln!(
        o,
        "- machine: {}; 1-minute load average {load_before} at the start, {load_after} at the end",
        machine()
    );
    if args.offline {
        let _ = writeln!(
            o,
            "- **offline**: {} engines and the replicas' routers on a virtual clock (`bins/lumen-bench/src/fleet/offline.rs`): no HTTP, no processes, engine reports exact every scrape interval; TTFT is the engine model's, not a client's",
            args.engines
        );
    } else {
        let _ = writeln!(
            o,
            "- the load generator, {} `lumen-sim --engine` processes (one worker thread each) and the Lumen replicas (release builds) share the machine",
            args.engines
        );
    }
    let _ = writeln!(
        o,
        "- engines: the lumen-sim engine model (`docs/fleet-benchmark.md`): {} KV blocks of 16 tokens, max_num_seqs {}, {} tokens per step, step {} µs + {} µs per token + {} ns per context token",
        e.num_blocks, e.max_num_seqs, e.max_num_batched_tokens, e.step_us, e.token_us, e.kv_read_ns
    );
    let _ = writeln!(
        o,
        "- mode: {}; {:.0} s warm-up then {:.0} s measured per cell, fresh engines and replicas per cell; seed {}",
        if args.quick { "quick" } else { "full" },
        plan.warmup.as_secs_f64(),
        plan.measure.as_secs_f64(),
        args.seed
    );
    if !peer_runs.is_empty() {
        let mut seen: Vec<String> = Vec::new();
        for run in peer_runs {
            let what = format!(
                "`{}` ({})",
                run.binary.display(),
                if run.version.is_empty() {
                    "version unknown"
                } else {
                    &run.version
                }
            );
            if !seen.contains(&what) {
                seen.push(what);
            }
        }
        let _ = writeln!(
            o,
            "- peers (`--peers`, `bins/lumen-bench/src/fleet/peers.rs`): {}; one process per replica, each with every engine, its defaults but for loopback, its own metrics port, `--worker-startup-check-interval 1` (also how often both poll `/get_load` for `power_of_two`) and `--log-level error`; SGLang's router gets engines that also answer SGLang's `GET /get_load` (`lumen-sim --sglang-get-load`), vLLM's gets vLLM's 404",
            seen.join(", ")
        );
    }
    for n in notes {
        let _ = writeln!(o, "- note: {n}");
    }
    let _ = writeln!(
        o,
        "- TTFT: at the client, from each request's scheduled send (open loop, Poisson arrivals) to its first SSE event; hit rate: the engines' `vllm:prefix_cache_hits_total` over `vllm:prefix_cache_queries_total`, deltas from the window's start to the last answer; imbalance: the busiest engine's completed requests over the mean\n"
    );
    let _ = writeln!(o, "## Workloads and capacity\n");
    let _ = writeln!(
        o,
        "Capacity: the highest Poisson rate at which round robin keeps up (backlog drained within {:.0}% of the arrivals' span), found on the engine model's virtual clock over the workload's first {} requests.\n",
        capacity::DRAIN_SHARE * 100.0,
        args.calibration_requests
    );
    let _ = writeln!(
        o,
        "| workload | what | capacity (req/s) | round robin's hit rate there |\n|---|---|---:|---:|"
    );
    for (kind, cap) in capacities {
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} | {:.1}% |",
            kind.name(),
            plan.shape.describe(*kind),
            cap.rate,
            cap.hit_rate * 100.0
        );
    }
    let _ = writeln!(o, "\n## Results\n");
    o.push_str(&report::table(cells));
    o
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fleet: FleetArgs,
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut argv = vec!["fleet"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().fleet.plan()
    }

    #[test]
    fn quick_scales_the_run_down_and_explicit_flags_win() {
        let full = plan(&[]).unwrap();
        assert_eq!(full.loads, [50, 80, 95]);
        assert_eq!(full.engine, EngineConfig::default());
        assert_eq!(full.shape.documents, 64);
        let quick = plan(&["--quick"]).unwrap();
        assert_eq!(quick.loads, [80]);
        assert_eq!(quick.engine.num_blocks, 2048);
        assert_eq!(quick.shape.documents, 16);
        assert_eq!(
            (quick.warmup, quick.measure),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
        let mixed = plan(&["--quick", "--loads", "50,95", "--kv-blocks", "4096"]).unwrap();
        assert_eq!((mixed.loads, mixed.engine.num_blocks), (vec![50, 95], 4096));
        assert!(
            plan(&["--kv-blocks", "100"]).is_err(),
            "smaller than the context"
        );
        assert!(plan(&["--loads", "0"]).is_err());
        assert!(plan(&["--measure", "0"]).is_err());
    }

    fn fleet(args: &[&str]) -> Result<FleetArgs, clap::Error> {
        let mut argv = vec!["fleet"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.fleet)
    }

    #[test]
    fn peers_alone_mean_the_defaults_and_take_router_policy_pairs() {
        assert_eq!(fleet(&[]).unwrap().peers, None);
        assert_eq!(fleet(&["--peers"]).unwrap().peers, Some(vec![]));
        let two = fleet(&[
            "--peers",
            "smg:cache_aware,vllm-router:power_of_two",
            "--quick",
        ])
        .unwrap()
        .peers
        .unwrap();
        assert_eq!(
            two.iter().map(peers::PeerPolicy::label).collect::<Vec<_>>(),
            ["smg cache_aware", "vllm-router power_of_two"]
        );
        assert!(fleet(&["--peers", "haproxy:leastconn"]).is_err());
        // A flag after it is a flag, not a peer.
        let f = fleet(&["--peers", "--quick"]).unwrap();
        assert!(f.quick && f.peers == Some(vec![]));
        let offline = fleet(&["--offline", "--peers", "smg:cache_aware"]);
        assert_eq!(
            offline.err().map(|e| e.kind()),
            Some(clap::error::ErrorKind::ArgumentConflict),
            "peers are processes"
        );
    }

    #[test]
    fn every_replica_gets_every_engine_and_the_policy() {
        let engines: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let c = lumen_config("127.0.0.1:3".parse().unwrap(), &engines, "prefix_affinity");
        assert!(
            c.contains("url = \"http://127.0.0.1:1\"")
                && c.contains("url = \"http://127.0.0.1:2\"")
        );
        assert!(c.contains("policy = \"prefix_affinity\""));
        assert!(c.contains("listen = \"127.0.0.1:3\""));
    }
}
