//! The innermost service of every route's stack: the request goes to the
//! upstream chosen for it (the route's service, or the member a weighted
//! service picked) and its response comes back, with the sticky cookies
//! to set, or the failure becomes the proxy's own answer. A WebSocket upgrade is forwarded here, after
//! every middleware outside has passed the request: when the upstream
//! agrees to switch (101), the client's and the upstream's connections are
//! joined.
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http_body_util::BodyExt as _;
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    upgrade::OnUpgrade,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::{error::Source, ProxyError};
use crate::proxy::{
    forwarded,
    metrics::{ProxyMetrics, UpstreamErrorLabels},
    middleware::RouteService,
    sticky::EndpointSticky,
    upstream::{ProxyBody, Upstream},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Marks a request whose upgrade the request policy lets through.
#[derive(Clone, Copy, Debug)]
pub struct Upgrading;

/// The upstream endpoint that answered, for the access log.
#[derive(Clone, Copy, Debug)]
pub struct AnsweredBy(pub SocketAddr);

/// Where the request goes, decided before the stack: the upstream (a
/// weighted service's pick already made), the weighted services' cookies
/// to set, and the endpoint the client's sticky cookie names.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    pub cookies: Vec<HeaderValue>,
    pub sticky: EndpointSticky,
}

/// Sends each request to the upstream its [`Target`] names.
#[derive(Clone)]
pub struct UpstreamCall {
    metrics: Arc<ProxyMetrics>,
}

impl UpstreamCall {
    /// The stack's innermost service.
    pub fn service(metrics: Arc<ProxyMetrics>) -> RouteService {
        RouteService::new(UpstreamCall { metrics })
    }

    async fn forward(self, mut request: Request<ProxyBody>) -> Response<ProxyBody> {
        let Some(target) = request.extensions_mut().remove::<Target>() else {
            return ProxyError::internal("no_service", "no upstream chosen").into_response();
        };
        // Taken before the request moves on; resolved only if the upstream
        // agrees to switch.
        let client_upgrade = request
            .extensions_mut()
            .remove::<Upgrading>()
            .map(|_| hyper::upgrade::on(&mut request));
        let upstream = &target.upstream;
        match upstream
            .send_preferring(request, target.sticky.preferred)
            .await
        {
            Ok((response, endpoint)) => {
                let mut response = respond(response, client_upgrade);
                response.extensions_mut().insert(AnsweredBy(endpoint));
                let endpoint_cookie = target.sticky.cookie_for(upstream, endpoint);
                let headers = response.headers_mut();
                for cookie in target.cookies.into_iter().chain(endpoint_cookie) {
                    headers.append(header::SET_COOKIE, cookie);
                }
                response
            }
            Err(error) => {
                let error = ProxyError::upstream(error);
                if error.source == Source::Upstream {
                    self.metrics
                        .upstream_errors
                        .get_or_create(&UpstreamErrorLabels {
                            service: upstream.name().to_string(),
                            kind: error.kind.to_string(),
                        })
                        .inc();
                }
                error.into_response()
            }
        }
    }
}

impl Service<Request<ProxyBody>> for UpstreamCall {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pool waits for a connection inside `send`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        let call = self.clone();
        Box::pin(async move { Ok(call.forward(request).await) })
    }
}

/// The upstream's response on its way back; a 101 joins the two upgraded
/// connections.
fn respond(
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
    response.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
}
