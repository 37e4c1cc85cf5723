//! Protocol hygiene: what a request must not be or carry before it is
//! routed, whatever its route. Methods the proxy never forwards, framing two
//! parsers could read in two ways, header names that CGI-style upstreams
//! read as other headers, and upgrades to protocols no route or middleware
//! would see. Each check is a pure function of the request and the
//! entrypoint's policy; the request path calls them in order.
use hyper::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Method, Request, StatusCode, Version,
};

use super::{error::ProxyError, framing::FramingState};
use crate::proxy::config::{RequestPolicy, UnderscoreHeaders};

/// The methods a metric label may name; every other is `other`, so a
/// client cannot grow the label set (CVE-2022-21698 in Prometheus' Go
/// client was this).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// What `Allow` says on a 405.
const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH";

/// CONNECT would make the proxy a tunnel to wherever the client names, and
/// TRACE echoes the request, cookies and all, back to a script: neither is
/// a request for an upstream.
pub fn refuse_method(method: &Method) -> Result<(), ProxyError> {
    if *method == Method::CONNECT || *method == Method::TRACE {
        return Err(ProxyError::policy(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            format!("{method} is not served through this proxy"),
        )
        .with_header(header::ALLOW, HeaderValue::from_static(ALLOWED)));
    }
    Ok(())
}

/// Framing that one parser reads one way and another another way is how
/// requests are smuggled: 400, and the connection is closed, since what
/// follows on it cannot be told apart from a next request.
pub fn check_framing<B>(
    request: &Request<B>,
    framing: Option<&FramingState>,
) -> Result<(), ProxyError> {
    if request.version() == Version::HTTP_2 {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(ProxyError::client(StatusCode::BAD_REQUEST, "framing", why.to_string()).closing())
    };
    if let Some(ambiguity) = framing.and_then(FramingState::ambiguous) {
        return refuse(ambiguity.reason());
    }
    let headers = request.headers();
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return refuse("the request has more than one Host header");
    }
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(value) = te.next() {
        let chunked_only = value
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked");
        if !chunked_only || te.next().is_some() {
            return refuse("the request's Transfer-Encoding is not exactly `chunked`");
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return refuse("the request has both Content-Length and Transfer-Encoding");
        }
    }
    Ok(())
}

/// A header name with anything but letters, digits and `-` (an underscore,
/// a dot, ...) is read by CGI-style upstreams (PHP, WSGI, nginx variables)
/// as the name with `_` in those places: `X_Forwarded_For` as
/// `X-Forwarded-For`. Such a name would walk past every check this proxy
/// makes on the real header.
pub fn alias_headers(headers: &mut HeaderMap, policy: UnderscoreHeaders) -> Result<(), ProxyError> {
    if policy == UnderscoreHeaders::Keep {
        return Ok(());
    }
    let aliases: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            !name
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .cloned()
        .collect();
    if aliases.is_empty() {
        return Ok(());
    }
    if policy == UnderscoreHeaders::Reject {
        return Err(ProxyError::policy(
            StatusCode::BAD_REQUEST,
            "header_name",
            format!(
                "the header name `{}` has a character other than letters, digits and `-`",
                aliases[0]
            ),
        ));
    }
    for name in aliases {
        headers.remove(name);
    }
    Ok(())
}

/// The `Upgrade` to forward, if any: one protocol the entrypoint lists,
/// on an HTTP/1.1 GET. Anything else is served as a plain request (the
/// hop-by-hop rules drop `Upgrade`), so an `h2c` tunnel that no route or
/// middleware would see never opens. `HTTP2-Settings` goes either way.
pub fn upgrade<B>(request: &mut Request<B>, policy: &RequestPolicy) -> Option<HeaderValue> {
    request.headers_mut().remove("http2-settings");
    let value = request.headers().get(header::UPGRADE)?;
    if request.version() != Version::HTTP_11 || request.method() != Method::GET {
        return None;
    }
    let protocol = value.to_str().ok()?.trim();
    let name = protocol.split('/').next().unwrap_or("").trim();
    let single = !protocol.contains(',');
    (single && policy.allows_upgrade(name)).then(|| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/");
        for (name, value) in lines {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn unknown_methods_share_one_label() {
        for method in ["FOO", "get", "PROPFIND", "X-1"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other");
        }
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }

    #[test]
    fn connect_and_trace_get_405_with_allow() {
        for method in [Method::CONNECT, Method::TRACE] {
            let error = refuse_method(&method).unwrap_err();
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(response.headers()[header::ALLOW], ALLOWED);
        }
        assert!(refuse_method(&Method::OPTIONS).is_ok());
    }

    #[test]
    fn ambiguous_framing_gets_400_and_close() {
        for lines in [
            vec![("host", "a"), ("host", "b")],
            vec![("transfer-encoding", "gzip, chunked")],
            vec![
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            vec![("transfer-encoding", "chunked"), ("content-length", "3")],
        ] {
            let error = check_framing(&request(&lines), None).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{lines:?}");
            assert!(error.close, "{lines:?}");
        }
        let fine = request(&[("host", "a"), ("transfer-encoding", "Chunked")]);
        assert!(check_framing(&fine, None).is_ok());
    }

    #[test]
    fn alias_header_names_are_dropped_or_refused() {
        let mut headers = request(&[
            ("x_forwarded_for", "6.6.6.6"),
            ("cf.connecting.ip", "6.6.6.6"),
            ("true-client-ip", "1.1.1.1"),
        ])
        .headers()
        .clone();
        let mut kept = headers.clone();
        alias_headers(&mut kept, UnderscoreHeaders::Keep).unwrap();
        assert_eq!(kept.len(), 3);
        let error = alias_headers(&mut headers.clone(), UnderscoreHeaders::Reject).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        alias_headers(&mut headers, UnderscoreHeaders::Drop).unwrap();
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["true-client-ip"]);
    }

    #[test]
    fn only_listed_upgrades_on_http11_get_are_forwarded() {
        let policy = RequestPolicy::default();
        let with = |value: &str| {
            let mut r = request(&[("upgrade", value), ("http2-settings", "AAMAAABkAAQAAP__")]);
            *r.version_mut() = Version::HTTP_11;
            let forwarded = upgrade(&mut r, &policy);
            assert!(!r.headers().contains_key("http2-settings"));
            forwarded
        };
        assert!(with("websocket").is_some());
        assert!(with("WebSocket").is_some());
        for refused in [
            "h2c",
            "H2C",
            "websocket, h2c",
            "h2c, websocket",
            "tls/1.2",
            "",
        ] {
            assert!(with(refused).is_none(), "{refused}");
        }
    }
}
