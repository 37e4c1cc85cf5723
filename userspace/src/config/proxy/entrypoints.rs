//! `proxy.entrypoints`: the listeners, each plain or TLS, a plain one
//! possibly redirecting to a TLS one, with its limits. Names and addresses are
//! checked across all entrypoints once they are read: redirect targets exist
//! and have TLS, and no two listeners (nor the admin listener) would need the
//! same socket.
use std::net::SocketAddr;

use super::{check_name, requests, targets::listen_overlap, timeout, unknown, Place};
use crate::{
    config::{
        values::file_path,
        yaml::{Val, Value},
        ConfigError,
    },
    proxy::{CertPair, EntrypointConfig, Limits, RedirectConfig, TlsConfig, TlsVersion},
};

/// `redirect: websecure` with no code: 308 keeps the method and the body.
const DEFAULT_REDIRECT_CODE: u16 = 308;
/// Smaller than this, ordinary requests with a few cookies get 431.
const MIN_HEADER_BYTES: usize = 1024;
/// A request head this large is an attack, not a request (and HTTP/2's
/// header list size is a u32).
const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
/// Far beyond what one process has file descriptors for.
const MAX_CONNECTIONS: usize = 10_000_000;

/// An entrypoint as read, with the places the cross-checks point at.
pub(super) struct Entrypoint {
    pub(super) config: EntrypointConfig,
    pub(super) listen: Vec<Place>,
    pub(super) redirect: Option<Place>,
    pub(super) tls: Option<Place>,
}

/// In file order.
pub(super) fn read_entrypoints(v: Val, path: &str) -> Result<Vec<Entrypoint>, ConfigError> {
    let table = v.named_table(path)?;
    let mut entrypoints = Vec::new();
    for (name, key_line, v) in table.entries() {
        let path = table.key_path(name);
        check_name("entrypoint", name, &path, key_line)?;
        entrypoints.push(read_entrypoint(name, v, &path)?);
    }
    Ok(entrypoints)
}

fn read_entrypoint(name: &str, v: Val, path: &str) -> Result<Entrypoint, ConfigError> {
    let table = v.table(
        path,
        &[
            "listen",
            "redirect",
            "tls",
            "limits",
            "path",
            "underscore_headers",
            "upgrades",
        ],
    )?;
    let Some(listen_value) = table.get("listen") else {
        return Err(v.error(
            path,
            format!("entrypoint `{name}` has no `listen` address: add e.g. `listen: \"[::]:443\"`"),
        ));
    };
    let mut listen = Vec::new();
    let mut listen_places = Vec::new();
    for (address, place) in listen_addresses(listen_value, &table.key_path("listen"))? {
        listen.push(address);
        listen_places.push(place);
    }
    let (redirect, redirect_place) = match table.get("redirect") {
        Some(v) => {
            let (redirect, place) = read_redirect(v, &table.key_path("redirect"))?;
            (Some(redirect), Some(place))
        }
        None => (None, None),
    };
    let (tls, tls_place) = match table.get("tls") {
        Some(v) => {
            let path = table.key_path("tls");
            (Some(read_tls(v, &path)?), Some(Place::of(v, &path)))
        }
        None => (None, None),
    };
    let limits = match table.get("limits") {
        Some(v) => read_limits(v, &table.key_path("limits"))?,
        None => Limits::default(),
    };
    let requests = requests::read_request_policy(&table)?;
    Ok(Entrypoint {
        config: EntrypointConfig {
            name: name.to_string(),
            listen,
            redirect,
            tls,
            limits,
            requests,
        },
        listen: listen_places,
        redirect: redirect_place,
        tls: tls_place,
    })
}

/// One address or a list of them.
fn listen_addresses(v: Val, path: &str) -> Result<Vec<(SocketAddr, Place)>, ConfigError> {
    let example = "[\"[::]:443\", \"0.0.0.0:8443\"]";
    let items = match &v.node.value {
        Value::Seq(_) => v.list(path, example)?,
        _ => vec![(path.to_string(), v)],
    };
    if items.is_empty() {
        return Err(v.error(path, "lists no address: add one like \"[::]:443\""));
    }
    items
        .into_iter()
        .map(|(path, item)| {
            let text = item.text(&path, "an address and port like \"[::]:443\"")?;
            let address = text.trim().parse::<SocketAddr>().map_err(|_| {
                item.error(
                    &path,
                    format!(
                        "`{text}` is not an IP address and port like \"[::]:443\" or \
                         0.0.0.0:80 (host names are not resolved)"
                    ),
                )
            })?;
            Ok((address, Place::of(item, &path)))
        })
        .collect()
}

/// `redirect: NAME` or `redirect: { to: NAME, code: 301 }`. Whether NAME is
/// an entrypoint is checked with all of them ([`check_redirects`]).
fn read_redirect(v: Val, path: &str) -> Result<(RedirectConfig, Place), ConfigError> {
    if let Value::Scalar(to) = &v.node.value {
        let redirect = RedirectConfig {
            to: to.trim().to_string(),
            code: DEFAULT_REDIRECT_CODE,
        };
        return Ok((redirect, Place::of(v, path)));
    }
    let table = v.table(path, &["to", "code"])?;
    let Some(to_value) = table.get("to") else {
        return Err(v.error(
            path,
            "the redirect has no `to`: name the TLS entrypoint to send clients to, \
             e.g. `redirect: websecure`",
        ));
    };
    let to_path = table.key_path("to");
    let to = to_value.text(&to_path, "an entrypoint name")?.trim();
    let mut code = DEFAULT_REDIRECT_CODE;
    if let Some(v) = table.get("code") {
        let path = table.key_path("code");
        code = match v.text(&path, "301 or 308")?.trim() {
            "301" => 301,
            "308" => 308,
            other => {
                return Err(v.error(
                    &path,
                    format!(
                        "`{other}` is not a redirect code xdpgate sends: use 308 (keeps the \
                         method and body; the default) or 301"
                    ),
                ))
            }
        };
    }
    let redirect = RedirectConfig {
        to: to.to_string(),
        code,
    };
    Ok((redirect, Place::of(to_value, &to_path)))
}

/// `tls: {}` (or `tls:`) is TLS with a generated self-signed certificate.
fn read_tls(v: Val, path: &str) -> Result<TlsConfig, ConfigError> {
    let table = v.table(path, &["certs", "client_ca", "min_version"])?;
    let mut tls = TlsConfig {
        certs: Vec::new(),
        client_ca: None,
        min_version: TlsVersion::default(),
    };
    if let Some(v) = table.get("certs") {
        let example = "[{ cert: /etc/xdpgate/tls/tls.crt, key: /etc/xdpgate/tls/tls.key }]";
        for (path, item) in v.list(&table.key_path("certs"), example)? {
            let pair = item.table(&path, &["cert", "key"])?;
            let file = |key: &str| match pair.get(key) {
                Some(v) => file_path(v, &pair.key_path(key)),
                None => Err(item.error(
                    &path,
                    format!(
                        "a certificate needs both `cert` and `key` (PEM files); `{key}` is missing"
                    ),
                )),
            };
            tls.certs.push(CertPair {
                cert: file("cert")?,
                key: file("key")?,
            });
        }
    }
    if let Some(v) = table.get("client_ca") {
        tls.client_ca = Some(file_path(v, &table.key_path("client_ca"))?);
    }
    if let Some(v) = table.get("min_version") {
        let path = table.key_path("min_version");
        tls.min_version = match v.text(&path, "\"1.2\" or \"1.3\"")?.trim() {
            "1.2" => TlsVersion::Tls12,
            "1.3" => TlsVersion::Tls13,
            other => {
                return Err(v.error(
                    &path,
                    format!(
                        "`{other}` is not a TLS version xdpgate accepts: write \"1.2\" \
                         (the default) or \"1.3\""
                    ),
                ))
            }
        };
    }
    Ok(tls)
}

fn read_limits(v: Val, path: &str) -> Result<Limits, ConfigError> {
    let table = v.table(
        path,
        &[
            "header_read_timeout",
            "body_read_timeout",
            "max_header_bytes",
            "idle_timeout",
            "max_connections",
            "h2_max_concurrent_streams",
            "handshake_timeout",
        ],
    )?;
    let mut limits = Limits::default();
    if let Some(v) = table.get("header_read_timeout") {
        limits.header_read_timeout = timeout(v, &table.key_path("header_read_timeout"))?;
    }
    if let Some(v) = table.get("body_read_timeout") {
        limits.body_read_timeout = timeout(v, &table.key_path("body_read_timeout"))?;
    }
    if let Some(v) = table.get("max_header_bytes") {
        let path = table.key_path("max_header_bytes");
        limits.max_header_bytes = count(v, &path, MIN_HEADER_BYTES, MAX_HEADER_BYTES)?;
    }
    if let Some(v) = table.get("idle_timeout") {
        limits.idle_timeout = timeout(v, &table.key_path("idle_timeout"))?;
    }
    if let Some(v) = table.get("max_connections") {
        let path = table.key_path("max_connections");
        limits.max_connections = count(v, &path, 1, MAX_CONNECTIONS)?;
    }
    if let Some(v) = table.get("h2_max_concurrent_streams") {
        let path = table.key_path("h2_max_concurrent_streams");
        let streams = count(v, &path, 1, u32::MAX as usize)?;
        limits.h2_max_concurrent_streams = u32::try_from(streams).unwrap_or(u32::MAX);
    }
    if let Some(v) = table.get("handshake_timeout") {
        limits.handshake_timeout = timeout(v, &table.key_path("handshake_timeout"))?;
    }
    Ok(limits)
}

/// Listen addresses are unique across entrypoints, and none would take the
/// admin listener's socket. Overlap counts, not only equality: `[::]:443`
/// (dual stack) and `0.0.0.0:443` cannot both be bound.
pub(super) fn check_listen(
    entrypoints: &[Entrypoint],
    admin: SocketAddr,
) -> Result<(), ConfigError> {
    let all: Vec<(&str, SocketAddr, &Place)> = entrypoints
        .iter()
        .flat_map(|e| {
            let name = e.config.name.as_str();
            e.config
                .listen
                .iter()
                .zip(&e.listen)
                .map(move |(a, p)| (name, *a, p))
        })
        .collect();
    for (i, &(name, address, place)) in all.iter().enumerate() {
        if listen_overlap(address, admin) {
            return Err(place.error(format!(
                "`{address}` would take the admin listener's socket (admin.listen is \
                 `{admin}`): the admin endpoints must never share a public entrypoint"
            )));
        }
        let earlier = all[..i]
            .iter()
            .find(|(_, other, _)| listen_overlap(address, *other));
        if let Some(&(other_name, other, other_place)) = earlier {
            let mut whose = if other_name == name {
                "this entrypoint".to_string()
            } else {
                format!("entrypoint `{other_name}`")
            };
            if other_place.line != place.line {
                whose += &format!(" (line {})", other_place.line);
            }
            return Err(place.error(if other == address {
                format!("`{address}` is already where {whose} listens")
            } else {
                format!(
                    "`{address}` overlaps `{other}` of {whose}: an unspecified address takes \
                     the port on every address, and `[::]` on IPv4 too"
                )
            }));
        }
    }
    Ok(())
}

/// A redirect goes to an entrypoint that exists and has TLS, from one that
/// has none.
pub(super) fn check_redirects(entrypoints: &[Entrypoint]) -> Result<(), ConfigError> {
    for entrypoint in entrypoints {
        let (Some(redirect), Some(place)) = (&entrypoint.config.redirect, &entrypoint.redirect)
        else {
            continue;
        };
        let name = &entrypoint.config.name;
        if let Some(tls_place) = &entrypoint.tls {
            return Err(tls_place.error(format!(
                "entrypoint `{name}` redirects every request to `{}`, so it serves nothing \
                 over TLS: remove `tls` here, or `redirect`",
                redirect.to
            )));
        }
        let Some(target) = entrypoints.iter().find(|e| e.config.name == redirect.to) else {
            return Err(place.error(unknown(
                "entrypoint",
                &redirect.to,
                entrypoints.iter().map(|e| e.config.name.as_str()),
                "it is not defined under proxy.entrypoints",
            )));
        };
        if target.config.tls.is_none() {
            return Err(place.error(format!(
                "entrypoint `{}` has no `tls`: a redirect sends clients from plain HTTP to a \
                 TLS entrypoint",
                redirect.to
            )));
        }
    }
    Ok(())
}

/// A whole number from `min` to `max`.
pub(super) fn count(v: Val, path: &str, min: usize, max: usize) -> Result<usize, ConfigError> {
    let text = v.text(path, "a whole number")?;
    match text.trim().parse::<usize>() {
        Ok(n) if n < min => Err(v.error(path, format!("{n} is too small: use at least {min}"))),
        Ok(n) if n > max => Err(v.error(path, format!("{n} is too large: use at most {max}"))),
        Ok(n) => Ok(n),
        Err(_) => Err(v.error(path, format!("`{text}` is not a whole number"))),
    }
}
