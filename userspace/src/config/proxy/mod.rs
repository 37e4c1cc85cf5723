//! The `proxy:` section, read into a [`ProxyConfig`]: entrypoints, services,
//! middlewares, routes, drain and access log. Besides the shape of each value it checks
//! what refers to what (redirect targets, each route's entrypoints and
//! service, trusted sets, listen addresses that would collide with each other
//! or with the admin listener), so the proxy is handed a configuration whose
//! every name resolves. It does not look at what lies outside the file:
//! certificate files are the TLS loader's to read and upstream names are
//! resolved at run time.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use super::{
    values::{boolean, duration, file_path, valid_name, MAX_NAME},
    yaml::{closest_name, Table, Val},
    ConfigError,
};
use crate::{
    proxy::{AccessLogConfig, DrainConfig, EntrypointConfig, ProxyConfig},
    sets::SetSpec,
};

mod entrypoints;
mod ingress;
mod middlewares;
mod rate_limit_store;
mod requests;
mod routes;
mod targets;
mod weighted;

pub(crate) use targets::{route_host, route_path, target};

use entrypoints::{check_listen, check_redirects, read_entrypoints};
use middlewares::read_middlewares;
use routes::{read_routes, read_services, resolve_service};

/// What the proxy section is checked against in the rest of the file.
pub(super) struct Surroundings<'c> {
    /// `filter.sets`: the names `trusted` may use.
    pub sets: &'c [SetSpec],
    pub admin_listen: SocketAddr,
}

/// Where a value was written, for an error found after it was read.
#[derive(Clone, Debug)]
struct Place {
    key: String,
    line: usize,
}

impl Place {
    fn of(v: Val, key: &str) -> Self {
        Place {
            key: key.to_string(),
            line: v.line,
        }
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.key, Some(self.line), message)
    }
}

pub(super) fn read_proxy(v: Val, around: &Surroundings) -> Result<ProxyConfig, ConfigError> {
    let table = v.table(
        "proxy",
        &[
            "trusted",
            "entrypoints",
            "services",
            "routes",
            "default_service",
            "drain",
            "access_log",
            "middlewares",
            "ingress",
        ],
    )?;
    let trusted = match table.get("trusted") {
        Some(v) => read_trusted(v, &table.key_path("trusted"), around.sets)?,
        None => Vec::new(),
    };

    let entrypoints = match table.get("entrypoints") {
        Some(v) => read_entrypoints(v, &table.key_path("entrypoints"))?,
        None => Vec::new(),
    };
    if entrypoints.is_empty() {
        let (key, at) = present_or_section(&table, v, "entrypoints");
        return Err(at.error(
            &key,
            "the proxy has no entrypoint: add one, e.g. \
             `websecure: { listen: \"[::]:443\", tls: {} }` under proxy.entrypoints",
        ));
    }
    check_listen(&entrypoints, around.admin_listen)?;
    check_redirects(&entrypoints)?;
    let ingress = match table.get("ingress") {
        Some(v) => Some(ingress::read_ingress(
            v,
            &table.key_path("ingress"),
            &entrypoints,
        )?),
        None => None,
    };

    let mut services = match table.get("services") {
        Some(v) => read_services(v, &table.key_path("services"))?,
        None => routes::Services::default(),
    };
    let middlewares = match table.get("middlewares") {
        Some(v) => read_middlewares(v, &table.key_path("middlewares"), around.sets)?,
        None => BTreeMap::new(),
    };
    let routes = match table.get("routes") {
        Some(v) => read_routes(
            v,
            &table.key_path("routes"),
            &entrypoints,
            &mut services,
            &middlewares,
        )?,
        None => Vec::new(),
    };
    let default_service = match table.get("default_service") {
        Some(v) => {
            let path = table.key_path("default_service");
            let name = v.text(&path, "a service name or host:port")?;
            Some(resolve_service(name, &Place::of(v, &path), &mut services)?)
        }
        None => None,
    };
    if routes.is_empty() && default_service.is_none() && ingress.is_none() {
        let (key, at) = present_or_section(&table, v, "routes");
        return Err(at.error(
            &key,
            "the proxy has no route, no default_service and no ingress source: every \
             request would get 404; add a route under proxy.routes, set \
             proxy.default_service or read Ingress objects with proxy.ingress",
        ));
    }
    let drain = match table.get("drain") {
        Some(v) => read_drain(v, &table.key_path("drain"))?,
        None => DrainConfig::default(),
    };
    let access_log = match table.get("access_log") {
        Some(v) => read_access_log(v, &table.key_path("access_log"))?,
        None => default_access_log(),
    };

    let mut entrypoints: Vec<EntrypointConfig> =
        entrypoints.into_iter().map(|e| e.config).collect();
    entrypoints.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ProxyConfig {
        trusted,
        entrypoints,
        services: services.plain,
        weighted: services.weighted,
        routes,
        default_service,
        drain,
        access_log,
        middlewares,
        ingress,
    })
}

/// Access log on, to stdout. (`AccessLogConfig::default()` is the derived
/// all-off value, not the documented default.)
fn default_access_log() -> AccessLogConfig {
    AccessLogConfig {
        enabled: true,
        path: None,
    }
}

/// The key path and value to blame for something missing: `key` if it is
/// written (empty), else the section itself.
fn present_or_section<'a>(table: &Table<'a>, section: Val<'a>, key: &str) -> (String, Val<'a>) {
    match table.get(key) {
        Some(v) => (table.key_path(key), v),
        None => ("proxy".to_string(), section),
    }
}

fn read_trusted(v: Val, path: &str, sets: &[SetSpec]) -> Result<Vec<String>, ConfigError> {
    let mut trusted: Vec<String> = Vec::new();
    for (path, item) in v.list(path, "[cloudflare]")? {
        let name = item.text(&path, "a set name")?;
        if !sets.iter().any(|set| set.name == name) {
            let hint = match closest_name(name, sets.iter().map(|set| set.name.as_str())) {
                Some(near) => format!(" (did you mean `{near}`?)"),
                None => ": it is not defined under filter.sets".to_string(),
            };
            return Err(item.error(&path, format!("unknown set `{name}`{hint}")));
        }
        if trusted.iter().any(|t| t == name) {
            return Err(item.error(&path, format!("set `{name}` is listed twice")));
        }
        trusted.push(name.to_string());
    }
    Ok(trusted)
}

/// Refuses a name that cannot be a metric label.
fn check_name(what: &str, name: &str, path: &str, line: usize) -> Result<(), ConfigError> {
    if valid_name(name) {
        return Ok(());
    }
    Err(ConfigError::new(
        path,
        Some(line),
        format!(
            "`{name}` is not a valid {what} name: use 1-{MAX_NAME} letters, digits, `_`, `-` \
             or `.` (names become metric labels)"
        ),
    ))
}

/// `unknown entrypoint `x` (did you mean `y`?)`, or `otherwise` when no
/// known name is near.
fn unknown<'n>(
    what: &str,
    name: &str,
    known: impl Iterator<Item = &'n str>,
    otherwise: &str,
) -> String {
    match closest_name(name, known) {
        Some(near) => format!("unknown {what} `{name}` (did you mean `{near}`?)"),
        None => format!("unknown {what} `{name}`: {otherwise}"),
    }
}

// ---- drain and access log ----

fn read_drain(v: Val, path: &str) -> Result<DrainConfig, ConfigError> {
    let table = v.table(path, &["accept_grace", "grace_timeout"])?;
    let mut drain = DrainConfig::default();
    if let Some(v) = table.get("accept_grace") {
        drain.accept_grace = duration(v, &table.key_path("accept_grace"))?;
    }
    if let Some(v) = table.get("grace_timeout") {
        drain.grace_timeout = duration(v, &table.key_path("grace_timeout"))?;
    }
    Ok(drain)
}

fn read_access_log(v: Val, path: &str) -> Result<AccessLogConfig, ConfigError> {
    let table = v.table(path, &["enabled", "path"])?;
    let mut access_log = default_access_log();
    if let Some(v) = table.get("enabled") {
        access_log.enabled = boolean(v, &table.key_path("enabled"))?;
    }
    if let Some(v) = table.get("path") {
        access_log.path = Some(file_path(v, &table.key_path("path"))?);
    }
    Ok(access_log)
}

// ---- numbers ----

/// A duration that must not be zero.
fn timeout(v: Val, path: &str) -> Result<Duration, ConfigError> {
    let timeout = duration(v, path)?;
    if timeout.is_zero() {
        return Err(v.error(path, "a timeout of 0 would fail at once; give it a length"));
    }
    Ok(timeout)
}
