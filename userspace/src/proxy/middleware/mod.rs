//! Middlewares: small layers configured by name under `proxy.middlewares`
//! and attached to routes in the order listed. Each kind has one job (set
//! security headers, limit the rate per client, allow by address, ask for a
//! password, redirect to another scheme, cap the request body, rewrite the
//! path, set request headers) and lives in its own file.
//!
//! A route's [`Chain`] is built with the rest of the proxy state, so a reload
//! swaps chains and routes together. The request side runs in list order
//! after the forwarded headers have settled the client IP; any step may
//! answer early (401, 403, 413, 429, a redirect), and that answer then goes
//! back through the response side of the steps before it, as it would
//! through nested layers. The response side runs in reverse order. A
//! middleware whose configuration did not change keeps its state across a
//! reload (rate-limit buckets, the htpasswd file it read).
//!
//! Not here: the forwarded-header logic (`forwarded`), which every request
//! gets whatever its route, and the entrypoint-wide HTTP->HTTPS redirect.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    header::{self, HeaderValue},
    Request, Response, StatusCode,
};

use super::{
    forwarded::TrustedPeers,
    metrics::{MiddlewareOnly, ProxyMetrics, RejectionLabels, StoreErrorLabels},
    upstream::ProxyBody,
    RouteConfig,
};

mod basic_auth;
mod body_limit;
mod compress;
pub mod config;
mod headers;
mod htpasswd;
mod ip_allow;
pub mod rate_limit;
pub mod rate_limit_redis;
mod rewrite;

pub use config::*;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A middleware's own answer (boxed: a response is large, and most
/// requests pass).
type Answer = Box<Response<ProxyBody>>;

/// The filter's sets by name, as the proxy last received them.
pub type Sets = BTreeMap<String, TrustedPeers>;

/// What the request side of a middleware may look at besides the request.
pub struct RequestContext<'a> {
    /// The client as the forwarded-header logic settled it.
    pub client_ip: IpAddr,
    /// Whether the request arrived over TLS on this proxy.
    pub tls: bool,
    pub sets: &'a Sets,
}

/// One built middleware.
enum Layer {
    SecurityHeaders(headers::SecurityHeaders),
    RateLimit(rate_limit::RateLimit),
    IpAllow(ip_allow::IpAllow),
    BasicAuth(basic_auth::BasicAuth),
    RedirectScheme(rewrite::RedirectScheme),
    BodyLimit(body_limit::BodyLimit),
    StripPrefix(rewrite::StripPrefix),
    AddPrefix(rewrite::AddPrefix),
    Headers(headers::RequestHeaders),
    Compress(compress::Compress),
}

impl Layer {
    fn build(name: &str, config: &MiddlewareConfig) -> Result<Layer> {
        Ok(match config {
            MiddlewareConfig::SecurityHeaders(c) => {
                Layer::SecurityHeaders(headers::SecurityHeaders::new(c)?)
            }
            MiddlewareConfig::RateLimit(c) => Layer::RateLimit(rate_limit::RateLimit::new(c)?),
            MiddlewareConfig::IpAllow(c) => Layer::IpAllow(ip_allow::IpAllow::new(c)),
            MiddlewareConfig::BasicAuth(c) => {
                Layer::BasicAuth(basic_auth::BasicAuth::load(name, c)?)
            }
            MiddlewareConfig::RedirectScheme(c) => {
                Layer::RedirectScheme(rewrite::RedirectScheme::new(c))
            }
            MiddlewareConfig::BodyLimit(c) => Layer::BodyLimit(body_limit::BodyLimit::new(c)),
            MiddlewareConfig::StripPrefix(c) => Layer::StripPrefix(rewrite::StripPrefix::new(c)),
            MiddlewareConfig::AddPrefix(c) => Layer::AddPrefix(rewrite::AddPrefix::new(c)),
            MiddlewareConfig::Headers(c) => Layer::Headers(headers::RequestHeaders::new(c)?),
            MiddlewareConfig::Compress(c) => Layer::Compress(compress::Compress::new(c)),
        })
    }
}

struct Built {
    config: MiddlewareConfig,
    layer: Arc<Layer>,
}

/// Every configured middleware, built once per proxy state, whether a
/// route uses it or not (so its file errors show at load time).
#[derive(Default)]
pub struct Middlewares {
    by_name: BTreeMap<String, Built>,
}

impl Middlewares {
    /// Builds each middleware, reusing `previous`'s when its configuration
    /// is unchanged (so rate-limit buckets and read files survive a reload).
    /// A middleware that cannot be built (an unreadable htpasswd file)
    /// fails the whole state, leaving the old one in force.
    pub fn build(
        configs: &BTreeMap<String, MiddlewareConfig>,
        previous: Option<&Middlewares>,
    ) -> Result<Middlewares> {
        let mut by_name = BTreeMap::new();
        for (name, config) in configs {
            let kept = previous
                .and_then(|p| p.by_name.get(name))
                .filter(|old| &old.config == config)
                .map(|old| old.layer.clone());
            let layer = match kept {
                Some(layer) => layer,
                None => Arc::new(
                    Layer::build(name, config).with_context(|| format!("middleware `{name}`"))?,
                ),
            };
            by_name.insert(
                name.clone(),
                Built {
                    config: config.clone(),
                    layer,
                },
            );
        }
        Ok(Middlewares { by_name })
    }

    /// The chain of every route that has middlewares, by route name. A name
    /// the config reader let through but that is not here is an error.
    pub fn chains(&self, routes: &[RouteConfig]) -> Result<HashMap<String, Chain>> {
        let mut chains = HashMap::new();
        for route in routes.iter().filter(|r| !r.middlewares.is_empty()) {
            let mut steps = Vec::new();
            for name in &route.middlewares {
                let built = self.by_name.get(name).with_context(|| {
                    format!("route `{}`: unknown middleware `{name}`", route.name)
                })?;
                steps.push(Step {
                    name: name.clone(),
                    kind: built.config.kind(),
                    layer: built.layer.clone(),
                });
            }
            chains.insert(route.name.clone(), Chain { steps });
        }
        Ok(chains)
    }

    /// Periodic upkeep: re-reads the files middlewares depend on (htpasswd)
    /// when they changed (a bad new file keeps the old contents and is
    /// counted), and lets rate limits forget clients whose bucket is full.
    pub fn housekeep(&self, metrics: &ProxyMetrics) {
        for (name, built) in &self.by_name {
            if let Layer::RateLimit(limit) = built.layer.as_ref() {
                limit.forget_idle();
                metrics
                    .rate_limit_keys
                    .get_or_create(&MiddlewareOnly {
                        middleware: name.clone(),
                    })
                    .set(limit.keys() as i64);
            }
            if let Layer::BasicAuth(auth) = built.layer.as_ref() {
                if let Err(error) = auth.reload_if_changed() {
                    tracing::error!(
                        middleware = %name,
                        "the htpasswd file changed but cannot be used; the users read before \
                         stay in force: {error:#}"
                    );
                    metrics
                        .middleware_file_errors
                        .get_or_create(&MiddlewareOnly {
                            middleware: name.clone(),
                        })
                        .inc();
                }
            }
        }
    }
}

struct Step {
    name: String,
    kind: &'static str,
    layer: Arc<Layer>,
}

/// A route's middlewares, in the order the route lists them.
pub struct Chain {
    steps: Vec<Step>,
}

/// What the response side needs to know about how the request side went.
pub struct Passed<'c> {
    chain: &'c Chain,
    /// Set by a body limit when the streamed request body crossed it.
    body_overflow: Option<body_limit::Overflow>,
    /// The request's, for `compress`.
    accept_encoding: Option<HeaderValue>,
}

impl Chain {
    /// Runs the request side. `Err` is an early answer, already through the
    /// response side of the steps before the one that gave it, and counted.
    pub async fn request<'c>(
        &'c self,
        request: &mut Request<ProxyBody>,
        cx: &RequestContext<'_>,
        metrics: &ProxyMetrics,
    ) -> Result<Passed<'c>, Response<ProxyBody>> {
        let mut passed = Passed {
            chain: self,
            body_overflow: None,
            accept_encoding: request.headers().get(header::ACCEPT_ENCODING).cloned(),
        };
        for (index, step) in self.steps.iter().enumerate() {
            let answer = match step.layer.as_ref() {
                Layer::RateLimit(limit) => {
                    let (answer, fallback) = limit.admit(cx.client_ip).await;
                    if let Some(fallback) = fallback {
                        metrics
                            .rate_limit_store_errors
                            .get_or_create(&StoreErrorLabels {
                                middleware: step.name.clone(),
                                outcome: fallback.label(),
                            })
                            .inc();
                    }
                    metrics
                        .rate_limit_keys
                        .get_or_create(&MiddlewareOnly {
                            middleware: step.name.clone(),
                        })
                        .set(limit.keys() as i64);
                    answer
                }
                Layer::IpAllow(allow) => allow.check(cx.client_ip, cx.sets),
                Layer::BasicAuth(auth) => auth.check(request.headers_mut()).await,
                Layer::RedirectScheme(redirect) => redirect.check(request, cx.tls),
                Layer::BodyLimit(limit) => match limit.wrap(request, &step.name) {
                    Ok(overflow) => {
                        passed.body_overflow = Some(overflow);
                        Ok(())
                    }
                    Err(answer) => Err(answer),
                },
                Layer::StripPrefix(strip) => {
                    strip.apply(request);
                    Ok(())
                }
                Layer::AddPrefix(add) => {
                    add.apply(request);
                    Ok(())
                }
                Layer::Headers(headers) => {
                    headers.apply(request.headers_mut());
                    Ok(())
                }
                Layer::SecurityHeaders(_) | Layer::Compress(_) => Ok(()),
            };
            if let Err(response) = answer {
                let response = *response;
                metrics
                    .middleware_rejections
                    .get_or_create(&RejectionLabels {
                        middleware: step.name.clone(),
                        kind: step.kind.to_string(),
                        code: response.status().as_u16(),
                    })
                    .inc();
                let accept = passed.accept_encoding.as_ref();
                return Err(respond(&self.steps[..index], response, accept));
            }
        }
        Ok(passed)
    }
}

impl Passed<'_> {
    /// Whether a body limit cut the request body off.
    pub fn cut_short(&self) -> bool {
        self.body_overflow.as_ref().is_some_and(|o| o.happened())
    }

    /// Replaces the upstream's answer (or error page) with 413 when a body
    /// limit cut the request body off mid-stream, then runs the response
    /// side of every step, last first.
    pub fn response(
        &self,
        response: Response<ProxyBody>,
        metrics: &ProxyMetrics,
    ) -> Response<ProxyBody> {
        let response = match &self.body_overflow {
            Some(overflow) if overflow.happened() => {
                metrics
                    .middleware_rejections
                    .get_or_create(&RejectionLabels {
                        middleware: overflow.middleware().to_string(),
                        kind: "body_limit".to_string(),
                        code: 413,
                    })
                    .inc();
                body_limit::too_large(overflow.limit())
            }
            _ => response,
        };
        respond(&self.chain.steps, response, self.accept_encoding.as_ref())
    }
}

/// The response side of `steps`, last first.
fn respond(
    steps: &[Step],
    mut response: Response<ProxyBody>,
    accept_encoding: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    for step in steps.iter().rev() {
        match step.layer.as_ref() {
            Layer::SecurityHeaders(security) => security.apply(response.headers_mut()),
            Layer::Compress(compress) => response = compress.apply(accept_encoding, response),
            _ => {}
        }
    }
    response
}

/// A short text answer of the proxy's own.
fn answer(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{PathType, RateLimitConfig};

    fn limit(average: u32) -> MiddlewareConfig {
        MiddlewareConfig::RateLimit(RateLimitConfig {
            average,
            period: std::time::Duration::from_secs(1),
            burst: 1,
            ipv6_subnet: None,
            max_keys: 1024,
            store: None,
        })
    }

    fn route(name: &str, middlewares: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: None,
            path: "/".into(),
            path_type: PathType::Prefix,
            service: "api:80".into(),
            entrypoints: Vec::new(),
            middlewares: middlewares.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn an_unchanged_middleware_survives_a_rebuild_a_changed_one_does_not() {
        let configs: BTreeMap<_, _> = [("a".to_string(), limit(1)), ("b".to_string(), limit(2))]
            .into_iter()
            .collect();
        let first = Middlewares::build(&configs, None).unwrap();
        let mut changed = configs.clone();
        changed.insert("b".into(), limit(3));
        let second = Middlewares::build(&changed, Some(&first)).unwrap();
        let same =
            |name: &str| Arc::ptr_eq(&first.by_name[name].layer, &second.by_name[name].layer);
        assert!(same("a"), "unchanged: the same limiter, with its buckets");
        assert!(!same("b"), "changed: a new limiter");
    }

    #[test]
    fn chains_follow_route_order_and_skip_routes_without_middlewares() {
        let configs: BTreeMap<_, _> = [("a".to_string(), limit(1)), ("b".to_string(), limit(2))]
            .into_iter()
            .collect();
        let built = Middlewares::build(&configs, None).unwrap();
        let chains = built
            .chains(&[route("one", &["b", "a"]), route("two", &[])])
            .unwrap();
        let names: Vec<&str> = chains["one"]
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["b", "a"]);
        assert!(!chains.contains_key("two"));
        let error = built.chains(&[route("three", &["c"])]).err().unwrap();
        assert!(
            format!("{error:#}").contains("unknown middleware `c`"),
            "{error:#}"
        );
    }
}
