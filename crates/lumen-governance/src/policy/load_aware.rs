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

/// The index of the lowest expected wait in `loads` (never empty); equal scores rotate so
/// equal backends share the load.
pub(crate) fn decide(loads: &[Load], kv_weight: f64, cursor: &AtomicU64) -> usize {
    let n = loads.len();
    let offset = cursor.fetch_add(1, Ordering::Relaxed) as usize;
    let mut best = offset % n;
    let mut best_cost = load::cost(&loads[best], kv_weight);
    for step in 1..n {
        let i = (offset + step) % n;
        let cost = load::cost(&loads[i], kv_weight);
        if cost < best_cost {
            best = i;
            best_cost = cost;
        }
    }
    best
}

#[cfg(test)]
mod tests;
