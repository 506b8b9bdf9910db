//! The accept loop, in mini-redis style: the caller binds the socket and owns shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::Poll;

use futures::FutureExt;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::Gateway;
use crate::conn::{Activity, Conn, Deadlines, Protocol, Tracked};
use crate::http::{Api, Surface};

/// After the shutdown grace, how long ended streams get to deliver their last event.
const STREAM_END_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 receive windows: request body bytes a client may send on a stream, and on a whole
/// connection, before Lumen has read them (HTTP/2 holds them in memory, where HTTP/1.1 leaves
/// them in the kernel). The connection's window bounds what one connection's unread uploads can
/// take, however many streams it opens; a stream's is a quarter of it, so one stalled upload
/// (a request waiting for room in the body budget) leaves room for the others. 256 KiB in
/// flight still moves a 32 MiB body at over 200 MB/s at a 1 ms round trip.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Response bytes queued for one HTTP/2 stream beyond what the client's window has let out.
/// hyper reads the next chunk of an answer only when there is room, so a client that stops
/// reading (or stops granting window) holds at most this per stream, plus the chunk in hand:
/// 24 MiB with every admission slot of the default profile (1,536) held that way. hyper's
/// default, 400 KB, would make that 600 MB; SSE events are a few hundred bytes, and frames are
/// 16 KiB at most anyway.
const H2_MAX_SEND_BUF: usize = 16 * 1024;

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
    // Connections close gracefully when this turns true (HTTP/1.1: after the request in
    // progress; HTTP/2: GOAWAY, then the streams in progress finish).
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut failures = AcceptFailures::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            // A finished connection's task keeps its allocation (the size of its future, about
            // 4 KB) until it is joined. Joined as each ends, not at the next accept: after a
            // burst of 3,000 connections, waiting for the next accept held 17 MB.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
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
        let deadlines = gateway.settings().conn;
        let closing = closing_rx.clone();
        // TLS on the API listener only: the admin listener stays plain for probes.
        let tls = match surface {
            Surface::Api { .. } => gateway.tls(),
            Surface::Admin => None,
        };
        match tls {
            None => {
                conns.spawn(serve_connection(stream, api, deadlines, closing, peer));
            }
            Some(acceptor) => {
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
                    serve_connection(stream, api, deadlines, closing, peer).await;
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
    let _ = closing_tx.send(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    {
        tokio::pin!(drained);
        tokio::select! {
            _ = &mut drained => tracing::info!("all connections drained"),
            _ = tokio::time::sleep(grace) => {
                // Streams still open get an error event and [DONE] instead of a cut connection;
                // their connections then close as soon as the client has read the end.
                tracing::warn!("shutdown grace expired; ending open streams");
                gateway.end_streams();
                tokio::select! {
                    _ = &mut drained => tracing::info!("all connections drained"),
                    _ = tokio::time::sleep(STREAM_END_GRACE) => {
                        tracing::warn!("closing remaining connections");
                    }
                }
            }
        }
    }
    conns.shutdown().await;
    tasks.shutdown().await;
    gateway.flush_shared_state().await;
    Ok(())
}

/// Serves one connection (TLS already accepted): HTTP/2 when the client opens with its preface
/// and `server.http2.enabled`, HTTP/1.1 otherwise. Ends when the client goes, a deadline passes,
/// or, once `closing` turns true, when the request or streams in progress have finished.
async fn serve_connection<S>(
    stream: S,
    api: Api,
    deadlines: Deadlines,
    closing: tokio::sync::watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Each request is marked in progress until its response body is dropped, so the socket
    // applies the idle and head deadlines only between requests (see `conn.rs`).
    let activity = Arc::new(Activity::default());
    let mut io = Conn::new(stream, activity.clone(), deadlines);
    let h2 = &deadlines.http2;
    let protocol = if h2.enabled {
        match io.sniff().await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended before its first request");
                return;
            }
        }
    } else {
        Protocol::Http1
    };
    let result = match protocol {
        Protocol::Http1 => crate::h1::serve(io, api, activity, closing).await,
        Protocol::Http2 => {
            let svc = {
                let activity = activity.clone();
                service_fn(move |req| {
                    let (request, progress) = activity.begin_watched();
                    // Boxed: hyper keeps the slot for a request's future for as long as the
                    // stream lives, sized for the future; a pointer there, and the request's
                    // state (several KB) is freed once its answer starts (issue 24).
                    let fut: Pin<Box<dyn Future<Output = Result<_, Infallible>> + Send>> =
                        Box::pin(api.handle(req).map(move |resp| {
                            Ok::<_, Infallible>(
                                resp.map(|body| Tracked::watched(body, request, progress)),
                            )
                        }));
                    fut
                })
            };
            let mut b = http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_concurrent_streams(h2.max_concurrent_streams)
                .max_header_list_size(crate::h1::MAX_HEAD_BYTES as u32)
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .max_send_buf_size(H2_MAX_SEND_BUF);
            if h2.keep_alive_interval_ms > 0 {
                b.keep_alive_interval(Duration::from_millis(h2.keep_alive_interval_ms))
                    .keep_alive_timeout(Duration::from_millis(h2.keep_alive_timeout_ms));
            }
            let conn = b.serve_connection(TokioIo::new(io), svc);
            // Boxed: HTTP/2's connection state is the larger, and inline it would size every
            // connection's task, HTTP/1.1 streams included.
            Box::pin(drive(
                conn,
                http2::Connection::graceful_shutdown,
                &activity,
                closing,
                deadlines.write,
            ))
            .await
            .map_err(io::Error::other)
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Polls a hyper connection to its end, and starts its graceful close once: when the server
/// shuts down, or (HTTP/2) when the socket reports the idle deadline passed, so the client gets
/// a GOAWAY naming the last stream taken rather than a cut connection. Every half `write`
/// deadline it asks the window watchdog whether a stream has had data the client's window
/// would not take for a whole deadline; then the connection is cut, as a socket that takes no
/// write is (`conn.rs`).
async fn drive<C, E>(
    conn: C,
    graceful_shutdown: fn(Pin<&mut C>),
    activity: &Activity,
    mut closing: tokio::sync::watch::Receiver<bool>,
    write: Duration,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let closing = closing.wait_for(|c| *c);
    let tick = write / 2;
    let watchdog = tokio::time::sleep(tick);
    tokio::pin!(conn, closing, watchdog);
    let mut closed = false;
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if watchdog.as_mut().poll(cx).is_ready() {
                if activity.window_stalled() {
                    tracing::debug!(
                        "an HTTP/2 stream's client granted no window within the write deadline"
                    );
                    return Poll::Ready(Ok(()));
                }
                watchdog.as_mut().reset(tokio::time::Instant::now() + tick);
                continue;
            }
            if closed {
                return Poll::Pending;
            }
            // A dropped sender (`Err`) means the server is gone: close too.
            if closing.as_mut().poll(cx).is_ready() || activity.take_idle_expired() {
                closed = true;
                graceful_shutdown(conn.as_mut());
                continue;
            }
            return Poll::Pending;
        }
    })
    .await
}
