//! The admin listener: `/metrics`, `/healthz` and `/readyz` over plain HTTP/1.1.
//!
//! It is meant for a loopback or pod address that only the node's own
//! monitoring reaches, never a public entrypoint; it has no authentication and
//! serves nothing that is a secret. It reads the daemon's state through
//! [`AdminSource`] on every request and keeps none of its own, so a scrape
//! always sees the state of that moment. Because a scraper that hangs must
//! not pin the daemon, connections are capped, each must send its request
//! head within a few seconds and is closed after one response or a fixed
//! deadline, whichever comes first. What a metric means is [`crate::metrics`]'
//! business, not this module's.
//! The listener and its limits are here; what each path answers is
//! `routes`.
use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{body::Incoming, header, server::conn::http1, service::service_fn, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use crate::{filter::Counters, metrics, status::DaemonStatus};

mod routes;
#[cfg(test)]
mod tests;

use routes::respond;

/// What the admin listener asks the daemon on each request.
pub trait AdminSource: Send + Sync + 'static {
    fn status(&self) -> DaemonStatus;
    /// `None` when the kernel maps cannot be read.
    fn counters(&self) -> Option<Counters>;
    /// Ok when ready; `Err(reasons)` lists what is missing, e.g. "not armed
    /// on eth1", "set `admins` not loaded".
    fn readiness(&self) -> Result<(), Vec<String>>;
    /// The whole exposition for `/metrics`; by default the status and the
    /// counters alone. The daemon answers from its one registry.
    fn metrics(&self) -> String {
        metrics::render(&self.status(), self.counters().as_ref())
    }
}

/// How much a client may take from the listener.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Connections served at once; beyond it clients wait in the listen
    /// backlog until a slot frees.
    max_connections: usize,
    /// Time a client has to send its whole request head.
    header_read_timeout: Duration,
    /// Time after which a connection is closed whatever it is doing (a
    /// client that does not read its response, for one).
    connection_timeout: Duration,
    /// Time open connections get to finish after shutdown; the rest are cut.
    drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets open
/// connections finish for a few seconds and returns.
///
/// GET and HEAD only (405 with `Allow` otherwise): `/metrics` ->
/// [`metrics::render`]; `/healthz` -> 200 `ok`; `/readyz` -> 200 `ready` or
/// 503 with one reason per line; anything else 404. Every response closes its
/// connection (no keep-alive), which bounds what one client can hold.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, source, shutdown, Limits::default()).await
}

async fn serve_with(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(%addr, "admin listener serving");
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow with every scrape.
        while connections.try_join_next().is_some() {}
        // Take a slot before accepting: past the cap the kernel holds new
        // clients in the backlog instead of us holding their sockets.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot?,
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(
                    stream,
                    peer,
                    Arc::clone(&source),
                    limits,
                    stopping.clone(),
                    slot,
                ));
            }
            Err(error) => {
                // Out of file descriptors and the like: back off rather than
                // spin, and keep serving once it passes.
                tracing::warn!(%error, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    drop(listener);
    stop.send_replace(true);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "admin listener: cutting connections still open after the drain timeout"
        );
        connections.shutdown().await;
    }
    tracing::debug!("admin listener stopped");
    Ok(())
}

/// Serves one connection until it is done, its deadline passes or shutdown
/// (then the request in flight, if any, is finished first).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    source: Arc<dyn AdminSource>,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let response = respond(
            source.as_ref(),
            request.method(),
            request.uri().path(),
            accept,
        );
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let deadline = tokio::time::sleep(limits.connection_timeout);
    tokio::pin!(deadline);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "admin connection ended with an error");
                }
                return;
            }
            // An error means the listener is gone, which is shutdown too.
            _ = stopping.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut deadline => {
                tracing::debug!(%peer, timeout = ?limits.connection_timeout, "admin connection cut at its deadline");
                return;
            }
        }
    }
}
