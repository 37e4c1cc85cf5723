//! Forwarded headers and hop-by-hop headers: what a request's headers become
//! on the way to the upstream, who the client is, and what an upstream
//! response's headers become on the way back. Claims about the client
//! (`X-Forwarded-*`, `X-Real-IP`, `CF-Connecting-IP`, `Forwarded`) are
//! believed only from trusted peers (Cloudflare, in the reference
//! deployment); from anyone else they are replaced by what this proxy saw.
//! Pure header surgery: no I/O, no policy beyond that. This module holds the
//! client claims and how a request's are rewritten; who is trusted is
//! `trusted`, which headers belong to one hop only is `hop_by_hop`.
use std::net::{IpAddr, SocketAddr};

use hyper::http::{
    header::{self, HeaderName},
    HeaderMap, HeaderValue,
};

mod hop_by_hop;
#[cfg(test)]
mod tests;
mod trusted;

pub use hop_by_hop::strip_response;
use hop_by_hop::{has_token, named_in, remove_hop_by_hop, set_upgrade};
pub use trusted::TrustedPeers;

/// What the proxy knows about the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarding {
    pub peer: SocketAddr,
    /// The peer is in the trusted sets.
    pub trusted: bool,
    /// `"http"` or `"https"`: the entrypoint's scheme.
    pub proto: &'static str,
    /// The entrypoint's local port.
    pub port: u16,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");

/// Claims about the client or the original request that only a trusted peer
/// may make. Beyond the ones this proxy sets, this covers what Traefik (which
/// this proxy replaces) strips, and Cloudflare's other client-address
/// headers, since upstream applications may believe any of them.
const CLIENT_CLAIMS: [&str; 16] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "cf-connecting-ip",
    "forwarded",
    "cf-connecting-ipv6",
    "true-client-ip",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
];

/// Rewrites a request's headers for the upstream and returns the client IP
/// (IPv4-mapped addresses as IPv4).
///
///  - removes hop-by-hop headers: Connection, Keep-Alive, Proxy-Connection,
///    Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
///    Transfer-Encoding, Upgrade, and every header named in Connection
///    (except Host); keeps `TE: trailers` when the client sent it (gRPC
///    needs it end to end); if `upgrade` is Some (a WebSocket/Upgrade request
///    the caller will pass through), sets `Connection: upgrade` +
///    `Upgrade: <value>`;
///  - from an untrusted peer: drops every incoming claim about the client
///    (`X-Forwarded-*`, `X-Real-IP`, `CF-Connecting-IP`, `Forwarded`,
///    `True-Client-IP`...) and sets X-Forwarded-For = peer ip, X-Real-IP =
///    peer ip, X-Forwarded-Proto = proto, X-Forwarded-Host = host,
///    X-Forwarded-Port = port;
///  - from a trusted peer: the client IP is CF-Connecting-IP if present and
///    valid, else the right-most untrusted address of X-Forwarded-For
///    (walking from the right, skipping trusted addresses, stopping at an
///    unparseable one), else the peer; appends the peer to X-Forwarded-For;
///    keeps incoming X-Forwarded-Proto/-Host/-Port if present (else sets
///    them); X-Real-IP = client IP;
///  - malformed values (unparseable IPs) are ignored, never fatal.
pub fn prepare_request(
    headers: &mut HeaderMap,
    host: Option<&str>,
    upgrade: Option<&HeaderValue>,
    fwd: &Forwarding,
    trusted: &TrustedPeers,
) -> IpAddr {
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| has_token(v, "trailers"));
    remove_hop_by_hop(headers);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        set_upgrade(headers, upgrade.clone());
    }

    let peer = fwd.peer.ip().to_canonical();
    let client = if fwd.trusted {
        let client = cf_connecting_ip(headers)
            .or_else(|| rightmost_untrusted(headers, trusted))
            .unwrap_or(peer);
        append_forwarded_for(headers, peer);
        set_if_absent(
            headers,
            X_FORWARDED_PROTO,
            HeaderValue::from_str(fwd.proto).ok(),
        );
        set_if_absent(
            headers,
            X_FORWARDED_HOST,
            host.and_then(|h| HeaderValue::from_str(h).ok()),
        );
        set_if_absent(headers, X_FORWARDED_PORT, Some(HeaderValue::from(fwd.port)));
        client
    } else {
        // A CF-Connecting-IP claim is overwritten with the peer rather than
        // dropped: applications written for Cloudflare read it, and must
        // read the truth.
        let claimed_cf = headers.contains_key(CF_CONNECTING_IP);
        let claims: Vec<HeaderName> = named_in(headers, &CLIENT_CLAIMS).collect();
        for name in claims {
            headers.remove(name);
        }
        if claimed_cf {
            insert_ip(headers, CF_CONNECTING_IP, peer);
        }
        insert_ip(headers, X_FORWARDED_FOR, peer);
        if let Ok(proto) = HeaderValue::from_str(fwd.proto) {
            headers.insert(X_FORWARDED_PROTO, proto);
        }
        if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(X_FORWARDED_HOST, host);
        }
        headers.insert(X_FORWARDED_PORT, HeaderValue::from(fwd.port));
        peer
    };
    insert_ip(headers, X_REAL_IP, client);
    client
}

/// Claims that name one client, one scheme, one host or one port: a second
/// line of any of them makes the request mean two things (the first decides
/// here, an upstream may read the last). `X-Forwarded-For` and `Forwarded`
/// are lists and may repeat.
const SINGLE_CLAIMS: [&str; 7] = [
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "x-real-ip",
    "true-client-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
];

/// The first single-valued client claim that a trusted peer's request
/// carries more than once (the request is refused), if any.
pub fn repeated_claim(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .keys()
        .filter(|name| headers.get_all(*name).iter().nth(1).is_some())
        .find_map(|name| SINGLE_CLAIMS.into_iter().find(|n| *n == name.as_str()))
}

fn cf_connecting_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get(CF_CONNECTING_IP)?.to_str().ok()?;
    value
        .trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The nearest address in X-Forwarded-For that is not one of our trusted
/// proxies. An unparseable entry ends the walk: whatever is left of it was
/// not written by a proxy we can vouch for.
fn rightmost_untrusted(headers: &HeaderMap, trusted: &TrustedPeers) -> Option<IpAddr> {
    let entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    for entry in entries.into_iter().rev() {
        let ip = parse_forwarded_ip(entry)?;
        if !trusted.contains(ip) {
            return Some(ip);
        }
    }
    None
}

/// `192.0.2.1`, `2001:db8::1`, and the forms some proxies write with a port
/// or brackets: `192.0.2.1:4711`, `[2001:db8::1]:4711`, `[2001:db8::1]`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

/// Joins every incoming X-Forwarded-For line into one and appends `peer`.
fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let mut joined = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            joined.extend_from_slice(value);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(peer.to_string().as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(value) => {
            headers.insert(X_FORWARDED_FOR, value);
        }
        Err(_) => insert_ip(headers, X_FORWARDED_FOR, peer),
    }
}

fn set_if_absent(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    let present = headers.get(&name).is_some_and(|v| !v.is_empty());
    if let (false, Some(value)) = (present, value) {
        headers.insert(name, value);
    }
}

fn insert_ip(headers: &mut HeaderMap, name: HeaderName, ip: IpAddr) {
    if let Ok(value) = HeaderValue::from_str(&ip.to_string()) {
        headers.insert(name, value);
    }
}
