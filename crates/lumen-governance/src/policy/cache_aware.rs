//! `cache_aware`: send a prompt where its prefix is cached, unless that engine is too loaded;
//! otherwise place it where every replica would.
//!
//! Three facts shape the decision. (1) A KV-cache hit saves the prefill of the matched part,
//! which for a long document or a long conversation is most of the time to first token; a queue
//! costs more than any hit, so a backend whose queue or KV cache is out of balance is never
//! favoured. (2) A prefix shared by many conversations (a common system prompt) is cheap to
//! cache on every engine, and sending every conversation to the one engine that has it is what
//! makes tree-based routers hot-spot; so a match inside such a section does not count (the
//! caller passes its length as `discount`). (3) Replicas of Lumen see disjoint parts of the
//! traffic; when the index knows nothing they must still choose alike. So the fallback is not
//! "least loaded" but highest-random-weight (rendezvous) hashing on a key that names the
//! conversation or document, skipping backends that are too loaded by the engines' own reports
//! — the truth every replica shares. A conversation's later turns carry the same key, so they
//! land where its first turn did, whichever replica routes them.
//!
//! The decision is a value: a pure function of the candidates' loads and match depths.

use crate::hash;
use crate::load::{self, Load};

/// One candidate as this policy sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Stable identity (hash of the backend's name), the same in every replica.
    pub(crate) node: u64,
    pub(crate) weight: u32,
    pub(crate) load: Load,
    /// How many leading bytes of the prompt it holds, by the index.
    pub(crate) depth: u32,
}

/// When a backend counts as too loaded to be favoured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thresholds {
    /// Queue longer than the pool's shortest by this much.
    pub(crate) queue_slack: f64,
    /// KV cache at least this full while another's is not.
    pub(crate) kv_threshold: f64,
    /// For the expected-wait score when every candidate is too loaded.
    pub(crate) kv_weight: f64,
    /// Requests at the engine beyond this factor of the pool's mean (plus the slack).
    pub(crate) load_factor: f64,
    /// A deeper match moves a request off its placement only when it is deeper by at least
    /// this many bytes (a block): the few bytes every prompt shares after a common section
    /// ("user:") are not worth breaking the agreement between replicas.
    pub(crate) min_gain: u32,
}

/// Why a backend was chosen (tests and traces read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// It holds a longer prefix than the placement's choice.
    Prefix,
    /// The placement's first choice.
    Affinity,
    /// The placement's first choice was too loaded: the next one by hash.
    Spill,
    /// Every candidate was too loaded: the lowest expected wait.
    LeastLoaded,
}

/// Load balance of the pool, computed once per decision.
struct Balance {
    min_queue: f64,
    occupancy_bound: f64,
    any_kv_room: bool,
}

impl Balance {
    fn of(c: &[Candidate], t: &Thresholds) -> Self {
        let min_queue = c.iter().map(|c| c.load.queue).fold(f64::INFINITY, f64::min);
        let mean = c.iter().map(|c| c.load.occupancy).sum::<f64>() / c.len().max(1) as f64;
        Self {
            min_queue,
            occupancy_bound: t.load_factor * mean + t.queue_slack,
            any_kv_room: c
                .iter()
                .any(|c| c.load.kv.is_none_or(|k| k < t.kv_threshold)),
        }
    }

    fn hot(&self, l: &Load, t: &Thresholds) -> bool {
        l.queue >= self.min_queue + t.queue_slack
            || l.occupancy > self.occupancy_bound
            || (self.any_kv_room && l.kv.is_some_and(|k| k >= t.kv_threshold))
    }
}

/// Chooses among `c` (never empty) for a prompt placed by `key`. `discount` bytes of every
/// match (a widely shared section) do not count; `strong` (a client's session hint) keeps the
/// key's backend unless it is too loaded.
pub(crate) fn decide(
    c: &[Candidate],
    key: u64,
    discount: u32,
    strong: bool,
    t: &Thresholds,
) -> (usize, Why) {
    let bal = Balance::of(c, t);
    let score = |i: usize| hash::rendezvous(key, c[i].node, c[i].weight);
    let depth = |i: usize| c[i].depth.saturating_sub(discount);
    let mut top = 0;
    let mut top_score = f64::MIN;
    // The first non-hot backend by hash, and the deepest non-hot match (ties: by hash).
    let mut placed: Option<(usize, f64)> = None;
    let mut deepest: Option<(usize, u32, f64)> = None;
    for (i, cand) in c.iter().enumerate() {
        let s = score(i);
        if s > top_score {
            top = i;
            top_score = s;
        }
        if bal.hot(&cand.load, t) {
            continue;
        }
        if placed.is_none_or(|(_, ps)| s > ps) {
            placed = Some((i, s));
        }
        let d = depth(i);
        if deepest.is_none_or(|(_, dd, ds)| d > dd || (d == dd && s > ds)) {
            deepest = Some((i, d, s));
        }
    }
    let Some((a, _)) = placed else {
        return (least_cost(c, t.kv_weight), Why::LeastLoaded);
    };
    let spill = if a == top { Why::Affinity } else { Why::Spill };
    match deepest {
        // A session hint is the client saying which conversation this is: keep its backend;
        // when that one is too loaded, follow where the session went before.
        Some((m, d, _)) if strong && a != top && d >= t.min_gain => (m, Why::Prefix),
        _ if strong => (a, spill),
        Some((m, d, _)) if d >= depth(a).saturating_add(t.min_gain) => (m, Why::Prefix),
        _ => (a, spill),
    }
}

fn least_cost(c: &[Candidate], kv_weight: f64) -> usize {
    let mut best = 0;
    let mut best_cost = f64::INFINITY;
    for (i, cand) in c.iter().enumerate() {
        let cost = load::cost(&cand.load, kv_weight);
        if cost < best_cost {
            best = i;
            best_cost = cost;
        }
    }
    best
}

#[cfg(test)]
mod tests;
