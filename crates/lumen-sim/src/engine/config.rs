//! The engine model's settings: what the simulated GPU holds and how fast it computes.

use std::time::Duration;

use super::blocks::BLOCK_SIZE;

/// A vLLM-like engine's capacity and speed. The defaults loosely resemble Llama-3.1-8B-Instruct
/// in bf16 served by vLLM V1 on one A100 40 GB with its defaults for that card: a KV cache of
/// about 131,000 tokens (8,192 blocks of 16), at most 256 running sequences, a 2,048-token
/// budget per step (chunked prefill), prefill near 10,000 tokens/s, and a decode step near
/// 12 ms at batch 1 that grows with the batch and with the context its sequences read.
///
/// One engine step lasts `step_us + token_us × tokens scheduled + kv_read_ns × context tokens
/// of the scheduled sequences`: a fixed part (reading the weights once per step, launch
/// overheads), the matrix work per token (prefill chunk or decode, the same per token), and
/// attention reading each sequence's KV cache. These three terms are what make the routing
/// problem real: prefill is expensive per token and skipped for cached blocks, decode is cheap
/// per sequence but shares its step with whatever prefill is scheduled, and a long queue or a
/// full cache shows in `vllm:num_requests_waiting` and `vllm:kv_cache_usage_perc`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// KV-cache blocks of [`BLOCK_SIZE`] tokens (vLLM's `num_gpu_blocks`).
    pub num_blocks: u32,
    /// Running sequences at most (`--max-num-seqs`); more wait in a FIFO queue.
    pub max_num_seqs: u32,
    /// Tokens scheduled per step at most (`--max-num-batched-tokens`): decode tokens first,
    /// then prefill chunks of this budget's remainder.
    pub max_num_batched_tokens: u32,
    /// Automatic prefix caching (`--enable-prefix-caching`, on by default in vLLM V1).
    pub prefix_caching: bool,
    /// Fixed cost of one step, microseconds.
    pub step_us: u64,
    /// Cost per scheduled token (prefill or decode), microseconds.
    pub token_us: u64,
    /// Cost per context token a scheduled sequence attends over, nanoseconds.
    pub kv_read_ns: u64,
    /// Seeds the root of the block-hash chain (vLLM's `NONE_HASH`). Engines that share a seed
    /// name the same prefix with the same block ids; the model has no other randomness, so the
    /// same arrivals at the same instants always give the same schedule.
    pub seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            num_blocks: 8192,
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            prefix_caching: true,
            step_us: 12_000,
            token_us: 100,
            kv_read_ns: 85,
            seed: 0,
        }
    }
}

/// An engine setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEngineConfig {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// vLLM refuses to start in this case too: a request of the full context length could
    /// never be scheduled.
    #[error(
        "max_model_len ({max_model_len}) is larger than the KV cache holds ({cache_tokens} tokens = {num_blocks} blocks of {BLOCK_SIZE}); raise num_blocks or lower max_model_len"
    )]
    CacheTooSmall {
        max_model_len: u32,
        num_blocks: u32,
        cache_tokens: u64,
    },
}

impl EngineConfig {
    /// Checks the settings against the served context length.
    pub fn validate(&self, max_model_len: u32) -> Result<(), InvalidEngineConfig> {
        for (name, v) in [
            ("num_blocks", self.num_blocks),
            ("max_num_seqs", self.max_num_seqs),
            ("max_num_batched_tokens", self.max_num_batched_tokens),
        ] {
            if v == 0 {
                return Err(InvalidEngineConfig::Zero(name));
            }
        }
        let cache_tokens = u64::from(self.num_blocks) * BLOCK_SIZE as u64;
        if u64::from(max_model_len) > cache_tokens {
            return Err(InvalidEngineConfig::CacheTooSmall {
                max_model_len,
                num_blocks: self.num_blocks,
                cache_tokens,
            });
        }
        Ok(())
    }

    /// How long a step takes that schedules `tokens` tokens for sequences whose contexts add
    /// up to `context` tokens.
    pub fn step_time(&self, tokens: u64, context: u64) -> Duration {
        let ns = self
            .step_us
            .saturating_mul(1000)
            .saturating_add(self.token_us.saturating_mul(1000).saturating_mul(tokens))
            .saturating_add(self.kv_read_ns.saturating_mul(context));
        Duration::from_nanos(ns)
    }
}
