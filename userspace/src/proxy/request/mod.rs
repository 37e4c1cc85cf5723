//! The request path: from the request head hyper parsed to the response it
//! writes back. In order: the entrypoint's redirect, protocol hygiene
//! (methods, framing), the request-path policy (the one spelling of the
//! path that is routed and forwarded), header-name aliases, routing, the
//! forwarded headers, the route's middlewares, the upstream and back, with
//! WebSocket upgrades passed through after the middlewares ran. Whatever
//! the proxy answers itself is a [`ProxyError`], whose source decides the
//! status, the log level and the labels it is counted under.
//!
//! Not here: connections (TLS, hyper's builders, idle and slot limits) are
//! `server`'s; pools and retries are `upstream`'s.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use http_body_util::BodyExt as _;
use hyper::{
    body::{Body, Incoming},
    header::{self, HeaderValue},
    upgrade::OnUpgrade,
    Request, Response, StatusCode, Uri, Version,
};
use hyper_util::rt::TokioIo;

use super::{
    access_log::AccessRecord,
    connections::Activity,
    forwarded::{self, Forwarding},
    metrics::{ProxyErrorLabels, UpstreamErrorLabels},
    middleware::RequestContext,
    route_actions,
    route_rules::RequestFacts,
    routing::Route,
    server::{ProxyState, Shared},
    sticky::EndpointSticky,
    upstream::{ProxyBody, Upstream},
    EntrypointConfig, PathPolicy,
};

pub mod error;
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
    pub entrypoint: String,
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

/// hyper's service for one request.
pub(super) async fn handle(
    shared: Arc<Shared>,
    info: ConnInfo,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let guard = RequestGuard::open(&info.activity, &shared);
    let state = shared.state.load_full();
    let mut record = observe::record(&info, &request);
    let method = method_label(request.method());
    let response = match serve(&shared, &state, &info, request, &mut record).await {
        Ok(response) => response,
        Err(error) => refuse(&shared, &mut record, error),
    };
    observe::finish(&shared, record, method, response, started, guard)
}

/// Counts, logs and answers an error of the proxy's own.
fn refuse(shared: &Shared, record: &mut AccessRecord, error: ProxyError) -> Response<ProxyBody> {
    let source = error.source.label();
    shared
        .metrics
        .proxy_errors
        .get_or_create(&ProxyErrorLabels {
            entrypoint: record.entrypoint.clone(),
            source,
            kind: error.kind,
        })
        .inc();
    record.error = Some((source, error.kind));
    match error.source {
        error::Source::Upstream | error::Source::Internal => tracing::warn!(
            entrypoint = %record.entrypoint, router = %record.router, "{error}"
        ),
        error::Source::Client | error::Source::Policy => tracing::debug!(
            entrypoint = %record.entrypoint, peer = %record.peer, "{error}"
        ),
    }
    error.into_response()
}

/// Everything before the route's middlewares: what any request must pass.
async fn serve(
    shared: &Arc<Shared>,
    state: &ProxyState,
    info: &ConnInfo,
    mut request: Request<Incoming>,
    record: &mut AccessRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
    let entrypoint = state
        .entrypoints
        .get(&info.entrypoint)
        .map(|e| &e.config)
        .ok_or_else(|| ProxyError::internal("entrypoint", "the entrypoint was reconfigured"))?;
    let host = request_host(&request);
    if entrypoint.redirect.is_some() {
        return Ok(redirect(state, entrypoint, host.as_deref(), info, &request));
    }
    let policy = &entrypoint.requests;
    hygiene::refuse_method(request.method())?;
    hygiene::check_framing(&request, Some(&info.framing))?;
    let path = sanitize(&mut request, &policy.path)?;
    hygiene::alias_headers(request.headers_mut(), policy.underscore_headers)?;
    let facts = RequestFacts::of(&request);
    let route = state
        .routes
        .find_request(&info.entrypoint, host.as_deref(), &path, &facts)
        .ok_or_else(|| {
            let host = host.as_deref().unwrap_or("");
            ProxyError::policy(
                StatusCode::NOT_FOUND,
                "no_route",
                format!("page not found: no route for host `{host}` and path `{path}`"),
            )
        })?;
    record.router.clone_from(&route.name);
    // A Gateway API route's own answer and rewrite (proxy/route_rules.rs);
    // nothing for other routes.
    if let Some(answer) = route_actions::redirect(route, &request, host.as_deref(), info) {
        return Ok(answer);
    }
    let host = route_actions::rewrite(route, &mut request, host)?;
    let choice = state.balancers.choose(&route.service, request.headers());
    record.service.clone_from(&choice.service);
    let upstream = state.upstreams.get(&choice.service).ok_or_else(|| {
        ProxyError::internal("no_service", format!("no service `{}`", choice.service))
    })?;
    let sticky = EndpointSticky::read(&upstream, request.headers());
    let upgrade = hygiene::upgrade(&mut request, policy);
    let trusted = shared.trusted.load();
    let fwd = Forwarding {
        peer: info.peer,
        trusted: trusted.contains(info.peer.ip()),
        proto: if info.tls_version.is_some() {
            "https"
        } else {
            "http"
        },
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
        host.as_deref(),
        upgrade.as_ref(),
        &fwd,
        &trusted,
    );
    record.client_ip = client_ip;
    request.extensions_mut().insert(ClientIp(client_ip));
    let exchange = Exchange {
        shared,
        state,
        info,
        route,
        upstream,
        cookies: choice.cookies,
        sticky,
        entrypoint,
        client_ip,
    };
    let mut response = exchange.run(request, upgrade.is_some(), host, record).await;
    route.actions.response_headers.apply(response.headers_mut());
    Ok(response)
}

/// The request-path policy: the request continues with the one spelling
/// of its path that is routed and forwarded; the query is left alone.
fn sanitize<B>(request: &mut Request<B>, policy: &PathPolicy) -> Result<String, ProxyError> {
    let normalized = path::normalize(request.uri().path(), policy)
        .map_err(|why| ProxyError::client(StatusCode::BAD_REQUEST, "path", why.to_string()))?;
    let std::borrow::Cow::Owned(normal) = normalized else {
        return Ok(request.uri().path().to_string());
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal.clone(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|e| {
        ProxyError::internal("path", format!("the normalised path does not parse: {e}"))
    })?);
    *request.uri_mut() = Uri::from_parts(parts)
        .map_err(|e| ProxyError::internal("path", format!("rebuilding the URI: {e}")))?;
    Ok(normal)
}

/// A routed request on its way through the route's middlewares to the
/// upstream.
struct Exchange<'a> {
    shared: &'a Arc<Shared>,
    state: &'a ProxyState,
    info: &'a ConnInfo,
    route: &'a Route,
    upstream: Arc<Upstream>,
    /// Set on the response: the weighted services' sticky cookies.
    cookies: Vec<HeaderValue>,
    sticky: EndpointSticky,
    entrypoint: &'a EntrypointConfig,
    client_ip: std::net::IpAddr,
}

impl Exchange<'_> {
    async fn run(
        self,
        mut request: Request<Incoming>,
        upgrading: bool,
        host: Option<String>,
        record: &mut AccessRecord,
    ) -> Response<ProxyBody> {
        // Taken before the request moves on; resolved only if the upstream
        // agrees to switch.
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut request));
        let mut outgoing = self.outgoing(request, host);
        // The default service gets no middlewares.
        let is_default = self
            .state
            .routes
            .default_route()
            .is_some_and(|d| std::ptr::eq(d, self.route));
        let chain = self
            .state
            .chains
            .get(&self.route.name)
            .filter(|_| !is_default);
        let passed = match chain {
            Some(chain) => {
                let sets = self.shared.sets.load();
                let cx = RequestContext {
                    client_ip: self.client_ip,
                    tls: self.info.tls_version.is_some(),
                    sets: &sets,
                };
                match chain
                    .request(&mut outgoing, &cx, &self.shared.metrics)
                    .await
                {
                    Ok(passed) => Some(passed),
                    Err(answer) => return answer,
                }
            }
            None => None,
        };
        let sent = self
            .upstream
            .send_preferring(outgoing, self.sticky.preferred)
            .await;
        let response = match sent {
            Ok((response, endpoint)) => {
                record.upstream = Some(endpoint);
                let mut response = self.respond(response, client_upgrade);
                let endpoint_cookie = self.sticky.cookie_for(&self.upstream, endpoint);
                let headers = response.headers_mut();
                for cookie in self.cookies.iter().cloned().chain(endpoint_cookie) {
                    headers.append(header::SET_COOKIE, cookie);
                }
                response
            }
            Err(error) => self.failed(error, record),
        };
        match &passed {
            Some(passed) => passed.response(response, &self.shared.metrics),
            None => response,
        }
    }

    /// The request as the upstream gets it: HTTP/1.1 (or h2c, the pool's
    /// choice), the client's host, and a body that may not stall.
    fn outgoing(&self, request: Request<Incoming>, host: Option<String>) -> Request<ProxyBody> {
        let (parts, body) = request.into_parts();
        let body: ProxyBody = if body.is_end_stream() {
            body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
        } else {
            let limit = self.entrypoint.limits.body_read_timeout;
            stall::StallTimeout::new(body, limit).boxed_unsync()
        };
        let mut outgoing = Request::from_parts(parts, body);
        *outgoing.version_mut() = Version::HTTP_11;
        if let Some(value) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            outgoing.headers_mut().insert(header::HOST, value);
        }
        outgoing
    }

    /// The upstream's response on its way back; a 101 joins the two
    /// upgraded connections.
    fn respond(
        &self,
        mut response: Response<Incoming>,
        client_upgrade: Option<OnUpgrade>,
    ) -> Response<ProxyBody> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        forwarded::strip_response(response.headers_mut(), switching);
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
            });
        }
        let (parts, body) = response.into_parts();
        let body: ProxyBody = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
        Response::from_parts(parts, body)
    }

    fn failed(
        &self,
        error: super::upstream::UpstreamError,
        record: &mut AccessRecord,
    ) -> Response<ProxyBody> {
        let error = ProxyError::upstream(error);
        if error.source == error::Source::Upstream {
            self.shared
                .metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    service: self.upstream.name().to_string(),
                    kind: error.kind.to_string(),
                })
                .inc();
        }
        refuse(self.shared, record, error)
    }
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
