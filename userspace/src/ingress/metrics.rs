//! The Ingress source's metrics: objects held per source and kind, Ingresses
//! currently invalid by reason, conflicts in the merged configuration, and
//! the Kubernetes watch's reconnects and relists. Labels carry only fixed
//! words (source, kind, reason), never object content.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// `files` or `kubernetes`.
    pub source: String,
    /// `Ingress`, `Secret` or `EndpointSlice`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

pub struct IngressMetrics {
    pub objects: Family<ObjectLabels, Gauge>,
    pub invalid: Family<ReasonLabels, Gauge>,
    pub conflicts: Gauge,
    pub routes: Gauge,
    pub watch_reconnects: Counter,
    pub watch_relists: Counter,
    pub source_errors: Gauge,
}

impl Default for IngressMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IngressMetrics {
    pub fn new() -> Self {
        IngressMetrics {
            objects: Family::default(),
            invalid: Family::default(),
            conflicts: Gauge::default(),
            routes: Gauge::default(),
            watch_reconnects: Counter::default(),
            watch_relists: Counter::default(),
            source_errors: Gauge::default(),
        }
    }

    /// Registers every instrument in `registry` (the daemon's `ingress` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        let metrics = self;
        registry.register(
            "objects",
            "Objects held by each Ingress source, by kind",
            metrics.objects.clone(),
        );
        registry.register(
            "invalid",
            "Ingresses of our class skipped as invalid (and TLS Secrets unusable), by reason",
            metrics.invalid.clone(),
        );
        registry.register(
            "conflicts",
            "Ingress routes or services left out because another definition wins",
            metrics.conflicts.clone(),
        );
        registry.register(
            "routes",
            "Routes from Ingresses in force",
            metrics.routes.clone(),
        );
        registry.register(
            "watch_reconnects",
            "Times the Kubernetes watch failed and was started again",
            metrics.watch_reconnects.clone(),
        );
        registry.register(
            "watch_relists",
            "Full lists of the watched kinds (start, 410 Gone, resync)",
            metrics.watch_relists.clone(),
        );
        registry.register(
            "source_errors",
            "Source problems now (unreadable files, a failing watch)",
            metrics.source_errors.clone(),
        );
    }
}
