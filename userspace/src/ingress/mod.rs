//! Kubernetes Ingress objects as a source of routes, next to the config
//! file's. Objects come from a directory of YAML files ([`files`]) and from
//! the API server ([`kube`]); [`translate`] turns the Ingresses of our class
//! (with the Secrets and EndpointSlices they refer to) into routes, services
//! and certificates, and [`merge`] lays those over the file's `proxy:`
//! section, reporting every conflict instead of quietly picking one. The
//! daemon hands the merged configuration to `Proxy::reload` whenever either
//! side changes.
//!
//! Its settings, [`IngressConfig`], are part of the proxy's configuration
//! (`crate::proxy::config`), like every other route source's.
//!
//! What an Ingress means is decided in one place, [`translate`], as a pure
//! function of the objects, so that both sources and the tests share it.
use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::Secret,
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};

pub mod api_client;
pub mod backends;
pub mod files;
pub mod gateway;
pub mod kube;
pub mod merge;
pub mod metrics;
pub mod publish;
#[cfg(test)]
mod reference_tests;
pub mod references;
pub mod runtime;
pub mod secrets;
pub mod source;
pub mod traefik;
pub mod translate;
#[cfg(test)]
mod translate_tests;

/// `(namespace, name)`.
pub type ObjectKey = (String, String);

/// The objects one source holds, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub ingresses: BTreeMap<ObjectKey, Ingress>,
    pub secrets: BTreeMap<ObjectKey, Secret>,
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Traefik Middleware objects, of either API group.
    pub middlewares: BTreeMap<ObjectKey, traefik::TraefikMiddleware>,
    /// Secrets that may hold basic-auth users (the watch keeps them apart
    /// from the TLS Secrets; the files source puts every Secret in
    /// `secrets`).
    pub auth_secrets: BTreeMap<ObjectKey, Secret>,
    /// IngressClasses (cluster-wide; the key's namespace is `default`).
    pub ingress_classes: BTreeMap<ObjectKey, IngressClass>,
    /// The Gateway API's objects (`proxy.ingress.gateway_api`); a
    /// GatewayClass, which has no namespace, is under `default`.
    pub gateway: gateway::GatewayObjects,
}

impl Objects {
    /// `other`'s objects over these; an Ingress both hold is reported by the
    /// caller.
    pub fn extend(&mut self, other: &Objects) {
        self.ingresses.extend(other.ingresses.clone());
        self.secrets.extend(other.secrets.clone());
        self.endpoint_slices.extend(other.endpoint_slices.clone());
        self.middlewares.extend(other.middlewares.clone());
        self.auth_secrets.extend(other.auth_secrets.clone());
        self.ingress_classes.extend(other.ingress_classes.clone());
        self.gateway.extend(&other.gateway);
    }

    pub fn is_empty(&self) -> bool {
        self.ingresses.is_empty()
            && self.secrets.is_empty()
            && self.endpoint_slices.is_empty()
            && self.middlewares.is_empty()
            && self.auth_secrets.is_empty()
            && self.ingress_classes.is_empty()
            && self.gateway.is_empty()
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
