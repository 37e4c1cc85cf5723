//! The Gateway API objects into routes, services, certificates and the
//! status each object should carry. Pure, like the Ingress translation:
//! the same objects give the same result in the same order, so the daemon
//! (which serves the routes) and the status writer (which reports them)
//! agree.
//!
//! Order, which is also precedence among equal matches: HTTPRoutes oldest
//! first (creation time, then namespace/name), each route's rules and
//! matches in the order written.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{
    listeners::{self, ServedGateway},
    objects::GROUP,
    routes::translate_route,
    Condition,
};
use crate::{
    ingress::{
        translate::{CheckPair, IngressRoute, Problem, SecretCert},
        ObjectKey, Objects,
    },
    proxy::{IngressConfig, ServiceConfig, WeightedServiceConfig},
};

/// The kinds whose status is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatusKind {
    GatewayClass,
    Gateway,
    HttpRoute,
}

/// The status one object should have (conditions without their
/// `lastTransitionTime`; the writer settles those).
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectStatus {
    pub kind: StatusKind,
    pub key: ObjectKey,
    pub status: Value,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayTranslation {
    pub routes: Vec<IngressRoute>,
    pub services: BTreeMap<String, ServiceConfig>,
    pub weighted: BTreeMap<String, WeightedServiceConfig>,
    /// `(entrypoint, certificate)`, each Secret once per entrypoint.
    pub certs: Vec<(String, SecretCert)>,
    pub statuses: Vec<ObjectStatus>,
    /// Listeners and routes not served, and why (also in their status).
    pub problems: Vec<Problem>,
    /// HTTPRoutes accepted by at least one parent.
    pub accepted_routes: usize,
}

pub fn translate(
    objects: &Objects,
    config: &IngressConfig,
    check_pair: &CheckPair,
) -> GatewayTranslation {
    let mut out = GatewayTranslation::default();
    let Some(gateway_config) = &config.gateway else {
        return out;
    };
    let ours: Vec<&ObjectKey> = objects
        .gateway
        .classes
        .iter()
        .filter(|(_, class)| class.spec.controller_name == gateway_config.controller_name)
        .map(|(key, class)| {
            let accepted =
                Condition::new("Accepted", true, "Accepted", "xdpgate serves this class");
            out.statuses.push(ObjectStatus {
                kind: StatusKind::GatewayClass,
                key: key.clone(),
                status: json!({ "conditions": [accepted.to_json(class.metadata.generation)] }),
            });
            key
        })
        .collect();
    let mut gateways: Vec<ServedGateway> = Vec::new();
    let mut unsupported_address: Vec<ObjectKey> = Vec::new();
    for (key, gateway) in &objects.gateway.gateways {
        if !ours.iter().any(|c| c.1 == gateway.spec.gateway_class_name) {
            continue;
        }
        if !gateway.spec.addresses.is_empty() {
            unsupported_address.push(key.clone());
        }
        gateways.push(listeners::resolve(
            key,
            gateway,
            objects,
            gateway_config,
            check_pair,
        ));
    }
    for served in &mut gateways {
        if unsupported_address.contains(&served.key) {
            for listener in &mut served.listeners {
                listener.entrypoint = None;
            }
        }
    }
    let mut routes: Vec<(&ObjectKey, &super::HttpRoute)> =
        objects.gateway.http_routes.iter().collect();
    routes.sort_by(|(a_key, a), (b_key, b)| {
        let a_time = &a.metadata.creation_timestamp;
        let b_time = &b.metadata.creation_timestamp;
        (a_time.is_none(), a_time, a_key).cmp(&(b_time.is_none(), b_time, b_key))
    });
    for (key, route) in routes {
        let outcome = translate_route(key, route, &mut gateways, objects, config);
        if outcome.parents.is_empty() {
            continue;
        }
        if outcome
            .parents
            .iter()
            .any(|(_, accepted, _)| accepted.status)
        {
            out.accepted_routes += 1;
        }
        for (_, accepted, resolved) in &outcome.parents {
            for condition in [accepted, resolved].into_iter().filter(|c| !c.status) {
                out.problems.push(Problem {
                    object: format!("HTTPRoute {}/{}", key.0, key.1),
                    reason: "httproute",
                    message: format!("{}: {}", condition.reason, condition.message),
                });
            }
        }
        out.routes.extend(outcome.routes);
        out.services.extend(outcome.services);
        out.weighted.extend(outcome.weighted);
        out.statuses.push(route_status(
            key,
            route,
            &outcome.parents,
            &gateway_config.controller_name,
        ));
    }
    for served in &gateways {
        let gateway = &objects.gateway.gateways[&served.key];
        let refused_address = unsupported_address.contains(&served.key);
        out.statuses.push(gateway_status(
            served,
            gateway.metadata.generation,
            refused_address,
        ));
        for listener in &served.listeners {
            for condition in listener.conditions.iter().filter(|c| !c.status) {
                out.problems.push(Problem {
                    object: format!("Gateway {}/{}", served.key.0, served.key.1),
                    reason: "gateway-listener",
                    message: format!("{}: {}", condition.reason, condition.message),
                });
            }
            if let Some(entrypoint) = &listener.entrypoint {
                for cert in &listener.certs {
                    let pair = (entrypoint.clone(), cert.clone());
                    if !out.certs.contains(&pair) {
                        out.certs.push(pair);
                    }
                }
            }
        }
    }
    out.certs
        .sort_by(|a, b| (&a.0, &a.1.key).cmp(&(&b.0, &b.1.key)));
    out
}

fn gateway_status(
    served: &ServedGateway,
    generation: Option<i64>,
    refused_address: bool,
) -> ObjectStatus {
    let listeners: Vec<Value> = served
        .listeners
        .iter()
        .map(|listener| {
            let mut conditions: Vec<Value> = listener
                .conditions
                .iter()
                .map(|c| c.to_json(generation))
                .collect();
            let programmed = if listener.entrypoint.is_some() {
                Condition::new(
                    "Programmed",
                    true,
                    "Programmed",
                    format!(
                        "served on entrypoint {}",
                        listener.entrypoint.as_deref().unwrap_or("")
                    ),
                )
            } else {
                Condition::new("Programmed", false, "Invalid", "the listener is not served")
            };
            conditions.push(programmed.to_json(generation));
            json!({
                "name": listener.name,
                "supportedKinds": [{ "group": GROUP, "kind": "HTTPRoute" }],
                "attachedRoutes": listener.attached,
                "conditions": conditions,
            })
        })
        .collect();
    let served_count = served
        .listeners
        .iter()
        .filter(|l| l.entrypoint.is_some())
        .count();
    let invalid: Vec<&str> = served
        .listeners
        .iter()
        .filter(|l| l.entrypoint.is_none())
        .map(|l| l.name.as_str())
        .collect();
    let accepted = if refused_address {
        Condition::new(
            "Accepted",
            false,
            "UnsupportedAddress",
            "spec.addresses is not supported: xdpgate serves on the node's addresses",
        )
    } else if invalid.is_empty() {
        Condition::new("Accepted", true, "Accepted", "every listener is served")
    } else {
        Condition::new(
            "Accepted",
            served_count > 0,
            "ListenersNotValid",
            format!("listeners not served: {}", invalid.join(", ")),
        )
    };
    let programmed = if served_count > 0 {
        Condition::new(
            "Programmed",
            true,
            "Programmed",
            format!("{served_count} listener(s) served"),
        )
    } else {
        Condition::new("Programmed", false, "Invalid", "no listener is served")
    };
    ObjectStatus {
        kind: StatusKind::Gateway,
        key: served.key.clone(),
        status: json!({
            "conditions": [accepted.to_json(generation), programmed.to_json(generation)],
            "listeners": listeners,
        }),
    }
}

/// Our parents' entries, after the entries other controllers wrote.
fn route_status(
    key: &ObjectKey,
    route: &super::HttpRoute,
    parents: &[(super::objects::ParentRef, Condition, Condition)],
    controller: &str,
) -> ObjectStatus {
    let generation = route.metadata.generation;
    let mut entries: Vec<Value> = route
        .status
        .as_ref()
        .and_then(|s| s.get("parents"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|p| p.get("controllerName").and_then(Value::as_str) != Some(controller))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for (parent, accepted, resolved) in parents {
        entries.push(json!({
            "parentRef": parent,
            "controllerName": controller,
            "conditions": [accepted.to_json(generation), resolved.to_json(generation)],
        }));
    }
    ObjectStatus {
        kind: StatusKind::HttpRoute,
        key: key.clone(),
        status: json!({ "parents": entries }),
    }
}
