//! The engine model on a virtual clock: the same scheduler as the served engine, stepped as
//! fast as the CPU allows. A run of thousands of requests takes milliseconds, so a benchmark
//! can measure what an engine sustains (its capacity for a workload) before it starts, exactly
//! as the served engines will behave, with no wall-clock time and no noise.

use std::collections::HashMap;
use std::time::Duration;

use super::config::EngineConfig;
use super::core::{Core, Event, NewSeq, Plan, Stats};

/// A request and when it arrives.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Duration,
    pub seq: NewSeq,
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Virtual time from the start to the last request's last token.
    pub makespan: Duration,
    /// Each request's time to first token, in arrival order (zero for a request that produced
    /// no token or did not fit in the cache).
    pub ttft: Vec<Duration>,
    pub stats: Stats,
}

impl Outcome {
    /// Requests finished per second of virtual time.
    pub fn throughput(&self) -> f64 {
        let secs = self.makespan.as_secs_f64();
        if secs > 0.0 {
            self.stats.finished as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs `arrivals` (sorted by time) through one engine until every request has finished.
pub fn run(cfg: &EngineConfig, arrivals: Vec<Arrival>) -> Outcome {
    let mut core = Core::new(cfg.clone());
    let mut arrived_at = HashMap::new();
    let mut order = HashMap::new();
    let mut ttft = vec![Duration::ZERO; arrivals.len()];
    let mut pending = arrivals.into_iter().enumerate().peekable();
    let mut now = Duration::ZERO;
    let mut events = Vec::new();
    loop {
        while let Some((i, a)) = pending.next_if(|(_, a)| a.at <= now) {
            // The served engine refuses these with 400; here they are left out.
            if !core.fits(a.seq.prompt.len(), a.seq.max_tokens) {
                continue;
            }
            let id = core.add(a.seq, a.at);
            arrived_at.insert(id, a.at);
            order.insert(id, i);
        }
        let Some(plan) = core.schedule(now, &mut events) else {
            match pending.peek() {
                Some((_, next)) => {
                    now = next.at;
                    continue;
                }
                None => break,
            }
        };
        now += plan.duration;
        core.complete(&plan, now, &mut events);
        for (id, ev) in events.drain(..) {
            if ev == Event::Token
                && let Some(at) = arrived_at.remove(&id)
                && let Some(&i) = order.get(&id)
            {
                ttft[i] = now - at;
            }
        }
    }
    Outcome {
        makespan: now,
        ttft,
        stats: core.stats.clone(),
    }
}

/// One engine on a virtual clock driven from outside, step by step: for a fleet benchmark that
/// routes each arrival at its instant (the router must see the engines as they are then), so
/// the engines cannot each be run to the end alone as [`run`] does.
pub struct Stepper {
    core: Core,
    /// The step in progress and when it ends.
    current: Option<(Plan, Duration)>,
    events: Vec<(u64, Event)>,
}

impl Stepper {
    pub fn new(cfg: &EngineConfig) -> Self {
        Self {
            core: Core::new(cfg.clone()),
            current: None,
            events: Vec::new(),
        }
    }

    /// Queues a request arriving at `now`; `None` when it could never fit (the served engine
    /// answers 400). Starts a step at `now` if the engine was idle.
    pub fn add(&mut self, seq: NewSeq, now: Duration) -> Option<u64> {
        if !self.core.fits(seq.prompt.len(), seq.max_tokens) {
            return None;
        }
        let id = self.core.add(seq, now);
        if self.current.is_none() {
            self.start(now);
        }
        Some(id)
    }

    /// When the step in progress ends; `None` while idle.
    pub fn busy_until(&self) -> Option<Duration> {
        self.current.as_ref().map(|(_, end)| *end)
    }

    /// Ends the step in progress (at [`busy_until`](Self::busy_until)), starts the next, and
    /// returns what the requests heard, in order.
    pub fn finish_step(&mut self) -> Vec<(u64, Event)> {
        let Some((plan, end)) = self.current.take() else {
            return Vec::new();
        };
        self.core.complete(&plan, end, &mut self.events);
        self.start(end);
        std::mem::take(&mut self.events)
    }

    fn start(&mut self, now: Duration) {
        if let Some(plan) = self.core.schedule(now, &mut self.events) {
            let end = now + plan.duration;
            self.current = Some((plan, end));
        }
    }

    /// Running, waiting and KV-cache use, as the engine's `/metrics` reports them.
    pub fn load(&self) -> (usize, usize, f64) {
        (
            self.core.running(),
            self.core.waiting(),
            self.core.kv_usage(),
        )
    }

    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }
}
