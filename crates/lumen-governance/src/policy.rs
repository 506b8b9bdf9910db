//! Balancing policies. Each picks one candidate (an index into the pool) from a view of the
//! candidates' live state; none allocates or locks.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::hash;

mod cache_aware;
mod load_aware;

pub(crate) use cache_aware::{Candidate, Prompt, Thresholds, decide as cache_aware};
pub(crate) use load_aware::decide as load_aware;

/// What a policy may look at: candidate indices and accessors for their state.
pub(crate) struct View<'a> {
    /// Usable pool indices, never empty.
    pub(crate) cands: &'a [usize],
    pub(crate) in_flight: &'a dyn Fn(usize) -> usize,
    pub(crate) weight: &'a dyn Fn(usize) -> u32,
    /// Stable identity of the backend (hash of its name), for rendezvous hashing.
    pub(crate) node: &'a dyn Fn(usize) -> u64,
}

/// The smooth weighted round-robin order (nginx's algorithm), precomputed once per table so a
/// pick is one atomic increment: weights 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
pub(crate) fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|w| i64::from((*w).max(1))).sum();
    // Cap the period so a pathological weight cannot build a huge table; proportions hold.
    let len = total.min(4096) as usize;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from((*w).max(1));
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

/// Next candidate in the weighted schedule, skipping members that are not candidates.
pub(crate) fn round_robin(v: &View<'_>, schedule: &[usize], cursor: &AtomicU64) -> usize {
    let start = cursor.fetch_add(1, Ordering::Relaxed) as usize;
    for step in 0..schedule.len() {
        let k = schedule[(start + step) % schedule.len()];
        if v.cands.contains(&k) {
            return k;
        }
    }
    v.cands[start % v.cands.len()]
}

/// Fewest in flight; ties take turns among themselves, so two idle backends next to busy ones
/// share evenly (a rotation over all candidates would give the first idle one after a busy
/// one every turn that starts on a busy one: three turns in four for [0, 0, 5, 5]).
pub(crate) fn least_in_flight(v: &View<'_>, cursor: &AtomicU64) -> usize {
    let best = v.cands.iter().map(|&k| (v.in_flight)(k)).min().unwrap_or(0);
    let ties = v
        .cands
        .iter()
        .filter(|&&k| (v.in_flight)(k) == best)
        .count();
    let turn = cursor.fetch_add(1, Ordering::Relaxed) as usize % ties.max(1);
    v.cands
        .iter()
        .copied()
        .filter(|&k| (v.in_flight)(k) == best)
        .nth(turn)
        .unwrap_or(v.cands[0])
}

/// Two distinct random candidates; the one with fewer in flight (the first on a tie).
pub(crate) fn power_of_two(v: &View<'_>, rng: &AtomicU64) -> usize {
    let n = v.cands.len();
    if n == 1 {
        return v.cands[0];
    }
    let r = hash::mix(rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
    let a = (r % n as u64) as usize;
    let b = ((r >> 32) % (n as u64 - 1)) as usize;
    let b = if b >= a { b + 1 } else { b };
    let (a, b) = (v.cands[a], v.cands[b]);
    if (v.in_flight)(b) < (v.in_flight)(a) {
        b
    } else {
        a
    }
}

/// Weighted rendezvous hashing: the same key always lands on the same backend while it is a
/// candidate; when a backend leaves, only its keys move.
pub(crate) fn rendezvous(v: &View<'_>, key: u64) -> usize {
    let mut best = v.cands[0];
    let mut best_score = f64::MIN;
    for &k in v.cands {
        let s = hash::rendezvous(key, (v.node)(k), (v.weight)(k));
        if s > best_score {
            best = k;
            best_score = s;
        }
    }
    best
}

/// Rendezvous order, but a backend is taken only while its in-flight count stays within
/// `factor` × the average (consistent hashing with bounded loads): a hot prefix spills to its
/// next-preferred backend instead of overloading one.
pub(crate) fn bounded_rendezvous(v: &View<'_>, key: u64, factor: f64) -> usize {
    let total: usize = v.cands.iter().map(|&k| (v.in_flight)(k)).sum();
    let bound = (((total + 1) as f64 * factor / v.cands.len() as f64).ceil() as usize).max(1);
    let score = |k: usize| hash::rendezvous(key, (v.node)(k), (v.weight)(k));
    // Usually the preferred backend is under its bound: one linear pass, no sort.
    let best = rendezvous(v, key);
    if (v.in_flight)(best) < bound {
        return best;
    }
    let mut ranked: Vec<(f64, usize)> = v.cands.iter().map(|&k| (score(k), k)).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .iter()
        .find(|(_, k)| (v.in_flight)(*k) < bound)
        .map_or(best, |(_, k)| *k)
}

#[cfg(test)]
mod tests;
