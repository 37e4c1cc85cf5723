//! HTTPRoutes into routes and services. A route attaches to each of its
//! parents (a Gateway of our class, optionally one listener by
//! `sectionName` or `port`) whose listeners allow it and whose hostnames
//! meet its own; for every such listener, hostname, rule and match it
//! becomes one proxy route on the listener's entrypoint. Each parent gets
//! its Accepted and ResolvedRefs conditions.
//!
//! A rule xdpgate cannot honour (a RegularExpression match, an unknown
//! filter) makes the whole HTTPRoute not Accepted, with the reason and the
//! field; a backend that does not resolve (missing, another namespace
//! without a ReferenceGrant) only loses its share of the traffic, which is
//! answered 500 as the Gateway API asks, and ResolvedRefs says why. Weighted
//! backends become a weighted service (`proxy/balance.rs`).
use std::collections::BTreeMap;

use super::{
    listeners::{From, ServedGateway},
    matching::{self, granted, Refusal},
    objects::{HttpBackendRef, HttpRoute, ParentRef, GROUP},
    Condition,
};
use crate::{
    config::route_host,
    ingress::{
        backends::service_backend,
        translate::{object_name, IngressRoute},
        ObjectKey, Objects,
    },
    proxy::{IngressConfig, RouteConfig, ServiceConfig, WeightedMember, WeightedServiceConfig},
};

/// The service of a rule that only redirects: it has no endpoints and is
/// never reached (the redirect is answered first).
pub const NO_BACKEND: &str = "gateway.no-backend";
/// The weighted-service member standing for a backend that did not
/// resolve: no service has this name, so its share of the requests is
/// answered 500, as the Gateway API asks, and reaches nothing.
pub const REFUSED_BACKEND: &str = "gateway.refused-backend";

/// One HTTPRoute's share, and each parent's conditions.
#[derive(Debug, Default)]
pub struct RouteOutcome {
    pub routes: Vec<IngressRoute>,
    pub services: BTreeMap<String, ServiceConfig>,
    /// A weighted service per rule with more than one backend (or one
    /// that did not resolve).
    pub weighted: BTreeMap<String, WeightedServiceConfig>,
    /// `(parentRef, Accepted, ResolvedRefs)` for every parent that is ours.
    pub parents: Vec<(ParentRef, Condition, Condition)>,
}

pub fn translate_route(
    key: &ObjectKey,
    route: &HttpRoute,
    gateways: &mut [ServedGateway],
    objects: &Objects,
    config: &IngressConfig,
) -> RouteOutcome {
    let mut out = RouteOutcome::default();
    let (backends, resolved) = backends(key, route, objects, config, &mut out.services);
    let services: Vec<String> = backends
        .into_iter()
        .enumerate()
        .map(|(r, weighted)| rule_service(key, r, weighted, &mut out))
        .collect();
    let checked = check_rules(route);
    for parent in &route.spec.parent_refs {
        if parent.group.as_deref().unwrap_or(GROUP) != GROUP
            || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let gateway_key = (
            parent.namespace.clone().unwrap_or_else(|| key.0.clone()),
            parent.name.clone(),
        );
        let Some(gateway) = gateways.iter_mut().find(|g| g.key == gateway_key) else {
            continue;
        };
        let accepted = match &checked {
            Err((reason, message)) => Condition::new("Accepted", false, reason, message.clone()),
            Ok(()) => attach(key, route, parent, gateway, &services, &mut out),
        };
        out.parents
            .push((parent.clone(), accepted, resolved.clone()));
    }
    out
}

/// Every rule and match must be one xdpgate honours.
fn check_rules(route: &HttpRoute) -> Result<(), Refusal> {
    for (h, host) in route.spec.hostnames.iter().enumerate() {
        route_host(host).map_err(|e| ("UnsupportedValue", format!("spec.hostnames[{h}]: {e}")))?;
    }
    for (r, rule) in route.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        if rule.timeouts.is_some() {
            return Err((
                "UnsupportedValue",
                format!("{at}.timeouts is not supported"),
            ));
        }
        for (b, backend) in rule.backend_refs.iter().enumerate() {
            if !backend.filters.is_empty() {
                return Err((
                    "UnsupportedValue",
                    format!(
                        "{at}.backendRefs[{b}].filters is not supported (use the rule's filters)"
                    ),
                ));
            }
        }
        for (path, path_type, _) in matches(rule, &at)? {
            matching::actions(rule, &at, &path, path_type, 0)?;
        }
    }
    Ok(())
}

type Match = (
    String,
    crate::proxy::PathType,
    crate::proxy::RouteConditions,
);

fn matches(rule: &super::objects::HttpRouteRule, at: &str) -> Result<Vec<Match>, Refusal> {
    if rule.matches.is_empty() {
        return Ok(vec![matching::path_and_conditions(
            &Default::default(),
            at,
        )?]);
    }
    rule.matches
        .iter()
        .enumerate()
        .map(|(m, one)| matching::path_and_conditions(one, &format!("{at}.matches[{m}]")))
        .collect()
}

/// The route on the parent's listeners; the Accepted condition.
fn attach(
    key: &ObjectKey,
    route: &HttpRoute,
    parent: &ParentRef,
    gateway: &mut ServedGateway,
    services: &[String],
    out: &mut RouteOutcome,
) -> Condition {
    let named: Vec<usize> = (0..gateway.listeners.len())
        .filter(|&i| {
            let listener = &gateway.listeners[i];
            parent
                .section_name
                .as_ref()
                .is_none_or(|s| *s == listener.name)
                && parent.port.is_none_or(|p| i32::from(listener.port) == p)
        })
        .collect();
    if named.is_empty() {
        return Condition::new(
            "Accepted",
            false,
            "NoMatchingParent",
            format!(
                "Gateway {}/{} has no listener {}",
                gateway.key.0,
                gateway.key.1,
                parent.section_name.as_deref().unwrap_or("on that port")
            ),
        );
    }
    let allowed: Vec<usize> = named
        .into_iter()
        .filter(|&i| {
            let listener = &gateway.listeners[i];
            listener.entrypoint.is_some()
                && listener.takes_http_routes
                && (listener.from == From::All || key.0 == gateway.key.0)
        })
        .collect();
    if allowed.is_empty() {
        return Condition::new(
            "Accepted",
            false,
            "NotAllowedByListeners",
            format!(
                "no listener of Gateway {}/{} that is served takes HTTPRoutes from namespace {}",
                gateway.key.0, gateway.key.1, key.0
            ),
        );
    }
    let mut attached_any = false;
    for i in allowed {
        let listener = &mut gateway.listeners[i];
        let hosts = matching::hostnames(&route.spec.hostnames, listener.hostname.as_deref());
        if hosts.is_empty() {
            continue;
        }
        attached_any = true;
        listener.attached += 1;
        let entrypoint = listener.entrypoint.clone().unwrap_or_default();
        for (r, rule) in route.spec.rules.iter().enumerate() {
            let at = format!("spec.rules[{r}]");
            let Ok(rule_matches) = matches(rule, &at) else {
                continue;
            };
            for (m, (path, path_type, conditions)) in rule_matches.into_iter().enumerate() {
                let Ok(actions) = matching::actions(rule, &at, &path, path_type, listener.port)
                else {
                    continue;
                };
                let service = services[r].clone();
                for (h, host) in hosts.iter().enumerate() {
                    out.routes.push(IngressRoute {
                        kind: "HTTPRoute",
                        origin: key.clone(),
                        created: route.metadata.creation_timestamp.clone(),
                        config: RouteConfig {
                            name: object_name(&format!(
                                "httproute.{}.{}.{r}.{m}.{}.{}.{h}",
                                key.0, key.1, gateway.key.1, listener.name
                            )),
                            host: host.clone(),
                            path: path.clone(),
                            path_type,
                            service: service.clone(),
                            entrypoints: vec![entrypoint.clone()],
                            middlewares: Vec::new(),
                            conditions: conditions.clone(),
                            actions: actions.clone(),
                        },
                    });
                }
            }
        }
    }
    if !attached_any {
        return Condition::new(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            format!(
                "none of the route's hostnames ({}) is covered by a listener of Gateway {}/{}",
                route.spec.hostnames.join(", "),
                gateway.key.0,
                gateway.key.1
            ),
        );
    }
    Condition::new("Accepted", true, "Accepted", "the route is served")
}

/// The service a rule's routes name: its one backend; a weighted service
/// over its backends (refused ones as [`REFUSED_BACKEND`]); or, for a rule
/// that only redirects, [`NO_BACKEND`].
fn rule_service(
    key: &ObjectKey,
    rule: usize,
    backends: Vec<(String, u32)>,
    out: &mut RouteOutcome,
) -> String {
    match backends.as_slice() {
        [] => {
            out.services.insert(NO_BACKEND.to_string(), no_backend());
            NO_BACKEND.to_string()
        }
        [(name, _)] if !name.is_empty() => name.clone(),
        _ => {
            let name = object_name(&format!("httproute.{}.{}.{rule}", key.0, key.1));
            let members = backends
                .into_iter()
                .map(|(service, weight)| WeightedMember {
                    service: if service.is_empty() {
                        REFUSED_BACKEND.to_string()
                    } else {
                        service
                    },
                    weight,
                })
                .collect();
            out.weighted.insert(
                name.clone(),
                WeightedServiceConfig {
                    name: name.clone(),
                    members,
                    sticky: None,
                },
            );
            name
        }
    }
}

/// A service without endpoints, for rules that only redirect: a route
/// names some service.
fn no_backend() -> ServiceConfig {
    let mut none = ServiceConfig::for_target("127.0.0.1:1");
    none.name = NO_BACKEND.to_string();
    none.endpoints = Some(Vec::new());
    none
}

/// Each rule's weighted backends (an empty name stands for one that did not
/// resolve: its share is answered 500), the services they need, and the
/// ResolvedRefs condition (the first backend that did not resolve).
fn backends(
    key: &ObjectKey,
    route: &HttpRoute,
    objects: &Objects,
    config: &IngressConfig,
    services: &mut BTreeMap<String, ServiceConfig>,
) -> (Vec<Vec<(String, u32)>>, Condition) {
    let mut first_error: Option<Condition> = None;
    let mut per_rule = Vec::new();
    for (r, rule) in route.spec.rules.iter().enumerate() {
        let mut weighted = Vec::new();
        for (b, backend) in rule.backend_refs.iter().enumerate() {
            let weight = u32::try_from(backend.weight.unwrap_or(1)).unwrap_or(0);
            if weight == 0 {
                continue;
            }
            let at = format!("spec.rules[{r}].backendRefs[{b}]");
            match backend_service(key, backend, objects, config) {
                Ok((name, service)) => {
                    services.insert(name.clone(), service);
                    weighted.push((name, weight));
                }
                Err((reason, message)) => {
                    first_error.get_or_insert_with(|| {
                        Condition::new("ResolvedRefs", false, reason, format!("{at}: {message}"))
                    });
                    weighted.push((String::new(), weight));
                }
            }
        }
        if rule.backend_refs.is_empty() && rule.filters.iter().all(|f| f.kind != "RequestRedirect")
        {
            // No backend at all: 500 (Gateway API).
            weighted.push((String::new(), 1));
        }
        per_rule.push(weighted);
    }
    let resolved = first_error.unwrap_or_else(|| {
        Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every backend resolved",
        )
    });
    (per_rule, resolved)
}

fn backend_service(
    key: &ObjectKey,
    backend: &HttpBackendRef,
    objects: &Objects,
    config: &IngressConfig,
) -> Result<(String, ServiceConfig), Refusal> {
    let kind = backend.kind.as_deref().unwrap_or("Service");
    let group = backend.group.as_deref().unwrap_or("");
    if kind != "Service" || !group.is_empty() {
        return Err(("InvalidKind", format!("kind `{kind}` is not a Service")));
    }
    let namespace = backend.namespace.clone().unwrap_or_else(|| key.0.clone());
    if namespace != key.0
        && !granted(
            objects,
            "HTTPRoute",
            &key.0,
            "Service",
            &namespace,
            &backend.name,
        )
    {
        return Err((
            "RefNotPermitted",
            format!(
                "Service {namespace}/{} is in another namespace and no ReferenceGrant there \
                 allows HTTPRoutes from {} to refer to it",
                backend.name, key.0
            ),
        ));
    }
    let Some(port) = backend.port.filter(|p| *p > 0) else {
        return Err((
            "BackendNotFound",
            format!("Service {namespace}/{} needs a port", backend.name),
        ));
    };
    if config.endpoint_slices {
        let any_slice = objects.endpoint_slices.iter().any(|(k, slice)| {
            k.0 == namespace
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .is_some_and(|s| *s == backend.name)
        });
        if !any_slice {
            return Err((
                "BackendNotFound",
                format!("Service {namespace}/{} has no EndpointSlice", backend.name),
            ));
        }
    }
    service_backend(&namespace, &backend.name, Some(port), None, objects, config)
        .map_err(|(_, message)| ("BackendNotFound", message))
}
