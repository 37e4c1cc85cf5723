//! `proxy.middlewares` and routes' `middlewares`: what parses, into what, and
//! where each refusal points. Line numbers are those of the text in the test
//! (lines 1-4 are the entrypoints of `with_entrypoints`).
use std::time::Duration;

use super::{
    proxy_tests::{proxy, refused, with_entrypoints},
    tests::assert_at,
};
use crate::proxy::{
    BodyLimitConfig, HstsConfig, IpAllowConfig, MiddlewareConfig, RateLimitConfig,
    RedirectSchemeConfig,
};

#[test]
fn the_design_sketch_middlewares_parse_in_route_order() {
    let p = proxy(&with_entrypoints(
        "
        routes:
          - { host: api.example.com, path: /, service: \"api:8000\", middlewares: [headers, ratelimit] }
          - { host: admin.example.com, service: \"admin:3000\", middlewares: [headers, adminauth] }
        middlewares:
          ratelimit: { rate_limit: { average: 100, period: 1m, burst: 200 } }
          adminauth: { basic_auth: { users_file: /etc/xdpgate/secrets/htpasswd } }
          headers:   { security_headers: { hsts: { max_age: 63072000, preload: true } } }
    ",
    ));
    assert_eq!(p.routes[0].middlewares, ["headers", "ratelimit"]);
    assert_eq!(p.routes[1].middlewares, ["headers", "adminauth"]);
    assert_eq!(
        p.middlewares["ratelimit"],
        MiddlewareConfig::RateLimit(RateLimitConfig {
            average: 100,
            period: Duration::from_secs(60),
            burst: 200,
            ipv6_subnet: None,
            max_keys: 65536,
            source: Default::default(),
            store: None,
        })
    );
    let MiddlewareConfig::SecurityHeaders(headers) = &p.middlewares["headers"] else {
        panic!("{:?}", p.middlewares["headers"]);
    };
    assert_eq!(
        headers.hsts,
        Some(HstsConfig {
            max_age: 63072000,
            include_subdomains: false,
            preload: true
        })
    );
    let MiddlewareConfig::BasicAuth(auth) = &p.middlewares["adminauth"] else {
        panic!("{:?}", p.middlewares["adminauth"]);
    };
    assert_eq!(auth.realm, "xdpgate");
    assert!(!auth.remove_header);
}

#[test]
fn every_kind_reads_its_settings() {
    let p = proxy(&with_entrypoints(
        "
        routes:
          - { service: \"api:8000\" }
        middlewares:
          office: { ip_allow: { sets: [nodes], cidrs: [192.0.2.0/24, \"2001:db8::1\"] } }
          tohttps: { redirect_scheme: { permanent: true, port: 8443 } }
          cap: { body_limit: { max_bytes: 10MiB } }
          limit6: { rate_limit: { average: 5, ipv6_subnet: 64, max_keys: 1000 } }
    ",
    ));
    assert_eq!(
        p.middlewares["office"],
        MiddlewareConfig::IpAllow(IpAllowConfig {
            sets: vec!["nodes".into()],
            cidrs: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap()
            ],
            source: Default::default(),
        })
    );
    assert_eq!(
        p.middlewares["tohttps"],
        MiddlewareConfig::RedirectScheme(RedirectSchemeConfig {
            scheme: "https".into(),
            port: Some(8443),
            permanent: true,
        })
    );
    assert_eq!(
        p.middlewares["cap"],
        MiddlewareConfig::BodyLimit(BodyLimitConfig {
            max_bytes: 10 << 20
        })
    );
    let MiddlewareConfig::RateLimit(limit) = &p.middlewares["limit6"] else {
        panic!()
    };
    assert_eq!(
        (limit.period, limit.burst, limit.ipv6_subnet, limit.max_keys),
        (Duration::from_secs(1), 1, Some(64), 1000),
        "Traefik's defaults for period and burst"
    );
}

#[test]
fn a_route_names_defined_middlewares_once() {
    let e = refused(&with_entrypoints(
        "
        routes:
          - { service: \"api:8000\" }
          - host: api.example.com
            service: \"api:8000\"
            middlewares: [headers, ratelimt]
        middlewares:
          ratelimit: { rate_limit: { average: 100 } }
          headers: { security_headers: { content_type_nosniff: true } }
    ",
    ));
    assert_at(
        &e,
        9,
        "proxy.routes[1].middlewares[1]",
        "unknown middleware `ratelimt` (did you mean `ratelimit`?)",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - { service: \"api:8000\", middlewares: [headers, headers] }
        middlewares:
          headers: { security_headers: { content_type_nosniff: true } }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.routes[0].middlewares[1]",
        "`headers` is listed twice",
    );
}

#[test]
fn a_middleware_has_exactly_one_known_kind() {
    let cases = [
        (
            "m: { ratelimit: { average: 1 } }",
            "proxy.middlewares.m.ratelimit",
            "did you mean `rate_limit`?",
        ),
        ("m: {}", "proxy.middlewares.m", "has no kind"),
        (
            "m: { rate_limit: { average: 1 }, body_limit: { max_bytes: 1 } }",
            "proxy.middlewares.m.body_limit",
            "two kinds, `rate_limit` and `body_limit`",
        ),
    ];
    for (text, key, message) in cases {
        assert_at(&refused_middleware(text), 8, key, message);
    }
}

#[test]
fn settings_are_checked_where_they_are_written() {
    let cases = [
        (
            "m: { ip_allow: { sets: [cloudflair] } }",
            "proxy.middlewares.m.ip_allow.sets[0]",
            "unknown set `cloudflair` (did you mean `cloudflare`?)",
        ),
        (
            "m: { ip_allow: {} }",
            "proxy.middlewares.m.ip_allow",
            "admits nobody",
        ),
        (
            "m: { ip_allow: { cidrs: [10.0.0.0/33] } }",
            "proxy.middlewares.m.ip_allow.cidrs[0]",
            "10.0.0.0/33",
        ),
        (
            "m: { rate_limit: { period: 1s } }",
            "proxy.middlewares.m.rate_limit",
            "needs `average`",
        ),
        (
            "m: { rate_limit: { average: 0 } }",
            "proxy.middlewares.m.rate_limit.average",
            "at least 1",
        ),
        (
            "m: { rate_limit: { average: 1, ipv6_subnet: 129 } }",
            "proxy.middlewares.m.rate_limit.ipv6_subnet",
            "at most 128",
        ),
        (
            "m: { basic_auth: { realm: x } }",
            "proxy.middlewares.m.basic_auth",
            "needs `users_file`",
        ),
        (
            "m: { basic_auth: { users_file: /f, realm: 'a\"b' } }",
            "proxy.middlewares.m.basic_auth.realm",
            "without `\"`",
        ),
        (
            "m: { security_headers: { frame_options: ALLOWALL } }",
            "proxy.middlewares.m.security_headers.frame_options",
            "not one of DENY, SAMEORIGIN",
        ),
        (
            "m: { security_headers: { referrer_policy: no-referer } }",
            "proxy.middlewares.m.security_headers.referrer_policy",
            "did you mean `no-referrer`?",
        ),
        (
            "m: { security_headers: { hsts: { preload: true } } }",
            "proxy.middlewares.m.security_headers.hsts",
            "needs `max_age`",
        ),
        (
            "m: { security_headers: { custom_response_headers: { \"Bad Name\": x } } }",
            "proxy.middlewares.m.security_headers.custom_response_headers.Bad Name",
            "not an HTTP header name",
        ),
        (
            "m: { redirect_scheme: { scheme: ftp } }",
            "proxy.middlewares.m.redirect_scheme.scheme",
            "not one of https, http",
        ),
        (
            "m: { body_limit: { max_bytes: 10Mb } }",
            "proxy.middlewares.m.body_limit.max_bytes",
            "did you mean",
        ),
        (
            "m: { strip_prefix: { prefixes: [api] } }",
            "proxy.middlewares.m.strip_prefix.prefixes[0]",
            "does not start with `/`",
        ),
        (
            "m: { headers: {} }",
            "proxy.middlewares.m.headers",
            "does nothing",
        ),
        (
            "\"bad name\": { headers: { remove: [X-A] } }",
            "proxy.middlewares.bad name",
            "not a valid middleware name",
        ),
    ];
    for (text, key, message) in cases {
        assert_at(&refused_middleware(text), 8, key, message);
    }
}

/// The error for a config whose one middleware is `text` (on line 8).
fn refused_middleware(text: &str) -> super::ConfigError {
    refused(&with_entrypoints(&format!(
        "
            routes:
              - {{ service: \"api:8000\" }}
            middlewares:
              {text}
        "
    )))
}
