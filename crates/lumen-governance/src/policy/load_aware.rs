//! `load_aware`: the backend with the lowest expected wait for a first token.
//!
//! A first token waits for the prefill queued ahead of it: an engine prefills a budget of
//! tokens per step, first come first served, while the sequences that are decoding slow each
//! step only a little. So the score, in units of this request's prompt, is
//!
//! - the prefill Lumen sent the backend that the engine has not done yet (`Slot::backlog`:
//!   its requests there with no first byte back), exact for Lumen's own traffic;
//! - the engine's reported `num_requests_waiting` (`Load::waiting`): other replicas' and
//!   clients' prompts show only there, each counted as one prompt. Not `Load::queue`, which
//!   subtracts a batch size learned from a report with a queue: engines also queue requests
//!   for the next step's token budget, a batch size learned then was a handful, and every
//!   request beyond it counted as queued (offline fleet, 2026-12-07: unique prompts at 80%
//!   load p99 1.22× round robin's with it, 1.10× without; chats 0.89× and 0.77×);
//! - the convex KV barrier (`w·k/(1−k)`: preemption and recompute start near a full cache) on
//!   the KV use now (`load::kv_now`: the report grown by what Lumen sent since), in whole
//!   prompts (`load::kv_steps`).
//!
//! Requests in flight are not counted: most of them are decoding, and a backend with ten
//! decoding answers sooner than one sent a long prompt a moment ago — counting them is why
//! this policy (and `least_in_flight`) lost to round robin in the fleet bench. The KV term is
//! rounded down because reports are up to half a second old and differ by a few percent
//! between engines equally loaded: taken exactly, the smallest of them broke every tie, and
//! every request the fleet sent went to one engine until the next scrape (fleet bench,
//! 2026-12-06b: p99 2.8–4.7× round robin's). Equal scores take turns among the tied: when
//! nothing is queued anywhere that is round robin, which is what an idle fleet wants.
//!
//! SMG's `least_load` scores `(queued tokens + tokens dispatched since the poll) / throughput +
//! λ·k/(1−k)`: it needs SGLang's own load endpoint, and its dispatch credit only grows until
//! the next poll. Here a request's bytes leave the backlog when its first byte comes back.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::load::{self, Load};

/// The expected wait on one backend, in prompts of `unit` bytes: `backlog` bytes of Lumen's
/// prefill queued there, the engine's reported queue, and the KV barrier in whole prompts.
pub(crate) fn score(load: &Load, backlog: f64, unit: f64, kv_weight: f64) -> f64 {
    backlog / unit.max(1.0) + load.waiting + load::kv_steps(load, kv_weight)
}

/// The index of the lowest expected wait (never empty; see [`score`]). Equal scores take
/// turns: the cursor picks among the tied ones only, so two idle backends next to a busy one
/// share evenly.
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
        .map(|(l, b)| score(l, *b, unit, kv_weight));
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
