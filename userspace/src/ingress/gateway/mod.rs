//! The Gateway API v1 as a source of routes, beside Ingress: GatewayClasses
//! whose `controllerName` is ours, their Gateways' HTTP and HTTPS listeners
//! (mapped onto xdpgate's entrypoints by port, certificates from Secrets),
//! and the HTTPRoutes attached to them, with ReferenceGrants for backends in
//! other namespaces.
//!
//! * [`objects`]: the object types, as read from files or the API server;
//! * [`listeners`]: which listeners xdpgate can serve, and on which
//!   entrypoint, each with its conditions;
//! * [`routes`]: HTTPRoutes into routes and services, with each parent's
//!   conditions; [`matching`] holds the pieces of a rule (hostnames, matches,
//!   filters, backends);
//! * [`translate`]: the whole, pure: objects in, routes, services,
//!   certificates and the status every object should have out;
//! * [`status`]: writing that status back to the API server.
//!
//! An object xdpgate cannot serve (a TCP listener, a RegularExpression path
//! match, a backend in another namespace without a ReferenceGrant) is
//! reported in its own status, with the field and the reason; everything
//! else keeps working.
use std::collections::BTreeMap;

use super::ObjectKey;

pub mod listeners;
pub mod matching;
pub mod objects;
pub mod routes;
pub mod status;
pub mod translate;
#[cfg(test)]
mod translate_tests;

pub use objects::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};
pub use translate::{translate, GatewayTranslation};

/// The Gateway API objects one source holds, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayObjects {
    pub classes: BTreeMap<ObjectKey, GatewayClass>,
    pub gateways: BTreeMap<ObjectKey, Gateway>,
    pub http_routes: BTreeMap<ObjectKey, HttpRoute>,
    pub reference_grants: BTreeMap<ObjectKey, ReferenceGrant>,
}

impl GatewayObjects {
    pub fn extend(&mut self, other: &GatewayObjects) {
        self.classes.extend(other.classes.clone());
        self.gateways.extend(other.gateways.clone());
        self.http_routes.extend(other.http_routes.clone());
        self.reference_grants.extend(other.reference_grants.clone());
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
            && self.gateways.is_empty()
            && self.http_routes.is_empty()
            && self.reference_grants.is_empty()
    }
}

/// A condition as the Gateway API writes it, without its
/// `lastTransitionTime` (the status writer keeps the old one when the
/// status did not change, so translation stays pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn new(
        kind: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }

    pub fn to_json(&self, generation: Option<i64>) -> serde_json::Value {
        let mut value = serde_json::json!({
            "type": self.kind,
            "status": if self.status { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
        });
        if let Some(generation) = generation {
            value["observedGeneration"] = serde_json::json!(generation);
        }
        value
    }
}
