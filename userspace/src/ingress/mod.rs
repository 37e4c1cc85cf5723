//! Kubernetes Ingress objects as a source of routes, next to the config
//! file's. Objects come from a directory of YAML files ([`files`]) and from
//! the API server ([`kube`]); [`translate`] turns the Ingresses of our class
//! (with the Secrets and EndpointSlices they refer to) into routes, services
//! and certificates, and [`merge`] lays those over the file's `proxy:`
//! section, reporting every conflict instead of quietly picking one. The
//! daemon hands the merged configuration to `Proxy::reload` whenever either
//! side changes.
//!
//! What an Ingress means is decided in one place, [`translate`], as a pure
//! function of the objects, so that both sources and the tests share it.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use k8s_openapi::api::{core::v1::Secret, discovery::v1::EndpointSlice, networking::v1::Ingress};

pub mod files;
pub mod kube;
pub mod merge;
pub mod metrics;
pub mod runtime;
pub mod secrets;
pub mod source;
pub mod translate;
#[cfg(test)]
mod translate_tests;

/// `proxy.ingress`.
#[derive(Clone, Debug, PartialEq)]
pub struct IngressConfig {
    /// Ingresses whose `spec.ingressClassName` (or legacy
    /// `kubernetes.io/ingress.class` annotation) is this are ours.
    pub class: String,
    /// Entrypoints the Ingress routes serve; empty = every one that does not
    /// redirect.
    pub entrypoints: Vec<String>,
    /// The TLS entrypoint that gets the certificates of `spec.tls`; default
    /// the first TLS entrypoint. `None`: there is none, `spec.tls` is reported.
    pub tls_entrypoint: Option<String>,
    /// Upstreams are the ready endpoints of the Service's EndpointSlices
    /// instead of its cluster DNS name.
    pub endpoint_slices: bool,
    /// A directory of YAML files holding Ingress, Secret and EndpointSlice
    /// objects.
    pub files: Option<PathBuf>,
    /// How often the files are looked at. Default 1s.
    pub poll_interval: Duration,
    /// Watch the API server.
    pub kubernetes: Option<KubernetesConfig>,
}

impl IngressConfig {
    pub fn new(class: &str) -> Self {
        IngressConfig {
            class: class.to_string(),
            entrypoints: Vec::new(),
            tls_entrypoint: None,
            endpoint_slices: false,
            files: None,
            poll_interval: Duration::from_secs(1),
            kubernetes: None,
        }
    }
}

/// `proxy.ingress.kubernetes`.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesConfig {
    /// A kubeconfig file; `None` uses the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces watched; empty = all.
    pub namespaces: Vec<String>,
    /// Every object is listed again this often, on top of the watch.
    pub resync: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            kubeconfig: None,
            namespaces: Vec::new(),
            resync: Duration::from_secs(300),
        }
    }
}

/// `(namespace, name)`.
pub type ObjectKey = (String, String);

/// The objects one source holds, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub ingresses: BTreeMap<ObjectKey, Ingress>,
    pub secrets: BTreeMap<ObjectKey, Secret>,
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
}

impl Objects {
    /// `other`'s objects over these; an Ingress both hold is reported by the
    /// caller.
    pub fn extend(&mut self, other: &Objects) {
        self.ingresses.extend(other.ingresses.clone());
        self.secrets.extend(other.secrets.clone());
        self.endpoint_slices.extend(other.endpoint_slices.clone());
    }

    pub fn is_empty(&self) -> bool {
        self.ingresses.is_empty() && self.secrets.is_empty() && self.endpoint_slices.is_empty()
    }
}

/// The key of an object: its namespace (`default` when unset) and name.
pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    (
        meta.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        meta.name.clone().unwrap_or_default(),
    )
}
