//! Each Traefik field → the xdpgate middleware it becomes; each field that
//! cannot be honoured → an error naming it; references and chains.
use std::time::Duration;

use k8s_openapi::{api::core::v1::Secret, ByteString};
use serde_json::{json, Value};

use super::{convert::convert, *};
use crate::proxy::{
    BodyLimitConfig, ClientSource, CompressConfig, HstsConfig, PrefixMatch, RateLimitConfig,
    RedirectSchemeConfig,
};

fn no_secret(_: &str) -> Option<&'static Secret> {
    None
}

fn layers(spec: Value) -> Vec<MiddlewareConfig> {
    match convert(&spec, &no_secret) {
        Ok(Converted::Layers(layers)) => layers,
        other => panic!("{spec}: {other:?}"),
    }
}

fn refused(spec: Value) -> String {
    match convert(&spec, &no_secret) {
        Err(e) => e.field,
        other => panic!("{spec} was accepted: {other:?}"),
    }
}

#[test]
fn the_reference_rate_limit_is_100_a_minute_with_a_burst_of_200_per_peer() {
    let got = layers(json!({ "rateLimit": { "average": 100, "period": "1m", "burst": 200 } }));
    assert_eq!(
        got,
        [MiddlewareConfig::RateLimit(RateLimitConfig {
            average: 100,
            period: Duration::from_secs(60),
            burst: 200,
            ipv6_subnet: None,
            max_keys: 65_536,
            source: ClientSource::Peer,
            store: None,
        })]
    );
    // Traefik's defaults: a period of 1s, a burst of 1; `average: 0` is no limit.
    let MiddlewareConfig::RateLimit(default) = &layers(json!({ "rateLimit": { "average": 5 } }))[0]
    else {
        panic!()
    };
    assert_eq!((default.period, default.burst), (Duration::from_secs(1), 1));
    assert!(layers(json!({ "rateLimit": { "average": 0 } })).is_empty());
    // An integer period is seconds.
    let MiddlewareConfig::RateLimit(ints) =
        &layers(json!({ "rateLimit": { "average": 5, "period": 10 } }))[0]
    else {
        panic!()
    };
    assert_eq!(ints.period, Duration::from_secs(10));
}

#[test]
fn ip_strategies_choose_the_address_judged() {
    let source = |strategy: Value| -> (ClientSource, Option<u8>) {
        let spec =
            json!({ "rateLimit": { "average": 1, "sourceCriterion": { "ipStrategy": strategy } } });
        let MiddlewareConfig::RateLimit(c) = &layers(spec)[0] else {
            panic!()
        };
        (c.source.clone(), c.ipv6_subnet)
    };
    assert_eq!(source(json!({})), (ClientSource::Peer, None));
    assert_eq!(
        source(json!({ "depth": 2 })),
        (ClientSource::ForwardedDepth(2), None)
    );
    assert_eq!(
        source(json!({ "depth": 1, "excludedIPs": ["10.0.0.0/8"] })),
        (ClientSource::ForwardedDepth(1), None),
        "depth wins, as in Traefik"
    );
    assert_eq!(
        source(json!({ "excludedIPs": ["10.0.0.0/8"] })),
        (
            ClientSource::ForwardedExcluding(vec!["10.0.0.0/8".parse().unwrap()]),
            None
        )
    );
    assert_eq!(
        source(json!({ "ipv6Subnet": 64 })),
        (ClientSource::Peer, Some(64))
    );
    for (criterion, field) in [
        (
            json!({ "requestHost": true }),
            "spec.rateLimit.sourceCriterion.requestHost",
        ),
        (
            json!({ "requestHeaderName": "X-User" }),
            "spec.rateLimit.sourceCriterion.requestHeaderName",
        ),
        (
            json!({ "ipStrategy": { "excludedIPs": ["nonsense"] } }),
            "spec.rateLimit.sourceCriterion.ipStrategy.excludedIPs[0]",
        ),
    ] {
        let spec = json!({ "rateLimit": { "average": 1, "sourceCriterion": criterion } });
        assert_eq!(refused(spec), field);
    }
    assert_eq!(
        refused(json!({ "rateLimit": { "average": 1, "redis": { "endpoints": ["r:6379"] } } })),
        "spec.rateLimit.redis"
    );
}

#[test]
fn headers_become_security_headers_and_request_headers() {
    let got = layers(json!({ "headers": {
        "stsSeconds": 63072000, "stsIncludeSubdomains": true, "stsPreload": true,
        "forceSTSHeader": true, "frameDeny": true, "contentTypeNosniff": true,
        "browserXssFilter": true, "referrerPolicy": "strict-origin-when-cross-origin",
        "contentSecurityPolicy": "default-src 'self'", "permissionsPolicy": "camera=()",
        "customResponseHeaders": { "X-Powered-By": "", "Server": "" },
        "customRequestHeaders": { "X-Forwarded-Proto": "https", "X-Debug": "" }
    }}));
    let [MiddlewareConfig::SecurityHeaders(s), MiddlewareConfig::Headers(r)] = got.as_slice()
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        s.hsts,
        Some(HstsConfig {
            max_age: 63072000,
            include_subdomains: true,
            preload: true
        })
    );
    assert_eq!(s.frame_options.as_deref(), Some("DENY"));
    assert!(s.content_type_nosniff);
    assert_eq!(
        s.content_security_policy.as_deref(),
        Some("default-src 'self'")
    );
    assert!(s
        .custom_response_headers
        .contains(&("X-XSS-Protection".into(), Some("1; mode=block".into()))));
    assert!(s.custom_response_headers.contains(&("Server".into(), None)));
    assert_eq!(r.set["X-Forwarded-Proto"], "https");
    assert_eq!(r.remove, ["X-Debug"]);
    for field in [
        "accessControlAllowOriginList",
        "allowedHosts",
        "sslRedirect",
        "sslProxyHeaders",
    ] {
        let spec = json!({ "headers": { field: ["x"] } });
        assert_eq!(refused(spec), format!("spec.headers.{field}"));
    }
    assert_eq!(
        refused(json!({ "headers": { "isDevelopment": true } })),
        "spec.headers.isDevelopment"
    );
    assert_eq!(
        refused(json!({ "headers": { "customFrameOptionsValue": "ALLOW-FROM x" } })),
        "spec.headers.customFrameOptionsValue"
    );
}

#[test]
fn allow_lists_old_and_new_judge_the_peer_by_default() {
    for kind in ["ipAllowList", "ipWhiteList"] {
        let got = layers(json!({ kind: { "sourceRange": ["173.245.48.0/20", "2400:cb00::/32"] } }));
        let [MiddlewareConfig::IpAllow(allow)] = got.as_slice() else {
            panic!()
        };
        assert_eq!(allow.cidrs.len(), 2);
        assert_eq!(allow.source, ClientSource::Peer);
        assert_eq!(
            refused(json!({ kind: { "sourceRange": [] } })),
            format!("spec.{kind}.sourceRange")
        );
    }
    assert_eq!(
        refused(
            json!({ "ipAllowList": { "sourceRange": ["10.0.0.0/8"], "rejectStatusCode": 404 } })
        ),
        "spec.ipAllowList.rejectStatusCode"
    );
}

#[test]
fn other_kinds_map_one_to_one() {
    assert_eq!(
        layers(
            json!({ "redirectScheme": { "scheme": "https", "port": "8443", "permanent": true } })
        ),
        [MiddlewareConfig::RedirectScheme(RedirectSchemeConfig {
            scheme: "https".into(),
            port: Some(8443),
            permanent: true
        })]
    );
    assert_eq!(
        layers(
            json!({ "buffering": { "maxRequestBodyBytes": 2000000, "memRequestBodyBytes": 1000 } })
        ),
        [MiddlewareConfig::BodyLimit(BodyLimitConfig {
            max_bytes: 2_000_000
        })]
    );
    assert_eq!(
        refused(json!({ "buffering": { "maxResponseBodyBytes": 10 } })),
        "spec.buffering.maxResponseBodyBytes"
    );
    assert_eq!(
        refused(
            json!({ "buffering": { "retryExpression": "IsNetworkError() && Attempts() < 2" } })
        ),
        "spec.buffering.retryExpression"
    );
    assert_eq!(
        layers(json!({ "compress": { "minResponseBodyBytes": 200 } })),
        [MiddlewareConfig::Compress(CompressConfig {
            min_bytes: 200
        })]
    );
    assert_eq!(
        refused(json!({ "compress": { "excludedContentTypes": ["text/event-stream"] } })),
        "spec.compress.excludedContentTypes"
    );
    assert!(
        matches!(
            layers(json!({ "stripPrefix": { "prefixes": ["/api"] } })).as_slice(),
            [MiddlewareConfig::StripPrefix(s)]
                if s.prefixes == ["/api"] && s.matching == PrefixMatch::Text
        ),
        "a Traefik object strips as Traefik does: plain text, `/api` on `/apiv2` too"
    );
    assert!(matches!(
        layers(json!({ "addPrefix": { "prefix": "/v1" } })).as_slice(),
        [MiddlewareConfig::AddPrefix(a)] if a.prefix == "/v1"
    ));
    assert_eq!(
        refused(json!({ "forwardAuth": { "address": "http://a" } })),
        "spec.forwardAuth"
    );
    assert_eq!(
        refused(json!({ "headers": {}, "compress": {} })),
        "spec.headers",
        "two kinds in one object"
    );
}

fn secret(type_: Option<&str>, data: &[(&str, &str)]) -> Secret {
    Secret {
        type_: type_.map(String::from),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[test]
fn basic_auth_reads_its_users_from_the_secret_as_traefik_does() {
    let users = secret(
        None,
        &[("users", "bob:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\n")],
    );
    let typed = secret(
        Some("kubernetes.io/basic-auth"),
        &[("username", "bob"), ("password", "hunter2")],
    );
    let two = secret(None, &[("users", "a:b"), ("more", "c:d")]);
    let lookup = |name: &str| match name {
        "users" => Some(&users),
        "typed" => Some(&typed),
        "two" => Some(&two),
        _ => None,
    };
    let auth = |spec: Value| match convert(&json!({ "basicAuth": spec }), &lookup) {
        Ok(Converted::Layers(l)) => match l.as_slice() {
            [MiddlewareConfig::BasicAuth(a)] => Ok(a.clone()),
            other => panic!("{other:?}"),
        },
        Err(e) => Err(e),
        other => panic!("{other:?}"),
    };
    let a =
        auth(json!({ "secret": "users", "removeHeader": true, "headerField": "X-User" })).unwrap();
    assert_eq!(a.realm, "traefik", "Traefik's default realm");
    assert!(a.remove_header);
    assert_eq!(a.user_header.as_deref(), Some("X-User"));
    assert!(a.users.as_ref().unwrap().0.starts_with("bob:{SHA}"));
    // Never printed.
    assert!(!format!("{a:?}").contains("87u9"));
    let t = auth(json!({ "secret": "typed", "realm": "admin" })).unwrap();
    assert_eq!(
        t.users.unwrap().0,
        "bob:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\n"
    );
    assert_eq!(t.realm, "admin");
    for spec in [
        json!({ "secret": "missing" }),
        json!({ "secret": "two" }),
        json!({}),
    ] {
        let e = auth(spec.clone()).unwrap_err();
        assert_eq!(e.field, "spec.basicAuth.secret", "{spec}");
        assert!(!e.message.contains("a:b"), "{e}");
    }
    assert_eq!(
        auth(json!({ "secret": "users", "usersFile": "/x" }))
            .unwrap_err()
            .field,
        "spec.basicAuth.usersFile"
    );
}

fn objects(list: &[(&str, &str, Value)]) -> Objects {
    let mut objects = Objects::default();
    for (ns, name, spec) in list {
        objects.middlewares.insert(
            (ns.to_string(), name.to_string()),
            TraefikMiddleware {
                api_version: API_VERSIONS[0].into(),
                spec: spec.clone(),
            },
        );
    }
    objects
}

#[test]
fn chains_expand_in_order_and_refuse_cycles_bad_members_and_other_namespaces() {
    let headers = json!({ "headers": { "frameDeny": true } });
    let objects = objects(&[
        ("web-prod", "secure", headers.clone()),
        (
            "web-prod",
            "limit",
            json!({ "rateLimit": { "average": 1 } }),
        ),
        (
            "web-prod",
            "both",
            json!({ "chain": { "middlewares": [{ "name": "secure" }, { "name": "limit" }] } }),
        ),
        (
            "web-prod",
            "loop",
            json!({ "chain": { "middlewares": [{ "name": "loop" }] } }),
        ),
        (
            "web-prod",
            "bad",
            json!({ "rateLimit": { "average": 1, "redis": {} } }),
        ),
        (
            "web-prod",
            "uses-bad",
            json!({ "chain": { "middlewares": [{ "name": "bad" }] } }),
        ),
        ("other", "secure", headers),
    ]);
    let catalog = Catalog::build(&objects);
    let invalid: Vec<_> = catalog
        .invalid()
        .map(|(k, e)| (k.1.clone(), e.field.clone()))
        .collect();
    assert_eq!(
        invalid,
        [("bad".to_string(), "spec.rateLimit.redis".to_string())]
    );
    // `<namespace>-<name>` with a `-` in the namespace.
    let key = catalog.find("web-prod-both", "web-prod").unwrap();
    assert_eq!(key, ("web-prod".to_string(), "both".to_string()));
    let mut out = Vec::new();
    catalog.expand(&key, "web-prod", false, &mut out).unwrap();
    let names: Vec<_> = out.iter().map(|(n, c)| (n.as_str(), c.kind())).collect();
    assert_eq!(
        names,
        [
            ("kubernetescrd.web-prod.secure", "security_headers"),
            ("kubernetescrd.web-prod.limit", "rate_limit")
        ]
    );
    let fails = |key: (&str, &str), from: &str, cross: bool| {
        let key = (key.0.to_string(), key.1.to_string());
        catalog
            .expand(&key, from, cross, &mut Vec::new())
            .unwrap_err()
    };
    assert!(fails(("web-prod", "loop"), "web-prod", false).contains("deeper"));
    assert!(fails(("web-prod", "uses-bad"), "web-prod", false).contains("spec.rateLimit.redis"));
    assert!(fails(("other", "secure"), "web-prod", false).contains("allow_cross_namespace"));
    let mut out = Vec::new();
    catalog
        .expand(
            &("other".into(), "secure".into()),
            "web-prod",
            true,
            &mut out,
        )
        .unwrap();
    assert_eq!(out.len(), 1);
}
