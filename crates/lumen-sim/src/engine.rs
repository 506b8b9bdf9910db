//! An optional performance model of a vLLM-like engine: continuous batching, a paged KV cache
//! with automatic prefix caching, chunked prefill, decode steps that slow down as the batch
//! grows, and a FIFO queue. Off by default (the simulator then answers after fixed delays, as
//! cheaply as possible); with [`crate::SimConfig::engine`] set, every chat and completion
//! request is scheduled through it, answers carry `usage.prompt_tokens_details.cached_tokens`,
//! and `/metrics` reports the queue, the KV cache, the prefix cache and time to first token
//! under vLLM's names.
//!
//! It exists to be the ground truth of routing benchmarks (`benches/fleet.sh`): what a router
//! can gain by sending a prompt where its prefix is cached, or away from a long queue, is
//! decided here, with the same rules vLLM uses.
//!
//! # Layout
//! - `config`: [`EngineConfig`] (the defaults and what they resemble) and its validation.
//! - `blocks`: the block pool, prefix-cache hashes, LRU eviction.
//! - `core`: the scheduler, free of time: plans a step, applies it, emits [`Event`]s.
//! - `prompt`: the chat template and tokenization.
//! - `metrics`: the `/metrics` text.
//! - `offline`: the same core on a virtual clock, for capacity estimates.
//! - this file: the driver task on tokio's clock, [`Ticket`] and [`Pace`].

mod blocks;
mod config;
mod core;
mod metrics;
pub mod offline;
mod prompt;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use blocks::BLOCK_SIZE;
pub use config::{EngineConfig, InvalidEngineConfig};
pub use core::{Event, NewSeq, Stats};
pub use metrics::Report;
pub use prompt::{chat_tokens, render_chat};

pub(crate) use metrics::render as render_metrics;

use prompt::{completion_tokens, output_tokens};

use core::{Core, SeqId};

/// A running engine model. Cheap to clone; its driver task runs only while there is work.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    max_model_len: u32,
    inner: Mutex<Inner>,
}

struct Inner {
    core: Core,
    sinks: HashMap<SeqId, mpsc::UnboundedSender<Event>>,
    /// Whether the driver task is running (it exits when the engine is idle).
    driving: bool,
    origin: Option<Instant>,
}

/// Why the engine will not take a request: vLLM answers both with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, you requested {total} tokens ({prompt} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion."
    )]
    ContextLength {
        max_model_len: u32,
        total: u64,
        prompt: usize,
        max_tokens: u32,
    },
    #[error("The request needs {blocks} KV-cache blocks; the cache has {available}.")]
    CacheTooSmall { blocks: usize, available: u32 },
}

impl Engine {
    /// An engine serving a context of up to `max_model_len` tokens. Zero sizes in `cfg` are
    /// taken as 1 ([`EngineConfig::validate`] is where they are refused).
    pub fn new(cfg: EngineConfig, max_model_len: u32) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_model_len,
                inner: Mutex::new(Inner {
                    core: Core::new(cfg),
                    sinks: HashMap::new(),
                    driving: false,
                    origin: None,
                }),
            }),
        }
    }

    /// Queues a request; its [`Ticket`] hears its tokens and, when dropped, cancels it.
    /// Must be called within a tokio runtime (the driver is spawned on it).
    pub fn submit(&self, seq: NewSeq) -> Result<Ticket, Refusal> {
        let total = seq.prompt.len() as u64 + u64::from(seq.max_tokens);
        if total > u64::from(self.shared.max_model_len) {
            return Err(Refusal::ContextLength {
                max_model_len: self.shared.max_model_len,
                total,
                prompt: seq.prompt.len(),
                max_tokens: seq.max_tokens,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.shared.lock();
        if !inner.core.fits(seq.prompt.len(), seq.max_tokens) {
            return Err(Refusal::CacheTooSmall {
                blocks: (total as usize).div_ceil(BLOCK_SIZE),
                available: inner.core.capacity_blocks(),
            });
        }
        let now = inner.now();
        let id = inner.core.add(seq, now);
        inner.sinks.insert(id, tx);
        if !inner.driving {
            inner.driving = true;
            tokio::spawn(drive(self.shared.clone()));
        }
        Ok(Ticket {
            engine: self.shared.clone(),
            id,
            rx,
            cached_tokens: None,
            finished: false,
        })
    }

    /// The queue, the cache and the counters, now.
    pub fn report(&self) -> Report {
        let inner = self.shared.lock();
        Report {
            running: inner.core.running(),
            waiting: inner.core.waiting(),
            kv_usage: inner.core.kv_usage(),
            used_tokens: inner.core.used_tokens(),
            waiting_tokens: inner.core.waiting_tokens(),
            stats: inner.core.stats.clone(),
        }
    }

    /// The hook for an HTTP request: renders and tokenizes its prompt (chat `messages` with
    /// their `tools`, or a completion `prompt`), then submits it, with the answer's tokens from
    /// `start` on. Returns the ticket and the prompt's token count; `Err` is the message of a
    /// 400.
    pub(crate) fn admit(
        &self,
        messages: Option<&RawValue>,
        tools: Option<&RawValue>,
        prompt: Option<&RawValue>,
        max_tokens: u32,
        start: u32,
    ) -> Result<(Ticket, u64), String> {
        let seq = match (messages, prompt) {
            (Some(m), _) => chat_request(m.get(), tools.map(RawValue::get), max_tokens, start)?,
            (None, Some(p)) => NewSeq {
                prompt: completion_tokens(p),
                max_tokens,
                output: output_tokens(start, max_tokens),
            },
            (None, None) => return Err("Field required: messages".to_owned()),
        };
        let n = seq.prompt.len() as u64;
        let ticket = self.submit(seq).map_err(|r| r.to_string())?;
        Ok((ticket, n))
    }
}

/// The sequence a chat request becomes in the engine: its rendered prompt and the simulator's
/// answer from token `start` (0 unless it continues a partial answer). Public so that a
/// benchmark can run exactly the served requests through [`offline::run`].
pub fn chat_request(
    messages: &str,
    tools: Option<&str>,
    max_tokens: u32,
    start: u32,
) -> Result<NewSeq, String> {
    Ok(NewSeq {
        prompt: chat_tokens(messages, tools)?,
        max_tokens,
        output: output_tokens(start, max_tokens),
    })
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Engine time: tokio's clock since the first request.
    fn now(&mut self) -> Duration {
        let origin = *self.origin.get_or_insert_with(Instant::now);
        origin.elapsed()
    }

    fn dispatch(&mut self, events: &mut Vec<(SeqId, Event)>) {
        for (id, ev) in events.drain(..) {
            if let Some(tx) = self.sinks.get(&id) {
                let _ = tx.send(ev);
            }
            if ev == Event::Finished {
                self.sinks.remove(&id);
            }
        }
    }
}

/// The engine loop: plan a step, let its time pass, apply it; exit when idle (the next request
/// starts it again). Steps run back to back: each starts when the previous one was due to end,
/// not when the timer woke the task (tokio's timer has millisecond resolution), so the schedule
/// is exactly the one [`offline::run`] computes and a late wake-up costs no throughput.
async fn drive(shared: Arc<Shared>) {
    let mut events = Vec::new();
    // When the next step starts: the previous one's end while busy, now after a pause.
    let mut due: Option<Instant> = None;
    loop {
        let (plan, start) = {
            let mut inner = shared.lock();
            let origin = *inner.origin.get_or_insert_with(Instant::now);
            let start = due.unwrap_or_else(Instant::now);
            let plan = inner.core.schedule(start - origin, &mut events);
            inner.dispatch(&mut events);
            match (plan, inner.core.next_arrival()) {
                (Some(plan), _) => (plan, start),
                // Requests came after the last step ended (while the timer was late): the
                // engine was idle from then until the first of them arrived.
                (None, Some(arrived)) => {
                    due = Some((origin + arrived).max(start));
                    continue;
                }
                (None, None) => {
                    inner.driving = false;
                    return;
                }
            }
        };
        let end = start + plan.duration;
        tokio::time::sleep_until(end).await;
        due = Some(end);
        let mut inner = shared.lock();
        let origin = *inner.origin.get_or_insert(start);
        inner.core.complete(&plan, end - origin, &mut events);
        inner.dispatch(&mut events);
    }
}

/// One request in the engine: what it hears, and its cancellation when dropped (a client that
/// hangs up frees its sequence's blocks, as vLLM aborts the request).
pub struct Ticket {
    engine: Arc<Shared>,
    id: SeqId,
    rx: mpsc::UnboundedReceiver<Event>,
    cached_tokens: Option<u32>,
    finished: bool,
}

impl Ticket {
    /// Waits for the next token; returns at once, without a token, once the request finished.
    /// `true` when a token came.
    pub async fn next_token(&mut self) -> bool {
        while !self.finished {
            match self.rx.recv().await {
                Some(Event::Scheduled { cached_tokens }) => {
                    self.cached_tokens = Some(cached_tokens)
                }
                Some(Event::Token) => return true,
                Some(Event::Finished) | None => self.finished = true,
            }
        }
        false
    }

    /// Waits until every token was generated.
    pub async fn finish(&mut self) {
        while self.next_token().await {}
    }

    /// Prompt tokens found in the prefix cache, once the request was scheduled.
    pub fn cached_tokens(&self) -> Option<u32> {
        self.cached_tokens
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            let mut inner = self.engine.lock();
            inner.core.abort(self.id);
            inner.sinks.remove(&self.id);
        }
    }
}

/// How a response's tokens are paced: by fixed delays (the default simulator), or by the
/// engine model, whose tokens come when its steps produce them.
pub(crate) enum Pace {
    Fixed,
    Engine(Ticket),
}

impl Pace {
    /// The wait before the next token: `fixed` for a fixed pace, the engine's next token
    /// otherwise.
    pub(crate) async fn wait(&mut self, fixed: Duration) {
        match self {
            Pace::Fixed if fixed.is_zero() => {}
            Pace::Fixed => tokio::time::sleep(fixed).await,
            Pace::Engine(t) => {
                t.next_token().await;
            }
        }
    }

    /// The wait for a whole answer: `fixed`, or until the engine generated every token.
    pub(crate) async fn wait_all(&mut self, fixed: Duration) {
        match self {
            Pace::Fixed if fixed.is_zero() => {}
            Pace::Fixed => tokio::time::sleep(fixed).await,
            Pace::Engine(t) => t.finish().await,
        }
    }

    /// `usage.prompt_tokens_details.cached_tokens`: only the engine model knows it.
    pub(crate) fn cached_tokens(&self) -> Option<u64> {
        match self {
            Pace::Fixed => None,
            Pace::Engine(t) => Some(u64::from(t.cached_tokens().unwrap_or(0))),
        }
    }
}

#[cfg(test)]
mod tests;
