//! What the admin listener answers: the three routes, the methods they
//! take, and the headers every response carries. The listener itself (who
//! may connect, for how long) is the parent module's business.
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    header::{self, HeaderValue},
    Method, Response, StatusCode,
};

use super::AdminSource;
use crate::metrics;

/// The routes, known before the method is looked at, so an unknown path is
/// 404 whatever the method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Healthz,
    Readyz,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/metrics" => Some(Route::Metrics),
            "/healthz" => Some(Route::Healthz),
            "/readyz" => Some(Route::Readyz),
            _ => None,
        }
    }
}

pub(super) const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// `accept`: the request's `Accept` header, which picks the exposition
/// format of `/metrics` (OpenMetrics unless it asks for `text/plain` alone).
pub(super) fn respond(
    source: &dyn AdminSource,
    method: &Method,
    path: &str,
    accept: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(route) = Route::of(path) else {
        return response(StatusCode::NOT_FOUND, TEXT_PLAIN, "not found\n".into());
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = response(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT_PLAIN,
            "method not allowed: use GET or HEAD\n".into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match route {
        Route::Metrics if metrics::text_format::wants_text(accept) => response(
            StatusCode::OK,
            metrics::text_format::CONTENT_TYPE,
            metrics::text_format::from_openmetrics(&source.metrics()),
        ),
        Route::Metrics => response(StatusCode::OK, metrics::CONTENT_TYPE, source.metrics()),
        Route::Healthz => response(StatusCode::OK, TEXT_PLAIN, "ok\n".into()),
        Route::Readyz => match source.readiness() {
            Ok(()) => response(StatusCode::OK, TEXT_PLAIN, "ready\n".into()),
            Err(reasons) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT_PLAIN,
                not_ready_body(&reasons),
            ),
        },
    }
}

/// One reason per line, so a probe log or `curl` shows each on its own.
fn not_ready_body(reasons: &[String]) -> String {
    if reasons.is_empty() {
        return "not ready\n".into();
    }
    reasons
        .iter()
        .map(|reason| format!("{}\n", reason.trim().replace(['\r', '\n'], " ")))
        .collect()
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Probes and scrapes want the state of now, never a cached copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
