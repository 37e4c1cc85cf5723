//! The request path: from the request head hyper parsed to the response it
//! writes back. In order: the entrypoint's redirect, protocol hygiene
//! (methods, framing), the request-path policy (the one spelling of the
//! path that is routed and forwarded), header-name aliases, routing, the
//! forwarded headers, then the route's tower stack: its middlewares as
//! layers, the upstream call innermost (`forward`), where WebSocket upgrades
//! are forwarded after the middlewares ran. Whatever the proxy answers
//! itself is a [`ProxyError`], whose source decides the status, the log
//! level and the labels it is counted under; it is counted at the end of
//! the request, whichever step gave it.
//!
//! Not here: connections (TLS, hyper's builders, idle and slot limits) are
//! `server`'s; pools and retries are `upstream`'s.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use http_body_util::BodyExt as _;
use hyper::{
    body::{Body, Incoming},
    header::{self, HeaderValue},
    Request, Response, StatusCode, Uri, Version,
};

use super::{
    access_log::AccessRecord,
    connections::Activity,
    forwarded::{self, Forwarding},
    metrics::{ProxyErrorLabels, RejectionLabels},
    middleware::stack,
    route_actions,
    route_rules::RequestFacts,
    server::{ProxyState, Shared},
    sticky::EndpointSticky,
    upstream::ProxyBody,
    EntrypointConfig, PathPolicy,
};

pub mod error;
pub mod forward;
pub mod framing;
mod hygiene;
mod observe;
pub mod path;
mod stall;

pub use error::ProxyError;
pub(super) use hygiene::method_label;
pub(super) use observe::RequestGuard;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a request handler knows about its connection.
#[derive(Clone)]
pub(super) struct ConnInfo {
    pub entrypoint: Arc<str>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls_version: Option<&'static str>,
    pub activity: Arc<Activity>,
    /// What the HTTP/1 framing watch saw on this connection's bytes.
    pub framing: Arc<framing::FramingState>,
}

/// The client IP the forwarded-header logic settled on, for middlewares.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub std::net::IpAddr);

/// The TCP peer (after a PROXY protocol header, if any), for middlewares
/// whose `ipStrategy` judges the peer rather than the settled client.
#[derive(Clone, Copy, Debug)]
pub struct PeerIp(pub std::net::IpAddr);

/// Marks a request that arrived over TLS on this proxy, for middlewares.
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// hyper's service for one request.
pub(super) async fn handle(
    shared: Arc<Shared>,
    info: ConnInfo,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let guard = RequestGuard::open(&info.activity, &shared);
    let state = shared.state.load_full();
    let mut record = observe::record(&info, &request, shared.access_log.is_some());
    let method = method_label(request.method());
    let response = serve(&shared, &state, &info, request, &mut record)
        .await
        .unwrap_or_else(ProxyError::into_response);
    if let Some(forward::AnsweredBy(endpoint)) = response.extensions().get() {
        record.upstream = Some(*endpoint);
    }
    if let Some(refusal) = response.extensions().get::<error::Refusal>() {
        account(&shared, &mut record, refusal, response.status());
    }
    observe::finish(&shared, record, method, response, started, guard)
}

/// Counts and logs an answer the proxy gave itself, wherever on the
/// request path it came from.
fn account(
    shared: &Shared,
    record: &mut AccessRecord,
    refusal: &error::Refusal,
    status: StatusCode,
) {
    let source = refusal.source.label();
    let metrics = &shared.metrics;
    metrics
        .proxy_errors
        .get_or_create(&ProxyErrorLabels {
            entrypoint: record.entrypoint.to_string(),
            source,
            kind: refusal.kind,
        })
        .inc();
    if let Some(middleware) = &refusal.middleware {
        metrics
            .middleware_rejections
            .get_or_create(&RejectionLabels {
                middleware: middleware.to_string(),
                kind: refusal.kind.to_string(),
                code: status.as_u16(),
            })
            .inc();
    }
    record.error = Some((source, refusal.kind));
    let (kind, message) = (refusal.kind, &refusal.message);
    match refusal.source {
        error::Source::Upstream | error::Source::Internal => tracing::warn!(
            entrypoint = %record.entrypoint, router = %record.router.as_deref().unwrap_or(""),
            "{source} error ({kind}): {message}"
        ),
        error::Source::Client | error::Source::Policy => tracing::debug!(
            entrypoint = %record.entrypoint, peer = %record.peer,
            "{source} error ({kind}): {message}"
        ),
    }
}

/// Everything before the route's stack, which every request must pass;
/// then the route's stack.
async fn serve(
    shared: &Arc<Shared>,
    state: &ProxyState,
    info: &ConnInfo,
    mut request: Request<Incoming>,
    record: &mut AccessRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
    let entrypoint = state
        .entrypoints
        .get(&*info.entrypoint)
        .map(|e| &e.config)
        .ok_or_else(|| ProxyError::internal("entrypoint", "the entrypoint was reconfigured"))?;
    let host = request_host(&request);
    if entrypoint.redirect.is_some() {
        return Ok(redirect(state, entrypoint, host.as_deref(), info, &request));
    }
    let policy = &entrypoint.requests;
    hygiene::refuse_method(request.method())?;
    hygiene::check_framing(&request, Some(&info.framing))?;
    sanitize(&mut request, &policy.path)?;
    // The routed path, held apart from the request the steps below change
    // (a URI clone shares its bytes: no copy).
    let uri = request.uri().clone();
    let path = uri.path();
    hygiene::alias_headers(request.headers_mut(), policy.underscore_headers)?;
    let facts = RequestFacts::of(&request);
    let route = state
        .routes
        .find_request(&info.entrypoint, host.as_deref(), path, &facts)
        .ok_or_else(|| {
            let host = host.as_deref().unwrap_or("");
            ProxyError::policy(
                StatusCode::NOT_FOUND,
                "no_route",
                format!("page not found: no route for host `{host}` and path `{path}`"),
            )
        })?;
    record.router = Some(route.name.clone());
    // A Gateway API route's own answer and rewrite (proxy/route_rules.rs);
    // nothing for other routes.
    if let Some(answer) = route_actions::redirect(route, &request, host.as_deref(), info) {
        return Ok(answer);
    }
    let host = route_actions::rewrite(route, &mut request, host)?;
    // A weighted service picks its member here, before the stack, so the
    // access log and the metrics name the service that served.
    let choice = state.balancers.choose(&route.service, request.headers());
    record.service = Some(choice.service.clone());
    let no_service =
        || ProxyError::internal("no_service", format!("no service `{}`", choice.service));
    let upstream = state
        .upstreams
        .get(&choice.service)
        .ok_or_else(no_service)?;
    let stack = state.stack(route).ok_or_else(no_service)?;
    let sticky = EndpointSticky::read(&upstream, request.headers());
    let client_ip = settle_forwarding(shared, info, &mut request, host.as_deref(), policy)?;
    record.client_ip = client_ip;
    let mut outgoing = outgoing(request, host, entrypoint);
    outgoing.extensions_mut().insert(forward::Target {
        upstream,
        cookies: choice.cookies,
        sticky,
    });
    let mut response = stack::call(stack, outgoing).await;
    route.actions.response_headers.apply(response.headers_mut());
    Ok(response)
}

/// The forwarded headers: which upgrade passes, who the client is, what
/// the upstream is told. Returns the client IP, also left in the request
/// for the route's middlewares.
fn settle_forwarding(
    shared: &Shared,
    info: &ConnInfo,
    request: &mut Request<Incoming>,
    host: Option<&str>,
    policy: &super::RequestPolicy,
) -> Result<std::net::IpAddr, ProxyError> {
    let upgrade = hygiene::upgrade(request, policy);
    let trusted = shared.trusted.load();
    let tls = info.tls_version.is_some();
    let fwd = Forwarding {
        peer: info.peer,
        trusted: trusted.contains(info.peer.ip()),
        proto: if tls { "https" } else { "http" },
        port: info.local.port(),
    };
    if fwd.trusted {
        if let Some(name) = forwarded::repeated_claim(request.headers()) {
            return Err(ProxyError::client(
                StatusCode::BAD_REQUEST,
                "forwarded",
                format!("the request carries `{name}` more than once"),
            ));
        }
    }
    let client_ip = forwarded::prepare_request(
        request.headers_mut(),
        host,
        upgrade.as_ref(),
        &fwd,
        &trusted,
    );
    let extensions = request.extensions_mut();
    extensions.insert(ClientIp(client_ip));
    extensions.insert(PeerIp(info.peer.ip()));
    if tls {
        extensions.insert(OverTls);
    }
    if upgrade.is_some() {
        extensions.insert(forward::Upgrading);
    }
    Ok(client_ip)
}

/// The request as the upstream gets it: HTTP/1.1 (or h2c, the pool's
/// choice), the client's host, and a body that may not stall.
fn outgoing(
    request: Request<Incoming>,
    host: Option<String>,
    entrypoint: &EntrypointConfig,
) -> Request<ProxyBody> {
    let (parts, body) = request.into_parts();
    let body: ProxyBody = if body.is_end_stream() {
        body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
    } else {
        let limit = entrypoint.limits.body_read_timeout;
        stall::StallTimeout::new(body, limit).boxed_unsync()
    };
    let mut outgoing = Request::from_parts(parts, body);
    *outgoing.version_mut() = Version::HTTP_11;
    // HTTP/2 has no Host header (`:authority`), and a route may rewrite
    // the host; an HTTP/1.1 Host that stays is not copied again.
    let headers = outgoing.headers_mut();
    let same =
        |h: &String| headers.get(header::HOST).map(HeaderValue::as_bytes) == Some(h.as_bytes());
    if let Some(value) = host
        .filter(|h| !same(h))
        .and_then(|h| HeaderValue::from_str(&h).ok())
    {
        headers.insert(header::HOST, value);
    }
    outgoing
}

/// The request-path policy: the request continues with the one spelling
/// of its path that is routed and forwarded; the query is left alone.
fn sanitize<B>(request: &mut Request<B>, policy: &PathPolicy) -> Result<(), ProxyError> {
    let normalized = path::normalize(request.uri().path(), policy)
        .map_err(|why| ProxyError::client(StatusCode::BAD_REQUEST, "path", why.to_string()))?;
    let std::borrow::Cow::Owned(normal) = normalized else {
        return Ok(());
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|e| {
        ProxyError::internal("path", format!("the normalised path does not parse: {e}"))
    })?);
    *request.uri_mut() = Uri::from_parts(parts)
        .map_err(|e| ProxyError::internal("path", format!("rebuilding the URI: {e}")))?;
    Ok(())
}

/// A plain entrypoint that redirects answers everything with a redirect to
/// its TLS entrypoint, keeping host, path and query.
fn redirect(
    state: &ProxyState,
    entrypoint: &EntrypointConfig,
    host: Option<&str>,
    info: &ConnInfo,
    request: &Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(redirect) = &entrypoint.redirect else {
        return error::text_response(StatusCode::INTERNAL_SERVER_ERROR, "no redirect");
    };
    let port = state.ports.get(&redirect.to).copied().unwrap_or(443);
    let bare_host = host
        .map(strip_port)
        .unwrap_or_else(|| info.local.ip().to_string());
    let authority = if port == 443 {
        bare_host
    } else {
        format!("{bare_host}:{port}")
    };
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{authority}{path_and_query}");
    let status = StatusCode::from_u16(redirect.code).unwrap_or(StatusCode::PERMANENT_REDIRECT);
    let mut response = error::text_response(status, format!("moved to {location}"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The request's host: the URI authority (HTTP/2 `:authority`, absolute
/// form) or the Host header.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

fn strip_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return match rest.split_once(']') {
            Some((addr, _)) => format!("[{addr}]"),
            None => host.to_string(),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => host.to_string(),
    }
}
