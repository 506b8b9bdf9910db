//! The engine model on a virtual clock: the same scheduler as the served engine, stepped as
//! fast as the CPU allows. A run of thousands of requests takes milliseconds, so a benchmark
//! can measure what an engine sustains (its capacity for a workload) before it starts, exactly
//! as the served engines will behave, with no wall-clock time and no noise.

use std::collections::HashMap;
use std::time::Duration;

use super::config::EngineConfig;
use super::core::{Core, Event, NewSeq, Stats};

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
