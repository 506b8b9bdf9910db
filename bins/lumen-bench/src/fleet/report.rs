//! The fleet benchmark's figures per cell, and the markdown they are written as.

use std::fmt::Write as _;
use std::time::Duration;

use super::drive::Outcome;
use super::scrape::Counters;
use super::workload::Kind;

/// One (workload, load, policy, replicas) run, measured.
#[derive(Debug, Clone)]
pub struct Cell {
    pub workload: Kind,
    pub load: u32,
    pub rate: f64,
    pub policy: String,
    pub replicas: usize,
    /// Requests scheduled in the measured window.
    pub measured: usize,
    pub errors: usize,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    /// Measured requests completed per second, from the window's start to the last answer.
    pub throughput: f64,
    /// From the engines' counters: tokens found cached / tokens looked up.
    pub hit_rate: f64,
    /// Busiest engine's completed requests over the mean.
    pub imbalance: f64,
    pub preemptions: f64,
    /// The same share as `hit_rate`, from the answers' `cached_tokens` over `prompt_tokens`
    /// (measured requests only): a cross-check of the engines' counters.
    pub client_hit_rate: f64,
}

/// The `p` quantile (nearest rank) of sorted `xs`, in ms; NaN when empty.
fn quantile(xs: &[Duration], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let i = ((xs.len() as f64 * p).ceil() as usize).clamp(1, xs.len()) - 1;
    xs[i].as_secs_f64() * 1e3
}

/// The figures of a run whose measured window starts at `warmup`, from the outcomes and the
/// engines' counters at the window's start and after the last answer.
#[allow(clippy::too_many_arguments)]
pub fn cell(
    workload: Kind,
    load: u32,
    rate: f64,
    policy: &str,
    replicas: usize,
    warmup: Duration,
    outcomes: &[Outcome],
    before: &[Counters],
    after: &[Counters],
) -> Cell {
    let measured: Vec<&Outcome> = outcomes.iter().filter(|o| o.at >= warmup).collect();
    let mut ttft: Vec<Duration> = measured.iter().filter_map(|o| o.ttft).collect();
    ttft.sort();
    let ok = measured.iter().filter(|o| o.ok).count();
    let last = measured.iter().map(|o| o.done).max().unwrap_or(warmup);
    let span = last.saturating_sub(warmup).as_secs_f64();
    let deltas: Vec<Counters> = after.iter().zip(before).map(|(a, b)| a.since(b)).collect();
    let queries: f64 = deltas.iter().map(|d| d.prefix_queries).sum();
    let hits: f64 = deltas.iter().map(|d| d.prefix_hits).sum();
    let per_engine: Vec<f64> = deltas.iter().map(|d| d.requests).collect();
    let mean = per_engine.iter().sum::<f64>() / per_engine.len().max(1) as f64;
    let max = per_engine.iter().copied().fold(0.0, f64::max);
    Cell {
        workload,
        load,
        rate,
        policy: policy.to_owned(),
        replicas,
        measured: measured.len(),
        errors: measured.len() - ok,
        ttft_p50_ms: quantile(&ttft, 0.5),
        ttft_p99_ms: quantile(&ttft, 0.99),
        throughput: if span > 0.0 { ok as f64 / span } else { 0.0 },
        hit_rate: if queries > 0.0 { hits / queries } else { 0.0 },
        imbalance: if mean > 0.0 { max / mean } else { f64::NAN },
        preemptions: deltas.iter().map(|d| d.preemptions).sum(),
        client_hit_rate: {
            let prompt: u64 = measured.iter().map(|o| o.prompt_tokens).sum();
            let cached: u64 = measured.iter().map(|o| o.cached_tokens).sum();
            cached as f64 / prompt.max(1) as f64
        },
    }
}

/// The results table: one row per cell, with each row's p99 against round robin's in the same
/// (workload, load, replicas) group when round robin was run.
pub fn table(cells: &[Cell]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| workload | load | rate (req/s) | policy | replicas | TTFT p50 (ms) | TTFT p99 (ms) | p99 vs round_robin | throughput (req/s) | hit rate | imbalance | preemptions | requests | errors |"
    );
    let _ = writeln!(
        o,
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in cells {
        let rr = cells.iter().find(|r| {
            r.policy == "round_robin"
                && r.workload == c.workload
                && r.load == c.load
                && r.replicas == c.replicas
        });
        let vs = rr.map_or("".to_owned(), |r| {
            format!("{:.2}×", c.ttft_p99_ms / r.ttft_p99_ms)
        });
        let _ = writeln!(
            o,
            "| {} | {}% | {:.1} | `{}` | {} | {:.0} | {:.0} | {} | {:.1} | {:.1}% | {:.2} | {} | {} | {} |",
            c.workload.name(),
            c.load,
            c.rate,
            c.policy,
            c.replicas,
            c.ttft_p50_ms,
            c.ttft_p99_ms,
            vs,
            c.throughput,
            c.hit_rate * 100.0,
            c.imbalance,
            c.preemptions,
            c.measured,
            c.errors
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(at_ms: u64, ttft_ms: u64, ok: bool) -> Outcome {
        Outcome {
            at: Duration::from_millis(at_ms),
            ttft: ok.then(|| Duration::from_millis(ttft_ms)),
            done: Duration::from_millis(at_ms + ttft_ms + 100),
            ok,
            cached_tokens: 0,
            prompt_tokens: 0,
        }
    }

    #[test]
    fn a_cell_counts_only_the_measured_window_and_takes_deltas() {
        let mut outcomes = vec![outcome(500, 5000, true)]; // warm-up: ignored
        for i in 0..100 {
            outcomes.push(outcome(1000 + i * 10, i + 1, i != 99));
        }
        let c0 = Counters {
            prefix_queries: 100.0,
            prefix_hits: 50.0,
            requests: 10.0,
            preemptions: 0.0,
        };
        let before = [c0, c0];
        let after = [
            Counters {
                prefix_queries: 1100.0,
                prefix_hits: 650.0,
                requests: 70.0,
                preemptions: 1.0,
            },
            Counters {
                prefix_queries: 1100.0,
                prefix_hits: 250.0,
                requests: 50.0,
                preemptions: 0.0,
            },
        ];
        let c = cell(
            Kind::Docs,
            80,
            10.0,
            "round_robin",
            1,
            Duration::from_secs(1),
            &outcomes,
            &before,
            &after,
        );
        assert_eq!((c.measured, c.errors), (100, 1));
        // 99 successes with TTFTs 1..=99 ms.
        assert_eq!(c.ttft_p50_ms, 50.0);
        assert_eq!(c.ttft_p99_ms, 99.0);
        assert_eq!(c.hit_rate, 0.4);
        assert_eq!(c.imbalance, 60.0 / 50.0);
        assert_eq!(c.preemptions, 1.0);
        // The last answer ends at 1990 + 100 + 100 ms: 99 answers in 1.19 s.
        assert!(
            (c.throughput - 99.0 / 1.19).abs() < 1e-9,
            "{}",
            c.throughput
        );
        assert!(table(&[c]).contains("| docs | 80% |"));
    }
}
