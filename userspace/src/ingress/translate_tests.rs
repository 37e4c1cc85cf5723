//! The translation on the reference deployment's two Ingresses (the API on
//! `api.example.com` and `example.com`, the admin UI on `admin.example.com`)
//! and on the odd cases, plus the merge with a config file's routes.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{
    files::parse,
    merge::merge,
    translate::{translate, Translation, MIDDLEWARES_ANNOTATION},
    Objects,
};
use crate::proxy::{tls::check_pair, IngressConfig, PathType, ProxyConfig, RouteConfig};

/// The reference deployment's Ingresses as docs/migrating.md shows them, with
/// the class switched to xdpgate and an origin certificate Secret.
fn reference(secret: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: honeydue
  creationTimestamp: "2025-01-01T00:00:00Z"
  annotations:
    {MIDDLEWARES_ANNOTATION}: headers,ratelimit
spec:
  ingressClassName: xdpgate
  tls:
    - hosts: [api.example.com, example.com]
      secretName: origin-ca-tls
  rules:
    - host: api.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {{ service: {{ name: api, port: {{ number: 8000 }} }} }}
    - host: example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {{ service: {{ name: api, port: {{ number: 8000 }} }} }}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: admin
  namespace: honeydue
  creationTimestamp: "2025-01-02T00:00:00Z"
  annotations:
    traefik.ingress.kubernetes.io/router.middlewares: default-headers@kubernetescrd,default-adminauth@kubernetescrd
spec:
  ingressClassName: xdpgate
  tls:
    - hosts: [admin.example.com]
      secretName: origin-ca-tls
  rules:
    - host: admin.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {{ service: {{ name: admin, port: {{ number: 3000 }} }} }}
{secret}"#
    )
}

fn secret_yaml(cert: &str, key: &str) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: origin-ca-tls, namespace: honeydue }}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

fn origin_cert() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec![
        "api.example.com".to_string(),
        "example.com".to_string(),
        "admin.example.com".to_string(),
    ])
    .unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

fn known(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn config() -> IngressConfig {
    let mut config = IngressConfig::new("xdpgate");
    config.tls_entrypoint = Some("websecure".to_string());
    config.files = Some(PathBuf::from("/unused"));
    config
}

fn run(objects: &Objects, middlewares: &[&str]) -> Translation {
    translate(objects, &config(), &known(middlewares), &|c, k| {
        check_pair(c, k)
    })
}

/// `(name, host, path, type, upstream target, middlewares)` per route.
fn table(t: &Translation) -> Vec<(String, String, String, PathType, String, String)> {
    t.routes
        .iter()
        .map(|r| {
            let c = &r.config;
            (
                c.name.clone(),
                c.host.clone().unwrap_or_else(|| "*".into()),
                c.path.clone(),
                c.path_type,
                t.services[&c.service].target.clone(),
                c.middlewares.join(","),
            )
        })
        .collect()
}

fn row(
    name: &str,
    host: &str,
    path: &str,
    t: PathType,
    target: &str,
    mw: &str,
) -> (String, String, String, PathType, String, String) {
    (
        name.into(),
        host.into(),
        path.into(),
        t,
        target.into(),
        mw.into(),
    )
}

#[test]
fn the_reference_deployment_routes_its_three_hosts_with_tls_and_middlewares() {
    let (cert, key) = origin_cert();
    let objects = parse(&reference(&secret_yaml(&cert, &key))).unwrap();
    let t = run(&objects, &["headers", "ratelimit", "adminauth"]);
    assert_eq!(t.problems, vec![]);
    let api = "api.honeydue.svc.cluster.local:8000";
    let admin = "admin.honeydue.svc.cluster.local:3000";
    assert_eq!(
        table(&t),
        vec![
            row(
                "ingress.honeydue.api.0.0",
                "api.example.com",
                "/",
                PathType::Prefix,
                api,
                "headers,ratelimit"
            ),
            row(
                "ingress.honeydue.api.1.0",
                "example.com",
                "/",
                PathType::Prefix,
                api,
                "headers,ratelimit"
            ),
            row(
                "ingress.honeydue.admin.0.0",
                "admin.example.com",
                "/",
                PathType::Prefix,
                admin,
                "headers,adminauth"
            ),
        ]
    );
    // One Secret serves both Ingresses: written once.
    assert_eq!(t.certs.len(), 1);
    assert_eq!(
        t.certs[0].key,
        ("honeydue".to_string(), "origin-ca-tls".to_string())
    );
    assert_eq!(t.certs[0].key_pem, key.as_bytes());
    // The Traefik annotation works and says what to write instead.
    assert_eq!(t.warnings.len(), 1);
    assert!(
        t.warnings[0].contains("Ingress honeydue/admin")
            && t.warnings[0].contains("xdpgate.io/middlewares: headers,adminauth"),
        "{:?}",
        t.warnings
    );
}

#[test]
fn a_missing_or_broken_secret_is_reported_and_the_routes_still_work() {
    let objects = parse(&reference("")).unwrap();
    let t = run(&objects, &["headers", "ratelimit", "adminauth"]);
    assert_eq!(t.routes.len(), 3);
    assert!(t.certs.is_empty());
    assert_eq!(t.problems.len(), 1);
    assert_eq!(t.problems[0].reason, "tls-secret");
    assert!(t.problems[0]
        .to_string()
        .starts_with("Secret honeydue/origin-ca-tls: the TLS Secret does not exist"));

    let (cert, _) = origin_cert();
    let (_, other_key) = origin_cert();
    let objects = parse(&reference(&secret_yaml(&cert, &other_key))).unwrap();
    let t = run(&objects, &["headers", "ratelimit", "adminauth"]);
    assert_eq!(t.routes.len(), 3);
    assert_eq!(t.problems.len(), 1);
    let message = t.problems[0].to_string();
    assert!(
        message.contains("do not make a usable certificate"),
        "{message}"
    );
    assert!(
        !message.contains("PRIVATE KEY"),
        "key material in a message: {message}"
    );
}

#[test]
fn an_unknown_middleware_makes_only_that_ingress_answer_503() {
    let (cert, key) = origin_cert();
    let objects = parse(&reference(&secret_yaml(&cert, &key))).unwrap();
    let t = run(&objects, &["headers", "ratelimit"]);
    assert_eq!(t.routes.len(), 3, "the API's routes stay, admin's are held");
    assert_eq!(t.valid, 1);
    // Admin's route keeps its place in the table (no broader route takes
    // its requests) but without middlewares and with a service that has no
    // endpoint: 503, never a weaker policy.
    let admin: Vec<_> = t
        .routes
        .iter()
        .filter(|r| r.origin.1 == "admin")
        .map(|r| &r.config)
        .collect();
    assert_eq!(admin.len(), 1);
    assert!(admin[0].middlewares.is_empty());
    assert_eq!(t.services[&admin[0].service].endpoints, Some(Vec::new()));
    let api = t.routes.iter().find(|r| r.origin.1 == "api").unwrap();
    assert_eq!(api.config.middlewares, ["headers", "ratelimit"]);
    assert_eq!(t.problems.len(), 1);
    assert_eq!(t.problems[0].object, "Ingress honeydue/admin");
    assert_eq!(t.problems[0].reason, "middleware");
    assert!(
        t.problems[0]
            .message
            .contains("unknown middleware `adminauth`"),
        "{}",
        t.problems[0]
    );
    assert!(t.problems[0]
        .message
        .contains("default-adminauth@kubernetescrd"));
}

const ODD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: odd, namespace: shop }
spec:
  ingressClassName: xdpgate
  defaultBackend: { service: { name: web, port: { number: 80 } } }
  rules:
    - http:
        paths:
          - { path: /healthz, pathType: Exact, backend: { service: { name: health, port: { number: 8080 } } } }
          - { path: /static, pathType: ImplementationSpecific, backend: { service: { name: cdn, port: { number: 80 } } } }
    - host: shop.example.com
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: other-class, namespace: shop }
spec:
  ingressClassName: traefik
  defaultBackend: { service: { name: web, port: { number: 80 } } }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: empty, namespace: shop }
spec: { ingressClassName: xdpgate }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: named-port, namespace: shop }
spec:
  ingressClassName: xdpgate
  rules:
    - host: a.example.com
      http: { paths: [ { path: /, pathType: Prefix, backend: { service: { name: web, port: { name: http } } } } ] }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: bad-host, namespace: shop }
spec:
  ingressClassName: xdpgate
  rules:
    - host: "a.example.com:8443"
      http: { paths: [ { path: /, pathType: Prefix, backend: { service: { name: web, port: { number: 80 } } } } ] }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: bad-type, namespace: shop }
spec:
  ingressClassName: xdpgate
  rules:
    - http: { paths: [ { path: /x, pathType: Regex, backend: { service: { name: web, port: { number: 80 } } } } ] }
"#;

#[test]
fn odd_ingresses_no_host_no_paths_implementation_specific_and_invalid_ones() {
    let objects = parse(ODD).unwrap();
    let t = run(&objects, &[]);
    let web = "web.shop.svc.cluster.local:80";
    assert_eq!(
        table(&t),
        vec![
            row(
                "ingress.shop.odd.0.0",
                "*",
                "/healthz",
                PathType::Exact,
                "health.shop.svc.cluster.local:8080",
                ""
            ),
            row(
                "ingress.shop.odd.0.1",
                "*",
                "/static",
                PathType::Prefix,
                "cdn.shop.svc.cluster.local:80",
                ""
            ),
            // A host without paths goes to the default backend.
            row(
                "ingress.shop.odd.1",
                "shop.example.com",
                "/",
                PathType::Prefix,
                web,
                ""
            ),
            row(
                "ingress.shop.odd.default",
                "*",
                "/",
                PathType::Prefix,
                web,
                ""
            ),
        ]
    );
    assert_eq!(t.warnings, vec!["Ingress shop/odd: spec.rules[0].http.paths[1]: pathType ImplementationSpecific is treated as Prefix"]);
    let problems: Vec<(String, &str)> = t
        .problems
        .iter()
        .map(|p| (p.object.clone(), p.reason))
        .collect();
    assert_eq!(
        problems,
        vec![
            ("Ingress shop/bad-host".to_string(), "host"),
            ("Ingress shop/bad-type".to_string(), "path"),
            ("Ingress shop/empty".to_string(), "spec"),
            ("Ingress shop/named-port".to_string(), "port"),
        ]
    );
    assert!(
        t.problems[0].message.contains("spec.rules[0].host"),
        "{}",
        t.problems[0]
    );
    assert!(
        t.problems[3].message.contains("endpoint_slices"),
        "{}",
        t.problems[3]
    );
}

#[test]
fn endpoint_slices_give_ready_addresses_and_resolve_named_ports() {
    let slices = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-abc, namespace: shop, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [ { name: http, port: 8080 } ]
endpoints:
  - addresses: [10.1.0.5]
    conditions: { ready: true }
  - addresses: [10.1.0.6]
    conditions: { ready: false }
  - addresses: [10.1.0.7]
"#;
    let objects = parse(&format!("{ODD}---{slices}")).unwrap();
    let mut config = config();
    config.endpoint_slices = true;
    let t = translate(&objects, &config, &known(&[]), &|c, k| check_pair(c, k));
    let named = t
        .services
        .get("ingress.shop.web.http")
        .expect("the named port's service");
    let ready: Vec<String> = named
        .endpoints
        .clone()
        .unwrap()
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(ready, ["10.1.0.5:8080", "10.1.0.7:8080"]);
    // The numbered Service port maps to the slice's only (target) port.
    let numbered = &t.services["ingress.shop.web.80"];
    assert_eq!(numbered.endpoints.as_ref().unwrap().len(), 2);
    // A Service without slices has no endpoint yet (503), not the DNS name.
    assert_eq!(
        t.services["ingress.shop.health.8080"].endpoints,
        Some(vec![])
    );
}

#[test]
fn long_names_are_cut_to_valid_unique_names() {
    let long = "a".repeat(60);
    let text = ODD.replace("name: odd,", &format!("name: {long},"));
    let t = run(&parse(&text).unwrap(), &[]);
    let names: Vec<&str> = t.routes.iter().map(|r| r.config.name.as_str()).collect();
    assert_eq!(names.len(), 4);
    for name in &names {
        assert!(crate::config::valid_name(name), "{name}");
    }
    let unique: BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), 4, "{names:?}");
}

fn file_config(routes: Vec<RouteConfig>) -> ProxyConfig {
    let text = r#"
proxy:
  entrypoints:
    websecure: { listen: "127.0.0.1:8443", tls: {} }
  ingress: { files: /unused }
filter:
  sets:
    nodes: { cidrs: [10.0.0.1] }
  allow:
    - { tcp: [443], from: [nodes] }
"#;
    let mut proxy = crate::config::parse(text, Path::new("test.yaml"))
        .unwrap()
        .proxy
        .unwrap();
    for route in routes {
        let service = crate::proxy::ServiceConfig::for_target(&route.service);
        proxy.services.insert(route.service.clone(), service);
        proxy.routes.push(route);
    }
    proxy
}

#[test]
fn merge_keeps_the_file_first_then_older_ingresses_and_reports_each_conflict() {
    let (cert, key) = origin_cert();
    let mut text = reference(&secret_yaml(&cert, &key));
    // A newer Ingress that claims the admin host too.
    text.push_str(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: admin-copy, namespace: aaa, creationTimestamp: "2025-06-01T00:00:00Z" }
spec:
  ingressClassName: xdpgate
  rules:
    - host: admin.example.com
      http: { paths: [ { path: /, pathType: Prefix, backend: { service: { name: impostor, port: { number: 80 } } } } ] }
"#,
    );
    let t = run(
        &parse(&text).unwrap(),
        &["headers", "ratelimit", "adminauth"],
    );
    let file = file_config(vec![RouteConfig {
        name: "api-from-file".into(),
        host: Some("api.example.com".into()),
        path: "/".into(),
        path_type: PathType::Prefix,
        service: "10.0.0.1:8000".into(),
        entrypoints: vec![],
        middlewares: vec![],
        conditions: Default::default(),
        actions: Default::default(),
    }]);
    let merged = merge(&file, &t, Path::new("/state/ingress-tls"));
    let routes: Vec<(&str, &str)> = merged
        .config
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.service.as_str()))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("api-from-file", "10.0.0.1:8000"),
            ("ingress.honeydue.api.1.0", "ingress.honeydue.api.8000"),
            ("ingress.honeydue.admin.0.0", "ingress.honeydue.admin.3000"),
        ]
    );
    assert_eq!(merged.routes, 2);
    assert_eq!(merged.conflicts.len(), 2, "{:#?}", merged.conflicts);
    assert!(merged.conflicts[0].starts_with("route `ingress.honeydue.api.0.0` of Ingress honeydue/api matches the same host, path and path type as route `api-from-file` of the config file, which wins"), "{}", merged.conflicts[0]);
    assert!(
        merged.conflicts[1].contains("Ingress aaa/admin-copy")
            && merged.conflicts[1].contains("Ingress honeydue/admin"),
        "{}",
        merged.conflicts[1]
    );
    let tls = merged.config.entrypoints[0].tls.as_ref().unwrap();
    assert_eq!(tls.certs.len(), 1);
    assert_eq!(
        tls.certs[0].key,
        Path::new("/state/ingress-tls/honeydue/origin-ca-tls/tls.key")
    );
    // Deterministic: the same objects give the same config.
    let again = merge(
        &file,
        &run(
            &parse(&text).unwrap(),
            &["headers", "ratelimit", "adminauth"],
        ),
        Path::new("/state/ingress-tls"),
    );
    assert_eq!(again, merged);
}
