//! The entrypoints: listeners and their accept loops, connection slots,
//! draining, and the proxy's run-time state. Each accepted connection is
//! `serve`'s, from its TLS handshake to its end.
//!
//! What is configurable at run time lives in one [`ProxyState`] behind an
//! `ArcSwap`: a request or a new connection takes the state that is current
//! when it starts, so a reload never changes anything under a request in
//! flight and never closes a connection. Listeners are bound once, at start.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::{net::TcpListener, sync::watch};

use super::{
    access_log::AccessLog,
    balance::Balancers,
    connections::Slots,
    forwarded::TrustedPeers,
    metrics::ProxyMetrics,
    middleware::{BuildContext, Middlewares, RouteService, Sets},
    request::forward::UpstreamCall,
    routing::{Route, RouteTable},
    tls::{self, TlsEntrypoint},
    upstream::Upstreams,
    EntrypointConfig, ProxyConfig,
};

/// Everything a reload replaces at once.
pub struct ProxyState {
    pub(super) routes: RouteTable,
    pub(super) upstreams: Upstreams,
    /// The weighted services, in front of `upstreams`.
    pub(super) balancers: Balancers,
    pub(super) entrypoints: BTreeMap<String, EntrypointState>,
    /// Redirect targets: entrypoint name -> its first listen port.
    pub(super) ports: BTreeMap<String, u16>,
    middlewares: Middlewares,
    /// Route name -> its stack: its middlewares around its upstream.
    stacks: HashMap<String, RouteService>,
    /// The default service's stack (no middlewares).
    default_stack: Option<RouteService>,
}

pub(super) struct EntrypointState {
    pub(super) config: EntrypointConfig,
    pub(super) tls: Option<Arc<TlsEntrypoint>>,
}

impl ProxyState {
    /// Builds every part of a new state; any error leaves the old one in force.
    fn build(
        config: &ProxyConfig,
        previous: Option<&ProxyState>,
        cx: &BuildContext,
    ) -> Result<ProxyState> {
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
            Middlewares::build(&config.middlewares, previous.map(|p| &p.middlewares), cx)?;
        let routes = RouteTable::new(&config.routes, config.default_service.as_deref());
        // The upstream is chosen per request (a weighted service picks a
        // member), so every stack ends in the same call; a service that is
        // unknown answers 500 `no_service` before the stack.
        let call = || UpstreamCall::service(cx.metrics.clone());
        let mut stacks = HashMap::new();
        for route in &config.routes {
            stacks.insert(route.name.clone(), middlewares.stack(route, call())?);
        }
        let default_stack = routes.default_route().map(|_| call());
        Ok(ProxyState {
            routes,
            upstreams,
            balancers: Balancers::new(&config.weighted),
            entrypoints,
            ports,
            middlewares,
            stacks,
            default_stack,
        })
    }

    /// The stack that serves `route`, if its service is known.
    pub(super) fn stack(&self, route: &Route) -> Option<RouteService> {
        let is_default = self
            .routes
            .default_route()
            .is_some_and(|d| std::ptr::eq(d, route));
        if is_default {
            self.default_stack.clone()
        } else {
            self.stacks.get(&*route.name).cloned()
        }
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

pub(super) struct Shared {
    pub(super) state: ArcSwap<ProxyState>,
    pub(super) trusted: ArcSwap<TrustedPeers>,
    /// Every filter set's contents, for `ip_allow`.
    pub(super) sets: Arc<ArcSwap<Sets>>,
    pub(super) metrics: Arc<ProxyMetrics>,
    pub(super) access_log: Option<AccessLog>,
    draining: AtomicBool,
    /// Taken out when draining starts; connections accepted before then
    /// are watched by it.
    pub(super) graceful: std::sync::Mutex<Option<GracefulShutdown>>,
    pub(super) in_flight: AtomicU64,
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
        let sets = Arc::new(ArcSwap::from_pointee(sets));
        let cx = BuildContext {
            metrics: metrics.clone(),
            sets: sets.clone(),
        };
        let state = ProxyState::build(config, None, &cx)?;
        let access_log = if config.access_log.enabled {
            Some(AccessLog::open(config.access_log.path.as_deref())?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            trusted: ArcSwap::from_pointee(trusted),
            sets,
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
            let slots = Slots::new(entrypoint.limits.max_connections);
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
        let cx = BuildContext {
            metrics: self.shared.metrics.clone(),
            sets: self.shared.sets.clone(),
        };
        let next = ProxyState::build(config, Some(&current), &cx)?;
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
    slots: Arc<Slots>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // A slot first: past max_connections, clients wait in the backlog.
        let permit = tokio::select! {
            permit = slots.acquire() => match permit {
                Some(permit) => permit,
                None => return,
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
        let slots = slots.clone();
        tokio::spawn(super::serve::serve_connection(
            shared, entrypoint, stream, peer, slots, permit,
        ));
    }
}
