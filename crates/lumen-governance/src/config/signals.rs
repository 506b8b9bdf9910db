//! Settings of routing on what the engines report: the background scrape of their `/metrics`,
//! the load thresholds the signal-reading policies share, saturation holding, and the
//! cache-aware index. Plain serde types under `[routing.signals]` and `[routing.cache_aware]`.

use serde::Deserialize;

use super::{InvalidConfig, invalid};

/// `[routing.signals]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalsConfig {
    /// Scrape each backend's `/metrics`. Unset: only when some model's policy reads the
    /// signals (`cache_aware`, `load_aware`) or saturation holding is on.
    pub enabled: Option<bool>,
    /// How often each engine is asked (one small GET per engine per interval).
    pub interval_ms: u64,
    /// Deadline of one scrape; a late answer counts as a failure.
    pub timeout_ms: u64,
    /// A report older than this is not used: the backend's load falls back to Lumen's own
    /// in-flight count (never to "idle").
    pub stale_ms: u64,
    /// A backend is too loaded to be favoured for its cache or its hash when its queue exceeds
    /// the shortest queue in the pool by this many requests. Large by default: an engine's
    /// `num_requests_waiting` counts requests waiting for the next step's token budget too, so
    /// a burst of ten short turns shows a queue of several for one step, which is not
    /// imbalance; Lumen's own backlog already steers around what it queued itself, and this
    /// catches an engine flooded by traffic Lumen does not see (offline fleet, 2026-12-07: at 4
    /// chat p99 was 1.8x what it is at 32).
    pub queue_slack: u32,
    /// ... or when its KV cache is at least this full while another backend's is not. 1 (only
    /// a full cache, where the engine preempts) by default: a report is up to one interval
    /// old, and excluding every engine past 90% herded a whole interval's traffic onto the one
    /// that was not (offline fleet, unique prompts at 95% load: p99 2.9x round robin's, 1.0x
    /// at 1).
    pub kv_threshold: f64,
    /// Weight of KV pressure in the expected-wait score, in requests: `w·k/(1−k)` for usage
    /// `k`, which grows without bound as the cache fills (preemption and recompute follow).
    pub kv_weight: f64,
    /// Hold requests in Lumen's admission queue (its size, deadline and `Retry-After`) while
    /// every engine of the pool reports at least this many requests waiting. 0: never.
    pub saturation_queue: u32,
}

impl Default for SignalsConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            interval_ms: 500,
            timeout_ms: 400,
            stale_ms: 2_000,
            queue_slack: 32,
            kv_threshold: 1.0,
            kv_weight: 1.0,
            saturation_queue: 0,
        }
    }
}

impl SignalsConfig {
    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        for (key, v) in [
            ("routing.signals.interval_ms", self.interval_ms),
            ("routing.signals.timeout_ms", self.timeout_ms),
            ("routing.signals.stale_ms", self.stale_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.stale_ms < self.interval_ms {
            return Err(invalid(
                "routing.signals.stale_ms",
                "must be at least routing.signals.interval_ms (else every report is stale)",
            ));
        }
        if !(self.kv_threshold > 0.0 && self.kv_threshold <= 1.0) {
            return Err(invalid(
                "routing.signals.kv_threshold",
                "must be a fraction in (0, 1]",
            ));
        }
        if !(self.kv_weight >= 0.0 && self.kv_weight.is_finite()) {
            return Err(invalid(
                "routing.signals.kv_weight",
                "must be a finite number >= 0",
            ));
        }
        Ok(())
    }
}

/// `[routing.cache_aware]`: the index of what each backend holds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheAwareConfig {
    /// Entries (prompt blocks) kept per model; the least recently used is reused beyond it.
    /// About 80 bytes each (measured): the default bounds one model's index near 20 MB.
    pub max_entries: usize,
    /// An entry unused for this long counts as gone (the engine has likely evicted it).
    pub ttl_ms: u64,
    /// A shared section (system prompt, tools) is common to many conversations once two
    /// with history (later turns) followed it, or this many different prompts without: then
    /// conversations are placed by their own key and the section is left to be cached on
    /// every engine, instead of all following it to one. Prompts without history after one
    /// section are usually one document asked many questions, best kept together.
    pub shared_after: u16,
}

impl Default for CacheAwareConfig {
    fn default() -> Self {
        Self {
            max_entries: 262_144,
            ttl_ms: 600_000,
            shared_after: 64,
        }
    }
}

impl CacheAwareConfig {
    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_entries == 0 || self.max_entries > (u32::MAX / 2) as usize {
            return Err(invalid(
                "routing.cache_aware.max_entries",
                "must be between 1 and 2147483647",
            ));
        }
        if self.ttl_ms < 1_000 {
            return Err(invalid(
                "routing.cache_aware.ttl_ms",
                "must be at least 1000 (entries age in whole seconds)",
            ));
        }
        if self.shared_after == 0 {
            return Err(invalid(
                "routing.cache_aware.shared_after",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
