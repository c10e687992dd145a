//! The accept loop: every connection served by hyper (HTTP/1.1) with a
//! header-read timeout (which also closes connections that send nothing and
//! keep-alive connections left idle that long),
//! at most `max_connections` open at once (past it, new connections wait in
//! the kernel's backlog until one closes, except [`PROBE_SLOTS`] more on
//! which only the health probes are answered), and a graceful stop that
//! lets each connection finish its request in flight.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tasktape_core::metrics::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Connections taken past `max_connections` for the health probes alone.
pub(crate) const PROBE_SLOTS: usize = 16;

/// Marks a request that came on a probes-only connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbesOnly;

/// Connection limits and TLS (see [`crate::ServerConfig`]).
#[derive(Clone)]
pub(crate) struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting,
/// asks every connection to close after its request in flight, and returns
/// once all have closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    open: Arc<Gauge>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Past the limit, a few more connections are taken for the health
    // probes alone (anything else on them: 503), so a full server still
    // tells its load balancer it is alive.
    let probe_permits = Arc::new(Semaphore::new(PROBE_SLOTS));
    // Dropped to tell connections to close; each holds a receiver until done.
    let (closing, _) = watch::channel(());
    let (done_tx, mut done_rx) = watch::channel(());
    let mut warned_full = false;
    loop {
        let (permit, probes_only) = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => {
                if !std::mem::replace(&mut warned_full, true) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait until one closes (the health probes are still answered)"
                    );
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => (permit.expect("never closed"), false),
                    permit = Arc::clone(&probe_permits).acquire_owned() => (permit.expect("never closed"), true),
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::error!(%error, "accept failed; retrying in 1 s");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = shutdown.cancelled() => break,
                        }
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if permits.available_permits() > limits.max_connections / 10 {
            warned_full = false;
        }
        // Events are small writes that must leave at once: no Nagle delay.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone().map_request(
            move |request: hyper::Request<Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(crate::refusals::Peer(peer.ip()));
                if probes_only {
                    request.extensions_mut().insert(ProbesOnly);
                }
                request
            },
        ));
        let mut closing = closing.subscribe();
        let done = done_tx.clone();
        let open = Arc::clone(&open);
        open.inc();
        let limits = limits.clone();
        tokio::spawn(async move {
            match limits.tls.clone() {
                None => serve_connection(tcp, service, limits, &mut closing).await,
                // Boxed: a TLS connection's state is larger, and a plain
                // connection's task would otherwise be as large as it.
                Some(acceptor) => {
                    Box::pin(serve_tls(acceptor, tcp, service, limits, &mut closing)).await
                }
            }
            open.dec();
            drop(permit);
            drop(done);
        });
    }
    drop(listener);
    // Tell every connection to close once its request in flight is answered.
    closing.send_replace(());
    drop(closing);
    drop(done_tx);
    // `changed` errs once every connection dropped its sender.
    while done_rx.changed().await.is_ok() {}
    Ok(())
}

/// Serves one TLS connection: the handshake, then the connection.
async fn serve_tls<S>(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    service: S,
    limits: Limits,
    closing: &mut watch::Receiver<()>,
) where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    // The handshake gets as long as a request's headers.
    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => serve_connection(stream, service, limits, closing).await,
        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// Serves one connection (HTTP/1.1 only: its header timer runs from the
/// first byte awaited, so a connection that never sends one is closed too)
/// until it ends; once `closing` changes, after its request in flight.
async fn serve_connection<I, S>(
    io: I,
    service: S,
    limits: Limits,
    closing: &mut watch::Receiver<()>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut asked = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, "connection ended with an error");
                }
                break;
            }
            _ = closing.changed(), if !asked => {
                asked = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Errors of one connection (not of the listener): accept the next one.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
