//! The Ingress sources running together: the files source polled every
//! `poll_interval` and the Kubernetes watch, combined into one [`Snapshot`]
//! that the daemon receives through a watch channel whenever it changes.
//! Dropping the [`IngressSources`] stops both.
use std::sync::Arc;

use tokio::sync::watch;

use super::{files::FileSource, kube, metrics::ObjectLabels, Objects};
use crate::{ingress::metrics::IngressMetrics, proxy::IngressConfig};

/// Both sources' objects, and what is wrong with the sources themselves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The files' objects with the cluster's over them.
    pub objects: Objects,
    /// Unreadable files, a failing watch, an Ingress both sources define.
    pub problems: Vec<String>,
    /// Every source has delivered once: the files were read and every
    /// watch has listed. Until then the daemon does not call itself ready.
    pub complete: bool,
}

pub struct IngressSources {
    pub updates: watch::Receiver<Snapshot>,
    task: tokio::task::JoinHandle<()>,
    kube_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for IngressSources {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(task) = &self.kube_task {
            task.abort();
        }
    }
}

impl IngressSources {
    pub fn start(config: &IngressConfig, metrics: Arc<IngressMetrics>) -> IngressSources {
        let (tx, updates) = watch::channel(Snapshot::default());
        let mut files = config.files.as_deref().map(FileSource::new);
        let (mut cluster, kube_task) = match &config.kubernetes {
            Some(k) => {
                let gateway = config.gateway.as_ref().map(|_| config.clone());
                let (rx, task) = kube::spawn(
                    k.clone(),
                    config.endpoint_slices,
                    gateway,
                    config.class.clone(),
                    metrics.clone(),
                );
                (Some(rx), Some(task))
            }
            None => (None, None),
        };
        let poll_interval = config.poll_interval;
        let task = tokio::spawn(async move {
            let mut complete = false;
            let mut ticks = tokio::time::interval(poll_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let changed = tokio::select! {
                    _ = ticks.tick(), if files.is_some() => {
                        files.as_mut().is_some_and(FileSource::poll)
                    }
                    changed = async { cluster.as_mut()?.changed().await.ok() }, if cluster.is_some() => {
                        if changed.is_none() {
                            cluster = None;
                        }
                        true
                    }
                    _ = tx.closed() => return,
                };
                // Until complete, every turn may be the one that completes
                // (an empty directory changes nothing, but is read).
                if changed || !complete {
                    let snapshot = combine(files.as_ref(), cluster.as_ref(), &metrics);
                    complete = snapshot.complete;
                    tx.send_if_modified(|s| {
                        let modified = *s != snapshot;
                        *s = snapshot;
                        modified
                    });
                }
            }
        });
        IngressSources {
            updates,
            task,
            kube_task,
        }
    }
}

fn combine(
    files: Option<&FileSource>,
    cluster: Option<&watch::Receiver<kube::KubeState>>,
    metrics: &IngressMetrics,
) -> Snapshot {
    let mut snapshot = Snapshot {
        complete: files.is_none_or(FileSource::polled) && cluster.is_none_or(|c| c.borrow().synced),
        ..Snapshot::default()
    };
    if let Some(files) = files {
        let objects = files.objects();
        count(metrics, "files", &objects);
        snapshot.objects = objects;
        snapshot.problems.extend(files.problems());
    }
    if let Some(cluster) = cluster {
        let state = cluster.borrow();
        count(metrics, "kubernetes", &state.objects);
        for key in state.objects.ingresses.keys() {
            if snapshot.objects.ingresses.contains_key(key) {
                snapshot.problems.push(format!(
                    "Ingress {}/{} is both in the files and in the cluster; the cluster's is used",
                    key.0, key.1
                ));
            }
        }
        snapshot.objects.extend(&state.objects);
        snapshot.problems.extend(state.problems.iter().cloned());
        if !state.synced && state.problems.is_empty() {
            snapshot
                .problems
                .push("the Kubernetes source has not listed every object yet".to_string());
        }
    }
    metrics.source_errors.set(snapshot.problems.len() as i64);
    snapshot
}

fn count(metrics: &IngressMetrics, source: &str, objects: &Objects) {
    for (kind, n) in [
        ("Ingress", objects.ingresses.len()),
        ("Secret", objects.secrets.len()),
        ("EndpointSlice", objects.endpoint_slices.len()),
        ("Middleware", objects.middlewares.len()),
        ("IngressClass", objects.ingress_classes.len()),
        ("GatewayClass", objects.gateway.classes.len()),
        ("Gateway", objects.gateway.gateways.len()),
        ("HTTPRoute", objects.gateway.http_routes.len()),
        ("ReferenceGrant", objects.gateway.reference_grants.len()),
    ] {
        metrics
            .objects
            .get_or_create(&ObjectLabels {
                source: source.to_string(),
                kind: kind.to_string(),
            })
            .set(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_complete_once_the_files_were_read_and_the_cluster_listed() {
        let metrics = IngressMetrics::new();
        let dir = tempfile::tempdir().unwrap();
        let mut files = FileSource::new(dir.path());
        assert!(!combine(Some(&files), None, &metrics).complete);
        // An empty directory changes nothing, but it has been read.
        assert!(!files.poll());
        assert!(combine(Some(&files), None, &metrics).complete);

        let (tx, rx) = watch::channel(kube::KubeState::default());
        let waiting = combine(Some(&files), Some(&rx), &metrics);
        assert!(!waiting.complete);
        assert_eq!(
            waiting.problems,
            ["the Kubernetes source has not listed every object yet"]
        );
        tx.send_modify(|s| s.synced = true);
        let listed = combine(Some(&files), Some(&rx), &metrics);
        assert!(listed.complete && listed.problems.is_empty());
    }
}
