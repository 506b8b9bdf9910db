//! `lumen-bench soak`: the endurance run (issue 16).
//!
//! Starts a real `redis-server` (on a free port), `lumen-sim` and Lumen (API keys with their
//! limits on that Redis, the response cache on), then samples Lumen's RSS and open descriptors
//! every second while idle, under a long mixed load, and after it. The load is paced at a fixed
//! rate over a fixed number of keep-alive connections and mixes normal traffic with every kind
//! of failure the gateway must survive without keeping anything: errors of its own (unknown
//! model, bad keys, limits), engine faults it retries or relays mid-stream, and clients that
//! hang up. Every answer is checked against what its kind expects. Writes the samples as CSV
//! and a markdown summary, and fails (exit 1) on clear growth or an unexpected answer.

pub(crate) mod client;
mod mix;
mod verdict;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::procs;
use mix::Kind;
use verdict::{Phase, Sample};

#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// Stop the load after this many requests (0: no count limit).
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    /// Stop the load after this many seconds (0: no time limit).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Requests per second to aim for (paced; 0: as fast as the connections go).
    #[arg(long, default_value_t = 800)]
    rate: u64,
    /// Keep-alive client connections (each sends one request at a time).
    #[arg(long, default_value_t = 48)]
    connections: u64,
    /// Seconds sampled before the load (the idle level).
    #[arg(long, default_value_t = 10)]
    idle: u64,
    /// Seconds sampled after the load. The engine pool closes idle connections after 90 s, so
    /// descriptors return to the idle level only in runs longer than that.
    #[arg(long, default_value_t = 120)]
    after: u64,
    /// Write the per-second samples here (CSV).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the markdown summary here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `redis-server` to start.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Extra environment for Lumen, `NAME=VALUE` (repeatable), e.g. MIMALLOC_PURGE_DELAY=0.
    #[arg(long = "lumen-env")]
    lumen_env: Vec<String>,
}

/// Counts of answers, per kind and outcome.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<(Kind, String), u64>,
    unexpected: BTreeMap<Kind, u64>,
    /// A few unexpected answers, verbatim (truncated), for the report.
    examples: Vec<String>,
}

/// Runs the soak. `Ok(true)` when every check passed.
pub async fn run(args: SoakArgs, dir: &Path) -> Result<bool, String> {
    if args.requests == 0 && args.seconds == 0 {
        return Err("give --requests or --seconds (or both)".to_owned());
    }
    let redis = procs::start_redis(&args.redis_server).await?;
    let sim = procs::start_sim_serving(dir, mix::MODELS).await?;
    let addr = procs::reserve_addr()?;
    let work = std::env::temp_dir().join(format!("lumen-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let config = work.join("lumen.toml");
    std::fs::write(&config, lumen_config(addr, sim.addr, redis.addr))
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let envs: Vec<(String, String)> = args
        .lumen_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--lumen-env wants NAME=VALUE, got {kv}"))
        })
        .collect::<Result<_, _>>()?;
    let lumen = procs::start_lumen_file(dir, &config, addr, &envs).await;
    let _ = std::fs::remove_dir_all(&work);
    let lumen = lumen?;
    eprintln!(
        "redis on {}, sim on {}, lumen on {}",
        redis.addr, sim.addr, lumen.addr
    );

    let lumen = Arc::new(lumen);
    let redis = Arc::new(redis);
    let done = Arc::new(AtomicU64::new(0));
    let phase = Arc::new(AtomicU8::new(0));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let (lumen, redis, done, phase, samples) = (
            lumen.clone(),
            redis.clone(),
            done.clone(),
            phase.clone(),
            samples.clone(),
        );
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let p = match phase.load(Ordering::Relaxed) {
                    0 => Phase::Idle,
                    1 => Phase::Load,
                    2 => Phase::After,
                    _ => return,
                };
                let s = Sample {
                    t: t0.elapsed().as_secs_f64().round(),
                    phase: p,
                    requests: done.load(Ordering::Relaxed),
                    rss_kb: lumen.rss_kb(),
                    fds: lumen.fds(),
                    threads: lumen.threads(),
                    redis_rss_kb: redis.rss_kb(),
                };
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(s);
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(args.idle)).await;
    phase.store(1, Ordering::Relaxed);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let cpu0 = lumen.cpu();
    load(&args, lumen.addr, start, done.clone(), tally.clone()).await;
    let elapsed = start.elapsed();
    let cpu = lumen.cpu() - cpu0;
    phase.store(2, Ordering::Relaxed);
    eprintln!(
        "load done: {} requests in {:.0} s; sampling {} s after",
        done.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        args.after
    );
    tokio::time::sleep(Duration::from_secs(args.after)).await;
    phase.store(3, Ordering::Relaxed);
    let _ = sampler.await;

    let samples = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some(path) = &args.csv {
        std::fs::write(path, csv(&samples))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let curve = verdict::judge(&samples, args.connections);
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    let total = done.load(Ordering::Relaxed);
    let text = report(
        &args,
        total,
        elapsed,
        cpu,
        &curve,
        &tally,
        lumen.peak_rss_kb(),
    );
    println!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(curve.failures.is_empty() && tally.unexpected.is_empty())
}

/// The load: `connections` workers take request numbers from one counter; request `i` is due
/// at `start + i / rate` (a worker that is late sends at once), until the count or the time
/// runs out. Each answer is checked and tallied.
async fn load(
    args: &SoakArgs,
    addr: std::net::SocketAddr,
    start: Instant,
    done: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let table = Arc::new(mix::table());
    let limit = (args.requests > 0).then_some(args.requests);
    let end = (args.seconds > 0).then(|| start + Duration::from_secs(args.seconds));
    let gap = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (next, done, tally, table) =
                (next.clone(), done.clone(), tally.clone(), table.clone());
            tokio::spawn(async move {
                let mut c = client::Client::new(addr);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if limit.is_some_and(|n| i >= n) {
                        return;
                    }
                    if let Some(gap) = gap {
                        let due = start + gap.mul_f64(i as f64);
                        if end.is_some_and(|e| due >= e) {
                            return;
                        }
                        tokio::time::sleep_until(due).await;
                    } else if end.is_some_and(|e| Instant::now() >= e) {
                        return;
                    }
                    let kind = mix::kind_of(i, &table);
                    let wire = kind.wire(i);
                    let got =
                        tokio::time::timeout(Duration::from_secs(30), c.send(&wire, kind.read()))
                            .await;
                    let (label, expected, example) = match got {
                        Ok(Ok(a)) => {
                            let ok = kind.expected(&a);
                            let label = outcome(kind, &a);
                            let example = (!ok).then(|| {
                                format!(
                                    "{}: {} {}",
                                    kind.name(),
                                    a.status,
                                    String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
                                )
                            });
                            (label, ok, example)
                        }
                        Ok(Err(e)) => (
                            format!("client error ({e})"),
                            false,
                            Some(format!("{kind:?}: {e}")),
                        ),
                        Err(_) => {
                            c.hang_up();
                            ("no answer in 30 s".to_owned(), false, None)
                        }
                    };
                    done.fetch_add(1, Ordering::Relaxed);
                    let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
                    *t.outcomes.entry((kind, label)).or_default() += 1;
                    if !expected {
                        *t.unexpected.entry(kind).or_default() += 1;
                        if let Some(e) = example
                            && t.examples.len() < 10
                        {
                            t.examples.push(e);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

/// A short label for the answer: the status, and for streams how they ended.
fn outcome(kind: Kind, a: &client::Answer) -> String {
    match kind.read() {
        client::Read::Nothing => "hung up".to_owned(),
        client::Read::FirstEvent => format!("{} then hung up", a.status),
        client::Read::Full if a.status == 200 && a.has(b"data: {\"error\":") => {
            "200, in-band error".to_owned()
        }
        client::Read::Full => a.status.to_string(),
    }
}

fn lumen_config(
    listen: std::net::SocketAddr,
    sim: std::net::SocketAddr,
    redis: std::net::SocketAddr,
) -> String {
    let mut keys = String::new();
    for (i, (secret, sha, limits)) in mix::KEYS.iter().enumerate() {
        let name = secret.trim_start_matches("sk-");
        if i > 0 {
            keys.push_str(",\n");
        }
        let _ = write!(
            keys,
            r#"  {{ name = "{name}", sha256 = "{sha}", limits = {limits} }}"#
        );
    }
    format!(
        r#"[server]
listen = "{listen}"

[[backends]]
name = "sim"
url = "http://{sim}"

[auth]
enabled = true
keys = [
{keys}
]

[redis]
url = "redis://{redis}"

[cache]
enabled = true

[log]
level = "error"
"#
    )
}

fn csv(samples: &[Sample]) -> String {
    let mut out = String::from("t_s,phase,requests,rss_kb,fds,threads,redis_rss_kb\n");
    for s in samples {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            s.t,
            s.phase.name(),
            s.requests,
            s.rss_kb,
            s.fds,
            s.threads,
            s.redis_rss_kb
        );
    }
    out
}

fn report(
    args: &SoakArgs,
    total: u64,
    elapsed: Duration,
    cpu: f64,
    c: &verdict::Curve,
    t: &Tally,
    vm_hwm_kb: u64,
) -> String {
    let mib = |kb: u64| kb as f64 / 1024.0;
    let mut o = String::new();
    let _ = writeln!(o, "# Lumen endurance soak\n");
    let _ = writeln!(
        o,
        "{total} requests in {:.0} s ({:.0} req/s; target {} req/s over {} connections), \
         {} s idle before, {} s after. Lumen: keys with limits on Redis, cache on.\n",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9),
        args.rate,
        args.connections,
        args.idle,
        args.after
    );
    let _ = writeln!(
        o,
        "Lumen's CPU during the load: {cpu:.1} s ({:.1} ms per 1,000 requests).\n",
        cpu * 1e6 / total.max(1) as f64
    );
    let _ = writeln!(o, "| | RSS (MiB) | open fds |\n|---|---|---|");
    let rows = [
        ("idle (median, before the load)", c.idle_rss_kb, c.idle_fds),
        ("early load (median, 15-30 s)", c.early_rss_kb, c.early_fds),
        (
            "plateau (median, last 15 s of load)",
            c.late_rss_kb,
            c.late_fds,
        ),
        ("peak (max sample)", c.peak_rss_kb, c.peak_fds),
        ("after (median, last 5 s)", c.after_rss_kb, c.after_fds),
    ];
    for (what, rss, fds) in rows {
        let _ = writeln!(o, "| {what} | {:.1} | {fds} |", mib(rss));
    }
    let _ = writeln!(o, "| VmHWM (kernel's peak) | {:.1} | |", mib(vm_hwm_kb));
    let _ = writeln!(
        o,
        "\nClear growth: plateau RSS over early × {} + {} MiB, plateau fds over early + {}, \
         or fds after the load over idle + connections + {}.\n",
        1.0 + verdict::RSS_TOLERANCE,
        verdict::RSS_SLACK_KB / 1024,
        verdict::FD_SLACK,
        verdict::FD_AFTER_SLACK
    );
    let _ = writeln!(o, "## Answers\n\n| kind | share | answers |\n|---|---|---|");
    for &(kind, _) in mix::WEIGHTS {
        let mut parts = Vec::new();
        let mut n = 0;
        for ((k, label), count) in &t.outcomes {
            if *k == kind {
                n += count;
                parts.push(format!("{label}: {count}"));
            }
        }
        let bad = t.unexpected.get(&kind).copied().unwrap_or(0);
        if bad > 0 {
            parts.push(format!("**unexpected: {bad}**"));
        }
        let _ = writeln!(
            o,
            "| {} | {:.1}% | {} |",
            kind.name(),
            n as f64 * 100.0 / total.max(1) as f64,
            parts.join(", ")
        );
    }
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, label), count) in &t.outcomes {
        *by_status.entry(label.as_str()).or_default() += count;
    }
    let _ = writeln!(o, "\nAll kinds together:");
    for (label, count) in by_status {
        let _ = writeln!(
            o,
            "- {label}: {count} ({:.2}%)",
            count as f64 * 100.0 / total.max(1) as f64
        );
    }
    let _ = writeln!(o);
    if c.failures.is_empty() && t.unexpected.is_empty() {
        let _ = writeln!(
            o,
            "Verdict: **pass** (no clear growth, every answer as expected)."
        );
    } else {
        let _ = writeln!(o, "Verdict: **FAIL**");
        for f in &c.failures {
            let _ = writeln!(o, "- {f}");
        }
        for e in &t.examples {
            let _ = writeln!(o, "- unexpected answer: {e}");
        }
    }
    o
}
