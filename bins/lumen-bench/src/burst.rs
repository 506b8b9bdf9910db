//! `lumen-bench burst`: many streams opened at once (issue 24), straight to the engine and
//! through Lumen, each on its own connection as a retry storm or a fleet of agents opens them.
//!
//! Prints time to first byte (from the burst's start, so accept queues and SYN retransmits
//! count), errors, and Lumen's RSS idle, at the peak of the burst, and five seconds after it,
//! with the kilobytes each open stream cost. Lumen's admission is set to let the whole burst in.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::load;
use crate::procs;

#[derive(clap::Args, Clone, Debug)]
pub struct BurstArgs {
    /// Streams opened at once.
    #[arg(long, default_value_t = 3_000)]
    streams: usize,
    /// Tokens per stream.
    #[arg(long, default_value_t = 40)]
    tokens: u32,
    /// Milliseconds between tokens (40 at 50 ms keeps a stream open about 2 s).
    #[arg(long, default_value_t = 50)]
    itl_ms: u64,
    /// `NAME=VALUE` added to Lumen's environment (allocator options, say); repeatable.
    #[arg(long = "lumen-env")]
    lumen_env: Vec<String>,
    /// Bursts sent through Lumen one after another, RSS read 5 s after each: memory that
    /// the allocator keeps for reuse stays level from one to the next, memory still held
    /// grows.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// CPUs for Lumen alone (a `taskset` list: `1`, `2-3`), as when it runs in a pod of its own;
    /// pair with `--pin-rest`. Unpinned, on a small machine Lumen, the simulator and the load
    /// generator share the cores, and the second hop's kernel time is charged to the burst.
    #[arg(long)]
    pin_lumen: Option<String>,
    /// CPUs for the simulator and the load generator (this process), in both runs.
    #[arg(long)]
    pin_rest: Option<String>,
}

/// The request every stream sends: the simulator's per-request pace, forwarded by Lumen.
fn body(args: &BurstArgs) -> &'static str {
    let s = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hello there"}}],"max_tokens":{},"stream":true,"sim":{{"itl_ms":{}}}}}"#,
        args.tokens, args.itl_ms
    );
    Box::leak(s.into_boxed_str())
}

/// Samples `proc`'s RSS every 20 ms until `stop`: (time since the start, KB).
fn sample_rss(
    proc: &procs::Proc,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Duration, u64)>> {
    let rss = proc.rss_sampler();
    let start = tokio::time::Instant::now();
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            samples.push((start.elapsed(), rss()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples
    })
}

/// The highest RSS sampled, and the first sample after `all_open` (when the last stream got
/// its first byte: every stream open and past its request's work, relaying tokens).
fn peak_and_open(samples: &[(Duration, u64)], all_open: Duration) -> (u64, Option<u64>) {
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let open = samples.iter().find(|s| s.0 >= all_open).map(|s| s.1);
    (peak, open)
}

pub async fn run(args: BurstArgs, dir: &Path) -> Result<(), String> {
    if let Some(cpus) = &args.pin_rest {
        // Before the simulator starts: it inherits this process's CPUs.
        procs::pin_pid(std::process::id(), cpus)?;
    }
    let sim = procs::start_sim(dir).await?;
    let addr = procs::reserve_addr()?;
    let n = args.streams;
    let config = std::env::temp_dir().join(format!("lumen-burst-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\n\n[admission]\nmax_concurrent = {}\nqueue_size = {}\n\n\
             [log]\nlevel = \"warn\"\n\n[[backends]]\nname = \"sim\"\nurl = \"http://{}\"\n",
            n + 64,
            n,
            sim.addr
        ),
    )
    .map_err(|e| e.to_string())?;
    let envs: Vec<(String, String)> = args
        .lumen_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let lumen = procs::start_lumen_file(dir, &config, addr, &envs).await;
    let _ = std::fs::remove_file(&config);
    let lumen = lumen?;
    if let Some(cpus) = &args.pin_lumen {
        lumen.pin(cpus)?;
    }
    let body = body(&args);
    // Warm both (connections, first allocations), then let Lumen settle before "idle".
    load::burst(sim.addr, body, 16).await;
    load::burst(lumen.addr, body, 16).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = lumen.rss_kb();

    let cpu0 = (sim.cpu(), procs::own_cpu());
    let direct = load::burst(sim.addr, body, n).await;
    let direct_cpu = (sim.cpu() - cpu0.0, procs::own_cpu() - cpu0.1);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(&lumen, stop.clone());
    let cpu1 = (sim.cpu(), procs::own_cpu(), lumen.cpu());
    let via = load::burst(lumen.addr, body, n).await;
    let via_cpu = (
        sim.cpu() - cpu1.0,
        procs::own_cpu() - cpu1.1,
        lumen.cpu() - cpu1.2,
    );
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    let all_open = via.lat.last().copied().unwrap_or_default();
    let (open, streaming) = peak_and_open(&samples, all_open);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = lumen.rss_kb();
    let lazy = lumen.lazy_free_kb();
    let fds = lumen.fds();
    let mut later = Vec::new();
    for _ in 1..args.rounds {
        load::burst(lumen.addr, body, n).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        later.push(lumen.rss_kb());
    }

    println!(
        "# Burst: {n} streams opened at once ({} tokens at {} ms)\n",
        args.tokens, args.itl_ms
    );
    println!("| | answered | errors | TTFB p50 (ms) | TTFB p99 (ms) | TTFB max (ms) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s) in [("straight to the engine", &direct), ("through Lumen", &via)] {
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} |",
            s.ok,
            s.errors,
            s.pct(0.5),
            s.pct(0.99),
            s.pct(1.0)
        );
    }
    // Where the CPU went (user and system, every thread), the load generator's own included:
    // when the machine's cores are all busy, the time to first byte follows this total.
    println!(
        "\nCPU seconds for the whole burst (every stream to its end): straight: engine {:.2}, \
         load generator {:.2}; through Lumen: Lumen {:.2}, engine {:.2}, load generator {:.2}{}",
        direct_cpu.0,
        direct_cpu.1,
        via_cpu.2,
        via_cpu.0,
        via_cpu.1,
        match (&args.pin_lumen, &args.pin_rest) {
            (None, None) => String::from(" (unpinned)"),
            (l, r) => format!(
                " (Lumen on CPUs {}, the others on {})",
                l.as_deref().unwrap_or("any"),
                r.as_deref().unwrap_or("any")
            ),
        }
    );
    let per_stream = (open.saturating_sub(idle)) as f64 / n as f64;
    println!(
        "\nLumen's RSS: idle {:.1} MB, peak with the burst open {:.1} MB ({per_stream:.1} KB a \
         stream), 5 s after it {:.1} MB ({:.2}x idle, of which {:.1} MB freed lazily; {fds} \
         descriptors open)",
        idle as f64 / 1024.0,
        open as f64 / 1024.0,
        after as f64 / 1024.0,
        after as f64 / idle.max(1) as f64,
        lazy as f64 / 1024.0
    );
    // Only meaningful while the first streams are still open when the last one starts:
    // `--tokens` × `--itl-ms` longer than the burst's TTFB max.
    if let Some(kb) = streaming
        .filter(|_| all_open.as_millis() < u128::from(args.tokens) * u128::from(args.itl_ms))
    {
        println!(
            "RSS once every stream had its first byte ({:.0} ms, all open and relaying): {:.1} MB \
             ({:.1} KB a stream)",
            all_open.as_secs_f64() * 1e3,
            kb as f64 / 1024.0,
            kb.saturating_sub(idle) as f64 / n as f64
        );
    }
    for (i, kb) in later.iter().enumerate() {
        println!(
            "5 s after burst {}: {:.1} MB ({:.2}x idle)",
            i + 2,
            *kb as f64 / 1024.0,
            *kb as f64 / idle.max(1) as f64
        );
    }
    drop((lumen, sim));
    Ok(())
}
