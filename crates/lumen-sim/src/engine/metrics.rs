//! The engine's part of `/metrics`, in vLLM V1's names, types, help texts and buckets
//! (`vllm/v1/metrics/loggers.py`), in the text format `prometheus_client` writes: counters end
//! in `_total`, values are floats, histograms have cumulative `_bucket{le=...}` series and
//! `_count`/`_sum`.

use std::fmt::Write as _;

use super::core::{Stats, TTFT_BUCKETS};

/// A snapshot of what the engine reports.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub running: usize,
    pub waiting: usize,
    /// Share of KV blocks referenced by a sequence, 0 to 1.
    pub kv_usage: f64,
    /// Tokens of the blocks referenced by a sequence (cached but unreferenced ones excluded).
    pub used_tokens: usize,
    /// Tokens of the waiting requests: their prompts, and what they had generated before a
    /// preemption.
    pub waiting_tokens: usize,
    pub stats: Stats,
}

/// Writes the engine's KV-cache gauge, prefix-cache and preemption counters and the TTFT
/// histogram (the server writes the queue gauges, from [`Report`] too). `labels` is the label
/// set without braces (`model_name="m",engine="0"`), as every vLLM series carries it.
pub(crate) fn render(out: &mut String, labels: &str, r: &Report) {
    let mut one = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {value:?}\n"
        );
    };
    one(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        r.kv_usage,
    );
    one(
        "vllm:prefix_cache_queries_total",
        "counter",
        "Prefix cache queries, in terms of number of queried tokens.",
        r.stats.prefix_queries as f64,
    );
    one(
        "vllm:prefix_cache_hits_total",
        "counter",
        "Prefix cache hits, in terms of number of cached tokens.",
        r.stats.prefix_hits as f64,
    );
    one(
        "vllm:num_preemptions_total",
        "counter",
        "Cumulative number of preemption from the engine.",
        r.stats.preemptions as f64,
    );
    let name = "vllm:time_to_first_token_seconds";
    let _ = write!(
        out,
        "# HELP {name} Histogram of time to first token in seconds.\n# TYPE {name} histogram\n"
    );
    let mut cumulative = 0u64;
    for (i, le) in TTFT_BUCKETS.iter().enumerate() {
        cumulative += r.stats.ttft_buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{le:?}\"}} {:?}",
            cumulative as f64
        );
    }
    let _ = write!(
        out,
        "{name}_bucket{{{labels},le=\"+Inf\"}} {count:?}\n{name}_count{{{labels}}} {count:?}\n{name}_sum{{{labels}}} {sum:?}\n",
        count = r.stats.ttft_count as f64,
        sum = r.stats.ttft_sum,
    );
}
