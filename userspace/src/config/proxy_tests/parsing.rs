//! What a valid `proxy:` section parses into, and the defaults of what is
//! not written.
use super::*;

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
        entrypoints: design_sketch_entrypoints(),
        services: [
            (admin.to_string(), ServiceConfig::for_target(admin)),
            (api.to_string(), ServiceConfig::for_target(api)),
        ]
        .into_iter()
        .collect(),
        weighted: BTreeMap::new(),
        routes: design_sketch_routes(api, admin),
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

/// The entrypoints of the design sketch, as they parse.
fn design_sketch_entrypoints() -> Vec<EntrypointConfig> {
    vec![
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
    ]
}

/// The design sketch's two routes, to the services `api` and `admin` name.
fn design_sketch_routes(api: &str, admin: &str) -> Vec<RouteConfig> {
    vec![
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
    ]
}

/// A proxy section that writes every key.
const EVERY_PROXY_KEY: &str = r#"
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
    "#;

#[test]
fn every_proxy_key_is_read() {
    let p = proxy(EVERY_PROXY_KEY);
    assert_eq!(p.trusted, names(&["cloudflare", "nodes"]));
    every_entrypoint_key_is_read(&p);
    every_service_and_route_key_is_read(&p);
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

fn every_entrypoint_key_is_read(p: &ProxyConfig) {
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
}

fn every_service_and_route_key_is_read(p: &ProxyConfig) {
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
