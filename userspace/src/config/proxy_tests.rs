//! The `proxy:` section: what it parses into, and where each refusal points.
//!
//! Each test file puts the proxy section first and a fixed filter section
//! after it, so the line numbers asserted are the lines of the text in the
//! test.
use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use super::{
    parse,
    tests::{assert_at, dedent, ORIGIN},
    Config, ConfigError,
};
use crate::proxy::{
    AccessLogConfig, CertPair, DrainConfig, EntrypointConfig, Limits, PathType, ProxyConfig,
    RedirectConfig, RequestPolicy, RouteConfig, ServiceConfig, TlsConfig, TlsVersion,
};

/// A valid policy with the sets `cloudflare` and `nodes`, appended after the
/// proxy section under test.
const FILTER: &str = "\
filter:
  sets:
    cloudflare: { cloudflare: {} }
    nodes: { cidrs: [10.0.0.1] }
  allow:
    - { tcp: [80, 443], from: [cloudflare] }
";

pub(super) fn file(proxy: &str) -> String {
    dedent(proxy) + FILTER
}

pub(super) fn config(proxy: &str) -> Config {
    match parse(&file(proxy), Path::new(ORIGIN)) {
        Ok(config) => config,
        Err(e) => panic!("expected the config to parse, got: {e}"),
    }
}

pub(super) fn proxy(text: &str) -> ProxyConfig {
    config(text).proxy.expect("a proxy section")
}

pub(super) fn refused(proxy: &str) -> ConfigError {
    match parse(&file(proxy), Path::new(ORIGIN)) {
        Ok(config) => panic!("expected an error, the config parsed: {config:?}"),
        Err(e) => e,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A plain entrypoint redirecting to a TLS one, which the routes serve.
pub(super) const ENTRYPOINTS: &str = r#"
    proxy:
      entrypoints:
        web: { listen: "[::]:80", redirect: websecure }
        websecure: { listen: "[::]:443", tls: {} }
"#;

/// [`ENTRYPOINTS`] (lines 1-4) and then `more`, indented as proxy keys.
pub(super) fn with_entrypoints(more: &str) -> String {
    format!("{}{}", dedent(ENTRYPOINTS), dedent(more))
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i < 4 || line.is_empty() {
                format!("{line}\n")
            } else {
                format!("  {line}\n")
            }
        })
        .collect()
}

// ---- what parses, and into what ----

#[test]
fn the_design_sketch_without_middlewares_parses_into_the_proxy_config() {
    let c = config(
        r#"
        proxy:
          trusted: [cloudflare]
          entrypoints:
            web:       { listen: "[::]:80", redirect: websecure }
            websecure: { listen: "[::]:443", tls: { certs: [{ cert: /etc/xdpgate/tls/tls.crt, key: /etc/xdpgate/tls/tls.key }] } }
          routes:
            - { host: api.example.com, path: /, service: "api.honeydue.svc.cluster.local:8000" }
            - { host: admin.example.com, path: /, service: "admin.honeydue.svc.cluster.local:3000" }
        admin:
          listen: 127.0.0.1:9901
    "#,
    );
    let api = "api.honeydue.svc.cluster.local:8000";
    let admin = "admin.honeydue.svc.cluster.local:3000";
    let expected = ProxyConfig {
        trusted: names(&["cloudflare"]),
        entrypoints: vec![
            EntrypointConfig {
                name: "web".into(),
                listen: vec![addr("[::]:80")],
                redirect: Some(RedirectConfig {
                    to: "websecure".into(),
                    code: 308,
                }),
                tls: None,
                limits: Limits::default(),
                requests: RequestPolicy::default(),
            },
            EntrypointConfig {
                name: "websecure".into(),
                listen: vec![addr("[::]:443")],
                redirect: None,
                tls: Some(TlsConfig {
                    certs: vec![CertPair {
                        cert: "/etc/xdpgate/tls/tls.crt".into(),
                        key: "/etc/xdpgate/tls/tls.key".into(),
                    }],
                    client_ca: None,
                    min_version: TlsVersion::Tls12,
                }),
                limits: Limits::default(),
                requests: RequestPolicy::default(),
            },
        ],
        services: [
            (admin.to_string(), ServiceConfig::for_target(admin)),
            (api.to_string(), ServiceConfig::for_target(api)),
        ]
        .into_iter()
        .collect(),
        weighted: BTreeMap::new(),
        routes: vec![
            RouteConfig {
                name: "route-1".into(),
                host: Some("api.example.com".into()),
                path: "/".into(),
                path_type: PathType::Prefix,
                service: api.into(),
                entrypoints: vec![],
                middlewares: vec![],
                conditions: Default::default(),
                actions: Default::default(),
            },
            RouteConfig {
                name: "route-2".into(),
                host: Some("admin.example.com".into()),
                path: "/".into(),
                path_type: PathType::Prefix,
                service: admin.into(),
                entrypoints: vec![],
                middlewares: vec![],
                conditions: Default::default(),
                actions: Default::default(),
            },
        ],
        default_service: None,
        middlewares: Default::default(),
        drain: DrainConfig::default(),
        access_log: AccessLogConfig {
            enabled: true,
            path: None,
        },
        ingress: None,
    };
    assert_eq!(c.proxy, Some(expected));
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));
}

#[test]
fn every_proxy_key_is_read() {
    let p = proxy(
        r#"
        proxy:
          trusted: [cloudflare, nodes]
          entrypoints:
            websecure:
              listen: ["[::]:443", "0.0.0.0:8443"]
              tls:
                certs:
                  - { cert: /etc/xdpgate/tls/tls.crt, key: /etc/xdpgate/tls/tls.key }
                  - { cert: other.crt, key: other.key }
                client_ca: /etc/xdpgate/aop-ca.pem
                min_version: "1.3"
              limits: { header_read_timeout: 5s, max_header_bytes: 16384, idle_timeout: 2m, max_connections: 500, h2_max_concurrent_streams: 250, handshake_timeout: 3s }
            web: { listen: "[::]:80", redirect: { to: websecure, code: 301 } }
          services:
            api: { target: "api.honeydue.svc.cluster.local:8000", h2c: true, connect_timeout: 1s, response_header_timeout: 30s, idle_timeout: 45s, resolve_interval: 10s, eject_for: 0s }
          routes:
            - { name: api, host: API.Example.com, path: /v1, path_type: Exact, service: api, entrypoints: [websecure], middlewares: [] }
            - { host: "*.example.com", path: /static, path_type: prefix, service: "admin.honeydue.svc.cluster.local:3000" }
          default_service: api
          drain: { accept_grace: 0s, grace_timeout: 1m }
          access_log: { enabled: false, path: /var/log/xdpgate/access.log }
    "#,
    );
    assert_eq!(p.trusted, names(&["cloudflare", "nodes"]));
    // Sorted by name.
    let [web, websecure] = &p.entrypoints[..] else {
        panic!("two entrypoints: {:?}", p.entrypoints);
    };
    assert_eq!(web.name, "web");
    assert_eq!(
        web.redirect,
        Some(RedirectConfig {
            to: "websecure".into(),
            code: 301
        })
    );
    assert_eq!(
        websecure.listen,
        vec![addr("[::]:443"), addr("0.0.0.0:8443")]
    );
    assert_eq!(
        websecure.tls,
        Some(TlsConfig {
            certs: vec![
                CertPair {
                    cert: "/etc/xdpgate/tls/tls.crt".into(),
                    key: "/etc/xdpgate/tls/tls.key".into(),
                },
                CertPair {
                    cert: "other.crt".into(),
                    key: "other.key".into(),
                },
            ],
            client_ca: Some("/etc/xdpgate/aop-ca.pem".into()),
            min_version: TlsVersion::Tls13,
        })
    );
    assert_eq!(
        websecure.limits,
        Limits {
            header_read_timeout: secs(5),
            body_read_timeout: secs(30),
            max_header_bytes: 16384,
            idle_timeout: secs(120),
            max_connections: 500,
            h2_max_concurrent_streams: 250,
            handshake_timeout: secs(3),
        }
    );
    assert_eq!(
        p.services["api"],
        ServiceConfig {
            name: "api".into(),
            target: "api.honeydue.svc.cluster.local:8000".into(),
            h2c: true,
            connect_timeout: secs(1),
            response_header_timeout: secs(30),
            idle_timeout: secs(45),
            resolve_interval: secs(10),
            eject_for: Duration::ZERO,
            max_idle_connections: crate::proxy::DEFAULT_MAX_IDLE_CONNECTIONS,
            endpoints: None,
            sticky: None,
        }
    );
    assert_eq!(
        p.routes,
        vec![
            RouteConfig {
                name: "api".into(),
                host: Some("api.example.com".into()),
                path: "/v1".into(),
                path_type: PathType::Exact,
                service: "api".into(),
                entrypoints: names(&["websecure"]),
                middlewares: vec![],
                conditions: Default::default(),
                actions: Default::default(),
            },
            RouteConfig {
                name: "route-2".into(),
                host: Some("*.example.com".into()),
                path: "/static".into(),
                path_type: PathType::Prefix,
                service: "admin.honeydue.svc.cluster.local:3000".into(),
                entrypoints: vec![],
                middlewares: vec![],
                conditions: Default::default(),
                actions: Default::default(),
            },
        ]
    );
    assert_eq!(p.default_service.as_deref(), Some("api"));
    assert_eq!(
        p.drain,
        DrainConfig {
            accept_grace: Duration::ZERO,
            grace_timeout: secs(60),
        }
    );
    assert_eq!(
        p.access_log,
        AccessLogConfig {
            enabled: false,
            path: Some("/var/log/xdpgate/access.log".into()),
        }
    );
}

#[test]
fn defaults_apply_to_everything_not_written() {
    let p = proxy(
        r#"
        proxy:
          entrypoints:
            web: { listen: "0.0.0.0:80" }
          services:
            api: { target: "api:8000" }
          routes:
            - { service: api }
    "#,
    );
    assert!(p.trusted.is_empty(), "nobody is trusted unless named");
    let web = &p.entrypoints[0];
    assert_eq!((web.redirect.as_ref(), web.tls.as_ref()), (None, None));
    assert_eq!(web.limits, Limits::default());
    assert_eq!(web.limits.max_header_bytes, 32 * 1024);
    assert_eq!(
        p.services["api"],
        ServiceConfig {
            name: "api".into(),
            ..ServiceConfig::for_target("api:8000")
        }
    );
    assert_eq!(p.services["api"].connect_timeout, secs(5));
    assert_eq!(
        p.routes,
        vec![RouteConfig {
            name: "route-1".into(),
            host: None,
            path: "/".into(),
            path_type: PathType::Prefix,
            service: "api".into(),
            entrypoints: vec![],
            middlewares: vec![],
            conditions: Default::default(),
            actions: Default::default(),
        }]
    );
    assert_eq!(p.default_service, None);
    assert_eq!(p.drain, DrainConfig::default());
    assert_eq!(
        p.access_log,
        AccessLogConfig {
            enabled: true,
            path: None
        }
    );
}

#[test]
fn empty_tls_means_a_generated_certificate() {
    let p = proxy(&with_entrypoints("default_service: \"api:8000\"\n"));
    let tls = p.entrypoints[1].tls.as_ref().expect("websecure has tls");
    assert!(tls.certs.is_empty());
    assert_eq!(tls.client_ca, None);
    assert_eq!(tls.min_version, TlsVersion::Tls12);

    let p = proxy(
        r#"
        proxy:
          entrypoints:
            websecure:
              listen: "[::]:443"
              tls:
          default_service: "api:8000"
    "#,
    );
    assert_eq!(
        p.entrypoints[0].tls.as_ref().map(|t| t.certs.len()),
        Some(0)
    );
}

#[test]
fn literal_services_join_the_map_once_under_their_own_text() {
    let p = proxy(&with_entrypoints(
        r#"
        services:
          api: { target: "api.honeydue.svc.cluster.local:8000", h2c: true }
        routes:
          - { host: api.example.com, service: api }
          - { host: admin.example.com, service: "admin.honeydue.svc.cluster.local:3000" }
          - { host: admin.example.org, service: "admin.honeydue.svc.cluster.local:3000" }
          - { host: example.com, service: "[fd00::5]:80" }
        default_service: "10.0.0.9:8080"
    "#,
    ));
    let keys: Vec<&str> = p.services.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "10.0.0.9:8080",
            "[fd00::5]:80",
            "admin.honeydue.svc.cluster.local:3000",
            "api"
        ]
    );
    assert_eq!(
        p.services["admin.honeydue.svc.cluster.local:3000"],
        ServiceConfig::for_target("admin.honeydue.svc.cluster.local:3000")
    );
    assert!(p.services["api"].h2c, "a named service keeps its settings");
    // Every route's service, and the default, is a key of the map.
    for route in &p.routes {
        assert!(p.services.contains_key(&route.service), "{route:?}");
    }
    assert!(p
        .services
        .contains_key(p.default_service.as_deref().unwrap()));
}

#[test]
fn a_redirect_is_a_name_or_a_name_and_code() {
    let redirect_of = |web: &str| {
        let p = proxy(&format!(
            "
            proxy:
              entrypoints:
                web: {{ listen: \"[::]:80\", redirect: {web} }}
                websecure: {{ listen: \"[::]:443\", tls: {{}} }}
              default_service: \"api:8000\"
            "
        ));
        p.entrypoints[0].redirect.clone().expect("web redirects")
    };
    let long = |to: &str, code| RedirectConfig {
        to: to.into(),
        code,
    };
    assert_eq!(redirect_of("websecure"), long("websecure", 308));
    assert_eq!(redirect_of("{ to: websecure }"), long("websecure", 308));
    assert_eq!(
        redirect_of("{ to: websecure, code: 301 }"),
        long("websecure", 301)
    );
    assert_eq!(
        redirect_of("{ to: websecure, code: 308 }"),
        long("websecure", 308)
    );
}

#[test]
fn routes_may_be_limited_to_entrypoints_that_serve() {
    let p = proxy(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80" }
            websecure: { listen: "[::]:443", tls: {} }
          routes:
            - { host: a.example.com, service: "a:80", entrypoints: [websecure, web] }
            - { host: b.example.com, service: "b:80", entrypoints: [] }
    "#,
    );
    assert_eq!(p.routes[0].entrypoints, names(&["websecure", "web"]));
    assert!(p.routes[1].entrypoints.is_empty(), "empty: all of them");
}

#[test]
fn the_same_rule_on_different_entrypoints_is_not_a_repeat() {
    let p = proxy(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80" }
            websecure: { listen: "[::]:443", tls: {} }
          routes:
            - { host: a.example.com, service: "a:80", entrypoints: [web] }
            - { host: a.example.com, service: "b:80", entrypoints: [websecure] }
            - { host: a.example.com, path: /x, path_type: Exact, service: "b:80" }
            - { host: a.example.com, path: /x, service: "b:80" }
    "#,
    );
    assert_eq!(p.routes.len(), 4);
}

#[test]
fn port_zero_listeners_never_collide() {
    let p = proxy(
        r#"
        proxy:
          entrypoints:
            a: { listen: "127.0.0.1:0" }
            b: { listen: ["127.0.0.1:0", "[::1]:0"] }
          default_service: "api:8000"
    "#,
    );
    assert_eq!(p.entrypoints[1].listen.len(), 2);
}

#[test]
fn empty_middleware_lists_are_accepted() {
    let p = proxy(&with_entrypoints(
        "
        routes:
          - { service: \"api:8000\", middlewares: [] }
        middlewares: {}
    ",
    ));
    assert_eq!(p.routes.len(), 1);
}

#[test]
fn the_filter_is_still_required_beside_a_proxy() {
    let text = dedent(&with_entrypoints("default_service: \"api:8000\"\n"));
    let e = parse(&text, Path::new(ORIGIN)).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (None, "filter"), "{e}");
    assert!(e.message.contains("nothing to enforce"), "{e}");
}

// ---- the section ----

#[test]
fn the_section_needs_an_entrypoint_and_somewhere_to_send_requests() {
    let e = refused(
        "
        proxy:
          trusted: [cloudflare]
    ",
    );
    assert_at(&e, 1, "proxy", "the proxy has no entrypoint");
    let e = refused(
        "
        proxy:
          entrypoints: {}
          default_service: \"api:8000\"
    ",
    );
    assert_at(&e, 2, "proxy.entrypoints", "the proxy has no entrypoint");

    let e = refused(ENTRYPOINTS);
    assert_at(
        &e,
        1,
        "proxy",
        "no route, no default_service and no ingress source",
    );
    let e = refused(&with_entrypoints("routes: []\n"));
    assert_at(
        &e,
        5,
        "proxy.routes",
        "no route, no default_service and no ingress source",
    );
}

#[test]
fn unknown_proxy_keys_are_named_with_the_nearest_known_key() {
    let e = refused(&with_entrypoints(
        "
        default_service: \"api:8000\"
        acces_log: { enabled: false }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.acces_log",
        "unknown key `acces_log` (did you mean `access_log`?)",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80", limits: { max_header_byte: 4096 } }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web.limits.max_header_byte",
        "did you mean `max_header_bytes`?",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - service: \"api:8000\"
            pathtype: Exact
    ",
    ));
    assert_at(
        &e,
        7,
        "proxy.routes[0].pathtype",
        "did you mean `path_type`?",
    );
}

#[test]
fn trusted_names_are_sets_of_the_filter() {
    let e = refused(
        "
        proxy:
          trusted:
            - nodes
            - cloudfare
    ",
    );
    assert_at(
        &e,
        4,
        "proxy.trusted[1]",
        "unknown set `cloudfare` (did you mean `cloudflare`?)",
    );
    let e = refused("proxy: { trusted: [office] }\n");
    assert_at(
        &e,
        1,
        "proxy.trusted[0]",
        "unknown set `office`: it is not defined under filter.sets",
    );
    let e = refused("proxy: { trusted: [nodes, nodes] }\n");
    assert_at(&e, 1, "proxy.trusted[1]", "set `nodes` is listed twice");
}

// ---- entrypoints ----

#[test]
fn entrypoints_need_a_name_and_an_address() {
    let e = refused(
        r#"
        proxy:
          entrypoints:
            "web secure": { listen: "[::]:443" }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web secure",
        "`web secure` is not a valid entrypoint name",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80" }
            websecure:
              tls: {}
    "#,
    );
    assert_at(
        &e,
        4,
        "proxy.entrypoints.websecure",
        "entrypoint `websecure` has no `listen` address",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: []
    "#,
    );
    assert_at(&e, 4, "proxy.entrypoints.web.listen", "lists no address");
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen:
                - "[::]:80"
                - "example.com:80"
    "#,
    );
    assert_at(
        &e,
        6,
        "proxy.entrypoints.web.listen[1]",
        "`example.com:80` is not an IP address and port",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: ":80" }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web.listen",
        "`:80` is not an IP address and port",
    );
}

#[test]
fn listen_addresses_are_unique_across_entrypoints() {
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80" }
            websecure:
              listen:
                - "[::]:443"
                - "[::]:80"
    "#,
    );
    assert_at(
        &e,
        7,
        "proxy.entrypoints.websecure.listen[1]",
        "`[::]:80` is already where entrypoint `web` (line 3) listens",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            websecure: { listen: ["0.0.0.0:443", "[::]:443"], tls: {} }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.websecure.listen[1]",
        "`[::]:443` overlaps `0.0.0.0:443` of this entrypoint: an unspecified address",
    );
}

#[test]
fn no_entrypoint_takes_the_admin_listeners_socket() {
    let e = refused(
        r#"
        admin: { listen: "127.0.0.1:9901" }
        proxy:
          entrypoints:
            web: { listen: "127.0.0.1:80" }
            metrics: { listen: "0.0.0.0:9901" }
    "#,
    );
    assert_at(
        &e,
        5,
        "proxy.entrypoints.metrics.listen",
        "would take the admin listener's socket (admin.listen is `127.0.0.1:9901`)",
    );
    // The check reads admin.listen wherever the section is in the file.
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:8080" }
        admin: { listen: "[::1]:8080" }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web.listen",
        "admin listener's socket",
    );
}

#[test]
fn redirects_go_from_plain_to_an_existing_tls_entrypoint() {
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80", redirect: websecur }
            websecure: { listen: "[::]:443", tls: {} }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web.redirect",
        "unknown entrypoint `websecur` (did you mean `websecure`?)",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: "[::]:80"
              redirect:
                to: alt
            alt: { listen: "[::]:8080" }
    "#,
    );
    assert_at(
        &e,
        6,
        "proxy.entrypoints.web.redirect.to",
        "entrypoint `alt` has no `tls`",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: "[::]:80"
              redirect: websecure
              tls: {}
            websecure: { listen: "[::]:443", tls: {} }
    "#,
    );
    assert_at(
        &e,
        6,
        "proxy.entrypoints.web.tls",
        "entrypoint `web` redirects every request to `websecure`",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: "[::]:80"
              redirect: { to: websecure, code: 302 }
    "#,
    );
    assert_at(
        &e,
        5,
        "proxy.entrypoints.web.redirect.code",
        "`302` is not a redirect code xdpgate sends",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: "[::]:80"
              redirect: { code: 301 }
    "#,
    );
    assert_at(
        &e,
        5,
        "proxy.entrypoints.web.redirect",
        "the redirect has no `to`",
    );
}

#[test]
fn bad_tls_settings_are_named() {
    let e = refused(
        r#"
        proxy:
          entrypoints:
            websecure:
              listen: "[::]:443"
              tls:
                min_version: "1.1"
    "#,
    );
    assert_at(
        &e,
        6,
        "proxy.entrypoints.websecure.tls.min_version",
        "`1.1` is not a TLS version xdpgate accepts",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            websecure:
              listen: "[::]:443"
              tls:
                certs:
                  - { cert: a.crt, key: a.key }
                  - { cert: b.crt }
    "#,
    );
    assert_at(
        &e,
        8,
        "proxy.entrypoints.websecure.tls.certs[1]",
        "`key` is missing",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            websecure:
              listen: "[::]:443"
              tls: { client_ca: "" }
    "#,
    );
    assert_at(
        &e,
        5,
        "proxy.entrypoints.websecure.tls.client_ca",
        "the path is empty",
    );
}

#[test]
fn limits_are_bounded() {
    let limit = |limit: &str| {
        refused(&format!(
            "
            proxy:
              entrypoints:
                web:
                  listen: \"[::]:80\"
                  limits:
                    {limit}
            "
        ))
    };
    let key = |name: &str| format!("proxy.entrypoints.web.limits.{name}");
    let e = limit("max_header_bytes: 512");
    assert_at(
        &e,
        6,
        &key("max_header_bytes"),
        "512 is too small: use at least 1024",
    );
    let e = limit("max_header_bytes: 32KiB");
    assert_at(
        &e,
        6,
        &key("max_header_bytes"),
        "`32KiB` is not a whole number",
    );
    let e = limit("max_connections: 0");
    assert_at(&e, 6, &key("max_connections"), "use at least 1");
    let e = limit("h2_max_concurrent_streams: 0");
    assert_at(&e, 6, &key("h2_max_concurrent_streams"), "use at least 1");
    let e = limit("h2_max_concurrent_streams: 4294967296");
    assert_at(
        &e,
        6,
        &key("h2_max_concurrent_streams"),
        "use at most 4294967295",
    );
    for timeout in ["header_read_timeout", "idle_timeout", "handshake_timeout"] {
        let e = limit(&format!("{timeout}: 0s"));
        assert_at(&e, 6, &key(timeout), "a timeout of 0");
        let e = limit(&format!("{timeout}: 10"));
        assert_at(&e, 6, &key(timeout), "`10` is not a duration");
    }
}

// ---- services ----

#[test]
fn services_need_a_host_and_port_target() {
    let service = |body: &str| {
        refused(&with_entrypoints(&format!(
            "
            services:
              api:
                {body}
            default_service: api
            "
        )))
    };
    let e = service("h2c: true");
    assert_at(&e, 6, "proxy.services.api", "service `api` has no `target`");
    let e = service("target: api.honeydue.svc.cluster.local");
    assert_at(&e, 7, "proxy.services.api.target", "has no port");
    let e = service("target: \"http://api:8000\"");
    assert_at(&e, 7, "proxy.services.api.target", "has a scheme");
    let e = service("target: \"api:0\"");
    assert_at(
        &e,
        7,
        "proxy.services.api.target",
        "is not a port (1-65535)",
    );
    let e = service("targt: \"api:8000\"");
    assert_at(&e, 7, "proxy.services.api.targt", "did you mean `target`?");
    let e = service("{ target: \"api:8000\", h2c: yes }");
    assert_at(
        &e,
        7,
        "proxy.services.api.h2c",
        "`yes` is not true or false",
    );
    for timeout in ["connect_timeout", "response_header_timeout", "idle_timeout"] {
        let e = service(&format!("{{ target: \"api:8000\", {timeout}: 0ms }}"));
        assert_at(
            &e,
            7,
            &format!("proxy.services.api.{timeout}"),
            "a timeout of 0",
        );
    }
    let e = service("{ target: \"api:8000\", resolve_interval: 0s }");
    assert_at(&e, 7, "proxy.services.api.resolve_interval", "busy loop");

    let e = refused(&with_entrypoints(
        "
        services:
          \"api:8000\": { target: \"api:8000\" }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.services.api:8000",
        "`api:8000` is not a valid service name",
    );
}

// ---- routes ----

#[test]
fn route_names_are_valid_and_unique() {
    let e = refused(&with_entrypoints(
        "
        routes:
          - { name: \"api v1\", service: \"api:8000\" }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.routes[0].name",
        "`api v1` is not a valid route name",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - { name: api, host: a.example.com, service: \"api:8000\" }
          - name: api
            host: b.example.com
            service: \"api:8000\"
    ",
    ));
    assert_at(
        &e,
        7,
        "proxy.routes[1].name",
        "route name `api` is already taken by proxy.routes[0] (line 6)",
    );
    // A written name may not take the default name of a later route.
    let e = refused(&with_entrypoints(
        "
        routes:
          - { name: route-2, host: a.example.com, service: \"api:8000\" }
          - { host: b.example.com, service: \"api:8000\" }
    ",
    ));
    assert_at(
        &e,
        7,
        "proxy.routes[1]",
        "this route's default name `route-2` is already taken by proxy.routes[0] (line 6)",
    );
}

#[test]
fn route_hosts_are_host_names() {
    let host = |host: &str| {
        refused(&with_entrypoints(&format!(
            "
            routes:
              - {{ service: \"api:8000\" }}
              - host: {host}
                service: \"api:8000\"
            "
        )))
    };
    for (bad, says) in [
        ("api.example.com:443", "has a port"),
        ("\"https://api.example.com\"", "has a scheme"),
        (
            "\"a.*.example.com\"",
            "a wildcard is one `*` label at the left",
        ),
        ("\"*\"", "leave `host` out to match any host"),
        ("api_v1.example.com", "is not a host name"),
    ] {
        let e = host(bad);
        assert_at(&e, 7, "proxy.routes[1].host", says);
    }
}

#[test]
fn route_paths_and_path_types_are_checked() {
    let route = |fields: &str| {
        refused(&with_entrypoints(&format!(
            "
            routes:
              - {{ service: \"api:8000\", {fields} }}
            "
        )))
    };
    let e = route("path: api");
    assert_at(&e, 6, "proxy.routes[0].path", "does not start with `/`");
    let e = route("path: \"/api?v=1\"");
    assert_at(&e, 6, "proxy.routes[0].path", "query");
    let e = route("path_type: Exakt");
    assert_at(
        &e,
        6,
        "proxy.routes[0].path_type",
        "`Exakt` is not a path type: use Prefix or Exact (did you mean `Exact`?)",
    );
    let e = route("path_type: ImplementationSpecific");
    assert_at(
        &e,
        6,
        "proxy.routes[0].path_type",
        "is not a path type: use Prefix or Exact",
    );
}

#[test]
fn route_services_are_names_or_host_and_port() {
    let e = refused(&with_entrypoints(
        "
        services:
          api: { target: \"api:8000\" }
          admin: { target: \"admin:3000\" }
        routes:
          - { host: a.example.com, service: api }
          - host: b.example.com
            service: apl
    ",
    ));
    assert_at(
        &e,
        11,
        "proxy.routes[1].service",
        "unknown service `apl` (did you mean `api`?)",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - { service: backend }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.routes[0].service",
        "unknown service `backend`: it is neither a name under proxy.services nor a host:port",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - { service: \"api:80800\" }
    ",
    ));
    assert_at(&e, 6, "proxy.routes[0].service", "is not a port (1-65535)");
    let e = refused(&with_entrypoints(
        "
        routes:
          - { host: a.example.com }
    ",
    ));
    assert_at(&e, 6, "proxy.routes[0]", "this route has no `service`");
    let e = refused(&with_entrypoints("default_service: apii\n"));
    assert_at(&e, 5, "proxy.default_service", "unknown service `apii`");
}

#[test]
fn route_entrypoints_exist_and_serve_requests() {
    let route = |entrypoints: &str| {
        refused(&with_entrypoints(&format!(
            "
            routes:
              - service: \"api:8000\"
                entrypoints: {entrypoints}
            "
        )))
    };
    let e = route("[websecur]");
    assert_at(
        &e,
        7,
        "proxy.routes[0].entrypoints[0]",
        "unknown entrypoint `websecur` (did you mean `websecure`?)",
    );
    let e = route("[websecure, web]");
    assert_at(
        &e,
        7,
        "proxy.routes[0].entrypoints[1]",
        "entrypoint `web` redirects every request to `websecure`",
    );
    let e = route("[websecure, websecure]");
    assert_at(
        &e,
        7,
        "proxy.routes[0].entrypoints[1]",
        "entrypoint `websecure` is listed twice",
    );
    let e = route("websecure");
    assert_at(
        &e,
        7,
        "proxy.routes[0].entrypoints",
        "expected a list like [websecure]",
    );
}

#[test]
fn a_route_that_repeats_an_earlier_match_is_refused() {
    let e = refused(&with_entrypoints(
        "
        routes:
          - { host: API.example.com, path: /api, service: \"a:80\" }
          - { host: other.example.com, service: \"b:80\" }
          - { host: api.example.com, path: /api/, service: \"b:80\", entrypoints: [websecure] }
    ",
    ));
    assert_at(
        &e,
        8,
        "proxy.routes[2]",
        "route `route-3` matches the same host, path and path type as route `route-1` \
         (proxy.routes[0], line 6) on entrypoint `websecure`",
    );
}

// ---- drain and access log ----

#[test]
fn drain_and_access_log_values_are_checked() {
    let e = refused(&with_entrypoints(
        "
        default_service: \"api:8000\"
        drain: { grace_timeout: 30 }
    ",
    ));
    assert_at(&e, 6, "proxy.drain.grace_timeout", "`30` is not a duration");
    let e = refused(&with_entrypoints(
        "
        default_service: \"api:8000\"
        access_log:
          enabled: on
    ",
    ));
    assert_at(
        &e,
        7,
        "proxy.access_log.enabled",
        "`on` is not true or false",
    );
    let e = refused(&with_entrypoints(
        "
        default_service: \"api:8000\"
        access_log: { path: \"\" }
    ",
    ));
    assert_at(&e, 6, "proxy.access_log.path", "the path is empty");
}

#[test]
fn services_are_keyed_by_name() {
    // The map's keys are what routes refer to; a named service's `name` is
    // its key, a literal's is the literal.
    let p = proxy(&with_entrypoints(
        "
        services:
          web-api: { target: \"api:8000\" }
        routes:
          - { service: web-api }
          - { host: x.example.com, service: \"x:80\" }
    ",
    ));
    let expected: BTreeMap<&str, &str> = [("web-api", "web-api"), ("x:80", "x:80")]
        .into_iter()
        .collect();
    let actual: BTreeMap<&str, &str> = p
        .services
        .iter()
        .map(|(k, s)| (k.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(actual, expected);
}
