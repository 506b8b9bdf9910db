//! `lumen-sim`: serve the engine simulator. Flags map one to one onto `lumen_sim::SimConfig`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lumen_sim::{EngineConfig, Faults, MessagesApi, SimConfig, Simulator};

#[derive(Parser)]
#[command(
    version,
    about = "An OpenAI-compatible inference engine simulator (vLLM-flavoured; --flavor llamacpp for llama-server's tokenizer API)",
    after_long_help = ENGINE_HELP
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000", env = "LUMEN_SIM_LISTEN")]
    listen: String,
    /// Served model ids (repeatable; comma-separated also works).
    #[arg(long = "model", default_value = "sim-model", value_delimiter = ',')]
    models: Vec<String>,
    /// Time to first token, ms.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Inter-token latency, ms.
    #[arg(long, default_value_t = 0)]
    itl_ms: u64,
    /// Tokens generated when a request sets no max_tokens.
    #[arg(long, default_value_t = 16)]
    default_max_tokens: u32,
    /// End every answer after at most this many tokens (finish_reason "stop"), as a model
    /// that has said what it had to; without it answers run to max_tokens.
    #[arg(long)]
    answer_tokens: Option<u32>,
    /// Require this bearer key (like `vllm serve --api-key`).
    #[arg(long, env = "LUMEN_SIM_API_KEY")]
    api_key: Option<String>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Fail this fraction of POST requests (generation, rerank, tokenizer) with --error-status.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Status used by --error-rate.
    #[arg(long, default_value_t = 503)]
    error_status: u16,
    /// Accept POST requests (generation, rerank, tokenizer) and never answer.
    #[arg(long)]
    hang: bool,
    /// Drop the connection after this many streamed tokens.
    #[arg(long)]
    drop_after: Option<u32>,
    /// Keep the last N requests (for debugging what a gateway forwarded).
    #[arg(long, default_value_t = 0)]
    record: usize,
    /// Which engine's API to imitate where they differ: `vllm`, or `llamacpp` (llama-server's
    /// `/tokenize` with `content`, `/detokenize` answering `content`, `/apply-template`, `/props`).
    #[arg(long, default_value = "vllm")]
    flavor: lumen_sim::Flavor,
    /// Context length, as vLLM's `max_model_len` (longer requests get 400).
    #[arg(long, default_value_t = 8192)]
    max_model_len: u32,
    /// Do not serve Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`
    /// answer 404, as on TGI or Ollama).
    #[arg(long)]
    no_messages: bool,
    /// Serve Anthropic's Messages API for every model but this one (repeatable; comma-separated
    /// also works): its requests get the 404 of a missing route.
    #[arg(long = "no-messages-for", value_delimiter = ',')]
    no_messages_for: Vec<String>,
    /// Do not serve OpenAI's Responses API (`/v1/responses` and its stored responses answer
    /// 404, as on an engine without it).
    #[arg(long)]
    no_responses: bool,
    /// Also answer SGLang's `GET /get_load` (requests running and waiting, KV tokens held plus
    /// tokens queued), which SGLang's router polls for `power_of_two`; vLLM has no such route.
    #[arg(long)]
    sglang_get_load: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

const ENGINE_HELP: &str = "\
Engine model (--engine): chat and completion requests are scheduled as vLLM V1 schedules them:
continuous batching of up to --max-num-seqs sequences with a FIFO queue behind them, a paged KV
cache of --kv-blocks blocks of 16 tokens with automatic prefix caching (blocks named by a hash
chained over the prompt's tokens, least-recently-used unreferenced blocks evicted), prefill in
chunks of a --max-num-batched-tokens budget per step, for the uncached tokens only. A step takes
--step-us + --token-us per scheduled token + --kv-read-ns per context token of the scheduled
sequences. The defaults loosely resemble Llama-3.1-8B-Instruct (bf16) on one A100 40 GB under
vLLM's defaults: ~131k tokens of KV cache, 256 sequences, 2,048 tokens per step, ~10k prompt
tokens/s, a 12 ms decode step alone and ~59 ms with 256 sequences of 1k tokens. Answers then
count the prompt's real tokens and carry usage.prompt_tokens_details.cached_tokens; /metrics
adds vllm:kv_cache_usage_perc, vllm:prefix_cache_queries_total, vllm:prefix_cache_hits_total,
vllm:num_preemptions_total and vllm:time_to_first_token_seconds; --ttft-ms/--itl-ms no longer
apply. Off, the simulator answers after fixed delays at the least cost per request.";

/// The engine model's flags (defaults: [`EngineConfig::default`]).
#[derive(clap::Args)]
struct EngineArgs {
    /// Schedule requests through the vLLM-like engine model (see below).
    #[arg(long)]
    engine: bool,
    /// KV-cache blocks of 16 tokens.
    #[arg(long, default_value_t = 8192)]
    kv_blocks: u32,
    /// Running sequences at most; more wait in the queue.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: u32,
    /// Tokens scheduled per engine step at most (decode first, then prefill chunks).
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: u32,
    /// Turn automatic prefix caching off.
    #[arg(long)]
    no_prefix_caching: bool,
    /// Fixed cost of an engine step, microseconds.
    #[arg(long, default_value_t = 12_000)]
    step_us: u64,
    /// Cost per scheduled token (prefill or decode), microseconds.
    #[arg(long, default_value_t = 100)]
    token_us: u64,
    /// Cost per context token a scheduled sequence attends over, nanoseconds.
    #[arg(long, default_value_t = 85)]
    kv_read_ns: u64,
    /// Root of the prefix-cache hash chain.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl EngineArgs {
    fn config(&self) -> Option<EngineConfig> {
        self.engine.then_some(EngineConfig {
            num_blocks: self.kv_blocks,
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            prefix_caching: !self.no_prefix_caching,
            step_us: self.step_us,
            token_us: self.token_us,
            kv_read_ns: self.kv_read_ns,
            seed: self.seed,
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let engine = args.engine.config();
    if let Some(e) = &engine
        && let Err(err) = e.validate(args.max_model_len)
    {
        eprintln!("lumen-sim: {err}");
        return ExitCode::from(2);
    }
    let messages_api = match (args.no_messages, args.no_messages_for.is_empty()) {
        (true, _) => MessagesApi::None,
        (false, true) => MessagesApi::All,
        (false, false) => MessagesApi::Except(args.no_messages_for),
    };
    let cfg = SimConfig {
        messages_api,
        responses_api: !args.no_responses,
        sglang_get_load: args.sglang_get_load,
        models: args.models,
        max_model_len: args.max_model_len,
        engine,
        ttft: Duration::from_millis(args.ttft_ms),
        itl: Duration::from_millis(args.itl_ms),
        default_max_tokens: args.default_max_tokens,
        answer_tokens: args.answer_tokens,
        api_key: args.api_key,
        record: args.record,
        flavor: args.flavor,
        faults: Faults {
            error_rate: args.error_rate,
            fail_status: Some(args.error_status),
            hang: args.hang,
            drop_after: args.drop_after,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lumen-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("lumen-sim: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(addr) => tracing::info!(%addr, models = ?cfg.models, "lumen-sim listening"),
            Err(e) => tracing::warn!(error = %e, "lumen-sim listening on an unknown address"),
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match lumen_sim::serve(listener, Simulator::new(cfg), shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lumen-sim: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_flag_defaults_are_the_library_defaults() {
        let args = Args::try_parse_from(["lumen-sim", "--engine"]).unwrap();
        assert_eq!(args.engine.config(), Some(EngineConfig::default()));
        assert_eq!(args.max_model_len, SimConfig::default().max_model_len);
        let off = Args::try_parse_from(["lumen-sim"]).unwrap();
        assert_eq!(off.engine.config(), None);
        assert!(!off.no_messages && off.no_messages_for.is_empty());
        let some = Args::try_parse_from(["lumen-sim", "--no-messages-for", "a,b"]).unwrap();
        assert_eq!(some.no_messages_for, ["a", "b"]);
    }
}
