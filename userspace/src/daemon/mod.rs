//! `xdpgate run`: the long-running daemon that ties the subsystems together.
//!
//! It reads the config, starts the sets, opens (or adopts) the pinned filter,
//! applies the first policy, and only then puts the program on the
//! interfaces, so the first packet it sees is judged by a real policy. After
//! that it is a reconcile loop: a new set list, a SIGHUP or an edited config
//! file each lead to a recompiled policy written into the inactive slot and
//! flipped in one write. Anything invalid is refused and reported, and the
//! policy in force stays. SIGTERM and SIGINT end the process but leave the
//! filter attached and pinned; `xdpgate detach` removes it.
//!
//! The proxy, when configured, runs beside the filter in this process: it
//! starts once the first policy is applied, follows reloads and set changes
//! (trusted peers), and drains on SIGTERM before the process exits.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    admin::{self, AdminSource},
    config::{self, Config},
    filter::{AttachMode, Counters, Filter, PinLayout, PinnedFilter},
    ingress::{metrics::IngressMetrics, runtime::IngressRuntime},
    policy,
    proxy::{forwarded::TrustedPeers, metrics::ProxyMetrics, server::Proxy},
    sets::SetsService,
    status::{unix_now, DaemonStatus, InterfaceStatus},
};

/// What `xdpgate run` was asked on its command line. Each `Some` overrides
/// the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The config file; `None` runs the embedded default.
    pub config: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub pin_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
}

/// The parts of the config that can only change with a restart.
#[derive(Clone, Debug, PartialEq)]
struct Fixed {
    pin_dir: PathBuf,
    state_dir: PathBuf,
    admin_listen: SocketAddr,
}

/// Loads the config named by `options` (or the embedded default) and applies
/// the command-line overrides.
pub fn load_config(options: &RunOptions) -> Result<Config, config::ConfigError> {
    let mut config = match &options.config {
        Some(path) => config::load(path)?,
        None => config::embedded_default(),
    };
    if !options.interfaces.is_empty() {
        config.filter.interfaces = options.interfaces.clone();
    }
    if let Some(dir) = &options.pin_dir {
        config.filter.pin_dir = dir.clone();
    }
    if let Some(dir) = &options.state_dir {
        config.state_dir = dir.clone();
    }
    if let Some(listen) = options.admin_listen {
        config.admin.listen = listen;
    }
    Ok(config)
}

/// The interfaces to filter: the configured ones, or the one that carries
/// the default route.
fn resolve_interfaces(config: &Config) -> Result<Vec<String>> {
    if config.filter.interfaces.is_empty() {
        Ok(vec![crate::cli::default_route_interface()?])
    } else {
        Ok(config.filter.interfaces.clone())
    }
}

/// State shared with the admin listener.
struct Shared {
    status: Mutex<DaemonStatus>,
    pinned: Mutex<Option<PinnedFilter>>,
    pin_dir: PathBuf,
    /// The proxy's live request metrics, when a proxy is configured.
    proxy_metrics: Option<Arc<ProxyMetrics>>,
    /// The Ingress source's metrics, when a proxy is configured.
    ingress_metrics: Option<Arc<IngressMetrics>>,
    /// Set on SIGTERM: /readyz fails from then on.
    draining: AtomicBool,
    /// Set once the proxy's entrypoints are bound (true when there is no proxy).
    entrypoints_bound: AtomicBool,
    /// Set once the Ingress sources delivered and their routes were applied
    /// (true without `proxy.ingress`): a new node must not take traffic
    /// before it knows the cluster's routes.
    ingress_loaded: AtomicBool,
}

impl Shared {
    fn update(&self, state_dir: &Path, change: impl FnOnce(&mut DaemonStatus)) {
        let snapshot = {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut status);
            status.updated_at = unix_now();
            status.clone()
        };
        if let Err(e) = snapshot.write_to(state_dir) {
            tracing::warn!(
                "cannot write {}: {e}; `xdpgate status` will be out of date",
                DaemonStatus::path_in(state_dir).display()
            );
        }
    }

    fn with_pinned<T>(&self, read: impl FnOnce(&PinnedFilter) -> Option<T>) -> Option<T> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if pinned.is_none() {
            *pinned = PinnedFilter::open(&self.pin_dir).ok();
        }
        pinned.as_ref().and_then(read)
    }
}

impl AdminSource for Shared {
    fn status(&self) -> DaemonStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn counters(&self) -> Option<Counters> {
        self.with_pinned(|p| p.counters().ok())
    }

    fn extra_metrics(&self) -> String {
        let mut out = self
            .proxy_metrics
            .as_ref()
            .map(|m| m.encode())
            .unwrap_or_default();
        if let Some(ingress) = &self.ingress_metrics {
            out.push_str(&ingress.encode());
        }
        out
    }

    fn readiness(&self) -> Result<(), Vec<String>> {
        let status = self.status();
        let mut missing = Vec::new();
        if self.draining.load(Ordering::SeqCst) {
            missing.push("draining: the daemon is shutting down".to_string());
        }
        if !self.entrypoints_bound.load(Ordering::SeqCst) {
            missing.push("the proxy's entrypoints are not bound yet".to_string());
        }
        if !self.ingress_loaded.load(Ordering::SeqCst) {
            missing.push(
                "the Ingress routes are not loaded yet (files not read or the Kubernetes \
                 watch has not listed)"
                    .to_string(),
            );
        }
        let armed = self
            .with_pinned(|p| p.control().ok())
            .is_some_and(|c| c.armed());
        if !armed {
            missing.push("the filter is not armed".to_string());
        }
        let links = self.with_pinned(|p| Some(p.links())).unwrap_or_default();
        for interface in &status.interfaces {
            if !links
                .iter()
                .any(|l| l.interface == interface.name && l.live)
            {
                missing.push(format!("not attached to {}", interface.name));
            }
        }
        if status.interfaces.is_empty() {
            missing.push("not attached to any interface yet".to_string());
        }
        for set in status.sets.iter().filter(|s| !s.loaded) {
            missing.push(format!("set `{}` is not loaded", set.name));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: RunOptions) -> Result<()> {
    let mut config = load_config(&options)?;
    crate::logging::init(&config.log.level, config.log.format);
    let fixed = Fixed {
        pin_dir: config.filter.pin_dir.clone(),
        state_dir: config.state_dir.clone(),
        admin_listen: config.admin.listen,
    };
    match &options.config {
        Some(path) => {
            tracing::info!(config = %path.display(), "xdpgate {} starting", env!("CARGO_PKG_VERSION"))
        }
        None => tracing::info!(
            "xdpgate {} starting with the embedded default config",
            env!("CARGO_PKG_VERSION")
        ),
    }

    let shared = Arc::new(Shared {
        status: Mutex::new(DaemonStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: unix_now(),
            config_path: options.config.clone(),
            pin_dir: fixed.pin_dir.clone(),
            ..DaemonStatus::default()
        }),
        pinned: Mutex::new(None),
        pin_dir: fixed.pin_dir.clone(),
        proxy_metrics: config.proxy.as_ref().map(|_| Arc::new(ProxyMetrics::new())),
        ingress_metrics: config
            .proxy
            .as_ref()
            .map(|_| Arc::new(IngressMetrics::new())),
        draining: AtomicBool::new(false),
        entrypoints_bound: AtomicBool::new(config.proxy.is_none()),
        ingress_loaded: AtomicBool::new(config.proxy.as_ref().is_none_or(|p| p.ingress.is_none())),
    });

    // Admin first, so /healthz answers and /readyz explains while the rest
    // comes up.
    let listener = tokio::net::TcpListener::bind(fixed.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", fixed.admin_listen))?;
    tracing::info!("admin listener on http://{}", listener.local_addr()?);
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        shared.clone() as Arc<dyn AdminSource>,
        async move {
            let _ = admin_stopped.await;
        },
    ));

    let sets = SetsService::start(
        config.filter.sets.clone(),
        fixed.state_dir.clone(),
        config.watch_interval,
    )
    .await;
    let mut set_updates = sets.subscribe();

    let layout = PinLayout::new(&fixed.pin_dir);
    let filter = Filter::open_pinned(&layout)?;
    match filter.adoption() {
        crate::filter::Adoption::Reused => tracing::info!(
            "adopted the maps pinned under {}: counters and the policy in force carry on",
            layout.maps_dir().display()
        ),
        crate::filter::Adoption::Fresh => {
            tracing::info!(
                "no filter pinned under {}; starting fresh",
                layout.root().display()
            )
        }
        crate::filter::Adoption::Replaced { reason } => tracing::warn!(
            "replaced the pinned maps under {} ({reason})",
            layout.maps_dir().display()
        ),
        crate::filter::Adoption::Private => {}
    }

    let mut daemon = Daemon {
        filter,
        layout,
        shared: shared.clone(),
        state_dir: fixed.state_dir.clone(),
        applied: None,
        attached: false,
        last_attach: std::time::Instant::now(),
    };
    let mut config_stamp = options.config.as_deref().and_then(file_stamp);
    let mut interfaces = resolve_interfaces(&config)?;
    daemon.sets_changed(&config, &sets, &interfaces);

    // The proxy runs beside the filter; it shares the sets (for trusted peers).
    let proxy = match (&config.proxy, &shared.proxy_metrics) {
        (Some(proxy_config), Some(metrics)) => Some(
            Proxy::start(
                proxy_config,
                trusted_peers(proxy_config, &sets),
                set_contents(&sets),
                metrics.clone(),
            )
            .await?,
        ),
        _ => None,
    };
    shared.entrypoints_bound.store(true, Ordering::SeqCst);
    // The Ingress routes join the file's as soon as the sources deliver.
    let mut ingress = ingress_runtime(&config, &fixed.state_dir, &shared);

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut watch = tokio::time::interval(config.watch_interval);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reload = tokio::select! {
            changed = set_updates.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the sets subsystem stopped");
                }
                daemon.sets_changed(&config, &sets, &interfaces);
                if let (Some(proxy), Some(proxy_config)) = (&proxy, &config.proxy) {
                    proxy.set_trusted(trusted_peers(proxy_config, &sets));
                    proxy.set_sets(set_contents(&sets));
                }
                false
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the config and refreshing every set");
                sets.refresh_now();
                true
            }
            _ = watch.tick() => {
                let stamp = options.config.as_deref().and_then(file_stamp);
                let changed = stamp != config_stamp;
                config_stamp = stamp;
                if changed {
                    tracing::info!("the config file changed; reloading");
                }
                daemon.retry_attach(&interfaces);
                if let Some(proxy) = &proxy {
                    proxy.reload_certificates();
                }
                changed
            }
            _ = async {
                match ingress.as_mut() {
                    Some(ingress) => ingress.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if let (Some(proxy), Some(proxy_config), Some(ingress)) =
                    (&proxy, &config.proxy, ingress.as_mut())
                {
                    apply_ingress(proxy, proxy_config, ingress, &shared, &fixed.state_dir);
                }
                false
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        if reload {
            let Some(path) = options.config.as_deref() else {
                continue;
            };
            if let Some((new_config, new_interfaces)) = daemon
                .reload(
                    path,
                    &options,
                    &fixed,
                    &sets,
                    proxy.as_ref(),
                    ingress.as_mut(),
                )
                .await
            {
                let ingress_section = new_config.proxy.as_ref().and_then(|p| p.ingress.as_ref());
                match (ingress_section, ingress.is_some()) {
                    (Some(_), false) => {
                        ingress = ingress_runtime(&new_config, &fixed.state_dir, &shared)
                    }
                    (None, true) => {
                        tracing::info!("proxy.ingress removed: Ingress routes are no longer read");
                        ingress = None;
                        shared.ingress_loaded.store(true, Ordering::SeqCst);
                        shared.update(&fixed.state_dir, |s| s.ingress = None);
                    }
                    _ => {}
                }
                config = new_config;
                interfaces = new_interfaces;
                watch = tokio::time::interval(config.watch_interval);
                watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                daemon.sets_changed(&config, &sets, &interfaces);
            }
        }
    }

    shared.draining.store(true, Ordering::SeqCst);
    if let Some(proxy) = proxy {
        let drain = config
            .proxy
            .as_ref()
            .map(|p| p.drain.clone())
            .unwrap_or_default();
        proxy.drain(drain.accept_grace, drain.grace_timeout).await;
    }
    tracing::info!(
        "stopping; the filter stays attached and pinned under {} (`xdpgate detach` removes it)",
        fixed.pin_dir.display()
    );
    sets.shutdown();
    let _ = admin_stop.send(());
    let _ = admin_task.await;
    Ok(())
}

/// The file's identity and contents' age: a change of any means "re-read".
/// Following symlinks on purpose: Kubernetes swaps a ConfigMap's target.
fn file_stamp(path: &Path) -> Option<(u64, u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.modified().ok()?, meta.len()))
}

/// The peers whose forwarded headers the proxy believes: the union of the
/// trusted sets' current contents.
fn trusted_peers(proxy: &crate::proxy::ProxyConfig, sets: &SetsService) -> TrustedPeers {
    let contents = sets.snapshot().contents();
    TrustedPeers::new(
        proxy
            .trusted
            .iter()
            .filter_map(|name| contents.get(name))
            .flatten()
            .copied(),
    )
}

/// Every loaded set as an address range set, for the proxy's `ip_allow`.
fn set_contents(sets: &SetsService) -> crate::proxy::middleware::Sets {
    sets.snapshot()
        .contents()
        .into_iter()
        .map(|(name, prefixes)| (name, TrustedPeers::new(prefixes)))
        .collect()
}

/// Starts the Ingress sources when the proxy has an `ingress` section.
fn ingress_runtime(config: &Config, state_dir: &Path, shared: &Shared) -> Option<IngressRuntime> {
    let section = config.proxy.as_ref()?.ingress.as_ref()?;
    let metrics = shared.ingress_metrics.clone()?;
    Some(IngressRuntime::start(section, state_dir, metrics))
}

/// The Ingress sources changed: the proxy runs the file's config with the
/// new Ingress routes merged in, and the status says what came of it.
fn apply_ingress(
    proxy: &Proxy,
    file: &crate::proxy::ProxyConfig,
    ingress: &mut IngressRuntime,
    shared: &Shared,
    state_dir: &Path,
) {
    // Until every source delivered there is nothing whole to apply; the
    // status shows why (the sources log their own errors).
    let status = if ingress.complete() {
        let status = ingress.apply(proxy, file);
        shared.ingress_loaded.store(true, Ordering::SeqCst);
        status
    } else {
        ingress.waiting_status()
    };
    shared.update(state_dir, |s| s.ingress = Some(status));
}

/// How often an interface that could not be attached is tried again.
const ATTACH_RETRY: Duration = Duration::from_secs(5);

struct Daemon {
    filter: Filter,
    layout: PinLayout,
    shared: Arc<Shared>,
    state_dir: PathBuf,
    /// The policy spec last applied, to skip applying the same one twice.
    applied: Option<policy::PolicySpec>,
    /// Whether the program has been put on the interfaces yet.
    attached: bool,
    last_attach: std::time::Instant,
}

impl Daemon {
    /// Recompiles the policy from the current set contents, applies it if it
    /// differs from the one in force, and attaches once one is in force.
    fn sets_changed(&mut self, config: &Config, sets: &SetsService, interfaces: &[String]) {
        let snapshot = sets.snapshot();
        let statuses = snapshot.statuses();
        self.shared.update(&self.state_dir, |s| s.sets = statuses);
        let contents: BTreeMap<String, Vec<IpNet>> = snapshot.contents();
        let spec = config.policy_spec(&contents);
        if self.applied.as_ref() != Some(&spec) {
            self.apply(&spec);
        }
        if !self.attached || self.attached_interfaces() != interfaces {
            self.attach(interfaces);
        }
    }

    /// An interface that could not be attached (it did not exist yet, say)
    /// is retried every few seconds.
    fn retry_attach(&mut self, interfaces: &[String]) {
        if self.attached
            && self.attached_interfaces() != interfaces
            && self.last_attach.elapsed() >= ATTACH_RETRY
        {
            self.attach(interfaces);
        }
    }

    fn attached_interfaces(&self) -> Vec<String> {
        let status = self.shared.status();
        status.interfaces.iter().map(|i| i.name.clone()).collect()
    }

    fn apply(&mut self, spec: &policy::PolicySpec) {
        let result = policy::compile(spec)
            .map_err(|e| format!("the new policy is refused: {e}"))
            .and_then(|compiled| {
                let started = std::time::Instant::now();
                tokio::task::block_in_place(|| self.filter.apply(&compiled))
                    .map(|generation| (generation, compiled, started.elapsed()))
                    .map_err(|e| format!("writing the policy into the kernel failed: {e}"))
            });
        match result {
            Ok((generation, compiled, took)) => {
                tracing::info!(
                    generation,
                    v4_prefixes = compiled.v4.len(),
                    v6_prefixes = compiled.v6.len(),
                    tcp_ports = compiled.tcp_ports.len(),
                    udp_ports = compiled.udp_ports.len(),
                    "policy applied in {took:.1?}"
                );
                self.applied = Some(spec.clone());
                self.shared.update(&self.state_dir, |s| {
                    s.policy.generation = generation;
                    s.policy.set_names = compiled.set_names.clone();
                    s.policy.applied_at = unix_now();
                    s.policy.last_error = None;
                });
            }
            Err(message) => {
                let in_force = self.filter.control().map(|c| c.armed()).unwrap_or(false);
                if in_force {
                    tracing::error!("{message}; the policy in force stays");
                } else {
                    tracing::error!(
                        "{message}; nothing is enforced yet, and the program is not attached \
                         until a policy can be applied"
                    );
                }
                self.shared.update(&self.state_dir, |s| {
                    s.policy.last_error = Some(message.clone());
                    s.policy.refused += 1;
                });
            }
        }
    }

    /// Puts the program on `interfaces` (adopting pinned links) and takes it
    /// off pinned interfaces no longer configured. Only once the maps are
    /// armed: a program with unarmed maps passes everything, and swapping it
    /// into a link that filters today would open a window.
    fn attach(&mut self, interfaces: &[String]) {
        let armed = self.filter.control().map(|c| c.armed()).unwrap_or(false);
        if !armed {
            return;
        }
        let mut attached = Vec::new();
        for interface in interfaces {
            match self.filter.attach_pinned(interface) {
                Ok((mode, how)) => {
                    match mode {
                        AttachMode::Driver => {
                            tracing::info!(interface = %interface, mode = mode.label(), "{} in driver (native) mode", how.label())
                        }
                        AttachMode::Generic => {
                            tracing::warn!(interface = %interface, mode = mode.label(), "{} in generic mode: the driver refused native XDP, so packets are judged later in the receive path", how.label())
                        }
                    }
                    attached.push(InterfaceStatus {
                        name: interface.clone(),
                        mode: mode.label().to_string(),
                        how: how.label().to_string(),
                    });
                }
                Err(e) => tracing::error!(interface = %interface, "cannot filter {interface}: {e}"),
            }
        }
        match self.layout.release_unlisted(interfaces) {
            Ok(released) => {
                for interface in released {
                    tracing::warn!(interface = %interface, "no longer configured: the filter is taken off {interface}");
                }
            }
            Err(e) => tracing::error!("cannot release interfaces no longer configured: {e}"),
        }
        self.attached = true;
        self.last_attach = std::time::Instant::now();
        self.shared
            .update(&self.state_dir, |s| s.interfaces = attached);
    }

    /// Re-reads the config. A bad file is refused and counted; the running
    /// config stays.
    async fn reload(
        &mut self,
        path: &Path,
        options: &RunOptions,
        fixed: &Fixed,
        sets: &SetsService,
        proxy: Option<&Proxy>,
        ingress: Option<&mut IngressRuntime>,
    ) -> Option<(Config, Vec<String>)> {
        let refused = |this: &mut Daemon, message: String| {
            tracing::error!("config reload refused, the running config stays: {message}");
            this.shared.update(&this.state_dir, |s| {
                s.reloads.failed += 1;
                s.reloads.last_at = unix_now();
                s.reloads.last_error = Some(message);
            });
            None
        };
        let config = match load_config(options) {
            Ok(config) => config,
            Err(e) => return refused(self, e.to_string()),
        };
        let interfaces = match resolve_interfaces(&config) {
            Ok(interfaces) => interfaces,
            Err(e) => return refused(self, format!("{e:#}")),
        };
        let new_fixed = Fixed {
            pin_dir: config.filter.pin_dir.clone(),
            state_dir: config.state_dir.clone(),
            admin_listen: config.admin.listen,
        };
        if &new_fixed != fixed {
            tracing::warn!(
                "{}: pin_dir, state_dir and admin.listen take effect only after a restart; \
                 the running values stay until then",
                path.display()
            );
        }
        // The proxy's new state is built whole before anything is swapped:
        // a certificate that does not load refuses the whole reload.
        match (proxy, &config.proxy) {
            (Some(proxy), Some(proxy_config)) => {
                // The Ingress routes are merged again over the new file.
                let effective = match (ingress, &proxy_config.ingress) {
                    (Some(ingress), Some(section)) => {
                        ingress.reconfigure(section);
                        let effective = ingress.effective(proxy_config).0;
                        let status = ingress.status();
                        self.shared
                            .update(&self.state_dir, |s| s.ingress = Some(status));
                        effective
                    }
                    _ => proxy_config.clone(),
                };
                let prepared = match proxy.prepare(&effective) {
                    Ok(prepared) => prepared,
                    Err(e) => return refused(self, format!("proxy: {e:#}")),
                };
                // A set the new config adds is loaded, and handed to the
                // proxy, before the routes that use it (ip_allow, trusted)
                // are in force: otherwise its first requests would be judged
                // against a set the proxy does not know yet.
                sets.reconfigure(config.filter.sets.clone()).await;
                proxy.set_trusted(trusted_peers(proxy_config, sets));
                proxy.set_sets(set_contents(sets));
                proxy.commit(prepared);
            }
            (None, None) => sets.reconfigure(config.filter.sets.clone()).await,
            _ => {
                tracing::warn!(
                    "{}: adding or removing the proxy section takes effect only after a restart",
                    path.display()
                );
                sets.reconfigure(config.filter.sets.clone()).await;
            }
        }
        tracing::info!("config reloaded from {}", path.display());
        self.shared.update(&self.state_dir, |s| {
            s.reloads.ok += 1;
            s.reloads.last_at = unix_now();
            s.reloads.last_error = None;
        });
        Some((config, interfaces))
    }
}
