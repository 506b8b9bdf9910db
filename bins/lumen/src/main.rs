//! `lumen`: parse flags and config, install logging, bind, serve. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lumen_server::config::{self, LumenConfig, Overrides};
use lumen_server::{Gateway, serve};

mod alloc;
mod demo;
mod health;
mod inspect;
mod logging;
mod usage;

/// Exit code for a configuration the user must fix (BSD `EX_USAGE`).
pub(crate) const EX_USAGE: u8 = 64;

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// API key helpers: config files hold only SHA-256 digests of keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Check or show the configuration (file, LUMEN_* variables, flags) without serving.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// A running Lumen's usage history (`/admin/usage/history`) as a table, or CSV: requests
    /// and tokens per key, model and day.
    Usage {
        /// The Lumen to ask (its admin listener when `server.admin_listen` is set).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The admin key (`auth.admin_key_sha256` is its digest).
        #[arg(long, env = "LUMEN_ADMIN_KEY", hide_env_values = true)]
        admin_key: String,
        /// First day, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        to: Option<String>,
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
        /// Only this (served) model.
        #[arg(long)]
        model: Option<String>,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Probe a running Lumen: exit 0 when URL answers 200 (container health checks).
    Health {
        /// What to GET (plain http only).
        #[arg(long, default_value = "http://127.0.0.1:8080/health")]
        url: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

#[derive(clap::Subcommand)]
enum ConfigAction {
    /// Validate FILE plus the environment; exit 0 with one line, or 64 listing every wrong key.
    Check {
        /// The TOML file (as `--config` would read it).
        file: PathBuf,
    },
    /// Print the effective settings as TOML, secrets redacted, each section with its sources.
    Print {
        /// TOML config file (same as `lumen --config FILE config print`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Subcommand)]
enum KeysAction {
    /// Print the SHA-256 digest of a key read from standard input (so it stays out of shell
    /// history and process lists).
    Hash,
    /// Generate a new random key and print it with its digest.
    New,
}

/// `lumen keys ...`: prints to stdout by design.
#[allow(clippy::print_stdout)]
fn keys(action: KeysAction) -> ExitCode {
    use lumen_governance::keys::{digest, generate, to_hex};
    match action {
        KeysAction::Hash => {
            let mut secret = String::new();
            if std::io::stdin().read_line(&mut secret).is_err() || secret.trim().is_empty() {
                eprintln!(
                    "lumen: write the key on standard input, e.g. `printf %s \"$KEY\" | lumen keys hash`"
                );
                return ExitCode::from(EX_USAGE);
            }
            println!("{}", to_hex(&digest(secret.trim_end_matches(['\r', '\n']))));
            ExitCode::SUCCESS
        }
        KeysAction::New => match generate() {
            Ok(secret) => {
                println!("key:    {secret}");
                println!("sha256: {}", to_hex(&digest(&secret)));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lumen: no randomness available: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut overrides = Overrides {
        listen: args.listen,
        backends: args.backends,
    };
    match args.command {
        Some(Command::Keys { action }) => return keys(action),
        Some(Command::Health { url, timeout_ms }) => return health::probe(&url, timeout_ms),
        Some(Command::Usage {
            url,
            admin_key,
            from,
            to,
            key,
            model,
            csv,
        }) => {
            return usage::print(&usage::Query {
                url: &url,
                admin_key: &admin_key,
                from: from.as_deref(),
                to: to.as_deref(),
                key: key.as_deref(),
                model: model.as_deref(),
                csv,
            });
        }
        Some(Command::Config { action }) => {
            return match action {
                ConfigAction::Check { file } => inspect::check(&file, &overrides),
                ConfigAction::Print { config } => {
                    inspect::print(config.or(args.config).as_deref(), &overrides)
                }
            };
        }
        None => {}
    }
    alloc::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(alloc::on_park)
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
        logging::init(&cfg);
        let stray: Vec<String> = config::unknown_env()
            .into_iter()
            .filter(|k| !config::is_kubernetes_service_link(k))
            .map(|k| format!("LUMEN_{}", k.replace('.', "__").to_ascii_uppercase()))
            .collect();
        if !stray.is_empty() {
            tracing::warn!(
                variables = ?stray,
                "ignoring LUMEN_* environment variables that name no setting (see docs/config.md)"
            );
        }
        otel_notes(&cfg);
        let reload = Reload {
            path: args.config.clone(),
            overrides,
        };
        // On a worker, not this thread: the accept loop allocates every connection's task,
        // and only workers give their heap back when they go idle (`alloc::on_park`).
        let demo = sim.is_some();
        match tokio::spawn(run(cfg, demo, reload)).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("lumen: the server task failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Where the configuration came from, so it can be read again on SIGHUP.
struct Reload {
    path: Option<PathBuf>,
    overrides: Overrides,
}

async fn run(cfg: LumenConfig, demo: bool, reload: Reload) -> ExitCode {
    let gateway = match Gateway::from_config(&cfg) {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("lumen: invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    gateway.core().discover().await;
    let listener = match lumen_server::bind(cfg.server.listen, cfg.server.backlog) {
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
    tracing::info!(%addr, backends = cfg.backends.len(), models = gateway.core().models().data.len(), "ready");
    if demo {
        tokio::spawn(demo::show(addr));
    }
    tokio::spawn(reload_loop(
        gateway.clone(),
        reload,
        cfg.server.config_watch_ms,
    ));
    let served = match cfg.server.admin_listen {
        None => serve(listener, gateway.clone(), shutdown_signal()).await,
        Some(admin_addr) => {
            let admin = match lumen_server::bind(admin_addr, cfg.server.backlog) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("lumen: cannot listen on {admin_addr} (server.admin_listen): {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Ok(a) = admin.local_addr() {
                eprintln!("lumen admin listening on http://{a}");
            }
            // One signal stops both listeners.
            let (tx, rx) = tokio::sync::watch::channel(());
            let stop = |mut rx: tokio::sync::watch::Receiver<()>| async move {
                let _ = rx.changed().await;
            };
            let api = lumen_server::serve_api(listener, gateway.clone(), stop(rx.clone()));
            let admin = lumen_server::serve_admin(admin, gateway.clone(), stop(rx));
            let signal = async move {
                shutdown_signal().await;
                let _ = tx.send(());
            };
            let (api, admin, ()) = tokio::join!(api, admin, signal);
            api.and(admin)
        }
    };
    if gateway.traces_enabled() {
        // Spans of the last requests, under a deadline of their own: a dead collector must
        // not hold the process past the pod's termination grace.
        let grace = cfg.otel.timeout.min(std::time::Duration::from_secs(5));
        if tokio::time::timeout(grace, gateway.flush_traces())
            .await
            .is_err()
        {
            tracing::warn!("trace export did not finish before exit; the last spans are lost");
        }
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lumen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs what the `OTEL_*` variables turned on, and anything in them that was ignored.
fn otel_notes(cfg: &LumenConfig) {
    for w in &cfg.otel.warnings {
        tracing::warn!("{w}");
    }
    match &cfg.otel.endpoint {
        Some(url) if cfg!(feature = "otel") => tracing::info!(
            endpoint = %lumen_server::redact::url(url),
            service = %cfg.otel.service_name,
            "exporting traces over OTLP/HTTP"
        ),
        Some(_) => tracing::warn!(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but this build has no trace export (the `otel` \
             feature); no spans are sent"
        ),
        None => {}
    }
}

/// Reloads on SIGHUP and, when `watch_ms` > 0, when the config file's modification time changes.
async fn reload_loop(gateway: Gateway, reload: Reload, watch_ms: u64) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mtime = |p: &Option<PathBuf>| {
        p.as_ref()
            .and_then(|p| std::fs::metadata(p).ok()?.modified().ok())
    };
    let mut seen = mtime(&reload.path);
    let watch =
        (watch_ms > 0 && reload.path.is_some()).then(|| std::time::Duration::from_millis(watch_ms));
    loop {
        let hangup = async {
            #[cfg(unix)]
            if let Some(h) = hup.as_mut() {
                h.recv().await;
                return;
            }
            std::future::pending::<()>().await;
        };
        let tick = async {
            match watch {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            _ = hangup => "SIGHUP",
            _ = tick => {
                let now = mtime(&reload.path);
                if now == seen {
                    continue;
                }
                seen = now;
                "file changed"
            }
        };
        match gateway.reload_from(reload.path.as_deref(), &reload.overrides) {
            Ok(()) => tracing::info!(trigger = why, "configuration reloaded"),
            Err(e) => tracing::error!(
                trigger = why,
                error = %e,
                "configuration reload rejected; the previous configuration stays live"
            ),
        }
    }
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
