//! The engines' own load reports and the load routing reads from them, per backend (backend
//! names come from configuration, so the label set is bounded), refreshed at scrape time.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::BackendLabel;

type FloatGauge = Gauge<f64, AtomicU64>;

pub(crate) struct EngineGauges {
    running: Family<BackendLabel, FloatGauge>,
    waiting: Family<BackendLabel, FloatGauge>,
    kv: Family<BackendLabel, FloatGauge>,
    age: Family<BackendLabel, FloatGauge>,
    load: Family<BackendLabel, FloatGauge>,
    queue: Family<BackendLabel, FloatGauge>,
    pub(crate) index_entries: Gauge,
}

impl EngineGauges {
    pub(crate) fn register(r: &mut Registry) -> Self {
        let g = Self {
            running: Family::default(),
            waiting: Family::default(),
            kv: Family::default(),
            age: Family::default(),
            load: Family::default(),
            queue: Family::default(),
            index_entries: Gauge::default(),
        };
        r.register(
            "lumen_engine_requests_running",
            "Requests in the engine's running batch, by its last /metrics report",
            g.running.clone(),
        );
        r.register(
            "lumen_engine_requests_waiting",
            "Requests in the engine's waiting queue, by its last /metrics report",
            g.waiting.clone(),
        );
        r.register(
            "lumen_engine_kv_cache_usage_ratio",
            "The engine's KV-cache use (0-1), by its last /metrics report",
            g.kv.clone(),
        );
        r.register_with_unit(
            "lumen_engine_report_age",
            "Age of the engine's last /metrics report (grows while scrapes fail)",
            Unit::Seconds,
            g.age.clone(),
        );
        r.register(
            "lumen_backend_load_requests",
            "Requests at the engine as routing estimates them: its fresh report plus Lumen's \
             own change since, else Lumen's in-flight count",
            g.load.clone(),
        );
        r.register(
            "lumen_backend_load_queue",
            "Of those, the requests estimated to be waiting for a place in the batch",
            g.queue.clone(),
        );
        r.register(
            "lumen_cache_aware_index_entries",
            "Prompt blocks in the cache_aware indexes (about 80 bytes each)",
            g.index_entries.clone(),
        );
        g
    }

    /// Sets one backend's gauges from its slot.
    pub(crate) fn set<B>(
        &self,
        slot: &lumen_governance::Slot<B>,
        label: &BackendLabel,
        now_ms: u64,
        stale_ms: u64,
    ) {
        let load = slot.load(now_ms, stale_ms);
        self.load.get_or_create(label).set(load.occupancy);
        self.queue.get_or_create(label).set(load.queue);
        let Some(s) = slot.engine().snapshot() else {
            return;
        };
        self.running.get_or_create(label).set(f64::from(s.running));
        self.waiting.get_or_create(label).set(f64::from(s.waiting));
        if let Some(kv) = s.kv_usage {
            self.kv.get_or_create(label).set(kv);
        }
        self.age
            .get_or_create(label)
            .set(now_ms.saturating_sub(s.at_ms) as f64 / 1000.0);
    }
}
