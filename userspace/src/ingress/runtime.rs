//! The daemon's side of the Ingress source: it owns the running sources,
//! turns their latest snapshot and the config file's `proxy:` section into
//! the configuration the proxy runs, writes the TLS Secrets out, and keeps
//! the status and metrics current. Problems and conflicts are logged when
//! they appear and when they go away, not on every change.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    merge::merge,
    metrics::{IngressMetrics, ReasonLabels},
    secrets,
    source::{IngressSources, Snapshot},
    translate::translate,
    IngressConfig,
};
use crate::{
    proxy::{server::Proxy, tls::check_pair, ProxyConfig},
    status::{unix_now, IngressStatus},
};

/// The directory under the state directory that holds Secret material.
pub const TLS_DIR: &str = "ingress-tls";

pub struct IngressRuntime {
    config: IngressConfig,
    sources: IngressSources,
    snapshot: Snapshot,
    tls_dir: PathBuf,
    metrics: Arc<IngressMetrics>,
    status: IngressStatus,
}

impl IngressRuntime {
    pub fn start(config: &IngressConfig, state_dir: &Path, metrics: Arc<IngressMetrics>) -> Self {
        IngressRuntime {
            config: config.clone(),
            sources: IngressSources::start(config, metrics.clone()),
            snapshot: Snapshot::default(),
            tls_dir: state_dir.join(TLS_DIR),
            metrics,
            status: IngressStatus::default(),
        }
    }

    /// Follows a new `proxy.ingress`: the sources restart when it changed.
    /// The last snapshot stays until the new sources deliver, so a reload
    /// does not take the Ingress routes away for a moment.
    pub fn reconfigure(&mut self, config: &IngressConfig) {
        if *config != self.config {
            tracing::info!("proxy.ingress changed; restarting the Ingress sources");
            self.config = config.clone();
            self.sources = IngressSources::start(config, self.metrics.clone());
        }
    }

    /// Waits for the sources' next snapshot. Cancel-safe. Never returns if
    /// the sources ended (they only end when dropped).
    pub async fn changed(&mut self) {
        if self.sources.updates.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let next = self.sources.updates.borrow_and_update().clone();
        // Restarted sources start incomplete: the last whole set of objects
        // stays in force (with the new problems) until they deliver.
        if next.complete || !self.snapshot.complete {
            self.snapshot = next;
        } else {
            self.snapshot.problems = next.problems;
        }
    }

    /// Every source has delivered once (see [`Snapshot::complete`]).
    pub fn complete(&self) -> bool {
        self.snapshot.complete
    }

    /// The status while the sources have not all delivered: only their
    /// problems.
    pub fn waiting_status(&self) -> IngressStatus {
        IngressStatus {
            problems: self.snapshot.problems.clone(),
            ..IngressStatus::default()
        }
    }

    pub fn status(&self) -> IngressStatus {
        self.status.clone()
    }

    /// Runs `file` with the Ingress routes merged in on `proxy`. A merged
    /// config the proxy refuses leaves the running one in force, and the
    /// returned status says so.
    pub fn apply(&mut self, proxy: &Proxy, file: &ProxyConfig) -> IngressStatus {
        let (effective, certs_changed) = self.effective(file);
        let mut status = self.status();
        match proxy.reload(&effective) {
            Ok(()) => {
                // Same paths, new content: the TLS loader re-reads it now.
                if certs_changed {
                    proxy.reload_certificates();
                }
                tracing::info!(
                    ingresses = status.ingresses,
                    routes = status.routes,
                    "Ingress routes applied"
                );
            }
            Err(e) => {
                let message = format!(
                    "the proxy refused the configuration with the Ingress routes, the previous \
                     one stays: {e:#}"
                );
                tracing::error!("{message}");
                status.problems.push(message);
            }
        }
        status
    }

    /// The configuration the proxy should run: `file` with the Ingress
    /// routes, services and certificates merged in. Writes the TLS Secrets
    /// first; returns whether any certificate file changed.
    pub fn effective(&mut self, file: &ProxyConfig) -> (ProxyConfig, bool) {
        // An Ingress may name only middlewares the config file defines.
        let known: BTreeSet<String> = file.middlewares.keys().cloned().collect();
        let translation = translate(&self.snapshot.objects, &self.config, &known, &|c, k| {
            check_pair(c, k)
        });
        let mut certs_changed = false;
        let mut translation = translation;
        if let Err(e) = secrets::write_all(&self.tls_dir, &translation.certs)
            .map(|changed| certs_changed = changed)
        {
            tracing::error!(
                "cannot write the Ingress TLS Secrets under {}: {e}; their hosts get the \
                 entrypoint's other certificates",
                self.tls_dir.display()
            );
            translation.certs.clear();
        }
        let merged = merge(file, &translation, &self.tls_dir);

        let mut problems = self.snapshot.problems.clone();
        problems.extend(translation.problems.iter().map(|p| p.to_string()));
        let mut invalid: BTreeMap<&str, i64> = BTreeMap::new();
        for problem in &translation.problems {
            *invalid.entry(problem.reason).or_default() += 1;
        }
        self.metrics.invalid.clear();
        for (reason, n) in invalid {
            self.metrics
                .invalid
                .get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                })
                .set(n);
        }
        self.metrics.conflicts.set(merged.conflicts.len() as i64);
        self.metrics.routes.set(merged.routes as i64);
        log_changes("Ingress problem", &self.status.problems, &problems);
        log_changes(
            "Ingress conflict",
            &self.status.conflicts,
            &merged.conflicts,
        );
        for warning in &translation.warnings {
            if !self.status.warnings.contains(warning) {
                tracing::warn!("{warning}");
            }
        }
        self.status = IngressStatus {
            ingresses: translation.valid,
            routes: merged.routes,
            certificates: translation.certs.len(),
            problems,
            conflicts: merged.conflicts,
            warnings: translation.warnings,
            applied_at: unix_now(),
        };
        (merged.config, certs_changed)
    }
}

fn log_changes(what: &str, before: &[String], now: &[String]) {
    for new in now.iter().filter(|p| !before.contains(p)) {
        tracing::error!("{what}: {new}");
    }
    for gone in before.iter().filter(|p| !now.contains(p)) {
        tracing::info!("{what} resolved: {gone}");
    }
}
