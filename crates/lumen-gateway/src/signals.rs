//! The engines' own load reports: a sans-IO parser for their Prometheus text, and one scrape
//! round over every backend.
//!
//! Three engines, three vocabularies, one meaning (checked against each engine's source):
//!
//! | | running batch | waiting queue | KV-cache use (0–1) |
//! |---|---|---|---|
//! | vLLM (v1) | `vllm:num_requests_running` | `vllm:num_requests_waiting` | `vllm:kv_cache_usage_perc` (before 0.9: `vllm:gpu_cache_usage_perc`) |
//! | SGLang | `sglang:num_running_reqs` | `sglang:num_queue_reqs` | `sglang:token_usage` |
//! | llama.cpp | `llamacpp:requests_processing` | `llamacpp:requests_deferred` | `llamacpp:kv_cache_usage_ratio` (older builds only) |
//!
//! One backend is one engine endpoint, and one engine's queue and KV cache are shared by
//! everything it serves, so the counts are **summed** over all the series of a name — the
//! models (`model_name`, LoRA adapters) and vLLM's data-parallel engines (`engine="0"`,
//! `"1"`, … behind one API server) — and the KV use is **averaged** over its series. Two
//! exceptions keep that sum honest: vLLM 0.9 exports the deprecated `gpu_cache_usage_perc`
//! next to `kv_cache_usage_perc` (the newer name wins, never both), and SGLang started with
//! `--enable-metrics-for-all-schedulers` repeats one batch once per tensor-parallel rank
//! (only `tp_rank="0"` is read).
//!
//! The parser looks at the first bytes of each line and parses only the handful of lines it
//! wants: a 60 KB vLLM exposition (histograms included) costs tens of microseconds.

use std::time::Duration;

use futures::future::join_all;
use lumen_backend::RequestContext;
use lumen_governance::Router;
use lumen_governance::load::EngineReport;
use tokio::time::timeout;

use crate::upstream::Upstream;

#[derive(Clone, Copy)]
enum Field {
    Running,
    Waiting,
    Kv,
    KvLegacy,
}

/// The metric names read, and what each one is.
const NAMES: &[(&str, Field)] = &[
    ("vllm:num_requests_running", Field::Running),
    ("vllm:num_requests_waiting", Field::Waiting),
    ("vllm:kv_cache_usage_perc", Field::Kv),
    ("vllm:gpu_cache_usage_perc", Field::KvLegacy),
    ("sglang:num_running_reqs", Field::Running),
    ("sglang:num_queue_reqs", Field::Waiting),
    ("sglang:token_usage", Field::Kv),
    ("llamacpp:requests_processing", Field::Running),
    ("llamacpp:requests_deferred", Field::Waiting),
    ("llamacpp:kv_cache_usage_ratio", Field::Kv),
];

#[derive(Default)]
struct Sum {
    total: f64,
    n: u32,
}

impl Sum {
    fn add(&mut self, v: f64) {
        self.total += v;
        self.n += 1;
    }

    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.total / f64::from(self.n))
    }
}

/// Reads an engine's load from its Prometheus text exposition; `None` when the text has none
/// of the load metrics above (an engine Lumen does not know, or metrics switched off).
pub fn parse(text: &str) -> Option<EngineReport> {
    let (mut running, mut waiting) = (Sum::default(), Sum::default());
    let (mut kv, mut kv_legacy) = (Sum::default(), Sum::default());
    for line in text.lines() {
        let Some(first) = line.as_bytes().first() else {
            continue;
        };
        if !matches!(first, b'v' | b's' | b'l') {
            continue;
        }
        let Some((field, rest)) = NAMES.iter().find_map(|(name, field)| {
            let rest = line.strip_prefix(name)?;
            matches!(rest.as_bytes().first(), Some(b'{' | b' ' | b'\t')).then_some((*field, rest))
        }) else {
            continue;
        };
        let Some((labels, value)) = split_sample(rest) else {
            continue;
        };
        if label(labels, "tp_rank").is_some_and(|r| r != "0") {
            continue;
        }
        let Some(v) = value.parse::<f64>().ok().filter(|v| v.is_finite()) else {
            continue;
        };
        match field {
            Field::Running => running.add(v),
            Field::Waiting => waiting.add(v),
            Field::Kv => kv.add(v),
            Field::KvLegacy => kv_legacy.add(v),
        }
    }
    if running.n == 0 && waiting.n == 0 {
        return None;
    }
    Some(EngineReport {
        running: running.total,
        waiting: waiting.total,
        kv_usage: kv.mean().or_else(|| kv_legacy.mean()),
    })
}

/// `{labels} value [timestamp]` → (the text between the braces, the value).
fn split_sample(rest: &str) -> Option<(&str, &str)> {
    let (labels, after) = if let Some(inner) = rest.strip_prefix('{') {
        let end = closing_brace(inner)?;
        (&inner[..end], &inner[end + 1..])
    } else {
        ("", rest)
    };
    let value = after.split_ascii_whitespace().next()?;
    Some((labels, value))
}

/// The `}` that closes a label set, skipping any inside quoted values.
fn closing_brace(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The raw value of label `name` (escapes left as they are: only plain values are compared).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let end = closing_quote(after)?;
        if key.trim().trim_start_matches(',').trim() == name {
            return Some(&after[..end]);
        }
        rest = after[end + 1..].trim_start_matches(',');
    }
    None
}

fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// An id for a scrape request (engines log it like any other request id).
fn scrape_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "signals-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Asks every backend for its metrics, concurrently, one request each under `limit`, and
/// stores what they report with Lumen's in-flight count at the moment each was asked.
/// `now_ms` is the router's clock. Backends without metrics (the seam's default) are left
/// as they are; failures are recorded, so the last report ages into staleness.
pub(crate) async fn scrape(
    router: &Router<Upstream>,
    limit: Duration,
    now_ms: &(dyn Fn() -> u64 + Sync),
) {
    let rounds = router.slots().into_iter().map(|slot| async move {
        let base = slot.in_flight();
        let cx = RequestContext::new(scrape_id());
        let result = timeout(limit, slot.backend.backend.metrics(&cx)).await;
        (slot, base, result)
    });
    for (slot, base, result) in join_all(rounds).await {
        let failure = match result {
            Ok(Ok(Some(text))) => match parse(&text) {
                Some(report) => {
                    slot.engine().record(&report, base, now_ms());
                    None
                }
                None => Some("its /metrics has no queue or batch gauge Lumen reads".to_owned()),
            },
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} ms", limit.as_millis())),
        };
        if let Some(why) = failure {
            slot.engine().record_failure(why.clone());
            let (failures, _) = slot.engine().failures();
            if failures == 1 {
                tracing::warn!(backend = %slot.name, error = %crate::Text(&why), "engine metrics scrape failed; balancing on Lumen's own counts until it answers");
            } else {
                tracing::debug!(backend = %slot.name, error = %crate::Text(&why), "engine metrics scrape failed");
            }
        }
    }
}

#[cfg(test)]
mod tests;
