//! The accept loop, in mini-redis style: the caller binds the socket and owns shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::Gateway;
use crate::conn::{Activity, Conn, Tracked};
use crate::http::{Api, Surface};

/// After the shutdown grace, how long ended streams get to deliver their last event.
const STREAM_END_GRACE: Duration = Duration::from_secs(1);

/// Largest request head (request line and headers) read: beyond it, 431. hyper's own bound is
/// its read buffer (about 400 KB); no OpenAI client sends a head near this one.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves HTTP on `listener` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests and streams up to the gateway's shutdown grace to finish. Background
/// model discovery and health checking run for as long as the server does.
/// Binds a listener with `backlog` pending connections (`server.backlog`; the kernel caps it at
/// `net.core.somaxconn`), `SO_REUSEADDR` set so a restart does not wait for old connections'
/// `TIME_WAIT`. For `serve`'s caller, who owns the listener.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_on(
        listener,
        gateway,
        shutdown,
        Surface::Api { operational: true },
        true,
    )
    .await
}

/// Like [`serve`], with `/metrics`, `/health/inference` and `/ready` left to an admin listener
/// (see [`serve_admin`]); `/health` stays, for load balancers.
pub async fn serve_api(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_on(
        listener,
        gateway,
        shutdown,
        Surface::Api { operational: false },
        true,
    )
    .await
}

/// Serves only `/metrics`, `/health*` and `/ready`, for a separate admin port. Runs no
/// background work: pair it with [`serve_api`].
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_on(listener, gateway, shutdown, Surface::Admin, false).await
}

/// Accept errors, reported without a storm. Out of descriptors (or memory), the listener is
/// paused with a growing back-off (10 ms to 1 s) so the connections in flight can finish and
/// free some; the first failure is logged at once, then one summary per 30 s at most. An error
/// that concerns only one connection (it was reset before it was accepted) is skipped.
#[derive(Default)]
struct AcceptFailures {
    streak: u32,
    suppressed: u64,
    last_log: Option<tokio::time::Instant>,
}

const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(30);

impl AcceptFailures {
    fn failed(&mut self, e: &io::Error) -> Duration {
        let exhausted = matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12));
        if !exhausted {
            tracing::debug!(error = %e, "accept failed for one connection");
            return Duration::ZERO;
        }
        self.streak = self.streak.saturating_add(1);
        let now = tokio::time::Instant::now();
        if self.last_log.is_none_or(|t| now - t >= ACCEPT_LOG_EVERY) {
            tracing::warn!(
                error = %e,
                failures_since_last_report = self.suppressed + 1,
                "cannot accept connections (out of descriptors or memory); pausing the listener"
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        let ms = 10u64.saturating_mul(1 << self.streak.min(8).saturating_sub(1));
        Duration::from_millis(ms.min(1_000))
    }

    fn recovered(&mut self) {
        if self.streak > 0 {
            tracing::info!(failures = self.streak, "accepting connections again");
            self.streak = 0;
        }
    }
}

async fn serve_on(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
    surface: Surface,
    background: bool,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
        let _ = rx.changed().await;
    };
    let mut tasks = JoinSet::new();
    if background {
        let gw = gateway.clone();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move { gw.core().run_discovery(stop).await });
        let gw = gateway.clone();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move { gw.core().run_health_checks(stop).await });
        let gw = gateway.clone();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move { gw.core().run_signals(stop).await });
        let gw = gateway.clone();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move { crate::discovery::run::run(&gw, stop).await });
    }
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let mut failures = AcceptFailures::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    failures.recovered();
                    conn
                }
                Err(e) => {
                    let pause = failures.failed(&e);
                    if !pause.is_zero() {
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let api = Api::new(gateway.clone(), surface);
        // The service marks each request in progress until its response body is dropped, so the
        // socket applies the idle and head deadlines only between requests (see `conn.rs`).
        let activity = Arc::new(Activity::default());
        let svc = {
            let activity = activity.clone();
            service_fn(move |req| {
                let api = api.clone();
                let request = activity.begin();
                async move {
                    let resp = api.handle(req).await;
                    Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, request)))
                }
            })
        };
        let deadlines = gateway.settings().conn;
        let http = || {
            let mut b = http1::Builder::new();
            // The deadlines are the socket's (`Conn`): hyper's header timer would count the
            // idle time before a request against its head.
            b.header_read_timeout(None).max_header_size(MAX_HEAD_BYTES);
            b
        };
        // TLS on the API listener only: the admin listener stays plain for probes.
        let tls = match surface {
            Surface::Api { .. } => gateway.tls(),
            Surface::Admin => None,
        };
        match tls {
            None => {
                let io = TokioIo::new(Conn::new(stream, activity, deadlines));
                let conn = graceful.watch(http().serve_connection(io, svc));
                conns.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let watcher = graceful.watcher();
                conns.spawn(async move {
                    // Bounded like the header read; plain HTTP is answered 400 (`tls.rs`).
                    let stream = match crate::tls::accept(&acceptor, stream, deadlines.header).await
                    {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS connection refused");
                            return;
                        }
                    };
                    let io = TokioIo::new(Conn::new(stream, activity, deadlines));
                    let conn = http().serve_connection(io, svc);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(());
    let grace = gateway.shutdown_grace();
    tracing::info!(
        in_flight = conns.len(),
        grace_ms = grace.as_millis() as u64,
        "draining"
    );
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        _ = &mut drained => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => {
            // Streams still open get an error event and [DONE] instead of a cut connection;
            // their connections then close as soon as the client has read the end.
            tracing::warn!(remaining = conns.len(), "shutdown grace expired; ending open streams");
            gateway.end_streams();
            tokio::select! {
                _ = &mut drained => tracing::info!("all connections drained"),
                _ = tokio::time::sleep(STREAM_END_GRACE) => {
                    tracing::warn!(remaining = conns.len(), "closing remaining connections");
                }
            }
        }
    }
    conns.shutdown().await;
    tasks.shutdown().await;
    Ok(())
}
