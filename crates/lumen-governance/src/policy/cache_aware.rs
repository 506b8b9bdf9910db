//! `cache_aware`: send a prompt where it will see its first token soonest — the prefill its
//! cache saves weighed against the prefill queued ahead of it — and, when nothing is cached
//! for it anywhere, where every replica would send it unless that costs more than it can
//! save.
//!
//! Four facts shape the decision. (1) Time to first token is the prefill queued ahead of a
//! request plus its own uncached prefill: an engine prefills a budget of tokens per step, first
//! come first served, while sequences that are decoding cost each step little. Both are
//! bytes of prompt, so they are compared as such, without thresholds: a conversation leaves
//! the engine that holds its history only when the prefill queued there exceeds the history
//! (`Slot::backlog`, Lumen's own sends that have no first byte back yet). (2) A prefix
//! shared by many conversations (a common system prompt) is cheap to cache on every engine,
//! and sending every conversation to the one engine that has it is what makes tree-based
//! routers hot-spot; so it counts as cached everywhere (the caller passes its length as
//! `discount`). (3) Replicas of Lumen see disjoint parts of the traffic. When no replica
//! knows a prompt yet, the one placing it must choose as the others would for its next
//! request: highest-random-weight (rendezvous) hashing on a key that names the conversation or
//! document, so a conversation's later turns, whichever replica routes them, land where its
//! first turn did. Leaving that backend costs, in expectation, one more prefill of the
//! prompt's own part elsewhere later (`Thresholds::agreement` of it), so the first placement
//! moves only when the hash's choice has more than that much more queued: a random placement
//! on a hash alone has the queueing tail of random placement (fleet bench, 2026-12-06: chat
//! p99 1.5× round robin's). (4) A backend whose KV cache is nearly full while another's is not,
//! or whose engine reports a queue out of balance (other replicas' traffic shows only there),
//! is never favoured.
//!
//! The decision is a value: a pure function of the candidates' loads, backlogs and match
//! depths.

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
    /// Prefill queued ahead, in prompt bytes (`Slot::backlog`: Lumen's requests there that have
    /// not had their first byte yet).
    pub(crate) backlog: f64,
}

/// The prompt being placed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prompt {
    /// The placement key (`PromptKey::placement`).
    pub(crate) key: u64,
    /// Its length in bytes.
    pub(crate) len: u32,
    /// Leading bytes cached on every engine (a widely shared section): they count for nobody.
    pub(crate) discount: u32,
    /// A client's session hint: keep the key's backend unless it is out of balance.
    pub(crate) strong: bool,
}

/// When a backend counts as out of balance, and what agreement between replicas is worth.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thresholds {
    /// Queue (by the engine's report) longer than the pool's shortest by this much.
    pub(crate) queue_slack: f64,
    /// KV cache at least this full while another's is not.
    pub(crate) kv_threshold: f64,
    /// For the expected-wait score when every candidate is out of balance.
    pub(crate) kv_weight: f64,
    /// A match shorter than this many bytes (a block) beyond the discount does not make a
    /// prompt known: the few bytes every prompt shares after a common section ("user:") are
    /// not worth breaking the agreement between replicas.
    pub(crate) min_gain: u32,
    /// What leaving the hash's choice for a prompt nobody holds costs, in its own bytes: the
    /// chance that its next request is placed by another replica (which sends it to the
    /// hash's choice, to be prefilled again there).
    pub(crate) agreement: f64,
    /// Weight of a candidate's own uncached prefill against the backlog queued there. Above 1
    /// because a prefill sent where the prompt is not cached delays not only this request but
    /// every one queued behind it there while it runs, and leaves a second copy that evicts
    /// others' prefixes; at 1 (this request's time to first token alone) a burst on one engine
    /// pushed its conversations onto their neighbours, whose new backlog pushed theirs on in
    /// turn (offline fleet, 2026-12-07: 38% of chat turns changed engine, docs hit rate 63%
    /// where 82% was possible).
    pub(crate) work: f64,
}

/// Why a backend was chosen (tests and traces read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// It holds a longer prefix than the placement's choice, worth more than its queue.
    Prefix,
    /// The placement's first choice.
    Affinity,
    /// The placement's first choice had too much queued (or was out of balance): another,
    /// for its lower expected wait.
    Spill,
    /// Every candidate was out of balance: the lowest expected wait by the engines' reports.
    LeastLoaded,
}

/// The choice, and what the chosen engine must prefill for it (its backlog grows by that).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decision {
    pub(crate) index: usize,
    pub(crate) why: Why,
    pub(crate) uncached: u32,
    /// Some candidate held the prompt beyond its shared section.
    pub(crate) known: bool,
}

/// Load balance of the pool by the engines' reports, computed once per decision.
struct Balance {
    min_queue: f64,
    any_kv_room: bool,
}

impl Balance {
    fn of(c: &[Candidate], t: &Thresholds) -> Self {
        let min_queue = c.iter().map(|c| c.load.queue).fold(f64::INFINITY, f64::min);
        Self {
            min_queue,
            any_kv_room: c
                .iter()
                .any(|c| c.load.kv.is_none_or(|k| k < t.kv_threshold)),
        }
    }

    fn hot(&self, l: &Load, t: &Thresholds) -> bool {
        l.queue >= self.min_queue + t.queue_slack
            || (self.any_kv_room && l.kv.is_some_and(|k| k >= t.kv_threshold))
    }
}

/// Chooses among `c` (never empty) for prompt `p`.
pub(crate) fn decide(c: &[Candidate], p: &Prompt, t: &Thresholds) -> Decision {
    let bal = Balance::of(c, t);
    let score = |i: usize| hash::rendezvous(p.key, c[i].node, c[i].weight);
    // Cached beyond the shared section, and what the engine must still prefill.
    let saved = |i: usize| c[i].depth.saturating_sub(p.discount);
    let own = p.len.saturating_sub(p.discount);
    let uncached = |i: usize| own.saturating_sub(saved(i));
    let mut top = 0;
    let mut top_score = f64::MIN;
    // The first backend by hash that is not out of balance: the placement's choice.
    let mut placed: Option<(usize, f64)> = None;
    let mut known = false;
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
        known |= saved(i) >= t.min_gain;
    }
    let Some((home, _)) = placed else {
        let i = least_cost(c, t.kv_weight);
        return Decision {
            index: i,
            why: Why::LeastLoaded,
            uncached: uncached(i),
            known: c.iter().enumerate().any(|(i, _)| saved(i) >= t.min_gain),
        };
    };
    let spill = if home == top {
        Why::Affinity
    } else {
        Why::Spill
    };
    if p.strong {
        // A session hint is the client saying which conversation this is: keep its backend;
        // when that one is out of balance, follow where the session went before.
        let deepest = (0..c.len())
            .filter(|&i| !bal.hot(&c[i].load, t))
            .max_by(|&a, &b| saved(a).cmp(&saved(b)).then(score(a).total_cmp(&score(b))));
        let (index, why) = match deepest {
            Some(m) if home != top && saved(m) >= t.min_gain => (m, Why::Prefix),
            _ => (home, spill),
        };
        return Decision {
            index,
            why,
            uncached: uncached(index),
            known,
        };
    }
    // Expected time to first token, in bytes of prefill: what is queued ahead, what this
    // prompt needs there, and — for a prompt nobody holds — the later prefill that leaving
    // the placement's choice is likely to cost.
    let leave = if known {
        0.0
    } else {
        t.agreement * f64::from(own)
    };
    let cost = |i: usize| {
        let away = if i == home { 0.0 } else { leave };
        c[i].backlog + t.work * f64::from(uncached(i)) + away
    };
    // Equal costs (nothing queued anywhere, a prompt nobody holds and agreement worth
    // nothing) go to the engine with the fewest requests, then by hash: among idle queues the
    // hash alone is a random choice, with a random choice's tail.
    let rank = |i: usize| (cost(i), c[i].load.occupancy, score(i));
    let mut best = home;
    let mut best_rank = rank(home);
    for (i, cand) in c.iter().enumerate() {
        if i == home || bal.hot(&cand.load, t) {
            continue;
        }
        let r = rank(i);
        let better = r.0 < best_rank.0
            || (r.0 == best_rank.0
                && (r.1 < best_rank.1 || (r.1 == best_rank.1 && r.2 > best_rank.2)));
        if better {
            (best, best_rank) = (i, r);
        }
    }
    let why = if best == home {
        spill
    } else if saved(best) >= saved(home).saturating_add(t.min_gain) {
        Why::Prefix
    } else {
        Why::Spill
    };
    Decision {
        index: best,
        why,
        uncached: uncached(best),
        known,
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
