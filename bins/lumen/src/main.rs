//! `lumen`: parse flags and config, install logging, bind, serve. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lumen_server::config::{self, LogFormat, LumenConfig, Overrides};
use lumen_server::{Gateway, serve};

mod demo;

/// Exit code for a configuration the user must fix (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "An OpenAI-compatible inference gateway for self-hosted LLMs"
)]
struct Args {
    /// TOML config file (then LUMEN_* environment variables and these flags override it).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// An OpenAI-compatible engine URL (repeatable), e.g. http://127.0.0.1:8000.
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// Start the built-in engine simulator and route to it, then stream a sample answer.
    #[arg(long)]
    demo: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut overrides = Overrides {
        listen: args.listen,
        backends: args.backends,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lumen: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let sim = if args.demo {
            match demo::start_simulator().await {
                Ok((url, sim)) => {
                    overrides.backends.push(url);
                    Some(sim)
                }
                Err(e) => {
                    eprintln!("lumen: cannot start the demo simulator: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let cfg = match config::load(args.config.as_deref(), &overrides) {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("lumen: invalid configuration: {e}");
                return ExitCode::from(EX_USAGE);
            }
        };
        init_logging(&cfg);
        run(cfg, sim.is_some()).await
    })
}

async fn run(cfg: LumenConfig, demo: bool) -> ExitCode {
    let gateway = match Gateway::from_config(&cfg) {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("lumen: invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    gateway.discover().await;
    let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lumen: cannot listen on {}: {e}", cfg.server.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lumen: cannot read the listening address: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts wait for this exact line; keep it stable.
    eprintln!("lumen listening on http://{addr}");
    tracing::info!(%addr, backends = cfg.backends.len(), models = gateway.models().data.len(), "ready");
    if demo {
        tokio::spawn(demo::show(addr));
    }
    match serve(listener, gateway, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lumen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &LumenConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Resolves on SIGINT or SIGTERM (Kubernetes sends SIGTERM).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
