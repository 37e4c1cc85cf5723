//! Middlewares: small layers configured by name under `proxy.middlewares`
//! and attached to routes in the order listed. Each kind has one job (set
//! security headers, limit the rate per client, allow by address, ask for a
//! password, redirect to another scheme, cap the request body, rewrite the
//! path, set request headers, compress) and lives in its own file.
//!
//! A route's middlewares are a tower stack ([`stack`]) built once per
//! proxy state, the first listed outermost and the upstream call innermost,
//! so a reload swaps stacks and routes together. A request goes down
//! through each layer's request side; any layer may answer early (401, 403,
//! 413, 429, a redirect), and every answer, the upstream's or a layer's,
//! comes back up through the response side of the layers outside it. A
//! middleware whose configuration did not change keeps its state across a
//! reload (rate-limit buckets, the htpasswd file it read): the new stack
//! holds the same one.
//!
//! Not here: the forwarded-header logic (`forwarded`), which every request
//! gets whatever its route, and the entrypoint-wide HTTP->HTTPS redirect.
use std::{collections::BTreeMap, sync::Arc};

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;

use super::{
    forwarded::TrustedPeers,
    metrics::{MiddlewareOnly, ProxyMetrics, StoreErrorLabels},
    RouteConfig,
};

mod basic_auth;
mod body_limit;
mod client_source;
mod compress;
pub mod config;
mod headers;
mod htpasswd;
mod ip_allow;
pub mod rate_limit;
pub mod rate_limit_redis;
pub mod rate_limit_store_pool;
mod rewrite;
pub mod stack;

pub use config::*;
pub use stack::RouteService;

/// The filter's sets by name, as the proxy last received them.
pub type Sets = BTreeMap<String, TrustedPeers>;

/// What middlewares are built with besides their configuration.
#[derive(Clone)]
pub struct BuildContext {
    pub metrics: Arc<ProxyMetrics>,
    /// The filter sets as they are loaded now (for `ip_allow`).
    pub sets: Arc<ArcSwap<Sets>>,
}

/// One built middleware: its state, shared by every stack that uses it.
enum Built {
    SecurityHeaders(Arc<headers::SecurityHeaders>),
    RateLimit(Arc<rate_limit::RateLimited>),
    IpAllow(Arc<ip_allow::IpAllow>),
    BasicAuth(Arc<basic_auth::BasicAuth>),
    RedirectScheme(Arc<rewrite::RedirectScheme>),
    BodyLimit(Arc<body_limit::BodyLimit>),
    StripPrefix(Arc<rewrite::StripPrefix>),
    AddPrefix(Arc<rewrite::AddPrefix>),
    Headers(Arc<headers::RequestHeaders>),
    Compress(Arc<compress::Compress>),
}

impl Built {
    fn new(name: &str, config: &MiddlewareConfig, cx: &BuildContext) -> Result<Built> {
        Ok(match config {
            MiddlewareConfig::SecurityHeaders(c) => {
                Built::SecurityHeaders(Arc::new(headers::SecurityHeaders::new(c)?))
            }
            MiddlewareConfig::RateLimit(c) => {
                let keys = cx
                    .metrics
                    .rate_limit_keys
                    .get_or_create(&MiddlewareOnly {
                        middleware: name.to_string(),
                    })
                    .clone();
                let store_errors = StoreFallback::ALL.map(|fallback| {
                    cx.metrics
                        .rate_limit_store_errors
                        .get_or_create(&StoreErrorLabels {
                            middleware: name.to_string(),
                            outcome: fallback.label(),
                        })
                        .clone()
                });
                let limiter = rate_limit::RateLimit::new(name, c)?;
                Built::RateLimit(Arc::new(rate_limit::RateLimited::new(
                    limiter,
                    keys,
                    store_errors,
                )))
            }
            MiddlewareConfig::IpAllow(c) => {
                Built::IpAllow(Arc::new(ip_allow::IpAllow::new(c, cx.sets.clone())))
            }
            MiddlewareConfig::BasicAuth(c) => {
                Built::BasicAuth(Arc::new(basic_auth::BasicAuth::load(name, c)?))
            }
            MiddlewareConfig::RedirectScheme(c) => {
                Built::RedirectScheme(Arc::new(rewrite::RedirectScheme::new(c)))
            }
            MiddlewareConfig::BodyLimit(c) => {
                Built::BodyLimit(Arc::new(body_limit::BodyLimit::new(name, c)))
            }
            MiddlewareConfig::StripPrefix(c) => {
                Built::StripPrefix(Arc::new(rewrite::StripPrefix::new(c)))
            }
            MiddlewareConfig::AddPrefix(c) => {
                Built::AddPrefix(Arc::new(rewrite::AddPrefix::new(c)))
            }
            MiddlewareConfig::Headers(c) => {
                Built::Headers(Arc::new(headers::RequestHeaders::new(c)?))
            }
            MiddlewareConfig::Compress(c) => Built::Compress(Arc::new(compress::Compress::new(c))),
        })
    }

    /// This middleware's layer around `inner`.
    fn wrap(&self, name: &Arc<str>, inner: RouteService) -> RouteService {
        match self {
            Built::SecurityHeaders(m) => stack::wrap(m, name, inner),
            Built::RateLimit(m) => stack::wrap(m, name, inner),
            Built::IpAllow(m) => stack::wrap(m, name, inner),
            Built::BasicAuth(m) => stack::wrap(m, name, inner),
            Built::RedirectScheme(m) => stack::wrap(m, name, inner),
            Built::BodyLimit(m) => stack::wrap(m, name, inner),
            Built::StripPrefix(m) => stack::wrap(m, name, inner),
            Built::AddPrefix(m) => stack::wrap(m, name, inner),
            Built::Headers(m) => stack::wrap(m, name, inner),
            Built::Compress(m) => m.wrap(inner),
        }
    }
}

struct Entry {
    config: MiddlewareConfig,
    built: Arc<Built>,
}

/// Every configured middleware, built once per proxy state, whether a
/// route uses it or not (so its file errors show at load time).
#[derive(Default)]
pub struct Middlewares {
    by_name: BTreeMap<String, Entry>,
}

impl Middlewares {
    /// Builds each middleware, reusing `previous`'s when its configuration
    /// is unchanged (so rate-limit buckets and read files survive a reload).
    /// A middleware that cannot be built (an unreadable htpasswd file)
    /// fails the whole state, leaving the old one in force.
    pub fn build(
        configs: &BTreeMap<String, MiddlewareConfig>,
        previous: Option<&Middlewares>,
        cx: &BuildContext,
    ) -> Result<Middlewares> {
        let mut by_name = BTreeMap::new();
        for (name, config) in configs {
            let kept = previous
                .and_then(|p| p.by_name.get(name))
                .filter(|old| &old.config == config)
                .map(|old| old.built.clone());
            let built = match kept {
                Some(built) => built,
                None => Arc::new(
                    Built::new(name, config, cx).with_context(|| format!("middleware `{name}`"))?,
                ),
            };
            let config = config.clone();
            by_name.insert(name.clone(), Entry { config, built });
        }
        Ok(Middlewares { by_name })
    }

    /// `route`'s stack around `upstream`, its first middleware outermost.
    /// A name the config reader let through but that is not here is an
    /// error.
    pub fn stack(&self, route: &RouteConfig, upstream: RouteService) -> Result<RouteService> {
        let mut service = upstream;
        for name in route.middlewares.iter().rev() {
            let entry = self
                .by_name
                .get(name)
                .with_context(|| format!("route `{}`: unknown middleware `{name}`", route.name))?;
            service = entry.built.wrap(&Arc::from(name.as_str()), service);
        }
        Ok(service)
    }

    /// Periodic upkeep: re-reads the files middlewares depend on (htpasswd)
    /// when they changed (a bad new file keeps the old contents and is
    /// counted), and lets rate limits forget clients whose bucket is full.
    pub fn housekeep(&self, metrics: &ProxyMetrics) {
        for (name, entry) in &self.by_name {
            match entry.built.as_ref() {
                Built::RateLimit(limit) => limit.forget_idle(),
                Built::BasicAuth(auth) => {
                    if let Err(error) = auth.reload_if_changed() {
                        tracing::error!(
                            middleware = %name,
                            "the htpasswd file changed but cannot be used; the users read \
                             before stay in force: {error:#}"
                        );
                        metrics
                            .middleware_file_errors
                            .get_or_create(&MiddlewareOnly {
                                middleware: name.clone(),
                            })
                            .inc();
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use http_body_util::BodyExt as _;
    use hyper::{Request, Response, StatusCode};

    use super::*;
    use crate::proxy::{
        request::{ClientIp, PeerIp},
        upstream::ProxyBody,
        PathType, RateLimitConfig,
    };

    fn limit(average: u32) -> MiddlewareConfig {
        MiddlewareConfig::RateLimit(RateLimitConfig {
            average,
            period: Duration::from_secs(1),
            burst: 1,
            ipv6_subnet: None,
            max_keys: 1024,
            source: Default::default(),
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
            conditions: Default::default(),
            actions: Default::default(),
        }
    }

    fn context() -> BuildContext {
        BuildContext {
            metrics: Arc::new(ProxyMetrics::new()),
            sets: Default::default(),
        }
    }

    fn empty() -> ProxyBody {
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    /// An upstream that answers 200 with the path it was sent, and counts
    /// its calls.
    fn echo_path(calls: Arc<std::sync::atomic::AtomicUsize>) -> RouteService {
        RouteService::new(tower::service_fn(move |request: Request<ProxyBody>| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = request.uri().path().to_string();
            let body = http_body_util::Full::new(bytes::Bytes::from(path))
                .map_err(|never| match never {})
                .boxed_unsync();
            std::future::ready(Ok::<_, Infallible>(Response::new(body)))
        }))
    }

    async fn call(service: &RouteService, path: &str) -> (Response<ProxyBody>, String) {
        let mut request = Request::builder().uri(path).body(empty()).unwrap();
        let client = "192.0.2.1".parse().unwrap();
        request.extensions_mut().insert(ClientIp(client));
        request.extensions_mut().insert(PeerIp(client));
        let response = stack::call(service.clone(), request).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (Response::from_parts(parts, empty()), text)
    }

    #[test]
    fn an_unchanged_middleware_survives_a_rebuild_a_changed_one_does_not() {
        let configs: BTreeMap<_, _> = [("a".to_string(), limit(1)), ("b".to_string(), limit(2))]
            .into_iter()
            .collect();
        let cx = context();
        let first = Middlewares::build(&configs, None, &cx).unwrap();
        let mut changed = configs.clone();
        changed.insert("b".into(), limit(3));
        let second = Middlewares::build(&changed, Some(&first), &cx).unwrap();
        let same =
            |name: &str| Arc::ptr_eq(&first.by_name[name].built, &second.by_name[name].built);
        assert!(same("a"), "unchanged: the same limiter, with its buckets");
        assert!(!same("b"), "changed: a new limiter");
    }

    #[tokio::test]
    async fn the_stack_runs_in_route_order_and_a_refusal_meets_the_layers_outside_it() {
        let strip = StripPrefixConfig {
            prefixes: vec!["/api".into()],
            matching: PrefixMatch::Segments,
        };
        let add = AddPrefixConfig {
            prefix: "/v2".into(),
        };
        let sec = SecurityHeadersConfig {
            content_type_nosniff: true,
            ..Default::default()
        };
        let configs: BTreeMap<_, _> = [
            ("strip", MiddlewareConfig::StripPrefix(strip)),
            ("add", MiddlewareConfig::AddPrefix(add)),
            ("sec", MiddlewareConfig::SecurityHeaders(sec)),
            ("limit", limit(1)),
        ]
        .into_iter()
        .map(|(name, config)| (name.to_string(), config))
        .collect();
        let built = Middlewares::build(&configs, None, &context()).unwrap();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stack = |names: &[&str]| {
            built
                .stack(&route("r", names), echo_path(calls.clone()))
                .unwrap()
        };
        // strip then add: /api/x -> /x -> /v2/x; add then strip: /v2/api/x,
        // which no longer starts with /api.
        assert_eq!(call(&stack(&["strip", "add"]), "/api/x").await.1, "/v2/x");
        assert_eq!(
            call(&stack(&["add", "strip"]), "/api/x").await.1,
            "/v2/api/x"
        );
        // The limiter's 429 goes back out through the security headers.
        let guarded = stack(&["sec", "limit"]);
        let (passed, _) = call(&guarded, "/").await;
        assert_eq!(passed.headers()["x-content-type-options"], "nosniff");
        let before = calls.load(std::sync::atomic::Ordering::SeqCst);
        let (refused, text) = call(&guarded, "/").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "{text}");
        assert_eq!(refused.headers()["x-content-type-options"], "nosniff");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before);
        let refusal = refused
            .extensions()
            .get::<crate::proxy::request::error::Refusal>();
        let refusal = refusal.expect("the refusal says what it was");
        assert_eq!(refusal.middleware.as_deref(), Some("limit"));
        assert_eq!(refusal.kind, "rate_limit");

        let error = built.stack(&route("three", &["c"]), echo_path(calls)).err();
        let error = format!("{:#}", error.unwrap());
        assert!(error.contains("unknown middleware `c`"), "{error}");
    }
}
