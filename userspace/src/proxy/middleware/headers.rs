//! `security_headers` (response headers that tell browsers how to treat the
//! site: HSTS, nosniff, framing, referrer, permissions, CSP, COOP, CORP, and
//! custom response headers to set or remove) and `headers` (request headers
//! to set or remove before the request goes upstream). The header names and
//! values are parsed once, when the middleware is built.
//!
//! tower-http's `SetRequestHeader`/`SetResponseHeader` layers set headers
//! but cannot remove one, and would be one layer per header; these are one
//! layer each that does both.
use anyhow::{Context as _, Result};
use hyper::{
    header::{HeaderMap, HeaderName, HeaderValue},
    Request, Response,
};

use super::{stack::Middleware, HeadersConfig, SecurityHeadersConfig};
use crate::proxy::{request::ProxyError, upstream::ProxyBody};

/// A header to set, or (`None`) to remove.
type Edit = (HeaderName, Option<HeaderValue>);

pub struct SecurityHeaders {
    edits: Vec<Edit>,
}

impl SecurityHeaders {
    pub fn new(config: &SecurityHeadersConfig) -> Result<Self> {
        let mut wanted: Vec<(&str, Option<String>)> = Vec::new();
        if let Some(hsts) = &config.hsts {
            let mut value = format!("max-age={}", hsts.max_age);
            if hsts.include_subdomains {
                value.push_str("; includeSubDomains");
            }
            if hsts.preload {
                value.push_str("; preload");
            }
            wanted.push(("strict-transport-security", Some(value)));
        }
        if config.content_type_nosniff {
            wanted.push(("x-content-type-options", Some("nosniff".into())));
        }
        let fields = [
            ("x-frame-options", &config.frame_options),
            ("referrer-policy", &config.referrer_policy),
            ("permissions-policy", &config.permissions_policy),
            (
                "content-security-policy-report-only",
                &config.content_security_policy_report_only,
            ),
            (
                "cross-origin-opener-policy",
                &config.cross_origin_opener_policy,
            ),
            (
                "cross-origin-resource-policy",
                &config.cross_origin_resource_policy,
            ),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                wanted.push((name, Some(value.clone())));
            }
        }
        let csp = match (&config.content_security_policy, &config.frame_ancestors) {
            (Some(csp), Some(ancestors)) => Some(format!(
                "{}; frame-ancestors {ancestors}",
                csp.trim().trim_end_matches(';')
            )),
            (Some(csp), None) => Some(csp.clone()),
            (None, Some(ancestors)) => Some(format!("frame-ancestors {ancestors}")),
            (None, None) => None,
        };
        if let Some(csp) = csp {
            wanted.push(("content-security-policy", Some(csp)));
        }
        for (name, value) in &config.custom_response_headers {
            wanted.push((name, value.clone()));
        }
        Ok(SecurityHeaders {
            edits: parse_edits(wanted)?,
        })
    }

    /// Sets (replacing what the upstream sent) or removes each header.
    pub fn apply(&self, headers: &mut HeaderMap) {
        apply_edits(&self.edits, headers);
    }
}

impl Middleware for SecurityHeaders {
    async fn request(&self, _: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        Ok(())
    }

    fn response(&self, response: &mut Response<ProxyBody>) {
        self.apply(response.headers_mut());
    }
}

/// The `headers` kind: request headers set or removed before the request
/// goes upstream.
pub struct RequestHeaders {
    edits: Vec<Edit>,
}

impl RequestHeaders {
    pub fn new(config: &HeadersConfig) -> Result<Self> {
        let mut wanted: Vec<(&str, Option<String>)> = Vec::new();
        for name in &config.remove {
            wanted.push((name, None));
        }
        for (name, value) in &config.set {
            wanted.push((name, Some(value.clone())));
        }
        Ok(RequestHeaders {
            edits: parse_edits(wanted)?,
        })
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        apply_edits(&self.edits, headers);
    }
}

impl Middleware for RequestHeaders {
    async fn request(&self, request: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        self.apply(request.headers_mut());
        Ok(())
    }
}

fn parse_edits(wanted: Vec<(&str, Option<String>)>) -> Result<Vec<Edit>> {
    wanted
        .into_iter()
        .map(|(name, value)| {
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("`{name}` is not a header name"))?;
            let value = value
                .map(|v| {
                    HeaderValue::from_str(v.trim())
                        .with_context(|| format!("the value of `{name}` is not a header value"))
                })
                .transpose()?;
            Ok((header, value))
        })
        .collect()
}

fn apply_edits(edits: &[Edit], headers: &mut HeaderMap) {
    for (name, value) in edits {
        match value {
            Some(value) => {
                headers.insert(name.clone(), value.clone());
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::middleware::HstsConfig;

    fn applied(config: &SecurityHeadersConfig, upstream: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in upstream {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        SecurityHeaders::new(config).unwrap().apply(&mut headers);
        headers
    }

    #[test]
    fn hsts_spells_every_flag_and_replaces_the_upstreams() {
        let config = SecurityHeadersConfig {
            hsts: Some(HstsConfig {
                max_age: 63072000,
                include_subdomains: true,
                preload: true,
            }),
            ..Default::default()
        };
        let headers = applied(&config, &[("strict-transport-security", "max-age=0")]);
        assert_eq!(
            headers["strict-transport-security"],
            "max-age=63072000; includeSubDomains; preload"
        );
        assert_eq!(headers.len(), 1, "nothing asked for is added: {headers:?}");
    }

    #[test]
    fn frame_ancestors_joins_the_csp_or_makes_its_own() {
        let mut config = SecurityHeadersConfig {
            content_security_policy: Some("default-src 'self';".into()),
            frame_ancestors: Some("'none'".into()),
            ..Default::default()
        };
        assert_eq!(
            applied(&config, &[])["content-security-policy"],
            "default-src 'self'; frame-ancestors 'none'"
        );
        config.content_security_policy = None;
        assert_eq!(
            applied(&config, &[])["content-security-policy"],
            "frame-ancestors 'none'"
        );
    }

    #[test]
    fn custom_headers_set_and_remove() {
        let config = SecurityHeadersConfig {
            content_type_nosniff: true,
            custom_response_headers: vec![
                ("X-Served-By".into(), Some("xdpgate".into())),
                ("Server".into(), None),
            ],
            ..Default::default()
        };
        let headers = applied(&config, &[("server", "gunicorn"), ("x-kept", "1")]);
        assert_eq!(headers["x-served-by"], "xdpgate");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(headers.get("server").is_none());
        assert_eq!(headers["x-kept"], "1");
    }

    #[test]
    fn request_headers_removed_then_set() {
        let config = HeadersConfig {
            set: [("X-Env".to_string(), "prod".to_string())].into(),
            remove: vec!["X-Debug".into()],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-debug", HeaderValue::from_static("1"));
        headers.insert("x-env", HeaderValue::from_static("dev"));
        RequestHeaders::new(&config).unwrap().apply(&mut headers);
        assert_eq!(headers["x-env"], "prod");
        assert!(headers.get("x-debug").is_none());
    }

    #[test]
    fn a_bad_header_value_is_refused_at_build() {
        let config = SecurityHeadersConfig {
            referrer_policy: Some("no\nreferrer".into()),
            ..Default::default()
        };
        let error = SecurityHeaders::new(&config).err().unwrap();
        assert!(
            format!("{error:#}").contains("referrer-policy"),
            "{error:#}"
        );
    }
}
