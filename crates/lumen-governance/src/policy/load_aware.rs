//! `load_aware`: the backend with the lowest expected wait by the engines' own reports.
//!
//! SMG's `least_load` scores `(queued tokens + tokens dispatched since the poll) / throughput +
//! λ·k/(1−k)`: it needs SGLang's own load endpoint, its dispatch credit only grows until the
//! next poll (requests that finished meanwhile still count), and a count of waiting tokens
//! that vLLM and llama.cpp do not export. This one reads the Prometheus gauges all three
//! engines export, corrects each report by Lumen's own in-flight change since (what it sent
//! counts at once, what finished stops counting), tells the engine's queue from its running
//! batch once the engine has shown its batch limit, and keeps the same convex KV barrier
//! (`load::cost`). Without fresh reports it is least-in-flight on Lumen's own counts.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::load::{self, Load};

/// The index of the lowest expected wait in `loads` (never empty). Equal scores take turns:
/// the cursor picks among the tied ones only, so two idle backends next to a busy one
/// share evenly.
pub(crate) fn decide(loads: &[Load], kv_weight: f64, cursor: &AtomicU64) -> usize {
    let costs = loads.iter().map(|l| load::cost(l, kv_weight));
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
