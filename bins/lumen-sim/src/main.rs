//! `lumen-sim`: serve the engine simulator. Flags map one to one onto `lumen_sim::SimConfig`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lumen_sim::{Faults, SimConfig, Simulator};

#[derive(Parser)]
#[command(
    version,
    about = "An OpenAI-compatible inference engine simulator (vLLM-flavoured; --flavor llamacpp for llama-server's tokenizer API)"
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cfg = SimConfig {
        models: args.models,
        ttft: Duration::from_millis(args.ttft_ms),
        itl: Duration::from_millis(args.itl_ms),
        default_max_tokens: args.default_max_tokens,
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
