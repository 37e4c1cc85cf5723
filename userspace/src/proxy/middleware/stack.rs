//! A route's middlewares as a tower stack: [`RouteService`] is what a route
//! calls, and each middleware is a [`tower_layer::Layer`] around the next,
//! the upstream call innermost. Our own middlewares share one small
//! [`Middleware`] trait (a request side that may change or refuse the
//! request, a response side that may change the response) and one generic
//! [`MiddlewareLayer`]; compression is tower-http's own layer (`compress`).
//!
//! Errors do not travel up the stack as `Err`: a refusal becomes its
//! response where it happens ([`ProxyError::into_response`]), so the
//! layers outside it see it as a response (security headers are set on a
//! 401 too) and the request's end counts it from the [`Refusal`] it
//! carries.
//!
//! [`Refusal`]: crate::proxy::request::error::Refusal
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use crate::proxy::{request::ProxyError, upstream::ProxyBody};

/// A route's whole stack, or any part of it from one layer inwards.
pub type RouteService = BoxCloneSyncService<Request<ProxyBody>, Response<ProxyBody>, Infallible>;

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static>>;

/// One kind of middleware of our own.
pub trait Middleware: Send + Sync + 'static {
    /// The request side, before the layers inside it: may change the
    /// request, or refuse it (the refusal is the answer).
    fn request(
        &self,
        request: &mut Request<ProxyBody>,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send;

    /// The response side, after the layers inside it (also on their
    /// refusals).
    fn response(&self, _response: &mut Response<ProxyBody>) {}
}

/// Puts a [`Middleware`] around a service, under the name the
/// configuration gave it.
pub struct MiddlewareLayer<M> {
    middleware: Arc<M>,
    name: Arc<str>,
}

impl<M> MiddlewareLayer<M> {
    pub fn new(middleware: Arc<M>, name: Arc<str>) -> Self {
        MiddlewareLayer { middleware, name }
    }
}

impl<M: Middleware> Layer<RouteService> for MiddlewareLayer<M> {
    type Service = MiddlewareService<M>;

    fn layer(&self, inner: RouteService) -> MiddlewareService<M> {
        MiddlewareService {
            middleware: self.middleware.clone(),
            name: self.name.clone(),
            inner,
        }
    }
}

/// A [`Middleware`] around the rest of the stack.
pub struct MiddlewareService<M> {
    middleware: Arc<M>,
    name: Arc<str>,
    inner: RouteService,
}

impl<M> Clone for MiddlewareService<M> {
    fn clone(&self) -> Self {
        MiddlewareService {
            middleware: self.middleware.clone(),
            name: self.name.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<M: Middleware> Service<Request<ProxyBody>> for MiddlewareService<M> {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the inner stack's; `oneshot` below waits for it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> ResponseFuture {
        let middleware = self.middleware.clone();
        let name = self.name.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut response = match middleware.request(&mut request).await {
                Ok(()) => call(inner, request).await,
                Err(refusal) => refusal.from_middleware(&name).into_response(),
            };
            middleware.response(&mut response);
            Ok(response)
        })
    }
}

/// Wraps `inner` in `middleware`'s layer and boxes the result.
pub fn wrap<M: Middleware>(
    middleware: &Arc<M>,
    name: &Arc<str>,
    inner: RouteService,
) -> RouteService {
    RouteService::new(MiddlewareLayer::new(middleware.clone(), name.clone()).layer(inner))
}

/// Calls `service` once: waits until it is ready, then sends `request`.
///
/// (Not `ServiceExt::oneshot`: a `Oneshot` held in an async block makes
/// the compiler prove `Service` for every lifetime of the body's boxed
/// error, which it cannot, and the connection's future stops being `Send`.)
pub async fn call(mut service: RouteService, request: Request<ProxyBody>) -> Response<ProxyBody> {
    let ready: Result<(), Infallible> = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
    let answered = match ready {
        Ok(()) => service.call(request).await,
        Err(never) => match never {},
    };
    match answered {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
