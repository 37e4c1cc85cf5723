//! What is recorded about each request: the access-log record started from
//! the request head, and a response body wrapper that writes the log line
//! and the request metrics when the body ends (or the client goes away),
//! so durations cover the whole response.
use std::{
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header, Request, Response, Version,
};

use super::ConnInfo;
use crate::proxy::{
    access_log::AccessRecord,
    connections::Activity,
    metrics::{
        EntrypointLabels, EntrypointOnly, RouterLabels, RouterOnly, ServiceLabels, ServiceOnly,
    },
    server::Shared,
    upstream::ProxyBody,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts a request as open on its connection and in the proxy until the
/// response body is done.
pub struct RequestGuard(Arc<Activity>, Arc<Shared>);

impl RequestGuard {
    pub(in crate::proxy) fn open(activity: &Arc<Activity>, shared: &Arc<Shared>) -> Self {
        activity.request_started();
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(activity.clone(), shared.clone())
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
        self.1.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The access-log record as far as the request head tells it. The fields
/// only the access log reads (method, host, path, query, user agent) are
/// copied only when there is an access log (`logged`): without one, a
/// request costs no copies of its head.
pub(super) fn record(info: &ConnInfo, request: &Request<Incoming>, logged: bool) -> AccessRecord {
    let mut record = AccessRecord {
        entrypoint: info.entrypoint.clone(),
        peer: info.peer,
        client_ip: info.peer.ip(),
        method: String::new(),
        host: String::new(),
        path: String::new(),
        query: None,
        protocol: protocol_label(request.version()),
        tls_version: info.tls_version,
        router: None,
        service: None,
        upstream: None,
        status: 0,
        request_bytes: request.body().size_hint().exact(),
        user_agent: None,
        error: None,
    };
    if logged {
        record.method = request.method().to_string();
        record.host = super::request_host(request).unwrap_or_default();
        record.path = request.uri().path().to_string();
        record.query = request.uri().query().map(str::to_string);
        record.user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    record
}

fn protocol_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

/// Wraps the response body so that the access log line and the duration
/// metrics are written when the body ends (or the client goes away).
pub(super) fn finish(
    shared: &Arc<Shared>,
    mut record: AccessRecord,
    method: &'static str,
    response: Response<ProxyBody>,
    started: Instant,
    guard: RequestGuard,
) -> Response<ProxyBody> {
    record.status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = Observed {
        inner: body,
        bytes: 0,
        done: Some(Done {
            shared: shared.clone(),
            record,
            method,
            started,
            _guard: guard,
        }),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

struct Done {
    shared: Arc<Shared>,
    record: AccessRecord,
    /// The method as a bounded label ([`method_label`]): a client must not
    /// be able to grow the label set.
    method: &'static str,
    started: Instant,
    _guard: RequestGuard,
}

impl Done {
    fn complete(self, bytes: u64) {
        let elapsed = self.started.elapsed();
        let r = &self.record;
        let m = &self.shared.metrics;
        let secs = elapsed.as_secs_f64();
        let method = self.method;
        m.entrypoint_requests
            .get_or_create(&EntrypointLabels {
                entrypoint: r.entrypoint.clone(),
                code: r.status,
                method,
                protocol: if r.tls_version.is_some() {
                    "https"
                } else {
                    "http"
                },
            })
            .inc();
        m.entrypoint_duration
            .get_or_create(&EntrypointOnly {
                entrypoint: r.entrypoint.clone(),
            })
            .observe(secs);
        if let Some(router) = &r.router {
            // A route whose service was not found still counts, under "".
            let service = r.service.clone().unwrap_or_else(|| Arc::from(""));
            m.router_requests
                .get_or_create(&RouterLabels {
                    router: router.clone(),
                    service: service.clone(),
                    code: r.status,
                    method,
                })
                .inc();
            m.router_duration
                .get_or_create(&RouterOnly {
                    router: router.clone(),
                    service: service.clone(),
                })
                .observe(secs);
            m.service_requests
                .get_or_create(&ServiceLabels {
                    service: service.clone(),
                    code: r.status,
                    method,
                })
                .inc();
            m.service_duration
                .get_or_create(&ServiceOnly {
                    service: service.clone(),
                })
                .observe(secs);
        }
        if let Some(log) = &self.shared.access_log {
            log.write(&self.record, elapsed, bytes);
        }
    }
}

/// A response body that counts its bytes and reports when it ends.
struct Observed {
    inner: ProxyBody,
    bytes: u64,
    done: Option<Done>,
}

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                let bytes = self.bytes;
                if let Some(done) = self.done.take() {
                    done.complete(bytes);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // An empty body that was never polled, or a client that went away.
        if let Some(done) = self.done.take() {
            done.complete(self.bytes);
        }
    }
}
