//! `load_aware`: the backend with the lowest expected wait for a first token.
//!
//! A first token waits for the prefill queued ahead of it: an engine prefills a budget of
//! tokens per step, first come first served, while the sequences that are decoding slow each
//! step only a little. So the score is the prefill Lumen sent the backend that the engine has
//! not done yet (`Slot::backlog`, in units of this request's prompt), plus the convex KV
//! barrier (`load::cost`'s `w·k/(1−k)`: preemption and recompute start near a full cache).
//! Requests in flight are not counted: most of them are decoding, and a backend with ten
//! decoding answers sooner than one sent a long prompt a moment ago — counting them is why
//! this policy (and `least_in_flight`) lost to round robin in the fleet bench. The engines'
//! `running`/`waiting` gauges are not counted either: scraped every half second, they are
//! older than a prefill. When nothing is queued anywhere every backend ties, and ties take
//! turns: round robin, which is what an idle fleet wants.
//!
//! SMG's `least_load` scores `(queued tokens + tokens dispatched since the poll) / throughput +
//! λ·k/(1−k)`: it needs SGLang's own load endpoint, and its dispatch credit only grows until
//! the next poll. Here a request's bytes leave the backlog when its first byte comes back.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::load::{self, Load};

/// The index of the lowest expected wait (never empty): `backlog[i]` bytes of prefill queued,
/// in units of `unit` bytes, and the KV barrier of `loads[i]`. Equal scores take turns: the
/// cursor picks among the tied ones only, so two idle backends next to a busy one share evenly.
pub(crate) fn decide(
    loads: &[Load],
    backlog: &[f64],
    unit: f64,
    kv_weight: f64,
    cursor: &AtomicU64,
) -> usize {
    let costs = loads
        .iter()
        .zip(backlog)
        .map(|(l, b)| b / unit.max(1.0) + load::kv_barrier(l, kv_weight));
    let best = costs.clone().fold(f64::INFINITY, f64::min);
    let ties = costs.clone().filter(|c| *c == best).count().max(1);
    let turn = cursor.fetch_add(1, Ordering::Relaxed) as usize % ties;
    costs
        .enumerate()
        .filter(|(_, c)| *c == best)
        .nth(turn)
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests;
