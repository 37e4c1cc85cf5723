//! The proxy's request metrics, named after Traefik's so that dashboards
//! migrate by replacing the prefix: requests and durations per entrypoint,
//! router and service, open connections, TLS handshake errors, upstream
//! errors by kind, and certificate expiry.
//!
//! These are live instruments (updated per request); [`ProxyMetrics::register`]
//! puts them in the daemon's one registry ([`crate::metrics::daemon_registry`]).
use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

// The per-request label sets hold shared names (`Arc<str>`) and static
// labels, so that counting a request clones no string: with six families
// touched per request, owned `String`s were a dozen allocations each time.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntrypointLabels {
    pub entrypoint: Arc<str>,
    pub code: u16,
    pub method: &'static str,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouterLabels {
    pub router: Arc<str>,
    pub service: Arc<str>,
    pub code: u16,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: Arc<str>,
    pub code: u16,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntrypointOnly {
    pub entrypoint: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouterOnly {
    pub router: Arc<str>,
    pub service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceOnly {
    pub service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub entrypoint: String,
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub service: String,
    pub kind: String,
}

/// A request the proxy answered itself: where the error came from
/// (`client`, `policy`, `upstream`, `internal`) and its kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyErrorLabels {
    pub entrypoint: String,
    pub source: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub entrypoint: String,
    /// The certificate's DNS names, comma-separated.
    pub names: String,
    pub default: String,
}

/// A middleware's own answer (401, 403, 413, 429, a redirect). No client
/// address or user name: those are not labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub middleware: String,
    pub kind: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MiddlewareOnly {
    pub middleware: String,
}

/// A shared rate limit's store failing: `outcome` is the fallback applied
/// (`local`, `allow` or `deny`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabels {
    pub middleware: String,
    pub outcome: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct ProxyMetrics {
    pub entrypoint_requests: Family<EntrypointLabels, Counter>,
    pub entrypoint_duration: HistogramFamily<EntrypointOnly>,
    pub router_requests: Family<RouterLabels, Counter>,
    pub router_duration: HistogramFamily<RouterOnly>,
    pub service_requests: Family<ServiceLabels, Counter>,
    pub service_duration: HistogramFamily<ServiceOnly>,
    pub open_connections: Family<ConnectionLabels, Gauge>,
    pub tls_handshake_errors: Family<EntrypointOnly, Counter>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub proxy_errors: Family<ProxyErrorLabels, Counter>,
    pub certs_not_after: Family<CertLabels, Gauge>,
    pub cert_reload_failures: Family<EntrypointOnly, Gauge>,
    pub middleware_rejections: Family<RejectionLabels, Counter>,
    pub rate_limit_keys: Family<MiddlewareOnly, Gauge>,
    pub middleware_file_errors: Family<MiddlewareOnly, Counter>,
    pub rate_limit_store_errors: Family<StoreErrorLabels, Counter>,
    /// Certificate gauges are replaced wholesale when certificates change.
    cert_lock: Mutex<()>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        ProxyMetrics {
            entrypoint_requests: Family::default(),
            entrypoint_duration: Family::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            ),
            router_requests: Family::default(),
            router_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            service_requests: Family::default(),
            service_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            open_connections: Family::default(),
            tls_handshake_errors: Family::default(),
            upstream_errors: Family::default(),
            proxy_errors: Family::default(),
            certs_not_after: Family::default(),
            cert_reload_failures: Family::default(),
            middleware_rejections: Family::default(),
            rate_limit_keys: Family::default(),
            middleware_file_errors: Family::default(),
            rate_limit_store_errors: Family::default(),
            cert_lock: Mutex::new(()),
        }
    }

    /// Registers every instrument in `registry` (the daemon's, prefix `xdpgate`).
    pub fn register(&self, registry: &mut Registry) {
        let metrics = self;
        registry.register(
            "entrypoint_requests",
            "Requests received per entrypoint, status code, method and protocol",
            metrics.entrypoint_requests.clone(),
        );
        registry.register(
            "entrypoint_request_duration_seconds",
            "Time from request head to the end of the response, per entrypoint",
            metrics.entrypoint_duration.clone(),
        );
        registry.register(
            "router_requests",
            "Requests per router (route), service, status code and method",
            metrics.router_requests.clone(),
        );
        registry.register(
            "router_request_duration_seconds",
            "Time from request head to the end of the response, per router",
            metrics.router_duration.clone(),
        );
        registry.register(
            "service_requests",
            "Requests per upstream service, status code and method",
            metrics.service_requests.clone(),
        );
        registry.register(
            "service_request_duration_seconds",
            "Time from request head to the end of the response, per service",
            metrics.service_duration.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now, per entrypoint and protocol",
            metrics.open_connections.clone(),
        );
        registry.register(
            "tls_handshake_errors",
            "TLS handshakes that failed or timed out (including missing client certificates)",
            metrics.tls_handshake_errors.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that failed upstream, by service and kind \
             (no_endpoint, connect, connect_timeout, response_timeout, protocol)",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "proxy_errors",
            "Requests the proxy answered itself instead of an upstream, by entrypoint, \
             source (client, policy, upstream, internal) and kind",
            metrics.proxy_errors.clone(),
        );
        registry.register(
            "tls_certs_not_after",
            "Expiry (Unix seconds) of every certificate an entrypoint serves",
            metrics.certs_not_after.clone(),
        );
        registry.register(
            "tls_cert_reload_failures",
            "Certificate files that changed but could not be loaded; the old certificate stays",
            metrics.cert_reload_failures.clone(),
        );
        registry.register(
            "middleware_rejections",
            "Requests a middleware answered itself, by middleware name, kind and status code",
            metrics.middleware_rejections.clone(),
        );
        registry.register(
            "rate_limit_keys",
            "Client keys a rate_limit middleware remembers now (at most its max_keys)",
            metrics.rate_limit_keys.clone(),
        );
        registry.register(
            "middleware_file_errors",
            "Files a middleware depends on (htpasswd) that changed but could not be used; \
             the old contents stay",
            metrics.middleware_file_errors.clone(),
        );
        registry.register(
            "rate_limit_store_errors",
            "Requests a shared rate_limit decided without its store (no answer within the \
             timeout), by middleware and the fallback applied",
            metrics.rate_limit_store_errors.clone(),
        );
    }

    /// Replaces the certificate gauges with `certs` (entrypoint, names,
    /// default, not_after) and the reload failure counts.
    pub fn set_certificates(
        &self,
        certs: impl IntoIterator<Item = (String, Vec<String>, bool, i64)>,
        failures: impl IntoIterator<Item = (String, u64)>,
    ) {
        let _guard = self.cert_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.certs_not_after.clear();
        for (entrypoint, names, default, not_after) in certs {
            self.certs_not_after
                .get_or_create(&CertLabels {
                    entrypoint,
                    names: names.join(","),
                    default: default.to_string(),
                })
                .set(not_after);
        }
        for (entrypoint, count) in failures {
            self.cert_reload_failures
                .get_or_create(&EntrypointOnly {
                    entrypoint: entrypoint.into(),
                })
                .set(count as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_metrics_use_traefik_like_names_and_labels() {
        let metrics = ProxyMetrics::new();
        metrics
            .entrypoint_requests
            .get_or_create(&EntrypointLabels {
                entrypoint: "websecure".into(),
                code: 200,
                method: "GET",
                protocol: "http",
            })
            .inc();
        metrics
            .router_duration
            .get_or_create(&RouterOnly {
                router: "api".into(),
                service: "api".into(),
            })
            .observe(0.02);
        metrics.set_certificates(
            [(
                "websecure".to_string(),
                vec!["a.example".to_string()],
                true,
                1_900_000_000,
            )],
            [("websecure".to_string(), 2)],
        );
        let mut registry = Registry::with_prefix("xdpgate");
        metrics.register(&mut registry);
        let text = crate::metrics::encode(&registry);
        assert!(text.contains(
            "xdpgate_entrypoint_requests_total{entrypoint=\"websecure\",code=\"200\",method=\"GET\",protocol=\"http\"} 1"
        ), "{text}");
        assert!(text.contains("xdpgate_router_request_duration_seconds_bucket{le=\"0.025\",router=\"api\",service=\"api\"} 1"), "{text}");
        assert!(text.contains(
            "xdpgate_tls_certs_not_after{entrypoint=\"websecure\",names=\"a.example\",default=\"true\"} 1900000000"
        ), "{text}");
    }
}
