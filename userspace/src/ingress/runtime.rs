//! The daemon's handle on the running Ingress sources: it starts them,
//! restarts them when `proxy.ingress` changes, and hands over each new
//! [`Snapshot`]. What a snapshot means for the proxy is decided by the
//! daemon (`crate::daemon::desired`), and only the daemon's reconciler
//! writes the proxy.
use std::sync::Arc;

use super::{
    metrics::IngressMetrics,
    source::{IngressSources, Snapshot},
};
use crate::proxy::IngressConfig;

/// The directory under the state directory that holds Secret material.
pub const TLS_DIR: &str = "ingress-tls";

pub struct IngressRuntime {
    config: IngressConfig,
    sources: IngressSources,
    metrics: Arc<IngressMetrics>,
}

impl IngressRuntime {
    pub fn start(config: &IngressConfig, metrics: Arc<IngressMetrics>) -> Self {
        IngressRuntime {
            config: config.clone(),
            sources: IngressSources::start(config, metrics.clone()),
            metrics,
        }
    }

    /// Follows a new `proxy.ingress`: the sources restart when it changed.
    /// Restarted sources start incomplete; the daemon keeps the last
    /// complete objects until they deliver, so a reload does not take the
    /// Ingress routes away for a moment.
    pub fn reconfigure(&mut self, config: &IngressConfig) {
        if *config != self.config {
            tracing::info!("proxy.ingress changed; restarting the Ingress sources");
            self.config = config.clone();
            self.sources = IngressSources::start(config, self.metrics.clone());
        }
    }

    /// Waits for the sources' next snapshot. Cancel-safe. Never returns if
    /// the sources ended (they only end when dropped).
    pub async fn changed(&mut self) -> Snapshot {
        if self.sources.updates.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.sources.updates.borrow_and_update().clone()
    }
}
