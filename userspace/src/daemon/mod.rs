//! `xdpgate run`: the long-running daemon, built like a Kubernetes controller.
//!
//! * [`desired`]: the inputs (the config file, the sets' contents, Ingress
//!   snapshots, the interface table) and the pure function from them to
//!   what should be in force.
//! * [`reconcile`]: brings the sets subsystem, the kernel and the proxy to
//!   that, changing only what differs from what it applied last, in a fixed
//!   order. It is the proxy's and the kernel's only writer.
//! * [`controller`]: one handler per kind of event, each a single call into
//!   the reconciler; a change the reconciler refuses leaves the inputs as
//!   they were.
//! * [`writers`]: the sets, kernel and proxy behind small traits, so the
//!   model test (`model_tests`) can drive the same code against fakes.
//!
//! This module starts things in order (admin listener, sets, the pinned
//! filter, the first reconcile, the proxy, the Ingress sources), then its
//! select loop only gathers events. SIGTERM and SIGINT drain the proxy and
//! end the process but leave the filter attached and pinned; `xdpgate
//! detach` removes it. `docs/architecture.md` walks a reload through it.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    admin::{self, AdminSource},
    config::{self, Config},
    filter::{Adoption, Filter, PinLayout},
    ingress::{runtime::IngressRuntime, runtime::TLS_DIR, source::Snapshot},
    proxy::server::Proxy,
    sets::SetsService,
    status::{unix_now, DaemonStatus, ReadinessStatus},
};

pub mod controller;
pub mod desired;
#[cfg(test)]
mod model_tests;
pub mod reconcile;
pub mod shared;
pub mod writers;

use controller::Controller;
use desired::{IngressInput, Inputs};
use reconcile::{AppliedProxy, Reconciler};
use shared::Shared;
use writers::{proxy_sets, KernelFilter, RunningProxy};

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
    /// Replaces the address of `admin.listen`, keeping its port.
    pub admin_ip: Option<std::net::IpAddr>,
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
    if let Some(ip) = options.admin_ip {
        config.admin.listen.set_ip(ip);
    }
    Ok(config)
}

/// The interfaces to filter: the configured ones, or the one that carries
/// the default route.
fn resolve_interfaces(config: &Config) -> Result<Vec<String>> {
    if config.filter.interfaces.is_empty() {
        Ok(vec![crate::filter::default_route_interface()?])
    } else {
        Ok(config.filter.interfaces.clone())
    }
}

/// The parts of the config that can only change with a restart.
#[derive(Clone, Debug, PartialEq)]
struct Fixed {
    pin_dir: PathBuf,
    state_dir: PathBuf,
    admin_listen: SocketAddr,
}

impl Fixed {
    fn of(config: &Config) -> Fixed {
        Fixed {
            pin_dir: config.filter.pin_dir.clone(),
            state_dir: config.state_dir.clone(),
            admin_listen: config.admin.listen,
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: RunOptions) -> Result<()> {
    // Stamped before it is read: an edit that lands while the daemon starts
    // is seen as a change and re-read, never taken for the config in force.
    let config_stamp = options.config.as_deref().and_then(file_stamp);
    let config = load_config(&options)?;
    crate::logging::init(&config.log.level, config.log.format);
    match &options.config {
        Some(path) => {
            tracing::info!(config = %path.display(), "xdpgate {} starting", env!("CARGO_PKG_VERSION"))
        }
        None => tracing::info!(
            "xdpgate {} starting with the embedded default config",
            env!("CARGO_PKG_VERSION")
        ),
    }
    let fixed = Fixed::of(&config);
    let shared = Shared::new(
        DaemonStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: unix_now(),
            config_path: options.config.clone(),
            pin_dir: fixed.pin_dir.clone(),
            readiness: ReadinessStatus {
                entrypoints_bound: config.proxy.is_none(),
                ingress_loaded: true,
                draining: false,
            },
            ..DaemonStatus::default()
        },
        fixed.state_dir.clone(),
        config.proxy.is_some(),
    );
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

    let mut daemon = Daemon::start(options, config, config_stamp, fixed, shared).await?;
    let served = daemon.serve().await;
    daemon.stop().await;
    let _ = admin_stop.send(());
    let _ = admin_task.await;
    served
}

/// What the select loop heard.
enum Event {
    Sets,
    Hangup,
    Tick,
    /// Boxed: a snapshot carries every object of every kind it watches.
    Ingress(Box<Snapshot>),
    Stop,
}

struct Daemon {
    options: RunOptions,
    fixed: Fixed,
    shared: Arc<Shared>,
    controller: Controller<SetsService, KernelFilter, RunningProxy>,
    ingress: Option<IngressRuntime>,
    config_stamp: Option<FileStamp>,
}

impl Daemon {
    /// Sets, then the pinned filter, then the first reconcile (policy before
    /// attach, so the first packet is judged by a real policy), then the
    /// proxy and the Ingress sources.
    async fn start(
        options: RunOptions,
        config: Config,
        config_stamp: Option<FileStamp>,
        fixed: Fixed,
        shared: Arc<Shared>,
    ) -> Result<Daemon> {
        let sets = SetsService::start(
            config.filter.sets.clone(),
            fixed.state_dir.clone(),
            config.watch_interval,
        )
        .await;
        let layout = PinLayout::new(&fixed.pin_dir);
        let filter = Filter::open_pinned(&layout)?;
        log_adoption(filter.adoption(), &layout);
        shared.filter_pinned()?;
        let inputs = Inputs {
            interfaces: resolve_interfaces(&config)?,
            config,
            present: BTreeMap::new(),
            sets: sets.snapshot(),
            ingress: IngressInput::default(),
            tls_dir: fixed.state_dir.join(TLS_DIR),
        };
        let kernel = KernelFilter { filter, layout };
        let reconciler = Reconciler::new(sets, kernel, shared.clone());
        let mut controller = Controller::new(inputs, reconciler, shared.clone());
        let desired = controller.start().await.map_err(anyhow::Error::msg)?;
        if let (Some(want), Some(metrics)) = (&desired.proxy, &shared.proxy_metrics) {
            let proxy = Proxy::start(
                &want.config,
                crate::proxy::forwarded::TrustedPeers::new(want.trusted.iter().copied()),
                proxy_sets(&want.sets),
                metrics.clone(),
            )
            .await?;
            let running = RunningProxy {
                proxy,
                tls_dir: fixed.state_dir.join(TLS_DIR),
            };
            controller
                .reconciler_mut()
                .adopt_proxy(running, AppliedProxy::started_with(want));
        }
        shared.update(|s| s.readiness.entrypoints_bound = true);
        let mut daemon = Daemon {
            config_stamp,
            options,
            fixed,
            shared,
            controller,
            ingress: None,
        };
        daemon.follow_ingress_section();
        Ok(daemon)
    }

    /// The select loop: it only gathers events and hands each to the
    /// controller.
    async fn serve(&mut self) -> Result<()> {
        let mut set_updates = self.controller.reconciler().sets().subscribe();
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut every = self.controller.inputs().config.watch_interval;
        let mut watch = ticker(every);
        loop {
            let event = tokio::select! {
                changed = set_updates.changed() => match changed {
                    Ok(()) => Event::Sets,
                    Err(_) => anyhow::bail!("the sets subsystem stopped"),
                },
                _ = hangup.recv() => Event::Hangup,
                _ = watch.tick() => Event::Tick,
                snapshot = next_snapshot(self.ingress.as_mut()) => Event::Ingress(Box::new(snapshot)),
                _ = terminate.recv() => Event::Stop,
                _ = interrupt.recv() => Event::Stop,
            };
            match event {
                Event::Sets => self.controller.sets_changed().await,
                Event::Hangup => {
                    tracing::info!("SIGHUP: reloading the config and refreshing every set");
                    self.controller.reconciler().sets().refresh_now();
                    self.reload().await;
                }
                Event::Tick => {
                    if self.config_file_changed() {
                        tracing::info!("the config file changed; reloading");
                        self.reload().await;
                    }
                    self.controller.tick().await;
                }
                Event::Ingress(snapshot) => self.controller.ingress_changed(&snapshot).await,
                Event::Stop => return Ok(()),
            }
            if self.controller.inputs().config.watch_interval != every {
                every = self.controller.inputs().config.watch_interval;
                watch = ticker(every);
            }
        }
    }

    /// Re-reads the config file: one call into the controller, which
    /// reconciles with it or refuses it whole.
    async fn reload(&mut self) {
        let Some(path) = self.options.config.clone() else {
            return;
        };
        let loaded = load_config(&self.options)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                let interfaces = resolve_interfaces(&config).map_err(|e| format!("{e:#}"))?;
                Ok((config, interfaces))
            });
        if let Ok((config, _)) = &loaded {
            if Fixed::of(config) != self.fixed {
                tracing::warn!(
                    "{}: pin_dir, state_dir and admin.listen take effect only after a restart; \
                     the running values stay until then",
                    path.display()
                );
            }
        }
        if self.controller.reload(loaded).await {
            tracing::info!("config reloaded from {}", path.display());
            self.follow_ingress_section();
        }
    }

    /// Starts, restarts or stops the Ingress sources to match the config in force.
    fn follow_ingress_section(&mut self) {
        let config = &self.controller.inputs().config;
        let section = config.proxy.as_ref().and_then(|p| p.ingress.as_ref());
        match (
            section,
            self.ingress.as_mut(),
            self.shared.ingress_metrics(),
        ) {
            (Some(section), Some(running), _) => running.reconfigure(section),
            (Some(section), None, Some(metrics)) => {
                self.ingress = Some(IngressRuntime::start(section, metrics.clone()))
            }
            (None, Some(_), _) => {
                tracing::info!("proxy.ingress removed: Ingress routes are no longer read");
                self.ingress = None;
            }
            _ => {}
        }
    }

    fn config_file_changed(&mut self) -> bool {
        let stamp = self.options.config.as_deref().and_then(file_stamp);
        let changed = stamp != self.config_stamp;
        self.config_stamp = stamp;
        changed
    }

    /// Drains the proxy; the filter stays attached and pinned.
    async fn stop(mut self) {
        self.shared.update(|s| s.readiness.draining = true);
        if let Some(running) = self.controller.reconciler_mut().take_proxy() {
            let drain = self
                .controller
                .inputs()
                .config
                .proxy
                .as_ref()
                .map(|p| p.drain.clone())
                .unwrap_or_default();
            running
                .proxy
                .drain(drain.accept_grace, drain.grace_timeout)
                .await;
        }
        tracing::info!(
            "stopping; the filter stays attached and pinned under {} (`xdpgate detach` removes it)",
            self.fixed.pin_dir.display()
        );
        self.controller.reconciler().sets().shutdown();
    }
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut watch = tokio::time::interval(every);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watch
}

/// The Ingress sources' next snapshot; never, without them.
async fn next_snapshot(ingress: Option<&mut IngressRuntime>) -> Snapshot {
    match ingress {
        Some(ingress) => ingress.changed().await,
        None => std::future::pending().await,
    }
}

fn log_adoption(adoption: &Adoption, layout: &PinLayout) {
    match adoption {
        Adoption::Reused => tracing::info!(
            "adopted the maps pinned under {}: counters and the policy in force carry on",
            layout.maps_dir().display()
        ),
        Adoption::Fresh => tracing::info!(
            "no filter pinned under {}; starting fresh",
            layout.root().display()
        ),
        Adoption::Replaced { reason } => tracing::warn!(
            "replaced the pinned maps under {} ({reason})",
            layout.maps_dir().display()
        ),
        Adoption::Private => {}
    }
}

type FileStamp = (u64, u64, SystemTime, u64);

/// The file's identity and contents' age: a change of any means "re-read".
/// Following symlinks on purpose: Kubernetes swaps a ConfigMap's target.
fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.modified().ok()?, meta.len()))
}
