//! The effective proxy configuration: the config file's `proxy:` section with
//! the Ingress translation laid over it, built the same way every time.
//!
//! A conflict is two routes with the same host, path and path type (or one
//! name), or a service name with two different definitions. It is never
//! settled silently: the config file wins over any Ingress, an older Ingress
//! (creation time, then namespace/name) over a newer one, and every loser is
//! reported by name so the operator can fix one side.
use std::path::{Path, PathBuf};

use super::translate::{IngressRoute, Translation};
use crate::proxy::{CertPair, PathType, ProxyConfig, RouteConfig};

/// The merged configuration and what was left out of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    pub config: ProxyConfig,
    pub conflicts: Vec<String>,
    /// Ingress routes in force.
    pub routes: usize,
}

/// Where a Secret's certificate and key are written.
pub fn secret_dir(tls_dir: &Path, key: &(String, String)) -> PathBuf {
    tls_dir.join(&key.0).join(&key.1)
}

/// Lays `translation` over `file`. Certificates are named by their place
/// under `tls_dir` (see [`super::secrets`], which writes them there).
pub fn merge(file: &ProxyConfig, translation: &Translation, tls_dir: &Path) -> Merged {
    let mut config = file.clone();
    let mut conflicts = Vec::new();
    // Where each route in force came from, for the conflict messages.
    let mut owners: Vec<String> = config
        .routes
        .iter()
        .map(|r| format!("route `{}` of the config file", r.name))
        .collect();
    let mut added = 0;
    // Traefik Middleware objects' layers: a config-file middleware of the
    // same name and another definition wins, and routes naming it are left
    // out (they would run the file's instead).
    let mut clashing_middlewares = Vec::new();
    for (name, layer) in &translation.middlewares {
        match config.middlewares.get(name) {
            Some(defined) if defined != layer => clashing_middlewares.push(name.clone()),
            _ => {
                config.middlewares.insert(name.clone(), layer.clone());
            }
        }
    }
    for route in &translation.routes {
        let from = origin(route);
        if let Some(name) = route
            .config
            .middlewares
            .iter()
            .find(|m| clashing_middlewares.contains(m))
        {
            conflicts.push(format!(
                "{from}: middleware name `{name}` is defined differently in the config file; \
                 this route is left out"
            ));
            continue;
        }
        // The route's service, or the members of its weighted service
        // (Gateway API); a member that is no service is a backend that did
        // not resolve, answered 500 by the proxy.
        let weighted = translation.weighted.get(&route.config.service);
        if let Some(weighted) = weighted {
            if config
                .weighted
                .get(&weighted.name)
                .is_some_and(|w| w != weighted)
                || config.services.contains_key(&weighted.name)
            {
                conflicts.push(format!(
                    "{from}: service name `{}` is already defined differently in the config \
                     file; the config file's stays and this route is left out",
                    weighted.name
                ));
                continue;
            }
        }
        let wanted: Vec<&String> = match weighted {
            Some(weighted) => weighted
                .members
                .iter()
                .map(|m| &m.service)
                .filter(|name| translation.services.contains_key(*name))
                .collect(),
            None => vec![&route.config.service],
        };
        // Translation gives every route its services; a route without one
        // would be refused by the proxy, so it is left out.
        let Some(ours) = wanted
            .iter()
            .map(|name| translation.services.get(*name).map(|s| (*name, s)))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let clashing = ours
            .iter()
            .find(|(name, service)| config.services.get(*name).is_some_and(|d| d != *service));
        if let Some((name, _)) = clashing {
            conflicts.push(format!(
                "{from}: service name `{name}` is already defined differently in the config \
                 file; the config file's stays and this route is left out"
            ));
            continue;
        }
        let clash = config
            .routes
            .iter()
            .position(|r| r.name == route.config.name || same_match(r, &route.config));
        if let Some(index) = clash {
            let winner = &owners[index];
            let what = if config.routes[index].name == route.config.name {
                "has the same name as"
            } else {
                "matches the same host, path and path type as"
            };
            conflicts.push(format!(
                "{from} {what} {winner}, which wins; {}",
                describe(&route.config)
            ));
            continue;
        }
        if let Some(weighted) = weighted {
            config
                .weighted
                .entry(weighted.name.clone())
                .or_insert_with(|| weighted.clone());
        }
        for (name, service) in ours {
            config
                .services
                .entry(name.clone())
                .or_insert_with(|| service.clone());
        }
        config.routes.push(route.config.clone());
        owners.push(from);
        added += 1;
    }
    if !translation.certs.is_empty() {
        let tls = file
            .ingress
            .as_ref()
            .and_then(|i| i.tls_entrypoint.as_deref())
            .and_then(|name| config.entrypoints.iter_mut().find(|e| e.name == name))
            .and_then(|e| e.tls.as_mut());
        match tls {
            Some(tls) => {
                for cert in &translation.certs {
                    let dir = secret_dir(tls_dir, &cert.key);
                    tls.certs.push(CertPair {
                        cert: dir.join("tls.crt"),
                        key: dir.join("tls.key"),
                    });
                }
            }
            None => conflicts.push(
                "Ingresses name TLS Secrets but the proxy has no TLS entrypoint to serve them \
                 (proxy.ingress.tls_entrypoint)"
                    .to_string(),
            ),
        }
    }
    Merged {
        config,
        conflicts,
        routes: added,
    }
}

/// Gateway listeners' certificates onto their own entrypoints (a listener
/// names its entrypoint by port, unlike an Ingress's `spec.tls`). Returns
/// what could not be placed.
pub fn entrypoint_certs(
    config: &mut ProxyConfig,
    certs: &[(String, super::translate::SecretCert)],
    tls_dir: &Path,
) -> Vec<String> {
    let mut conflicts = Vec::new();
    for (entrypoint, cert) in certs {
        let tls = config
            .entrypoints
            .iter_mut()
            .find(|e| e.name == *entrypoint)
            .and_then(|e| e.tls.as_mut());
        let Some(tls) = tls else {
            conflicts.push(format!(
                "Secret {}/{}: entrypoint `{entrypoint}` has no TLS to serve it",
                cert.key.0, cert.key.1
            ));
            continue;
        };
        let dir = secret_dir(tls_dir, &cert.key);
        let pair = CertPair {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        if !tls.certs.contains(&pair) {
            tls.certs.push(pair);
        }
    }
    conflicts
}

fn origin(route: &IngressRoute) -> String {
    format!(
        "route `{}` of {} {}/{}",
        route.config.name, route.kind, route.origin.0, route.origin.1
    )
}

fn describe(route: &RouteConfig) -> String {
    let kind = match route.path_type {
        PathType::Prefix => "Prefix",
        PathType::Exact => "Exact",
    };
    format!(
        "host {} path {} ({kind})",
        route.host.as_deref().unwrap_or("*"),
        route.path
    )
}

/// The same rule, as the route table would see it (a Prefix path with or
/// without its trailing slash is one rule), on a common entrypoint.
fn same_match(a: &RouteConfig, b: &RouteConfig) -> bool {
    let path = |r: &RouteConfig| match r.path_type {
        PathType::Prefix => r.path.trim_end_matches('/').to_string(),
        PathType::Exact => r.path.clone(),
    };
    let common_entrypoint = a.entrypoints.is_empty()
        || b.entrypoints.is_empty()
        || a.entrypoints.iter().any(|e| b.entrypoints.contains(e));
    a.host == b.host
        && a.path_type == b.path_type
        && path(a) == path(b)
        && a.conditions == b.conditions
        && common_entrypoint
}
