//! `lumen-bench`: Lumen's gateway-overhead benchmark, self-contained.
//!
//! Starts `lumen-sim` and `lumen` (release builds next to this binary), then measures the
//! simulator directly and through Lumen in the same run: closed-loop throughput, open-loop
//! latency at fixed rates counted from the scheduled send time (no coordinated omission),
//! streaming time to first byte, CPU per request and RSS from `/proc`, and startup to ready.
//! Lumen runs with governance on: an API key, in-memory limits, metrics and request ids.

#![allow(clippy::print_stdout)]

mod load;
mod procs;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Clone)]
#[command(about = "Benchmark lumen-sim directly and through Lumen, and report the ratios")]
pub struct Args {
    /// Directory holding the `lumen` and `lumen-sim` binaries (default: next to this one).
    #[arg(long)]
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
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lumen-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .map(PathBuf::from)
            .ok_or("cannot locate the binaries")?,
    };
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

    let cpu0 = (sim.cpu(), lumen.cpu(), procs::own_cpu());
    let direct = load::closed(sim.addr, &[], args.connections, d).await;
    let cpu1 = (sim.cpu(), lumen.cpu(), procs::own_cpu());
    let via = load::closed(lumen.addr, procs::KEY_HEADER, args.connections, d).await;
    let cpu2 = (sim.cpu(), lumen.cpu(), procs::own_cpu());
    r.closed(&direct, &via);
    // CPU per 10k requests: the simulator alone during the direct run; during the Lumen run,
    // Lumen's own and the simulator's; the load generator's in both (it shares the machine).
    r.cpu(report::Cpu {
        sim_alone: (cpu1.0 - cpu0.0) / direct.ok as f64 * 1e4,
        lumen: (cpu2.1 - cpu1.1) / via.ok as f64 * 1e4,
        sim_under_lumen: (cpu2.0 - cpu1.0) / via.ok as f64 * 1e4,
        client_direct: (cpu1.2 - cpu0.2) / direct.ok as f64 * 1e4,
        client_lumen: (cpu2.2 - cpu1.2) / via.ok as f64 * 1e4,
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
