//! What Lumen knows about an engine's load, and the pure arithmetic decisions are made on.
//!
//! The engine's own report (its queue, its running batch, its KV-cache use, scraped from
//! `/metrics` by the core) is the truth every replica shares, but it is up to one interval old.
//! Between reports, Lumen corrects it by what it changed itself: the report is taken together
//! with Lumen's own in-flight count when the scrape was sent, and the estimate adds the
//! difference to now. So a burst Lumen sends after a report counts at once (the engine that
//! looked idle is idle no longer: llm-d issue 2066), and requests of its own that finished
//! since count as gone, which a "dispatched since the report" credit never subtracts. A report
//! older than `routing.signals.stale_ms`, or none, falls back to Lumen's own in-flight count:
//! never to "idle".

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One scrape, as the engine reported it (sums over its series; see the core's parser).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineReport {
    /// Requests in the running batch.
    pub running: f64,
    /// Requests waiting for a place in it.
    pub waiting: f64,
    /// KV-cache use in [0, 1], when the engine reports it.
    pub kv_usage: Option<f64>,
}

/// The last report of one backend, as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub running: u32,
    pub waiting: u32,
    pub kv_usage: Option<f64>,
    /// When it was taken, on the router's clock (milliseconds).
    pub at_ms: u64,
    /// Lumen's in-flight count on the backend when the scrape was sent.
    pub base_in_flight: u32,
    /// The batch size at the last report that had a queue: the most the engine runs at once
    /// (its `max_num_seqs`, or what its KV cache fits). Unknown until it has queued.
    pub capacity: Option<u32>,
}

/// A backend's engine reports, written by the scrape loop and read by every decision without
/// a lock. Fields are stored one by one; a decision that reads a report half-updated sees two
/// nearly equal reports mixed, which is as good as either.
#[derive(Debug)]
pub struct EngineState {
    /// `running << 32 | waiting`.
    counts: AtomicU64,
    /// Per mille; `u32::MAX` when not reported.
    kv_milli: AtomicU32,
    /// 0 until the first report.
    at_ms: AtomicU64,
    base: AtomicU32,
    /// 0 while unknown.
    capacity: AtomicU32,
    failures: AtomicU32,
    last_error: Mutex<Option<String>>,
}

impl Default for EngineState {
    fn default() -> Self {
        Self {
            counts: AtomicU64::new(0),
            kv_milli: AtomicU32::new(u32::MAX),
            at_ms: AtomicU64::new(0),
            base: AtomicU32::new(0),
            capacity: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
        }
    }
}

fn clamp_u32(v: f64) -> u32 {
    if v.is_finite() && v > 0.0 {
        v.min(f64::from(u32::MAX)).round() as u32
    } else {
        0
    }
}

impl EngineState {
    /// Stores a report taken at `at_ms`, whose scrape was sent while Lumen had
    /// `in_flight_at_send` requests on the backend.
    pub fn record(&self, report: &EngineReport, in_flight_at_send: usize, at_ms: u64) {
        let running = clamp_u32(report.running);
        let waiting = clamp_u32(report.waiting);
        self.counts.store(
            u64::from(running) << 32 | u64::from(waiting),
            Ordering::Relaxed,
        );
        let kv = report
            .kv_usage
            .filter(|k| k.is_finite())
            .map_or(u32::MAX, |k| (k.clamp(0.0, 1.0) * 1000.0).round() as u32);
        self.kv_milli.store(kv, Ordering::Relaxed);
        self.base.store(
            u32::try_from(in_flight_at_send).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        if waiting > 0 && running > 0 {
            self.capacity.store(running, Ordering::Relaxed);
        }
        self.failures.store(0, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
        self.at_ms.store(at_ms.max(1), Ordering::Relaxed);
    }

    /// Notes a failed scrape; the last good report ages until it is stale.
    pub fn record_failure(&self, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }

    /// Consecutive failed scrapes, and why the last one failed.
    pub fn failures(&self) -> (u32, Option<String>) {
        let why = self.last_error.lock().ok().and_then(|e| e.clone());
        (self.failures.load(Ordering::Relaxed), why)
    }

    /// The last report, if there ever was one.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let at_ms = self.at_ms.load(Ordering::Relaxed);
        if at_ms == 0 {
            return None;
        }
        let counts = self.counts.load(Ordering::Relaxed);
        let kv = self.kv_milli.load(Ordering::Relaxed);
        let cap = self.capacity.load(Ordering::Relaxed);
        Some(Snapshot {
            running: (counts >> 32) as u32,
            waiting: counts as u32,
            kv_usage: (kv != u32::MAX).then(|| f64::from(kv) / 1000.0),
            at_ms,
            base_in_flight: self.base.load(Ordering::Relaxed),
            capacity: (cap > 0).then_some(cap),
        })
    }
}

/// A backend's load as a decision sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Requests at the engine, running or waiting (other clients' and replicas' included when
    /// the report is fresh).
    pub occupancy: f64,
    /// Of those, the ones waiting for a place in the batch (beyond the batch size learned from
    /// an earlier report with a queue, Lumen's own sends since included): for saturation.
    pub queue: f64,
    /// The engine's own `num_requests_waiting` at the report (0 without a fresh one). Unlike
    /// `queue` it never guesses the batch size: a request waiting for the next step's token
    /// budget shows here too, and a batch size learned in such a moment made every request
    /// beyond it look queued.
    pub waiting: f64,
    /// KV-cache use in [0, 1] (fresh reports only).
    pub kv: Option<f64>,
    /// From a fresh engine report; else Lumen's own in-flight count.
    pub fresh: bool,
    /// Of `occupancy`, Lumen's own requests sent (less those finished) since the report: the
    /// credit that keeps a report from looking as light as when it was taken.
    pub since: f64,
}

/// The load of a backend now: its fresh report corrected by Lumen's own traffic since, else
/// Lumen's own in-flight count. Pure, so decisions are tested on scripted values.
pub fn estimate(snapshot: Option<Snapshot>, in_flight: usize, now_ms: u64, stale_ms: u64) -> Load {
    let own = in_flight as f64;
    let Some(s) = snapshot.filter(|s| now_ms.saturating_sub(s.at_ms) <= stale_ms) else {
        return Load {
            occupancy: own,
            queue: 0.0,
            waiting: 0.0,
            kv: None,
            fresh: false,
            since: 0.0,
        };
    };
    let since = own - f64::from(s.base_in_flight);
    let occupancy = (f64::from(s.running) + f64::from(s.waiting) + since).max(0.0);
    // With a queue at the last report the engine was full at `running`; a capacity learned
    // earlier holds until the engine queues again.
    let capacity = s.capacity.or_else(|| (s.waiting > 0).then_some(s.running));
    let queue = capacity.map_or(0.0, |c| (occupancy - f64::from(c)).max(0.0));
    Load {
        occupancy,
        queue,
        waiting: f64::from(s.waiting),
        kv: s.kv_usage,
        fresh: true,
        since,
    }
}

/// Expected wait, in requests ahead: everything at the engine, the waiting ones twice (they
/// have not started; the running ones only slow each step a little), and a barrier that grows
/// without bound as the KV cache fills (`w·k/(1−k)`: preemption and recompute start there).
pub fn cost(load: &Load, kv_weight: f64) -> f64 {
    load.occupancy + load.queue + kv_barrier(load, kv_weight)
}

/// `w·k/(1−k)` for KV-cache use `k` (none reported: 0), in requests.
pub fn kv_barrier(load: &Load, kv_weight: f64) -> f64 {
    barrier(load.kv.unwrap_or(0.0), kv_weight)
}

fn barrier(k: f64, kv_weight: f64) -> f64 {
    let k = k.clamp(0.0, 0.99);
    kv_weight * k / (1.0 - k)
}

/// KV-cache use now, by the report and what Lumen did since: the reported use scaled by the
/// requests at the engine now over those at the report (each of them holding about the
/// average share). A burst Lumen sent after the report fills the cache at once, where the
/// report alone would keep calling that engine the emptiest until the next scrape. None
/// without a fresh report.
pub fn kv_now(load: &Load) -> Option<f64> {
    let k = load.kv?;
    let then = load.occupancy - load.since;
    if then < 1.0 {
        return Some(k);
    }
    Some((k * load.occupancy / then).clamp(0.0, 1.0))
}

/// The KV barrier on [`kv_now`], in whole requests (rounded down): a difference in KV use
/// counts only once it is worth a prompt's prefill, so the small differences between reports
/// never decide alone (they made `load_aware` send every request to the engine that last
/// reported the least, until the next scrape). 0 below half full at weight 1.
pub fn kv_steps(load: &Load, kv_weight: f64) -> f64 {
    kv_now(load).map_or(0.0, |k| barrier(k, kv_weight).floor())
}

/// Whether every backend of a pool is queueing at least `threshold` requests, by fresh
/// reports: then a new request waits in Lumen (where it can still go to whichever engine
/// frees first, and has a deadline) rather than in one engine's queue. A backend without a
/// fresh report is never counted as saturated.
pub fn saturated(loads: &[Load], threshold: u32) -> bool {
    threshold > 0
        && !loads.is_empty()
        && loads
            .iter()
            .all(|l| l.fresh && l.queue >= f64::from(threshold))
}

#[cfg(test)]
mod tests;
