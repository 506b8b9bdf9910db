//! The markdown report: figures, ratios to direct, and each target met or missed.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Args;
use crate::load::{Stats, StreamStats};

/// CPU seconds per 10k requests in the closed-loop phase.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub sim_alone: f64,
    pub lumen: f64,
    pub sim_under_lumen: f64,
    pub client_direct: f64,
    pub client_lumen: f64,
}

#[derive(Default)]
pub struct Report {
    startup: Duration,
    closed: Option<(Stats, Stats)>,
    cpu: Option<Cpu>,
    open: Vec<(u64, Stats, Stats)>,
    streams: Option<(usize, StreamStats, StreamStats)>,
    soak: Option<(u64, Vec<(u64, u64)>)>,
    rss: (u64, u64),
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem} GiB RAM, Linux {}",
        kernel.trim()
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

impl Report {
    pub fn new(startup: Duration) -> Self {
        Self {
            startup,
            ..Self::default()
        }
    }

    pub fn closed(&mut self, direct: &Stats, via: &Stats) {
        self.closed = Some((direct.clone(), via.clone()));
    }

    pub fn cpu(&mut self, cpu: Cpu) {
        self.cpu = Some(cpu);
    }

    pub fn open(&mut self, rate: u64, direct: &Stats, via: &Stats) {
        self.open.push((rate, direct.clone(), via.clone()));
    }

    pub fn streams(&mut self, n: usize, direct: &StreamStats, via: &StreamStats) {
        let copy = |s: &StreamStats| StreamStats {
            ttfb: s.ttfb.clone(),
            total: s.total.clone(),
            events: s.events.clone(),
        };
        self.streams = Some((n, copy(direct), copy(via)));
    }

    pub fn soak(&mut self, n: u64, samples: &[(u64, u64)]) {
        self.soak = Some((n, samples.to_vec()));
    }

    pub fn rss(&mut self, sim_kb: u64, lumen_kb: u64) {
        self.rss = (sim_kb, lumen_kb);
    }

    pub fn render(&self, args: &Args) -> String {
        let mut o = String::new();
        let mut targets: Vec<(String, String, bool)> = Vec::new();
        let _ = writeln!(o, "# Lumen gateway benchmark\n");
        let _ = writeln!(o, "- machine: {}", machine());
        let _ = writeln!(
            o,
            "- load generator, lumen-sim (1 worker thread) and Lumen (governance on: API key, in-memory limits, metrics, request ids; access log off) share the machine"
        );
        let _ = writeln!(
            o,
            "- {} s per phase, {} connections closed-loop, {} concurrent streams\n",
            args.seconds, args.connections, args.streams
        );

        if let Some((d, v)) = &self.closed {
            let ratio = v.rps() / d.rps();
            let _ = writeln!(
                o,
                "## Closed loop, non-streamed chat (16 tokens), {} connections\n",
                args.connections
            );
            let _ = writeln!(
                o,
                "| | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|"
            );
            let _ = writeln!(
                o,
                "| direct | {:.0} | {:.3} | {:.3} | {} |",
                d.rps(),
                d.pct(0.5),
                d.pct(0.99),
                d.errors
            );
            let _ = writeln!(
                o,
                "| through Lumen | {:.0} | {:.3} | {:.3} | {} |",
                v.rps(),
                v.pct(0.5),
                v.pct(0.99),
                v.errors
            );
            let _ = writeln!(o, "| ratio | **{ratio:.2}×** | | | |\n");
            targets.push((
                "closed-loop throughput ≥ 0.45× direct".into(),
                format!("{ratio:.2}×"),
                ratio >= 0.45,
            ));
        }
        if let Some(Cpu {
            sim_alone,
            lumen,
            sim_under_lumen: sim_under,
            client_direct,
            client_lumen,
        }) = self.cpu
        {
            let per = |s: f64| s / 1e4 * 1e6;
            let ratio = lumen / sim_alone;
            let _ = writeln!(o, "## CPU per request\n");
            let _ = writeln!(
                o,
                "| | CPU s per 10k requests | µs per request |\n|---|---|---|"
            );
            let _ = writeln!(
                o,
                "| lumen-sim (direct run) | {sim_alone:.3} | {:.1} |",
                per(sim_alone)
            );
            let _ = writeln!(o, "| Lumen (Lumen run) | {lumen:.3} | {:.1} |", per(lumen));
            let _ = writeln!(
                o,
                "| lumen-sim (Lumen run) | {sim_under:.3} | {:.1} |",
                per(sim_under)
            );
            let _ = writeln!(
                o,
                "| load generator (direct run) | {client_direct:.3} | {:.1} |",
                per(client_direct)
            );
            let _ = writeln!(
                o,
                "| load generator (Lumen run) | {client_lumen:.3} | {:.1} |",
                per(client_lumen)
            );
            let _ = writeln!(o, "| Lumen ÷ simulator | **{ratio:.2}×** | |\n");
            targets.push((
                "Lumen CPU per request ≤ 3× the simulator's".into(),
                format!("{ratio:.2}×"),
                ratio <= 3.0,
            ));
        }
        if !self.open.is_empty() {
            let _ = writeln!(o, "## Open loop (latency from the scheduled send time)\n");
            let _ = writeln!(
                o,
                "| rate | path | achieved req/s | p50 ms | p99 ms | p99.9 ms | errors |\n|---|---|---|---|---|---|---|"
            );
            for (rate, d, v) in &self.open {
                for (name, s) in [("direct", d), ("Lumen", v)] {
                    let _ = writeln!(
                        o,
                        "| {rate}/s | {name} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
                        s.rps(),
                        s.pct(0.5),
                        s.pct(0.99),
                        s.pct(0.999),
                        s.errors
                    );
                }
                let (a50, a99) = (v.pct(0.5) - d.pct(0.5), v.pct(0.99) - d.pct(0.99));
                let _ = writeln!(
                    o,
                    "| {rate}/s | **added** | | **+{a50:.3}** | **+{a99:.3}** | | |"
                );
                if *rate == 500 {
                    targets.push((
                        "added latency at 500 req/s ≤ +0.10 ms p50".into(),
                        format!("+{a50:.3} ms"),
                        a50 <= 0.10,
                    ));
                    targets.push((
                        "added latency at 500 req/s ≤ +0.20 ms p99".into(),
                        format!("+{a99:.3} ms"),
                        a99 <= 0.20,
                    ));
                }
            }
            let _ = writeln!(o);
        }
        if let Some((n, d, v)) = &self.streams {
            let ev = |s: &StreamStats| {
                s.events.iter().sum::<u64>() as f64 / s.events.len().max(1) as f64
            };
            let _ = writeln!(
                o,
                "## Streaming: {n} concurrent streams, 64 tokens at 1 ms between tokens\n"
            );
            let _ = writeln!(
                o,
                "| | streams | TTFB p50 ms | TTFB p99 ms | total p50 ms | total p99 ms | events per stream |\n|---|---|---|---|---|---|---|"
            );
            for (name, s) in [("direct", d), ("through Lumen", v)] {
                let _ = writeln!(
                    o,
                    "| {name} | {} | {:.3} | {:.3} | {:.2} | {:.2} | {:.1} |",
                    s.total.ok,
                    s.ttfb.pct(0.5),
                    s.ttfb.pct(0.99),
                    s.total.pct(0.5),
                    s.total.pct(0.99),
                    ev(s)
                );
            }
            let added = v.ttfb.pct(0.5) - d.ttfb.pct(0.5);
            let _ = writeln!(
                o,
                "| added | | **+{added:.3}** | +{:.3} | +{:.2} | | |\n",
                v.ttfb.pct(0.99) - d.ttfb.pct(0.99),
                v.total.pct(0.5) - d.total.pct(0.5)
            );
            targets.push((
                "added streaming TTFB ≤ +0.15 ms p50".into(),
                format!("+{added:.3} ms"),
                added <= 0.15,
            ));
        }
        let (sim_kb, lumen_kb) = self.rss;
        let _ = writeln!(o, "## Memory and startup\n");
        let _ = writeln!(
            o,
            "- peak RSS: Lumen {:.1} MB, lumen-sim {:.1} MB",
            lumen_kb as f64 / 1024.0,
            sim_kb as f64 / 1024.0
        );
        targets.push((
            "peak RSS ≤ 25 MB".into(),
            format!("{:.1} MB", lumen_kb as f64 / 1024.0),
            lumen_kb <= 25 * 1024,
        ));
        let _ = writeln!(
            o,
            "- startup to ready (spawn → `/ready` 200): {:.1} ms",
            self.startup.as_secs_f64() * 1e3
        );
        targets.push((
            "startup to ready ≤ 100 ms".into(),
            format!("{:.1} ms", self.startup.as_secs_f64() * 1e3),
            self.startup <= Duration::from_millis(100),
        ));
        if let Some((n, samples)) = &self.soak {
            let _ = writeln!(
                o,
                "- soak, {n} requests through Lumen, RSS after each tenth (MB): {}",
                samples
                    .iter()
                    .map(|(_, kb)| format!("{:.1}", *kb as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let tail: Vec<u64> = samples
                .iter()
                .skip(samples.len() / 2)
                .map(|(_, kb)| *kb)
                .collect();
            if let (Some(min), Some(max)) = (tail.iter().min(), tail.iter().max()) {
                let drift = (*max as f64 - *min as f64) / *min.max(&1) as f64 * 100.0;
                targets.push((
                    format!("RSS flat within 5% over {n} requests (second half)"),
                    format!("{drift:.1}%"),
                    drift <= 5.0,
                ));
            }
        }
        let _ = writeln!(o, "\n## Targets\n\n| target | result | |\n|---|---|---|");
        for (t, r, ok) in targets {
            let _ = writeln!(o, "| {t} | {r} | {} |", verdict(ok));
        }
        o
    }
}
