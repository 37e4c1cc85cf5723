//! From a Service reference to a proxy service: an Ingress backend or a
//! Gateway API `backendRef` (a Service, a port by number or name) becomes
//! the Service's cluster DNS name or, with `endpoint_slices`, the ready
//! endpoints of its EndpointSlices. Pure, like [`super::translate`], which
//! uses it for what each route sends to.
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::{discovery::v1::EndpointSlice, networking::v1::IngressBackend};

use super::{
    translate::{object_name, Invalid},
    Objects,
};
use crate::{
    config::target,
    proxy::{IngressConfig, ServiceConfig},
};

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The service a backend names: its name in the proxy, and its config.
pub(crate) fn backend_service(
    namespace: &str,
    backend: &IngressBackend,
    objects: &Objects,
    config: &IngressConfig,
) -> Result<(String, ServiceConfig), Invalid> {
    let Some(service) = &backend.service else {
        let what = if backend.resource.is_some() {
            "a resource backend is not supported (only service backends)"
        } else {
            "the backend names no service"
        };
        return Err(("backend", what.to_string()));
    };
    let port = service.port.as_ref();
    let number = port.and_then(|p| p.number).filter(|n| *n > 0);
    let port_name = port
        .and_then(|p| p.name.as_deref())
        .filter(|n| !n.is_empty());
    service_backend(namespace, &service.name, number, port_name, objects, config)
}

/// The service for a Kubernetes Service and port (by number or name) in
/// `namespace`: its name in the proxy, and its config. Shared by Ingress
/// backends and Gateway API `backendRefs`.
pub(crate) fn service_backend(
    namespace: &str,
    service_name: &str,
    number: Option<i32>,
    port_name: Option<&str>,
    objects: &Objects,
    config: &IngressConfig,
) -> Result<(String, ServiceConfig), Invalid> {
    let port_label = match (number, port_name) {
        (Some(n), _) => n.to_string(),
        (None, Some(name)) => name.to_string(),
        (None, None) => {
            return Err((
                "port",
                format!("service `{}` has no port number or name", service_name),
            ))
        }
    };
    let name = object_name(&format!(
        "ingress.{namespace}.{}.{port_label}",
        service_name
    ));
    let dns = format!("{}.{namespace}.svc.cluster.local", service_name);
    if !config.endpoint_slices {
        let Some(number) = number else {
            return Err((
                "port",
                format!(
                    "service `{}` port `{port_label}` is named: named ports need \
                     `endpoint_slices: true` (the Service's cluster address has only numbers); \
                     give port.number",
                    service_name
                ),
            ));
        };
        let address = target(&format!("{dns}:{number}")).map_err(|message| ("backend", message))?;
        let mut config = ServiceConfig::for_target(&address);
        config.name = name.clone();
        return Ok((name, config));
    }
    let slices: Vec<&EndpointSlice> = objects
        .endpoint_slices
        .iter()
        .filter(|(key, slice)| {
            key.0 == namespace
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|s| s == service_name)
        })
        .map(|(_, slice)| slice)
        .collect();
    let mut endpoints: Vec<SocketAddr> = Vec::new();
    let mut port_found = None;
    for slice in &slices {
        let Some(port) = slice_port(slice, number, port_name) else {
            continue;
        };
        port_found = Some(port);
        for endpoint in &slice.endpoints {
            // Kubernetes: an unknown readiness counts as ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    endpoints.push(SocketAddr::new(ip, port));
                }
            }
        }
    }
    endpoints.sort();
    endpoints.dedup();
    let shown_port = port_found
        .or(number.and_then(|n| u16::try_from(n).ok()))
        .unwrap_or(0);
    if port_found.is_none() && !slices.is_empty() {
        return Err((
            "port",
            format!(
                "service `{}`: no EndpointSlice port matches `{port_label}`",
                service_name
            ),
        ));
    }
    let mut config = ServiceConfig::for_target(&format!("{dns}:{}", shown_port.max(1)));
    config.name = name.clone();
    // No slice (yet): no endpoint, so 503 until the Service has some.
    config.endpoints = Some(endpoints);
    Ok((name, config))
}

/// The slice's port for a backend port: by name, else by number, else the
/// slice's only port (the Service port maps to a differently numbered
/// target port that the slice does not name).
fn slice_port(slice: &EndpointSlice, number: Option<i32>, name: Option<&str>) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let to_u16 = |p: Option<i32>| p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0);
    if let Some(name) = name {
        return ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| to_u16(p.port));
    }
    if let Some(found) = ports.iter().find(|p| p.port == number) {
        return to_u16(found.port);
    }
    match ports {
        [only] => to_u16(only.port),
        _ => None,
    }
}

/// The service of routes that must not be served: no endpoint, so 503.
pub(crate) fn refusing_service(namespace: &str, name: &str) -> (String, ServiceConfig) {
    let service_name = object_name(&format!("ingress.{namespace}.{name}.refused"));
    let mut service = ServiceConfig::for_target("refused.invalid:1");
    service.name = service_name.clone();
    service.endpoints = Some(Vec::new());
    (service_name, service)
}
