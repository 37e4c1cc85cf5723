//! Hop-by-hop headers (RFC 9110 7.6.1): the ones that describe one
//! connection and never travel past it, removed from requests on the way
//! to the upstream and from responses on the way back, except what an
//! upgrade the proxy passes through needs. Which claims about the client
//! are believed is the parent module's business, not this one's.
use hyper::http::{
    header::{self, HeaderName},
    HeaderMap, HeaderValue,
};

/// RFC 9110 7.6.1, plus the non-standard ones proxies have always removed.
pub(super) const HOP_BY_HOP: [&str; 10] = [
    "connection",
    // h2c's upgrade settings: meaningless on any other hop.
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers from an upstream response (keeping
/// `Connection: upgrade` and `Upgrade` for a 101 Switching Protocols when
/// `switching` is true).
pub fn strip_response(headers: &mut HeaderMap, switching: bool) {
    let upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        set_upgrade(headers, upgrade);
    }
}

pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        // Host is never hop-by-hop; removing it would change the upstream's
        // idea of which site was asked for.
        .filter(|name| name != header::HOST)
        .collect();
    doomed.extend(named_in(headers, &HOP_BY_HOP));
    for name in doomed {
        headers.remove(name);
    }
}

/// The names in `headers` that are among `names`. One pass over the names
/// the request has (a handful) instead of a hash lookup for each of
/// `names`: this runs on every request and every response. Names in a
/// `HeaderMap` are lowercase however they were spelled on the wire.
pub(super) fn named_in<'h>(
    headers: &'h HeaderMap,
    names: &'h [&str],
) -> impl Iterator<Item = HeaderName> + 'h {
    headers
        .keys()
        .filter(|name| names.contains(&name.as_str()))
        .cloned()
}

pub(super) fn set_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

pub(super) fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',').any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(token)
        })
    })
}
