//! The engine's scheduler, free of time and I/O: a step is planned from the queues and the KV
//! cache ([`Core::schedule`] returns a [`Plan`] with its duration), and applied when the caller
//! says the step is over ([`Core::complete`]). What each request should hear comes back as
//! [`Event`] values. The same core runs behind the HTTP simulator (on tokio's clock) and in
//! [`super::offline`] (on a virtual one).
//!
//! The rules follow vLLM V1's scheduler: running sequences first, in order, each taking one
//! decode token or the next chunk of its prefill from the step's token budget; when a running
//! sequence needs a block and none is free, the most recently admitted running sequence is
//! preempted (its blocks freed, back to the front of the queue, recomputed later); then, if
//! nothing was preempted, waiting requests are admitted first come first served while the
//! budget, `max_num_seqs` and free blocks allow, each starting after its longest cached prefix
//! (at most its length minus one token, which must be computed to produce logits). A request
//! at the head of the queue that cannot get its blocks holds the queue behind it.

use std::collections::VecDeque;
use std::time::Duration;

use super::blocks::{self, BLOCK_SIZE, BlockPool};
use super::config::EngineConfig;

pub(crate) type SeqId = u64;

/// What a request hears from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// First admitted to the running batch, with the prompt tokens found in the prefix cache.
    Scheduled { cached_tokens: u32 },
    /// One more output token.
    Token,
    /// No more tokens (after the last one, or at once for `max_tokens: 0`).
    Finished,
}

/// A request as the engine takes it.
#[derive(Debug, Clone)]
pub struct NewSeq {
    /// The prompt's token ids, as rendered and tokenized.
    pub prompt: Vec<u32>,
    pub max_tokens: u32,
    /// The output's token ids, in order (at least `max_tokens` long): the KV cache stores the
    /// answer too, so a later turn that repeats it reuses its blocks.
    pub output: Vec<u32>,
}

struct Seq {
    id: SeqId,
    /// Prompt, then the tokens generated so far.
    tokens: Vec<u32>,
    output: Vec<u32>,
    max_tokens: u32,
    generated: u32,
    /// Tokens whose KV is in the cache. The step that brings it to `tokens.len()` samples
    /// the next token.
    computed: usize,
    blocks: Vec<u32>,
    /// Chained hashes of the full blocks of `tokens` computed so far.
    hashes: Vec<u64>,
    /// Leading blocks already registered in the prefix cache.
    registered: usize,
    arrived: Duration,
    admitted_once: bool,
    first_token: bool,
}

impl Seq {
    /// Extends `hashes` over every full block of `tokens`.
    fn hash_full_blocks(&mut self, seed: u64) {
        let full = self.tokens.len() / BLOCK_SIZE;
        while self.hashes.len() < full {
            let i = self.hashes.len();
            let parent = self.hashes.last().copied().unwrap_or(seed);
            let chunk = &self.tokens[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE];
            self.hashes.push(blocks::chain(parent, chunk));
        }
    }

    fn blocks_for(tokens: usize) -> usize {
        tokens.div_ceil(BLOCK_SIZE)
    }
}

/// One planned step: how long it takes and how many tokens each sequence computes in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub duration: Duration,
    pub(crate) work: Vec<(SeqId, usize)>,
    /// Tokens scheduled (prefill and decode together).
    pub tokens: usize,
    /// Sequences in the step that were decoding (one token each).
    pub decoding: usize,
}

/// Counters and the time-to-first-token histogram, as vLLM reports them.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Prompt tokens looked up in the prefix cache, per admission.
    pub prefix_queries: u64,
    /// Of those, tokens found cached.
    pub prefix_hits: u64,
    pub preemptions: u64,
    /// Requests finished (all their tokens generated).
    pub finished: u64,
    /// Seconds from arrival to first token, in `TTFT_BUCKETS` (+Inf last).
    pub ttft_buckets: Vec<u64>,
    pub ttft_count: u64,
    pub ttft_sum: f64,
}

/// vLLM's `vllm:time_to_first_token_seconds` bucket bounds.
pub const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

impl Stats {
    fn observe_ttft(&mut self, seconds: f64) {
        if self.ttft_buckets.is_empty() {
            self.ttft_buckets = vec![0; TTFT_BUCKETS.len() + 1];
        }
        let i = TTFT_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(TTFT_BUCKETS.len());
        self.ttft_buckets[i] += 1;
        self.ttft_count += 1;
        self.ttft_sum += seconds;
    }
}

pub(crate) struct Core {
    cfg: EngineConfig,
    pool: BlockPool,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    next_id: SeqId,
    pub(crate) stats: Stats,
}

impl Core {
    pub(crate) fn new(cfg: EngineConfig) -> Self {
        Self {
            pool: BlockPool::new(cfg.num_blocks.max(1)),
            cfg: EngineConfig {
                num_blocks: cfg.num_blocks.max(1),
                max_num_seqs: cfg.max_num_seqs.max(1),
                max_num_batched_tokens: cfg.max_num_batched_tokens.max(1),
                ..cfg
            },
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            stats: Stats::default(),
        }
    }

    /// Whether a request of `prompt_len` tokens generating `max_tokens` could ever run: its
    /// blocks must fit in the whole cache.
    pub(crate) fn fits(&self, prompt_len: usize, max_tokens: u32) -> bool {
        Seq::blocks_for(prompt_len + max_tokens as usize) <= self.pool.total()
    }

    /// Queues a request that arrived at `now`. The caller checked [`Core::fits`].
    pub(crate) fn add(&mut self, new: NewSeq, now: Duration) -> SeqId {
        let id = self.next_id;
        self.next_id += 1;
        let mut seq = Seq {
            id,
            tokens: new.prompt,
            output: new.output,
            max_tokens: new.max_tokens,
            generated: 0,
            computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            registered: 0,
            arrived: now,
            admitted_once: false,
            first_token: false,
        };
        seq.hash_full_blocks(self.cfg.seed);
        self.waiting.push_back(seq);
        id
    }

    /// Forgets a request (its client went away), freeing its blocks. Nothing if it is gone.
    pub(crate) fn abort(&mut self, id: SeqId) {
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let seq = self.running.remove(i);
            self.pool.free(&seq.blocks);
        } else if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            if let Some(seq) = self.waiting.remove(i) {
                self.pool.free(&seq.blocks);
            }
        }
    }

    pub(crate) fn capacity_blocks(&self) -> u32 {
        self.cfg.num_blocks
    }

    /// When the request at the head of the queue arrived.
    pub(crate) fn next_arrival(&self) -> Option<Duration> {
        self.waiting.front().map(|s| s.arrived)
    }

    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn kv_usage(&self) -> f64 {
        self.pool.usage()
    }

    /// Tokens of the blocks a sequence references.
    pub(crate) fn used_tokens(&self) -> usize {
        (self.pool.total() - self.pool.num_free()) * BLOCK_SIZE
    }

    /// Tokens of the waiting requests, generated ones included (a preempted request recomputes
    /// them).
    pub(crate) fn waiting_tokens(&self) -> usize {
        self.waiting.iter().map(|s| s.tokens.len()).sum()
    }

    /// Plans the step that starts at `now`; `None` when there is nothing to compute. Requests
    /// that arrived after `now` (the caller woke late) are left for a later step, so the
    /// schedule does not depend on when the caller's timer fired.
    pub(crate) fn schedule(
        &mut self,
        now: Duration,
        events: &mut Vec<(SeqId, Event)>,
    ) -> Option<Plan> {
        let mut budget = self.cfg.max_num_batched_tokens as usize;
        let mut work = Vec::new();
        let (mut decoding, mut context) = (0, 0);
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let (computed, len) = (self.running[i].computed, self.running[i].tokens.len());
            let n = (len - computed).min(budget);
            let need = Seq::blocks_for(computed + n).saturating_sub(self.running[i].blocks.len());
            let mut scheduled = true;
            while need > self.pool.num_free() {
                // Preempt the newest running sequence; it may be this one.
                let victim = self.running.len() - 1;
                self.preempt(victim);
                preempted = true;
                if victim == i {
                    scheduled = false;
                    break;
                }
            }
            if !scheduled {
                break;
            }
            let seq = &mut self.running[i];
            if let Some(new) = self.pool.allocate(need) {
                seq.blocks.extend(new);
            }
            if len - computed == 1 && seq.generated > 0 {
                decoding += 1;
            }
            work.push((seq.id, n));
            context += computed + n;
            budget -= n;
            i += 1;
        }
        // vLLM admits nothing in a step that preempted; but when the step preempted everything
        // (one sequence that outgrew the free blocks), the queue's head must start or nothing
        // would ever run again.
        if !preempted || work.is_empty() {
            while budget > 0 && self.running.len() < self.cfg.max_num_seqs as usize {
                let Some(seq) = self.waiting.front().filter(|s| s.arrived <= now) else {
                    break;
                };
                let len = seq.tokens.len();
                let hits = if self.cfg.prefix_caching {
                    self.pool.lookup(&seq.hashes, (len - 1) / BLOCK_SIZE)
                } else {
                    Vec::new()
                };
                let computed = hits.len() * BLOCK_SIZE;
                let n = (len - computed).min(budget);
                let need = Seq::blocks_for(computed + n) - hits.len();
                if need + self.pool.unreferenced(&hits) > self.pool.num_free() {
                    break;
                }
                let Some(mut seq) = self.waiting.pop_front() else {
                    break;
                };
                self.pool.touch(&hits);
                seq.blocks = hits;
                if let Some(new) = self.pool.allocate(need) {
                    seq.blocks.extend(new);
                }
                seq.computed = computed;
                seq.registered = seq.blocks.len().min(computed / BLOCK_SIZE);
                self.stats.prefix_queries += len as u64;
                self.stats.prefix_hits += computed as u64;
                if !seq.admitted_once {
                    seq.admitted_once = true;
                    let cached_tokens = u32::try_from(computed).unwrap_or(u32::MAX);
                    events.push((seq.id, Event::Scheduled { cached_tokens }));
                }
                work.push((seq.id, n));
                context += computed + n;
                budget -= n;
                self.running.push(seq);
            }
        }
        if work.is_empty() {
            return None;
        }
        let tokens: usize = work.iter().map(|(_, n)| n).sum();
        Some(Plan {
            duration: self.cfg.step_time(tokens as u64, context as u64),
            work,
            tokens,
            decoding,
        })
    }

    /// Applies a planned step that ended at `now`: progress, newly full blocks into the prefix
    /// cache, sampled tokens, finished requests out (their blocks freed).
    pub(crate) fn complete(
        &mut self,
        plan: &Plan,
        now: Duration,
        events: &mut Vec<(SeqId, Event)>,
    ) {
        let seed = self.cfg.seed;
        let mut finished = Vec::new();
        // The plan lists running sequences in their order (admissions were appended), so one
        // forward walk finds them all.
        let mut cursor = 0;
        for &(id, n) in &plan.work {
            // Aborted during the step: nothing to apply.
            let Some(at) = self.running[cursor..].iter().position(|s| s.id == id) else {
                continue;
            };
            cursor += at;
            let seq = &mut self.running[cursor];
            seq.computed = (seq.computed + n).min(seq.tokens.len());
            let full = (seq.computed / BLOCK_SIZE).min(seq.blocks.len());
            if self.cfg.prefix_caching {
                seq.hash_full_blocks(seed);
                for b in seq.registered..full.min(seq.hashes.len()) {
                    self.pool.cache(seq.blocks[b], seq.hashes[b]);
                }
            }
            seq.registered = seq.registered.max(full);
            if seq.computed < seq.tokens.len() {
                continue;
            }
            if seq.generated < seq.max_tokens {
                let next = seq.output.get(seq.generated as usize).copied().unwrap_or(0);
                seq.tokens.push(next);
                seq.generated += 1;
                if !seq.first_token {
                    seq.first_token = true;
                    self.stats
                        .observe_ttft(now.saturating_sub(seq.arrived).as_secs_f64());
                }
                events.push((id, Event::Token));
            }
            if seq.generated >= seq.max_tokens {
                finished.push(cursor);
            }
        }
        // Indices ascend; removing from the back keeps the earlier ones valid.
        for &i in finished.iter().rev() {
            let seq = self.running.remove(i);
            self.pool.free(&seq.blocks);
            self.stats.finished += 1;
            events.push((seq.id, Event::Finished));
        }
    }

    /// Frees a running sequence's blocks and puts it back at the head of the queue, to be
    /// recomputed (prompt and the tokens generated so far) when admitted again.
    fn preempt(&mut self, index: usize) {
        let mut seq = self.running.remove(index);
        self.pool.free(&seq.blocks);
        seq.blocks.clear();
        seq.computed = 0;
        seq.registered = 0;
        seq.hash_full_blocks(self.cfg.seed);
        self.stats.preemptions += 1;
        self.waiting.push_front(seq);
    }
}
