//! One connection, from its TLS handshake to its end: the slot and gauge
//! it holds, hyper's HTTP/1.1 and HTTP/2 settings for its entrypoint, and
//! when it is closed for idling (the idle timeout, or pressure on the
//! slots). Each request is handed to the request path in `request`.
//!
//! The handshake and the serving are two tasks: what the handshake needed
//! is freed before the connection idles, so an idle connection holds only
//! hyper's state and the TLS stream.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
};

use super::{
    connections::{Activity, Slots, EVICTABLE_AFTER},
    metrics::{ConnectionLabels, EntrypointOnly},
    request::{
        framing::{FramingState, FramingWatch},
        ConnInfo,
    },
    server::Shared,
    tls, Limits,
};

/// A connection's start: its slot, its gauge, its TLS handshake. Serving
/// it is a task of its own ([`run_connection`]), so what the handshake
/// needed is freed before the connection idles: an idle connection holds
/// only hyper's state and the TLS stream.
pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    entrypoint: String,
    stream: TcpStream,
    peer: SocketAddr,
    slots: Arc<Slots>,
    permit: OwnedSemaphorePermit,
) {
    let state = shared.state.load_full();
    let Some(ep) = state.entrypoints.get(&entrypoint) else {
        return;
    };
    let limits = ep.config.limits.clone();
    let protocol = if ep.tls.is_some() { "https" } else { "http" };
    let gauge = shared
        .metrics
        .open_connections
        .get_or_create(&ConnectionLabels {
            entrypoint: entrypoint.clone(),
            protocol: protocol.to_string(),
        })
        .clone();
    gauge.inc();
    let held = Held {
        _open: OpenGauge(gauge),
        _permit: permit,
        slots,
    };
    let info = ConnInfo {
        entrypoint: entrypoint.as_str().into(),
        peer,
        local: stream.local_addr().unwrap_or(peer),
        tls_version: None,
        activity: Arc::new(Activity::new()),
        framing: Arc::new(FramingState::default()),
    };
    let tls = ep.tls.clone();
    drop(state);
    let Some(tls) = tls else {
        return spawn_serving(shared, stream, info, limits, held);
    };
    let handshake = tokio::time::timeout(limits.handshake_timeout, tls.acceptor().accept(stream));
    match handshake.await {
        Ok(Ok(stream)) => {
            let info = ConnInfo {
                tls_version: Some(tls::version_label(stream.get_ref().1)),
                ..info
            };
            spawn_serving(shared, stream, info, limits, held);
        }
        Ok(Err(e)) => handshake_failed(&shared, &info, format!("TLS handshake failed: {e}")),
        Err(_) => handshake_failed(&shared, &info, "TLS handshake timed out".to_string()),
    }
}

/// Starts serving `stream` (plain, or TLS after its handshake) in a task of
/// its own, under the HTTP/1 framing watch.
fn spawn_serving<S>(shared: Arc<Shared>, stream: S, info: ConnInfo, limits: Limits, held: Held)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // As large as any head hyper accepts, so none can blind the watch.
    let head_limit = limits.max_header_bytes.max(8192);
    let io = FramingWatch::new(stream, info.framing.clone()).head_limit(head_limit);
    tokio::spawn(run_connection(shared, io, info, limits, held));
}

fn handshake_failed(shared: &Shared, info: &ConnInfo, why: String) {
    shared
        .metrics
        .tls_handshake_errors
        .get_or_create(&EntrypointOnly {
            entrypoint: info.entrypoint.clone(),
        })
        .inc();
    tracing::debug!(entrypoint = %info.entrypoint, peer = %info.peer, "{why}");
}

/// What a connection holds until it ends: its slot, and its place in the
/// open-connections gauge.
struct Held {
    _open: OpenGauge,
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
}

struct OpenGauge(prometheus_client::metrics::gauge::Gauge);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// hyper's HTTP/1.1 and HTTP/2 settings for an entrypoint's limits.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // From the head's first byte to its end, however it trickles in.
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true)
        .half_close(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        // HTTP/2 rapid reset (CVE-2023-44487): a client that opens and
        // cancels streams faster than they are served gets GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256))
        // PINGs find dead peers; they do not count as activity for the
        // idle timeout, which is measured on requests.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves one connection until it ends, is idle too long, or gives its
/// slot up under pressure. The hyper connection is built before the future
/// is, so the future holds the stream once, inside it.
fn run_connection<I>(
    shared: Arc<Shared>,
    io: I,
    info: ConnInfo,
    limits: Limits,
    held: Held,
) -> impl std::future::Future<Output = ()> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = info.activity.clone();
    let handler_shared = shared.clone();
    // Boxed: hyper keeps a request's future in a box it allocates once per
    // connection and holds while the connection idles; boxing it here
    // makes that one a pointer, and the request's own box lives only as
    // long as the request.
    let service = service_fn(move |request| {
        let shared = handler_shared.clone();
        let info = info.clone();
        Box::pin(
            async move { Ok::<_, Infallible>(super::request::handle(shared, info, request).await) },
        )
    });
    let watcher = shared
        .graceful
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(GracefulShutdown::watcher);
    let connection = watcher.map(|watcher| {
        let builder = http_builder(&limits);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        watcher.watch(connection.into_owned())
    });
    let idle_timeout = limits.idle_timeout;
    async move {
        // The whole of `held` (slot and gauge) lives as long as the
        // connection: an async block would otherwise take only the field
        // it reads and free the slot now.
        let held = held;
        let Some(connection) = connection else {
            return; // draining has finished
        };
        tokio::pin!(connection);
        // Idle means no request open, on HTTP/1.1 and HTTP/2 alike: bytes
        // moving (PINGs, a trickled head) do not keep a connection alive.
        loop {
            let pressure = held.slots.pressure.notified();
            tokio::select! {
                result = &mut connection => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                    return;
                }
                _ = tokio::time::sleep(activity.idle_left(idle_timeout)) => {
                    if activity.idle_for().is_some_and(|idle| idle >= idle_timeout) {
                        // Dropping the connection closes it; nothing is in flight.
                        return;
                    }
                }
                _ = pressure => {
                    if activity.idle_for().is_some_and(|idle| idle >= EVICTABLE_AFTER) {
                        tracing::debug!("all slots taken: closing an idle connection");
                        return;
                    }
                }
            }
        }
    }
}
