//! The request path's side of [`RouteActions`](super::route_rules): a
//! route's redirect answer, and its rewrite and request header edits before
//! the request moves on (weighted backends are weighted services,
//! `proxy/balance.rs`). Kept out of
//! `request/` so that the request path calls it in three lines and knows
//! nothing of the Gateway API.
use hyper::{
    header::{self, HeaderValue},
    http::uri::PathAndQuery,
    Request, Response, StatusCode, Uri,
};

use super::{
    request::{error::text_response, ConnInfo, ProxyError},
    routing::Route,
    upstream::ProxyBody,
};

/// The route's redirect, answered instead of forwarding.
pub(super) fn redirect<B>(
    route: &Route,
    request: &Request<B>,
    host: Option<&str>,
    info: &ConnInfo,
) -> Option<Response<ProxyBody>> {
    let redirect = route.actions.redirect.as_ref()?;
    let scheme = if info.tls_version.is_some() {
        "https"
    } else {
        "http"
    };
    let bare = host.map(strip_port).unwrap_or_default();
    let location = redirect.location(scheme, bare, request.uri().path(), request.uri().query());
    let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND);
    let mut response = text_response(status, format!("moved to {location}"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Some(response)
}

/// Request header edits, then the path and host rewrite. Returns the host
/// the upstream is to see.
pub(super) fn rewrite<B>(
    route: &Route,
    request: &mut Request<B>,
    host: Option<String>,
) -> Result<Option<String>, ProxyError> {
    let actions = &route.actions;
    actions.request_headers.apply(request.headers_mut());
    if let Some(change) = &actions.rewrite.path {
        let path = change.apply(request.uri().path());
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).map_err(|e| {
            ProxyError::internal("rewrite", format!("the rewritten path does not parse: {e}"))
        })?);
        *request.uri_mut() = Uri::from_parts(parts)
            .map_err(|e| ProxyError::internal("rewrite", format!("rebuilding the URI: {e}")))?;
    }
    Ok(actions.rewrite.hostname.clone().or(host))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}
