//! The entrypoints: listeners, TLS handshakes, HTTP/1.1 and HTTP/2 serving
//! with per-entrypoint limits, and the request path from routing through the
//! forwarded headers to an upstream and back, with WebSocket passthrough,
//! the access log and the request metrics.
//!
//! What is configurable at run time lives in one [`ProxyState`] behind an
//! `ArcSwap`: a request or a new connection takes the state that is current
//! when it starts, so a reload never changes anything under a request in
//! flight and never closes a connection. Listeners are bound once, at start.
use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderValue},
    service::service_fn,
    Request, Response, StatusCode, Version,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
};

use super::{
    access_log::{AccessLog, AccessRecord},
    forwarded::{self, Forwarding, TrustedPeers},
    metrics::{
        ConnectionLabels, EntrypointLabels, EntrypointOnly, ProxyMetrics, RouterLabels, RouterOnly,
        ServiceLabels, ServiceOnly, UpstreamErrorLabels,
    },
    middleware::{Chain, Middlewares, RequestContext, Sets},
    routing::RouteTable,
    tls::{self, TlsEntrypoint},
    upstream::{ProxyBody, Upstreams},
    EntrypointConfig, ProxyConfig,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything a reload replaces at once.
pub struct ProxyState {
    routes: RouteTable,
    upstreams: Upstreams,
    entrypoints: BTreeMap<String, EntrypointState>,
    /// Redirect targets: entrypoint name -> its first listen port.
    ports: BTreeMap<String, u16>,
    middlewares: Middlewares,
    /// Route name -> its middlewares (routes without any are absent).
    chains: HashMap<String, Chain>,
}

struct EntrypointState {
    config: EntrypointConfig,
    tls: Option<Arc<TlsEntrypoint>>,
}

impl ProxyState {
    /// Builds every part of a new state; any error leaves the old one in force.
    fn build(config: &ProxyConfig, previous: Option<&ProxyState>) -> Result<ProxyState> {
        let mut entrypoints = BTreeMap::new();
        for entrypoint in &config.entrypoints {
            let tls = match &entrypoint.tls {
                Some(tls_config) => {
                    // Keep the loaded certificates when nothing about them changed.
                    let same = previous
                        .and_then(|p| p.entrypoints.get(&entrypoint.name))
                        .filter(|old| old.config.tls.as_ref() == Some(tls_config))
                        .and_then(|old| old.tls.clone());
                    Some(match same {
                        Some(tls) => tls,
                        None => Arc::new(
                            TlsEntrypoint::load(&entrypoint.name, tls_config)
                                .with_context(|| format!("entrypoint `{}`", entrypoint.name))?,
                        ),
                    })
                }
                None => None,
            };
            entrypoints.insert(
                entrypoint.name.clone(),
                EntrypointState {
                    config: entrypoint.clone(),
                    tls,
                },
            );
        }
        let ports = config
            .entrypoints
            .iter()
            .filter_map(|e| e.listen.first().map(|a| (e.name.clone(), a.port())))
            .collect();
        let upstreams = match previous {
            Some(p) => p.upstreams.rebuild(&config.services),
            None => Upstreams::new(&config.services),
        };
        let middlewares =
            Middlewares::build(&config.middlewares, previous.map(|p| &p.middlewares))?;
        let chains = middlewares.chains(&config.routes)?;
        Ok(ProxyState {
            routes: RouteTable::new(&config.routes, config.default_service.as_deref()),
            upstreams,
            entrypoints,
            ports,
            middlewares,
            chains,
        })
    }
}

/// A state built by [`Proxy::prepare`], not yet in force.
pub struct PreparedReload(ProxyState);

/// The running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    stop_accepting: watch::Sender<bool>,
}

struct Shared {
    state: ArcSwap<ProxyState>,
    trusted: ArcSwap<TrustedPeers>,
    /// Every filter set's contents, for `ip_allow`.
    sets: ArcSwap<Sets>,
    metrics: Arc<ProxyMetrics>,
    access_log: Option<AccessLog>,
    draining: AtomicBool,
    /// Taken out when draining starts; connections accepted before then
    /// are watched by it.
    graceful: std::sync::Mutex<Option<GracefulShutdown>>,
    in_flight: AtomicU64,
}

impl Proxy {
    /// Builds the state and binds every entrypoint's listeners; fails (naming
    /// the address) if one cannot be bound.
    pub async fn start(
        config: &ProxyConfig,
        trusted: TrustedPeers,
        sets: Sets,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Proxy> {
        let state = ProxyState::build(config, None)?;
        let access_log = if config.access_log.enabled {
            Some(AccessLog::open(config.access_log.path.as_deref())?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            trusted: ArcSwap::from_pointee(trusted),
            sets: ArcSwap::from_pointee(sets),
            metrics,
            access_log,
            draining: AtomicBool::new(false),
            graceful: std::sync::Mutex::new(Some(GracefulShutdown::new())),
            in_flight: AtomicU64::new(0),
        });
        shared.publish_certificates();
        let (stop_accepting, stop_rx) = watch::channel(false);
        let mut listeners = Vec::new();
        for entrypoint in &config.entrypoints {
            let slots = Arc::new(Semaphore::new(entrypoint.limits.max_connections));
            for address in &entrypoint.listen {
                let listener = bind(*address).with_context(|| {
                    format!("entrypoint `{}`: binding {address}", entrypoint.name)
                })?;
                let local = listener.local_addr()?;
                tracing::info!(
                    entrypoint = %entrypoint.name,
                    tls = entrypoint.tls.is_some(),
                    "listening on {local}"
                );
                listeners.push(tokio::spawn(accept_loop(
                    shared.clone(),
                    entrypoint.name.clone(),
                    listener,
                    slots.clone(),
                    stop_rx.clone(),
                )));
            }
        }
        Ok(Proxy {
            shared,
            listeners,
            stop_accepting,
        })
    }

    /// Swaps in routes, upstreams and certificates from `config` at once.
    /// In-flight requests finish on the state they started with; no
    /// connection is closed. Listener changes need a restart.
    pub fn reload(&self, config: &ProxyConfig) -> Result<()> {
        let prepared = self.prepare(config)?;
        self.commit(prepared);
        Ok(())
    }

    /// Builds the state `config` describes without putting it in force, so
    /// that a caller can change what the state reads (the sets) first and
    /// then swap it in with [`Proxy::commit`]. An error changes nothing.
    pub fn prepare(&self, config: &ProxyConfig) -> Result<PreparedReload> {
        let current = self.shared.state.load();
        let next = ProxyState::build(config, Some(&current))?;
        let old_listen: Vec<_> = current
            .entrypoints
            .values()
            .map(|e| (e.config.name.clone(), e.config.listen.clone()))
            .collect();
        let new_listen: Vec<_> = next
            .entrypoints
            .values()
            .map(|e| (e.config.name.clone(), e.config.listen.clone()))
            .collect();
        if old_listen != new_listen {
            tracing::warn!(
                "entrypoints or their listen addresses changed; that takes effect at the next restart"
            );
        }
        Ok(PreparedReload(next))
    }

    /// Puts a prepared state in force.
    pub fn commit(&self, prepared: PreparedReload) {
        self.shared.state.store(Arc::new(prepared.0));
        self.shared.publish_certificates();
    }

    /// New trusted peers (the trusted sets changed).
    pub fn set_trusted(&self, trusted: TrustedPeers) {
        self.shared.trusted.store(Arc::new(trusted));
    }

    /// The filter sets' new contents (for `ip_allow`).
    pub fn set_sets(&self, sets: Sets) {
        self.shared.sets.store(Arc::new(sets));
    }

    /// Reloads certificate and htpasswd files that changed on disk, and
    /// forgets idle rate-limit keys.
    pub fn reload_certificates(&self) {
        let state = self.shared.state.load();
        state.middlewares.housekeep(&self.shared.metrics);
        let mut changed = false;
        for entrypoint in state.entrypoints.values() {
            if let Some(tls) = &entrypoint.tls {
                for event in tls.reload_changed() {
                    changed = true;
                    match event {
                        tls::CertEvent::Reloaded { file } => tracing::info!(
                            entrypoint = %entrypoint.config.name,
                            "certificate {file} reloaded; new handshakes get it"
                        ),
                        tls::CertEvent::Refused { file, error } => tracing::error!(
                            entrypoint = %entrypoint.config.name,
                            "certificate {file} changed but cannot be loaded, the old one stays: {error}"
                        ),
                    }
                }
            }
        }
        if changed {
            self.shared.publish_certificates();
        }
    }

    /// True from the moment draining starts.
    pub fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Marks the proxy as draining (so /readyz fails), keeps accepting for
    /// `accept_grace`, then stops accepting and gives in-flight requests up
    /// to `grace_timeout` to finish.
    pub async fn drain(self, accept_grace: Duration, grace_timeout: Duration) {
        self.shared.draining.store(true, Ordering::SeqCst);
        tracing::info!(
            "draining: /readyz fails now; new connections are accepted for {accept_grace:?} more"
        );
        tokio::time::sleep(accept_grace).await;
        let _ = self.stop_accepting.send(true);
        for listener in &self.listeners {
            listener.abort();
        }
        let graceful = self
            .shared
            .graceful
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(graceful) = graceful else {
            return;
        };
        tracing::info!(
            "stopped accepting; waiting up to {grace_timeout:?} for {} connections \
             ({} requests in flight)",
            graceful.count(),
            self.shared.in_flight.load(Ordering::SeqCst)
        );
        match tokio::time::timeout(grace_timeout, graceful.shutdown()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => tracing::warn!("grace timeout reached; closing what is left"),
        }
    }
}

impl Shared {
    fn publish_certificates(&self) {
        let state = self.state.load();
        let mut certs = Vec::new();
        let mut failures = Vec::new();
        for entrypoint in state.entrypoints.values() {
            if let Some(tls) = &entrypoint.tls {
                for cert in tls.certificates() {
                    certs.push((cert.entrypoint, cert.names, cert.default, cert.not_after));
                }
                failures.push((entrypoint.config.name.clone(), tls.reload_failures()));
            }
        }
        self.metrics.set_certificates(certs, failures);
    }
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if address.is_ipv6() {
        // `[::]:443` serves IPv4 too, as operators expect from Traefik.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    shared: Arc<Shared>,
    entrypoint: String,
    listener: TcpListener,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // A slot first: past max_connections, clients wait in the backlog.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(entrypoint = %entrypoint, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let shared = shared.clone();
        let entrypoint = entrypoint.clone();
        tokio::spawn(async move {
            serve_connection(shared, entrypoint, stream, peer).await;
            drop(permit);
        });
    }
}

/// What a request handler knows about its connection.
#[derive(Clone)]
struct ConnInfo {
    entrypoint: String,
    peer: SocketAddr,
    local: SocketAddr,
    tls_version: Option<&'static str>,
    activity: Arc<Activity>,
}

async fn serve_connection(
    shared: Arc<Shared>,
    entrypoint: String,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let state = shared.state.load_full();
    let Some(ep) = state.entrypoints.get(&entrypoint) else {
        return;
    };
    let limits = ep.config.limits.clone();
    let local = stream.local_addr().unwrap_or(peer);
    let activity = Arc::new(Activity::new());
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
    struct Dec(prometheus_client::metrics::gauge::Gauge);
    impl Drop for Dec {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _open = Dec(gauge);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
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
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));

    let idle_timeout = limits.idle_timeout;
    match &ep.tls {
        Some(tls) => {
            let acceptor = tls.acceptor();
            let handshake =
                tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await;
            let failure = match handshake {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                Err(_) => Err("TLS handshake timed out".to_string()),
            };
            let stream = match failure {
                Ok(stream) => stream,
                Err(why) => {
                    shared
                        .metrics
                        .tls_handshake_errors
                        .get_or_create(&EntrypointOnly {
                            entrypoint: entrypoint.clone(),
                        })
                        .inc();
                    tracing::debug!(entrypoint = %entrypoint, %peer, "{why}");
                    return;
                }
            };
            let tls_version = Some(tls::version_label(stream.get_ref().1));
            let info = ConnInfo {
                entrypoint,
                peer,
                local,
                tls_version,
                activity: activity.clone(),
            };
            let io = TokioIo::new(Tracked::new(stream, activity.clone()));
            run_connection(shared, builder, io, info, idle_timeout).await;
        }
        None => {
            let info = ConnInfo {
                entrypoint,
                peer,
                local,
                tls_version: None,
                activity: activity.clone(),
            };
            let io = TokioIo::new(Tracked::new(stream, activity.clone()));
            run_connection(shared, builder, io, info, idle_timeout).await;
        }
    }
}

async fn run_connection<I>(
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    io: TokioIo<I>,
    info: ConnInfo,
    idle_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = info.activity.clone();
    let handler_shared = shared.clone();
    let service = service_fn(move |request| {
        let shared = handler_shared.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(handle(shared, info, request).await) }
    });
    let watcher = shared
        .graceful
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(GracefulShutdown::watcher);
    let Some(watcher) = watcher else {
        return; // draining has finished
    };
    let connection = builder.serve_connection_with_upgrades(io, service);
    let connection = watcher.watch(connection.into_owned());
    tokio::pin!(connection);
    // Idle keep-alive connections are closed after idle_timeout: the
    // connection is shut down gracefully once no request is open and
    // nothing moved for that long.
    let mut tick = tokio::time::interval(
        idle_timeout
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(100)),
    );
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = tick.tick() => {
                if activity.idle_for() >= idle_timeout && activity.open_requests() == 0 {
                    // Dropping the connection closes an idle one; nothing is in flight.
                    return;
                }
            }
        }
    }
}

/// Per-connection activity, for the idle timeout.
struct Activity {
    started: Instant,
    last: AtomicU64,
    open: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last: AtomicU64::new(0),
            open: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
    fn open_requests(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// An IO wrapper that records when bytes last moved.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        activity.touch();
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn full(status: StatusCode, text: impl Into<String>) -> Response<ProxyBody> {
    let mut body = text.into();
    body.push('\n');
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| -> BoxError { match never {} })
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn protocol_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

/// The request's host: the URI authority (HTTP/2 `:authority`, absolute
/// form) or the Host header.
fn request_host(request: &Request<Incoming>) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

struct RequestGuard(Arc<Activity>, Arc<Shared>);
impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.1.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

async fn handle(
    shared: Arc<Shared>,
    info: ConnInfo,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    info.activity.open.fetch_add(1, Ordering::Relaxed);
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = RequestGuard(info.activity.clone(), shared.clone());
    let state = shared.state.load_full();
    let Some(entrypoint) = state.entrypoints.get(&info.entrypoint) else {
        return full(StatusCode::SERVICE_UNAVAILABLE, "entrypoint reconfigured");
    };
    let host = request_host(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let protocol = protocol_label(request.version());
    let trusted = shared.trusted.load();
    let mut record = AccessRecord {
        entrypoint: info.entrypoint.clone(),
        peer: info.peer,
        client_ip: info.peer.ip(),
        method: method.to_string(),
        host: host.clone().unwrap_or_default(),
        path: path.clone(),
        query: request.uri().query().map(str::to_string),
        protocol,
        tls_version: info.tls_version,
        router: String::new(),
        service: String::new(),
        upstream: None,
        status: 0,
        request_bytes: request.body().size_hint().exact(),
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };

    // A plain entrypoint that redirects answers everything with a redirect.
    if let Some(redirect) = &entrypoint.config.redirect {
        let port = state.ports.get(&redirect.to).copied().unwrap_or(443);
        let bare_host = host
            .as_deref()
            .map(strip_port)
            .unwrap_or_else(|| info.local.ip().to_string());
        let authority = if port == 443 {
            bare_host
        } else {
            format!("{bare_host}:{port}")
        };
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = format!("https://{authority}{path_and_query}");
        let status = StatusCode::from_u16(redirect.code).unwrap_or(StatusCode::PERMANENT_REDIRECT);
        let mut response = full(status, format!("moved to {location}"));
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return finish(&shared, record, response, started, guard);
    }

    let Some(route) = state.routes.find(&info.entrypoint, host.as_deref(), &path) else {
        let response = full(
            StatusCode::NOT_FOUND,
            format!(
                "404 page not found: no route for host `{}` and path `{path}`",
                host.as_deref().unwrap_or("")
            ),
        );
        return finish(&shared, record, response, started, guard);
    };
    record.router = route.name.clone();
    record.service = route.service.clone();
    let Some(upstream) = state.upstreams.get(&route.service) else {
        let response = full(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 service unavailable: no such service",
        );
        return finish(&shared, record, response, started, guard);
    };

    // Forwarded headers and the real client IP.
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .filter(|_| request.version() == Version::HTTP_11);
    let fwd = Forwarding {
        peer: info.peer,
        trusted: trusted.contains(info.peer.ip()),
        proto: if info.tls_version.is_some() {
            "https"
        } else {
            "http"
        },
        port: info.local.port(),
    };
    let client_ip = forwarded::prepare_request(
        request.headers_mut(),
        host.as_deref(),
        upgrade.as_ref(),
        &fwd,
        &trusted,
    );
    record.client_ip = client_ip;
    request.extensions_mut().insert(ClientIp(client_ip));

    // Upgrades (WebSocket): take the client side's upgrade before the
    // request moves on.
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let body: ProxyBody = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    let mut outgoing = Request::from_parts(parts, body);
    // Upstreams get HTTP/1.1 (or h2c): the client's version is not theirs.
    *outgoing.version_mut() = Version::HTTP_11;
    if let Some(host) = &host {
        if let Ok(value) = HeaderValue::from_str(host) {
            outgoing.headers_mut().insert(header::HOST, value);
        }
    }
    // The route's middlewares; the default service gets none.
    let is_default = state
        .routes
        .default_route()
        .is_some_and(|d| std::ptr::eq(d, route));
    let chain = state.chains.get(&route.name).filter(|_| !is_default);
    let passed = match chain {
        Some(chain) => {
            let sets = shared.sets.load();
            let cx = RequestContext {
                client_ip,
                tls: info.tls_version.is_some(),
                sets: &sets,
            };
            match chain.request(&mut outgoing, &cx, &shared.metrics).await {
                Ok(passed) => Some(passed),
                Err(answer) => return finish(&shared, record, answer, started, guard),
            }
        }
        None => None,
    };
    let after = |response: Response<ProxyBody>| match &passed {
        Some(passed) => passed.response(response, &shared.metrics),
        None => response,
    };
    match upstream.send(outgoing).await {
        Ok((mut response, endpoint)) => {
            record.upstream = Some(endpoint);
            let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            forwarded::strip_response(response.headers_mut(), switching);
            if switching {
                if let Some(client_upgrade) = client_upgrade {
                    let upstream_upgrade = hyper::upgrade::on(&mut response);
                    tokio::spawn(async move {
                        match tokio::try_join!(client_upgrade, upstream_upgrade) {
                            Ok((client, upstream)) => {
                                let mut client = TokioIo::new(client);
                                let mut upstream = TokioIo::new(upstream);
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            }
                            Err(e) => tracing::debug!("upgrade failed: {e}"),
                        }
                    });
                }
            }
            let (parts, body) = response.into_parts();
            let body: ProxyBody = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
            let response = after(Response::from_parts(parts, body));
            finish(&shared, record, response, started, guard)
        }
        // The client sent more than a body limit allows: its fault, not
        // the upstream's.
        Err(_) if passed.as_ref().is_some_and(|p| p.cut_short()) => {
            let response = after(full(StatusCode::BAD_GATEWAY, "cut short"));
            finish(&shared, record, response, started, guard)
        }
        Err(error) => {
            shared
                .metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    service: route.service.clone(),
                    kind: error.kind().to_string(),
                })
                .inc();
            tracing::warn!(
                router = %route.name,
                service = %route.service,
                "upstream error: {error}"
            );
            let status = error.status();
            let text = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("upstream error")
            );
            finish(&shared, record, after(full(status, text)), started, guard)
        }
    }
}

/// The client IP the forwarded-header logic settled on, for middlewares.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

fn strip_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return match rest.split_once(']') {
            Some((addr, _)) => format!("[{addr}]"),
            None => host.to_string(),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => host.to_string(),
    }
}

/// Wraps the response body so that the access log line and the duration
/// metrics are written when the body ends (or the client goes away).
fn finish(
    shared: &Arc<Shared>,
    mut record: AccessRecord,
    response: Response<ProxyBody>,
    started: Instant,
    guard: RequestGuard,
) -> Response<ProxyBody> {
    record.status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = Observed {
        inner: body,
        bytes: 0,
        done: Some(Done {
            shared: shared.clone(),
            record,
            started,
            _guard: guard,
        }),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

struct Done {
    shared: Arc<Shared>,
    record: AccessRecord,
    started: Instant,
    _guard: RequestGuard,
}

impl Done {
    fn complete(self, bytes: u64) {
        let elapsed = self.started.elapsed();
        let r = &self.record;
        let m = &self.shared.metrics;
        let secs = elapsed.as_secs_f64();
        m.entrypoint_requests
            .get_or_create(&EntrypointLabels {
                entrypoint: r.entrypoint.clone(),
                code: r.status,
                method: r.method.clone(),
                protocol: if r.tls_version.is_some() {
                    "https"
                } else {
                    "http"
                }
                .to_string(),
            })
            .inc();
        m.entrypoint_duration
            .get_or_create(&EntrypointOnly {
                entrypoint: r.entrypoint.clone(),
            })
            .observe(secs);
        if !r.router.is_empty() {
            m.router_requests
                .get_or_create(&RouterLabels {
                    router: r.router.clone(),
                    service: r.service.clone(),
                    code: r.status,
                    method: r.method.clone(),
                })
                .inc();
            m.router_duration
                .get_or_create(&RouterOnly {
                    router: r.router.clone(),
                    service: r.service.clone(),
                })
                .observe(secs);
            m.service_requests
                .get_or_create(&ServiceLabels {
                    service: r.service.clone(),
                    code: r.status,
                    method: r.method.clone(),
                })
                .inc();
            m.service_duration
                .get_or_create(&ServiceOnly {
                    service: r.service.clone(),
                })
                .observe(secs);
        }
        if let Some(log) = &self.shared.access_log {
            log.write(&self.record, elapsed, bytes);
        }
    }
}

/// A response body that counts its bytes and reports when it ends.
struct Observed {
    inner: ProxyBody,
    bytes: u64,
    done: Option<Done>,
}

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                let bytes = self.bytes;
                if let Some(done) = self.done.take() {
                    done.complete(bytes);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // An empty body that was never polled, or a client that went away.
        if let Some(done) = self.done.take() {
            done.complete(self.bytes);
        }
    }
}
