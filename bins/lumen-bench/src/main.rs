//! `lumen-bench`: Lumen's gateway-overhead benchmark, self-contained.
//!
//! Starts `lumen-sim` and `lumen` (release builds next to this binary), then measures the
//! simulator directly and through Lumen in the same run: closed-loop throughput, open-loop
//! latency at fixed rates counted from the scheduled send time (no coordinated omission),
//! streaming time to first byte, CPU per request and RSS from `/proc`, and startup to ready.
//! Lumen runs with governance on: an API key, in-memory limits, metrics and request ids.

#![allow(clippy::print_stdout)]

mod burst;
mod fleet;
mod load;
mod procs;
mod report;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Clone)]
#[command(
    about = "Benchmark lumen-sim directly and through Lumen, and report the ratios",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory holding the `lumen` and `lumen-sim` binaries (default: next to this one).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Connections for the closed-loop phase.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Open-loop rates, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "500,4000")]
    rates: Vec<u64>,
    /// Concurrent streams for the streaming phase.
    #[arg(long, default_value_t = 32)]
    streams: usize,
    /// Also run this many requests through Lumen and sample its RSS (0 = skip).
    #[arg(long, default_value_t = 0)]
    soak: u64,
    /// Write the markdown report here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Subcommand, Clone)]
enum Command {
    /// Endurance: Lumen's RSS and descriptors, sampled every second, under a long mixed load
    /// (streams, errors, hang-ups, retries, limits on a real Redis); exit 1 on clear growth.
    Soak(soak::SoakArgs),
    /// Routing policies on a simulated fleet: four lumen-sim engine models behind one or three
    /// Lumen replicas, three workloads open loop at shares of the fleet's capacity; time to
    /// first token, throughput, prefix-cache hit rate and load imbalance (benches/fleet.sh).
    Fleet(fleet::FleetArgs),
    /// Many streams opened at once, straight to the engine and through Lumen: time to first
    /// byte, errors, and Lumen's RSS idle, with the burst open and after it (issue 24).
    Burst(burst::BurstArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lumen-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Fleet(fleet)) = args.command.clone() {
        return match rt.block_on(async {
            let dir = bin_dir(&args)?;
            fleet::run(fleet, &dir).await
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lumen-bench fleet: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Burst(burst)) = args.command.clone() {
        return match rt.block_on(async {
            let dir = bin_dir(&args)?;
            burst::run(burst, &dir).await
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lumen-bench burst: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Soak(soak)) = args.command.clone() {
        return match rt.block_on(async {
            let dir = bin_dir(&args)?;
            soak::run(soak, &dir).await
        }) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("lumen-bench soak: {e}");
                ExitCode::from(2)
            }
        };
    }
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lumen-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bin_dir(args: &Args) -> Result<PathBuf, String> {
    match &args.bin_dir {
        Some(d) => Ok(d.clone()),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| "cannot locate the binaries".to_owned()),
    }
}

async fn run(args: Args) -> Result<(), String> {
    let dir = bin_dir(&args)?;
    let d = Duration::from_secs(args.seconds);
    let sim = procs::start_sim(&dir).await?;
    let (lumen, startup) = procs::start_lumen(&dir, sim.addr).await?;
    eprintln!(
        "sim on {}, lumen on {} (ready in {:?})",
        sim.addr, lumen.addr, startup
    );
    let mut r = report::Report::new(startup);

    // Warm both paths (connection pools, allocator).
    load::closed(sim.addr, &[], 8, Duration::from_secs(1)).await;
    load::closed(lumen.addr, procs::KEY_HEADER, 8, Duration::from_secs(1)).await;

    // Closed loop in one-second turns, direct then through Lumen, `seconds` of each: run as two
    // long phases, the ratio carried whatever the machine did in between (other tenants on
    // this VM moved the Lumen figure by a third between identical runs). CPU is summed per
    // target over its own turns.
    let cpu = || [sim.cpu(), lumen.cpu(), procs::own_cpu()];
    let (mut direct_parts, mut via_parts) = (Vec::new(), Vec::new());
    let (mut direct_cpu, mut via_cpu) = ([0.0; 3], [0.0; 3]);
    let turn = Duration::from_secs(1);
    for _ in 0..args.seconds.max(1) {
        let c0 = cpu();
        direct_parts.push(load::closed(sim.addr, &[], args.connections, turn).await);
        let c1 = cpu();
        via_parts.push(load::closed(lumen.addr, procs::KEY_HEADER, args.connections, turn).await);
        let c2 = cpu();
        for i in 0..3 {
            direct_cpu[i] += c1[i] - c0[i];
            via_cpu[i] += c2[i] - c1[i];
        }
    }
    let direct = load::Stats::merge_turns(direct_parts);
    let via = load::Stats::merge_turns(via_parts);
    r.closed(&direct, &via);
    // CPU per 10k requests: the simulator alone during the direct turns; during the Lumen
    // turns, Lumen's own and the simulator's; the load generator's in both (it shares the
    // machine).
    let per = |cpu: f64, s: &load::Stats| cpu / s.ok.max(1) as f64 * 1e4;
    r.cpu(report::Cpu {
        sim_alone: per(direct_cpu[0], &direct),
        lumen: per(via_cpu[1], &via),
        sim_under_lumen: per(via_cpu[0], &via),
        client_direct: per(direct_cpu[2], &direct),
        client_lumen: per(via_cpu[2], &via),
    });

    for rate in &args.rates {
        let [direct, via] =
            load::open([(sim.addr, &[]), (lumen.addr, procs::KEY_HEADER)], *rate, d).await;
        r.open(*rate, &direct, &via);
    }

    let direct = load::streams(sim.addr, &[], args.streams, d).await;
    let via = load::streams(lumen.addr, procs::KEY_HEADER, args.streams, d).await;
    r.streams(args.streams, &direct, &via);

    if args.soak > 0 {
        let samples = load::soak(
            lumen.addr,
            procs::KEY_HEADER,
            args.connections,
            args.soak,
            || lumen.rss_kb(),
        )
        .await;
        r.soak(args.soak, &samples);
    }
    r.rss(sim.peak_rss_kb(), lumen.peak_rss_kb());
    let text = r.render(&args);
    println!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
