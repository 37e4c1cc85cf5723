//! Rewrites: `redirect_scheme` (answer with a redirect to the same URL in
//! another scheme, when the request did not arrive in it), `strip_prefix`
//! and `add_prefix` (change the path the upstream sees). Which scheme the
//! request arrived in is `X-Forwarded-Proto` as the forwarded-header logic
//! left it: believed from a trusted peer (Cloudflare terminating HTTPS),
//! else this proxy's own.
use hyper::{
    header::{self, HeaderValue},
    http::uri::{PathAndQuery, Uri},
    Method, Request, StatusCode,
};

use super::{
    stack::Middleware, AddPrefixConfig, PrefixMatch, RedirectSchemeConfig, StripPrefixConfig,
};
use crate::proxy::{
    request::{OverTls, ProxyError},
    upstream::ProxyBody,
};

pub struct RedirectScheme {
    config: RedirectSchemeConfig,
}

impl RedirectScheme {
    pub fn new(config: &RedirectSchemeConfig) -> Self {
        RedirectScheme {
            config: config.clone(),
        }
    }

    /// `Err` is the redirect.
    pub fn check<B>(&self, request: &Request<B>, tls: bool) -> Result<(), ProxyError> {
        let arrived = request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| if tls { "https" } else { "http" }.to_string());
        if arrived == self.config.scheme {
            return Ok(());
        }
        let host = request
            .uri()
            .authority()
            .map(|a| a.host().to_string())
            .or_else(|| {
                let host = request.headers().get(header::HOST)?.to_str().ok()?;
                Some(without_port(host).to_string())
            })
            .unwrap_or_default();
        let port = match (self.config.port, self.config.scheme.as_str()) {
            (Some(443), "https") | (Some(80), "http") | (None, _) => String::new(),
            (Some(port), _) => format!(":{port}"),
        };
        let path = request
            .uri()
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/");
        let location = format!("{}://{host}{port}{path}", self.config.scheme);
        let keeps_method = !matches!(*request.method(), Method::GET | Method::HEAD);
        let status = match (self.config.permanent, keeps_method) {
            (true, false) => StatusCode::MOVED_PERMANENTLY,
            (true, true) => StatusCode::PERMANENT_REDIRECT,
            (false, false) => StatusCode::FOUND,
            (false, true) => StatusCode::TEMPORARY_REDIRECT,
        };
        let redirect =
            ProxyError::policy(status, "redirect_scheme", format!("moved to {location}"));
        Err(match HeaderValue::from_str(&location) {
            Ok(value) => redirect.with_header(header::LOCATION, value),
            Err(_) => redirect,
        })
    }
}

impl Middleware for RedirectScheme {
    async fn request(&self, request: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        let tls = request.extensions().get::<OverTls>().is_some();
        self.check(request, tls)
    }
}

/// `host:port` -> `host`; `[v6]:port` -> `[v6]`.
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

pub struct StripPrefix {
    prefixes: Vec<String>,
    matching: PrefixMatch,
}

impl StripPrefix {
    pub fn new(config: &StripPrefixConfig) -> Self {
        StripPrefix {
            prefixes: config
                .prefixes
                .iter()
                .map(|p| match config.matching {
                    PrefixMatch::Segments => p.trim_end_matches('/').to_string(),
                    PrefixMatch::Text => p.clone(),
                })
                .collect(),
            matching: config.matching,
        }
    }

    /// Removes the first prefix that matches (see [`PrefixMatch`]) and says
    /// so in `X-Forwarded-Prefix`.
    pub fn apply<B>(&self, request: &mut Request<B>) {
        let path = request.uri().path().to_string();
        for prefix in &self.prefixes {
            let Some(rest) = path.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let rest = match self.matching {
                PrefixMatch::Segments if !(rest.is_empty() || rest.starts_with('/')) => continue,
                _ if rest.is_empty() => "/".to_string(),
                _ if rest.starts_with('/') => rest.to_string(),
                // Only text matching gets here: Traefik's ensureLeadingSlash.
                _ => format!("/{rest}"),
            };
            set_path(request, &rest);
            let header = match prefix.trim() {
                "" => "/",
                prefix => prefix,
            };
            if let Ok(value) = HeaderValue::from_str(header) {
                request.headers_mut().insert("x-forwarded-prefix", value);
            }
            return;
        }
    }
}

impl Middleware for StripPrefix {
    async fn request(&self, request: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        self.apply(request);
        Ok(())
    }
}

pub struct AddPrefix {
    prefix: String,
}

impl AddPrefix {
    pub fn new(config: &AddPrefixConfig) -> Self {
        AddPrefix {
            prefix: config.prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn apply<B>(&self, request: &mut Request<B>) {
        let path = format!("{}{}", self.prefix, request.uri().path());
        set_path(request, &path);
    }
}

impl Middleware for AddPrefix {
    async fn request(&self, request: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        self.apply(request);
        Ok(())
    }
}

/// Replaces the path, keeping the query (and scheme and authority, if any).
fn set_path<B>(request: &mut Request<B>, path: &str) {
    let with_query = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let Ok(path_and_query) = with_query.parse::<PathAndQuery>() else {
        return;
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, host: &str, proto: Option<&str>) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host);
        if let Some(proto) = proto {
            builder = builder.header("x-forwarded-proto", proto);
        }
        builder.body(()).unwrap()
    }

    fn redirect(permanent: bool, port: Option<u16>) -> RedirectScheme {
        RedirectScheme::new(&RedirectSchemeConfig {
            scheme: "https".into(),
            port,
            permanent,
        })
    }

    #[test]
    fn redirects_only_what_did_not_arrive_in_the_scheme() {
        let r = redirect(true, None);
        let plain = request(Method::GET, "/a/b?x=1", "example.com:8080", Some("http"));
        let answer = r.check(&plain, false).unwrap_err().into_response();
        assert_eq!(answer.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(answer.headers()["location"], "https://example.com/a/b?x=1");
        // Cloudflare terminated HTTPS and a trusted peer says so.
        let forwarded = request(Method::GET, "/", "example.com", Some("https"));
        assert!(r.check(&forwarded, false).is_ok());
        let direct = request(Method::GET, "/", "example.com", None);
        assert!(r.check(&direct, true).is_ok());
    }

    #[test]
    fn codes_follow_permanence_and_method() {
        let post = request(Method::POST, "/form", "[2001:db8::1]:80", Some("http"));
        let answer = redirect(true, Some(8443))
            .check(&post, false)
            .unwrap_err()
            .into_response();
        assert_eq!(answer.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            answer.headers()["location"],
            "https://[2001:db8::1]:8443/form"
        );
        let temp = redirect(false, None);
        assert_eq!(
            temp.check(&post, false).unwrap_err().status,
            StatusCode::TEMPORARY_REDIRECT
        );
        let get = request(Method::GET, "/", "example.com", Some("http"));
        assert_eq!(
            temp.check(&get, false).unwrap_err().status,
            StatusCode::FOUND
        );
    }

    /// Each (path, path forwarded, `X-Forwarded-Prefix` sent) case.
    fn assert_strips(strip: &StripPrefix, cases: &[(&str, &str, Option<&str>)]) {
        for &(from, to, header) in cases {
            let mut r = request(Method::GET, from, "h", None);
            strip.apply(&mut r);
            assert_eq!(r.uri().to_string(), to, "{from}");
            assert_eq!(
                r.headers()
                    .get("x-forwarded-prefix")
                    .map(|v| v.to_str().unwrap()),
                header,
                "{from}"
            );
        }
    }

    #[test]
    fn strip_prefix_is_element_wise_and_keeps_the_query() {
        let strip = StripPrefix::new(&StripPrefixConfig {
            prefixes: vec!["/api/".into(), "/v1".into()],
            matching: PrefixMatch::Segments,
        });
        let cases = [
            ("/api/users?id=3", "/users?id=3", Some("/api")),
            ("/api", "/", Some("/api")),
            ("/apix/users", "/apix/users", None),
            ("/v1/x", "/x", Some("/v1")),
        ];
        assert_strips(&strip, &cases);
    }

    #[test]
    fn traefik_strip_prefix_removes_plain_text_as_traefik_does() {
        // Traefik's stripPrefix: the first prefix that is a string prefix of
        // the path is cut, a leading `/` put back when the rest lacks one.
        let strip = StripPrefix::new(&StripPrefixConfig {
            prefixes: vec!["/api".into(), "/static/".into()],
            matching: PrefixMatch::Text,
        });
        let cases = [
            ("/apiv2/x?q=1", "/v2/x?q=1", Some("/api")),
            ("/api/users", "/users", Some("/api")),
            ("/api", "/", Some("/api")),
            ("/static/app.js", "/app.js", Some("/static/")),
            // `/static/` is not a string prefix of `/static`.
            ("/static", "/static", None),
            ("/other", "/other", None),
        ];
        assert_strips(&strip, &cases);
    }

    #[test]
    fn add_prefix_goes_in_front() {
        let add = AddPrefix::new(&AddPrefixConfig {
            prefix: "/backend/".into(),
        });
        let mut r = request(Method::GET, "/users?id=3", "h", None);
        add.apply(&mut r);
        assert_eq!(r.uri().to_string(), "/backend/users?id=3");
    }
}
