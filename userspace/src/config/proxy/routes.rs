//! `proxy.services` and `proxy.routes`: upstream services by name (plain, or
//! weighted over others: see `weighted`), and the routes that send requests
//! to them. A route's service may also be a literal
//! `host:port`, which joins the services under its own text, so that every
//! route names an entry of the map. Each route's entrypoints must exist and
//! serve requests (not redirect), and a route that repeats an earlier one's
//! match could never be chosen, so it is refused.
use std::collections::BTreeMap;

use super::{
    check_name,
    entrypoints::{count, Entrypoint},
    middlewares::route_middlewares,
    targets::{route_host, route_path, target},
    timeout, unknown,
    weighted::{check_weighted, is_weighted, read_sticky, read_weighted},
    Place,
};
use crate::{
    config::{
        values::{boolean, duration, suggest},
        yaml::Val,
        ConfigError,
    },
    proxy::{MiddlewareConfig, PathType, RouteConfig, ServiceConfig, WeightedServiceConfig},
};

/// Every service of the file: plain ones (with a `target`) and weighted
/// ones, whose names never collide (they are keys of one mapping).
#[derive(Default)]
pub(super) struct Services {
    pub plain: BTreeMap<String, ServiceConfig>,
    pub weighted: BTreeMap<String, WeightedServiceConfig>,
}

pub(super) fn read_services(v: Val, path: &str) -> Result<Services, ConfigError> {
    let table = v.named_table(path)?;
    let mut services = Services::default();
    let mut weighted = Vec::new();
    for (name, key_line, v) in table.entries() {
        let path = table.key_path(name);
        check_name("service", name, &path, key_line)?;
        if is_weighted(v) {
            weighted.push(read_weighted(name, v, &path)?);
        } else {
            services
                .plain
                .insert(name.to_string(), read_service(name, v, &path)?);
        }
    }
    check_weighted(weighted, &mut services)?;
    Ok(services)
}

fn read_service(name: &str, v: Val, path: &str) -> Result<ServiceConfig, ConfigError> {
    let table = v.table(
        path,
        &[
            "target",
            "h2c",
            "connect_timeout",
            "response_header_timeout",
            "idle_timeout",
            "resolve_interval",
            "eject_for",
            "max_idle_connections",
            "sticky",
        ],
    )?;
    let Some(target_value) = table.get("target") else {
        return Err(v.error(
            path,
            format!(
                "service `{name}` has no `target`: add e.g. \
                 `target: \"{name}.default.svc.cluster.local:8000\"`, or spread it over \
                 other services with `weighted: [{{ service: v1, weight: 90 }}, ...]`"
            ),
        ));
    };
    let target_path = table.key_path("target");
    let text = target_value.text(&target_path, "host:port")?;
    let address = target(text).map_err(|message| target_value.error(&target_path, message))?;
    let mut service = ServiceConfig::for_target(&address);
    service.name = name.to_string();
    if let Some(v) = table.get("h2c") {
        service.h2c = boolean(v, &table.key_path("h2c"))?;
    }
    if let Some(v) = table.get("connect_timeout") {
        service.connect_timeout = timeout(v, &table.key_path("connect_timeout"))?;
    }
    if let Some(v) = table.get("response_header_timeout") {
        service.response_header_timeout = timeout(v, &table.key_path("response_header_timeout"))?;
    }
    if let Some(v) = table.get("idle_timeout") {
        service.idle_timeout = timeout(v, &table.key_path("idle_timeout"))?;
    }
    if let Some(v) = table.get("resolve_interval") {
        let path = table.key_path("resolve_interval");
        service.resolve_interval = duration(v, &path)?;
        if service.resolve_interval.is_zero() {
            return Err(v.error(
                &path,
                "a resolve interval of 0 would ask DNS in a busy loop",
            ));
        }
    }
    if let Some(v) = table.get("eject_for") {
        service.eject_for = duration(v, &table.key_path("eject_for"))?;
    }
    if let Some(v) = table.get("max_idle_connections") {
        service.max_idle_connections =
            count(v, &table.key_path("max_idle_connections"), 0, 65_536)?;
    }
    if let Some(v) = table.get("sticky") {
        service.sticky = Some(read_sticky(name, v, &table.key_path("sticky"))?);
    }
    Ok(service)
}

/// A service name, else a literal `host:port`, which joins `services` under
/// its own text (once, however many routes use it). Returns the key.
pub(super) fn resolve_service(
    text: &str,
    place: &Place,
    services: &mut Services,
) -> Result<String, ConfigError> {
    let text = text.trim();
    if services.plain.contains_key(text) || services.weighted.contains_key(text) {
        return Ok(text.to_string());
    }
    if !text.contains(':') {
        let named = (services.plain.keys())
            .chain(services.weighted.keys())
            .filter(|k| !k.contains(':'));
        return Err(place.error(unknown(
            "service",
            text,
            named.map(String::as_str),
            "it is neither a name under proxy.services nor a host:port",
        )));
    }
    let address = target(text).map_err(|message| place.error(message))?;
    services
        .plain
        .entry(address.clone())
        .or_insert_with(|| ServiceConfig::for_target(&address));
    Ok(address)
}

/// A route as read, with the places the later checks point at.
struct Route {
    config: RouteConfig,
    place: Place,
    /// Where the name is written, or the route itself for a default name.
    name: Place,
    /// Whether the name is written (not `route-<n>`).
    named: bool,
}

pub(super) fn read_routes(
    v: Val,
    path: &str,
    entrypoints: &[Entrypoint],
    services: &mut Services,
    middlewares: &BTreeMap<String, MiddlewareConfig>,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let example = "[{ host: api.example.com, service: api }]";
    let mut routes: Vec<Route> = Vec::new();
    for (i, (path, item)) in v.list(path, example)?.into_iter().enumerate() {
        let route = read_route(i, item, &path, entrypoints, services, middlewares)?;
        if let Some(taken) = routes.iter().find(|r| r.config.name == route.config.name) {
            let whose = if route.named {
                "route name"
            } else {
                "this route's default name"
            };
            return Err(route.name.error(format!(
                "{whose} `{}` is already taken by {} (line {}); route names must be unique",
                route.config.name, taken.place.key, taken.place.line
            )));
        }
        check_not_shadowed(&route, &routes, entrypoints)?;
        routes.push(route);
    }
    Ok(routes.into_iter().map(|r| r.config).collect())
}

fn read_route(
    index: usize,
    v: Val,
    path: &str,
    entrypoints: &[Entrypoint],
    services: &mut Services,
    middlewares: &BTreeMap<String, MiddlewareConfig>,
) -> Result<Route, ConfigError> {
    let table = v.table(
        path,
        &[
            "name",
            "host",
            "path",
            "path_type",
            "service",
            "entrypoints",
            "middlewares",
        ],
    )?;
    let place = Place::of(v, path);
    let middlewares = match table.get("middlewares") {
        Some(v) => route_middlewares(v, &table.key_path("middlewares"), middlewares)?,
        None => Vec::new(),
    };
    let (name, name_place) = match table.get("name") {
        Some(v) => {
            let path = table.key_path("name");
            let name = v.text(&path, "a route name")?;
            check_name("route", name, &path, v.line)?;
            (name.to_string(), Place::of(v, &path))
        }
        None => (format!("route-{}", index + 1), place.clone()),
    };
    let host = match table.get("host") {
        Some(v) => {
            let path = table.key_path("host");
            let text = v.text(&path, "a host name like api.example.com")?;
            Some(route_host(text).map_err(|message| v.error(&path, message))?)
        }
        None => None,
    };
    let mut route_path_text = "/".to_string();
    if let Some(v) = table.get("path") {
        let path = table.key_path("path");
        let text = v.text(&path, "a path like /api")?;
        route_path_text = route_path(text).map_err(|message| v.error(&path, message))?;
    }
    let mut path_type = PathType::default();
    if let Some(v) = table.get("path_type") {
        let path = table.key_path("path_type");
        path_type = match v.text(&path, "Prefix or Exact")?.trim() {
            "Prefix" | "prefix" => PathType::Prefix,
            "Exact" | "exact" => PathType::Exact,
            other => {
                return Err(v.error(
                    &path,
                    format!(
                        "`{other}` is not a path type: use Prefix or Exact{}",
                        suggest(other, &["Prefix", "Exact", "prefix", "exact"])
                    ),
                ))
            }
        };
    }
    let Some(service_value) = table.get("service") else {
        return Err(v.error(
            path,
            "this route has no `service`: name one under proxy.services or give a host:port",
        ));
    };
    let service_path = table.key_path("service");
    let service_text = service_value.text(&service_path, "a service name or host:port")?;
    let service = resolve_service(
        service_text,
        &Place::of(service_value, &service_path),
        services,
    )?;
    let served = match table.get("entrypoints") {
        Some(v) => route_entrypoints(v, &table.key_path("entrypoints"), entrypoints)?,
        None => Vec::new(),
    };
    Ok(Route {
        config: RouteConfig {
            name,
            host,
            path: route_path_text,
            path_type,
            service,
            entrypoints: served,
            middlewares,
            conditions: Default::default(),
            actions: Default::default(),
        },
        place,
        name: name_place,
        named: table.get("name").is_some(),
    })
}

/// Entrypoints a route serves: each exists and does not redirect.
fn route_entrypoints(
    v: Val,
    path: &str,
    entrypoints: &[Entrypoint],
) -> Result<Vec<String>, ConfigError> {
    let mut names: Vec<String> = Vec::new();
    for (path, item) in v.list(path, "[websecure]")? {
        let name = item.text(&path, "an entrypoint name")?.trim();
        let Some(entrypoint) = entrypoints.iter().find(|e| e.config.name == name) else {
            return Err(item.error(
                &path,
                unknown(
                    "entrypoint",
                    name,
                    entrypoints.iter().map(|e| e.config.name.as_str()),
                    "it is not defined under proxy.entrypoints",
                ),
            ));
        };
        if let Some(redirect) = &entrypoint.config.redirect {
            return Err(item.error(
                &path,
                format!(
                    "entrypoint `{name}` redirects every request to `{}`; no route is served \
                     there (leave it out)",
                    redirect.to
                ),
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(item.error(&path, format!("entrypoint `{name}` is listed twice")));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// Refuses a route that matches exactly what an earlier one matches on a
/// common entrypoint: it could never be chosen.
fn check_not_shadowed(
    route: &Route,
    earlier: &[Route],
    entrypoints: &[Entrypoint],
) -> Result<(), ConfigError> {
    let served = |r: &RouteConfig| -> Vec<String> {
        if r.entrypoints.is_empty() {
            entrypoints
                .iter()
                .filter(|e| e.config.redirect.is_none())
                .map(|e| e.config.name.clone())
                .collect()
        } else {
            r.entrypoints.clone()
        }
    };
    let new = &route.config;
    let mine = served(new);
    for other in earlier {
        let old = &other.config;
        if (&old.host, matched_path(old), old.path_type)
            != (&new.host, matched_path(new), new.path_type)
        {
            continue;
        }
        if let Some(common) = served(old).into_iter().find(|e| mine.contains(e)) {
            return Err(route.place.error(format!(
                "route `{}` matches the same host, path and path type as route `{}` ({}, \
                 line {}) on entrypoint `{common}`: it could never be chosen",
                new.name, old.name, other.place.key, other.place.line
            )));
        }
    }
    Ok(())
}

/// The path as the route matches it: a `Prefix` path matches element-wise,
/// so `/api/` and `/api` are the same rule (as in Ingress).
fn matched_path(route: &RouteConfig) -> &str {
    match route.path_type {
        PathType::Prefix => route.path.strip_suffix('/').unwrap_or(&route.path),
        PathType::Exact => &route.path,
    }
}
