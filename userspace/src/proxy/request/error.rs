//! One error type for the request path. Where an error came from decides
//! what the client sees, how it is logged and how it is counted, in the way
//! pingora's error sources do: a client's mistake is a 4xx and never the
//! upstream's fault, a policy's refusal is the policy's answer, an
//! upstream's failure is a 502/503/504, and anything else is ours (500).
//!
//! An error becomes its response where it happens ([`ProxyError::into_response`]),
//! carrying a [`Refusal`] extension: the response side of the middlewares
//! before it (security headers) applies to it like to any response, and the
//! request's end counts and logs it in one place, whichever layer gave it.
use std::{fmt, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    header::{self, HeaderValue},
    Response, StatusCode,
};

use super::super::upstream::{ProxyBody, UpstreamError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Who is to blame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The client sent something malformed, ambiguous or too slowly.
    Client,
    /// A well-formed request this proxy refuses by configuration.
    Policy,
    /// The upstream could not be reached or broke the exchange.
    Upstream,
    /// This proxy could not do its part.
    Internal,
}

impl Source {
    /// The label in metrics and the access log.
    pub fn label(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Policy => "policy",
            Source::Upstream => "upstream",
            Source::Internal => "internal",
        }
    }
}

/// A request the proxy answers itself instead of with an upstream's
/// response.
#[derive(Debug)]
pub struct ProxyError {
    pub source: Source,
    pub status: StatusCode,
    /// A stable label: `path`, `framing`, `method`, `body_timeout`, ...
    pub kind: &'static str,
    /// Said to the client in the body, and logged.
    pub message: String,
    /// Close the connection after the answer (HTTP/1.1): the bytes that
    /// follow cannot be trusted to start a new request.
    pub close: bool,
    /// Extra response headers (`Allow` for 405, `WWW-Authenticate` for 401).
    headers: Vec<(header::HeaderName, HeaderValue)>,
    /// The route's middleware that gave this answer, if one did.
    pub middleware: Option<Arc<str>>,
}

/// What a response the proxy gave itself carries for the request's end:
/// the error's source, kind and message, and the middleware that gave it.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub source: Source,
    pub kind: &'static str,
    pub message: String,
    pub middleware: Option<Arc<str>>,
}

impl ProxyError {
    fn new(source: Source, status: StatusCode, kind: &'static str, message: String) -> Self {
        ProxyError {
            source,
            status,
            kind,
            message,
            close: false,
            headers: Vec::new(),
            middleware: None,
        }
    }

    pub fn client(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ProxyError::new(Source::Client, status, kind, message.into())
    }

    pub fn policy(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ProxyError::new(Source::Policy, status, kind, message.into())
    }

    pub fn internal(kind: &'static str, message: impl Into<String>) -> Self {
        ProxyError::new(
            Source::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            kind,
            message.into(),
        )
    }

    /// An upstream exchange that failed: the client's fault when its own
    /// body broke off (too slow, over a limit), else the upstream's.
    pub fn upstream(error: UpstreamError) -> Self {
        if let Some(client) = client_body_cause(&error) {
            return client;
        }
        let status = error.status();
        let source = if status.is_client_error() {
            Source::Client
        } else {
            Source::Upstream
        };
        ProxyError::new(source, status, error.kind(), error.to_string())
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Names the middleware that gave this answer (unless a deeper one
    /// already said it was its own).
    pub fn from_middleware(mut self, name: &Arc<str>) -> Self {
        self.middleware.get_or_insert_with(|| name.clone());
        self
    }

    /// The answer the client gets, carrying its [`Refusal`].
    pub fn into_response(self) -> Response<ProxyBody> {
        let text = match self.source {
            // An upstream's address and error are the operator's business,
            // not the client's: they go to the log.
            Source::Upstream | Source::Internal => format!(
                "{} {}",
                self.status.as_u16(),
                self.status.canonical_reason().unwrap_or("error")
            ),
            Source::Client | Source::Policy => {
                format!("{} {}", self.status.as_u16(), self.message)
            }
        };
        let mut response = text_response(self.status, text);
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.extensions_mut().insert(Refusal {
            source: self.source,
            kind: self.kind,
            message: self.message,
            middleware: self.middleware,
        });
        response
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error ({}): {}",
            self.source.label(),
            self.kind,
            self.message
        )
    }
}

/// The client's request body stopped for longer than the entrypoint's
/// `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for longer than {0:?}")]
pub struct BodyStalled(pub std::time::Duration);

/// A request body crossed a route's `body_limit` while it streamed.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
    pub middleware: Arc<str>,
}

/// Walks an upstream error's causes for the client body's own failures:
/// a stalled body (408) or one over a `body_limit` (413).
fn client_body_cause(error: &UpstreamError) -> Option<ProxyError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(stalled) = current.downcast_ref::<BodyStalled>() {
            return Some(
                ProxyError::client(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    stalled.to_string(),
                )
                .closing(),
            );
        }
        if let Some(over) = current.downcast_ref::<BodyTooLarge>() {
            return Some(
                ProxyError::policy(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_limit",
                    over.to_string(),
                )
                .from_middleware(&over.middleware),
            );
        }
        cause = current.source();
    }
    None
}

/// A short plain-text answer of the proxy's own.
pub fn text_response(status: StatusCode, text: impl Into<String>) -> Response<ProxyBody> {
    let mut body = text.into();
    body.push('\n');
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| -> BoxError { match never {} })
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
