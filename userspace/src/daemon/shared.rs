//! What the daemon shares with the admin listener: the status (kept current
//! in memory and written to `status.json` on every change for the CLI), the
//! pinned maps for counters and readiness, and the metrics registry. The
//! admin listener only reads it; the reconciler and the daemon's own start
//! and stop are its writers.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use prometheus_client::registry::Registry;

use crate::{
    admin::AdminSource,
    filter::{Counters, PinnedFilter},
    ingress::metrics::IngressMetrics,
    metrics,
    proxy::metrics::ProxyMetrics,
    status::{readiness, unix_now, DaemonStatus},
};

pub struct Shared {
    status: Mutex<DaemonStatus>,
    pinned: Mutex<Option<PinnedFilter>>,
    pin_dir: PathBuf,
    state_dir: PathBuf,
    /// The proxy's live request metrics, when a proxy is configured.
    pub proxy_metrics: Option<Arc<ProxyMetrics>>,
    ingress_metrics: Option<Arc<IngressMetrics>>,
    /// The daemon's one registry: the status collector at its root, the
    /// proxy's and the Ingress source's instruments as sub-registries.
    registry: Arc<Registry>,
}

impl Shared {
    pub fn new(status: DaemonStatus, state_dir: PathBuf, with_proxy: bool) -> Arc<Shared> {
        let proxy_metrics = with_proxy.then(|| Arc::new(ProxyMetrics::new()));
        let ingress_metrics = with_proxy.then(|| Arc::new(IngressMetrics::new()));
        Arc::new_cyclic(|me: &std::sync::Weak<Shared>| {
            let me = me.clone();
            let me_too = me.clone();
            let registry = metrics::daemon_registry(
                move || {
                    let shared = me.upgrade()?;
                    Some((shared.status(), shared.counters()))
                },
                move || {
                    let shared = me_too.upgrade()?;
                    shared.with_pinned(|p| p.sources().ok())
                },
                proxy_metrics.as_deref(),
                ingress_metrics.as_deref(),
            );
            Shared {
                pin_dir: status.pin_dir.clone(),
                status: Mutex::new(status),
                pinned: Mutex::new(None),
                state_dir,
                proxy_metrics,
                ingress_metrics,
                registry: Arc::new(registry),
            }
        })
    }

    pub fn ingress_metrics(&self) -> Option<&Arc<IngressMetrics>> {
        self.ingress_metrics.as_ref()
    }

    /// Changes the status and writes it out for the CLI.
    pub fn update(&self, change: impl FnOnce(&mut DaemonStatus)) {
        let snapshot = {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut status);
            status.updated_at = unix_now();
            status.clone()
        };
        if let Err(e) = snapshot.write_to(&self.state_dir) {
            tracing::warn!(
                "cannot write {}: {e}; `xdpgate status` will be out of date",
                DaemonStatus::path_in(&self.state_dir).display()
            );
        }
    }

    /// Opens the maps the daemon has just finished pinning, for counters,
    /// top sources and readiness. Called once the load has pinned every map:
    /// a handle opened earlier (lazily, on the first scrape or probe) could
    /// catch the pins half-written, without the per-source map, or hold the
    /// maps a replaced build left behind, and would then be read for the
    /// daemon's whole life.
    pub fn filter_pinned(&self) -> Result<(), crate::filter::FilterError> {
        let opened = PinnedFilter::open(&self.pin_dir)?;
        *self.pinned.lock().unwrap_or_else(|e| e.into_inner()) = Some(opened);
        Ok(())
    }

    /// `read` on the maps [`Shared::filter_pinned`] opened; `None` before.
    fn with_pinned<T>(&self, read: impl FnOnce(&PinnedFilter) -> Option<T>) -> Option<T> {
        let pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
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

    fn metrics(&self) -> String {
        metrics::encode(&self.registry)
    }

    fn readiness(&self) -> Result<(), Vec<String>> {
        let armed = self
            .with_pinned(|p| p.control().ok())
            .is_some_and(|c| c.armed());
        let live: Vec<String> = self
            .with_pinned(|p| Some(p.links()))
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.live)
            .map(|l| l.interface)
            .collect();
        readiness(&self.status(), armed, &live)
    }
}
