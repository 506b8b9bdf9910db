//! The fleet's capacity for a workload, measured on the engine model itself before any process
//! starts: the same requests, tokenized as the engines will tokenize them, arriving as a
//! Poisson process and dealt round robin over the engines, run through
//! `lumen_sim::engine::offline` on a virtual clock (milliseconds of CPU for minutes of
//! simulated time, no noise).
//!
//! Capacity is the highest arrival rate at which round robin keeps up: when the arrivals stop,
//! every engine finishes its backlog within [`DRAIN_SHARE`] of the arrival span. Round robin is
//! the reference because it is the baseline every policy is compared with: at "80% load" round
//! robin's engines are 80% busy, and a policy that reuses more of the KV cache runs the same
//! traffic on less work, which is the point of routing on it.

use std::time::Duration;

use lumen_sim::EngineConfig;
use lumen_sim::engine::{NewSeq, chat_request, offline};

use super::workload::{Generator, Kind, Rng, Shape};

/// Backlog allowed at the end, as a share of the arrivals' span. Over capacity by a fraction
/// `x`, the backlog grows to about `x` of the span; so this bound places the estimate within a
/// few percent of the true knee.
pub const DRAIN_SHARE: f64 = 0.03;

/// What the calibration found.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Requests per second the fleet sustains under round robin.
    pub rate: f64,
    /// Prefix-cache hit rate of round robin at that rate (tokens found / tokens looked up).
    pub hit_rate: f64,
}

/// Arrival times of a Poisson process at `rate`, from `seed` (the same stream the live run
/// scales, so calibration and run see the same gaps).
pub fn arrivals(seed: u64, rate: f64, n: usize) -> Vec<Duration> {
    let mut rng = Rng::new(seed ^ 0xA771_7A15);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += -rng.unit().ln() / rate;
            Duration::from_secs_f64(t)
        })
        .collect()
}

/// The first `n` requests of a workload as engine sequences.
pub fn sequences(kind: Kind, shape: &Shape, seed: u64, n: usize) -> Result<Vec<NewSeq>, String> {
    let mut g = Generator::new(kind, shape.clone(), seed);
    (0..n)
        .map(|_| {
            let r = g.next_request();
            chat_request(&r.messages, None, r.max_tokens, 0)
        })
        .collect()
}

/// Whether `engines` engines keep up with `seqs` arriving at `rate` dealt round robin, and the
/// hit rate they reach.
fn trial(cfg: &EngineConfig, engines: usize, seqs: &[NewSeq], seed: u64, rate: f64) -> (bool, f64) {
    let times = arrivals(seed, rate, seqs.len());
    let span = times.last().copied().unwrap_or_default();
    let (mut queries, mut hits) = (0u64, 0u64);
    let mut sustained = true;
    for e in 0..engines {
        let mine: Vec<offline::Arrival> = seqs
            .iter()
            .zip(&times)
            .enumerate()
            .filter(|(i, _)| i % engines == e)
            .map(|(_, (s, at))| offline::Arrival {
                at: *at,
                seq: s.clone(),
            })
            .collect();
        let last = mine.last().map(|a| a.at).unwrap_or_default();
        let out = offline::run(cfg, mine);
        queries += out.stats.prefix_queries;
        hits += out.stats.prefix_hits;
        let drain = out.makespan.saturating_sub(last);
        if drain.as_secs_f64() > DRAIN_SHARE * span.as_secs_f64() {
            sustained = false;
        }
    }
    (sustained, hits as f64 / queries.max(1) as f64)
}

/// Bisects the sustainable rate of `engines` engines for the workload's first `n` requests.
pub fn estimate(
    cfg: &EngineConfig,
    engines: usize,
    kind: Kind,
    shape: &Shape,
    seed: u64,
    n: usize,
) -> Result<Capacity, String> {
    let seqs = sequences(kind, shape, seed, n)?;
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut hit_rate = 0.0;
    // Double until round robin falls behind, then halve the gap twelve times (0.02% of it).
    loop {
        let (ok, h) = trial(cfg, engines, &seqs, seed, hi);
        if !ok {
            break;
        }
        (lo, hit_rate) = (hi, h);
        hi *= 2.0;
        if hi > 1e6 {
            return Err("capacity above a million requests per second: check the engine".into());
        }
    }
    for _ in 0..12 {
        let mid = (lo + hi) / 2.0;
        let (ok, h) = trial(cfg, engines, &seqs, seed, mid);
        if ok {
            (lo, hit_rate) = (mid, h);
        } else {
            hi = mid;
        }
    }
    Ok(Capacity { rate: lo, hit_rate })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_where_round_robin_stops_keeping_up() {
        // A small, fast workload: unique prompts, whose cost the step formula gives directly.
        let shape = Shape {
            unique_tokens: 400,
            unique_answer_tokens: 8,
            ..Shape::default()
        };
        let cfg = EngineConfig::default();
        let cap = estimate(&cfg, 2, Kind::Unique, &shape, 3, 600).unwrap();
        assert_eq!(cap.hit_rate, 0.0);
        // Each request costs at least its prefill (~400 tokens × 100 µs) of one engine's
        // time; batching shares the fixed step cost, so two engines sustain fewer than
        // 2 / 40 ms = 50 requests/s, and well over half of that.
        assert!(cap.rate < 50.0 && cap.rate > 25.0, "{cap:?}");
        // Just above it, the backlog does not drain; below it, it does.
        let seqs = sequences(Kind::Unique, &shape, 3, 600).unwrap();
        assert!(!trial(&cfg, 2, &seqs, 3, cap.rate * 1.1).0);
        assert!(trial(&cfg, 2, &seqs, 3, cap.rate * 0.9).0);
    }
}
