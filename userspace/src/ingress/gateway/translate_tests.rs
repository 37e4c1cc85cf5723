//! The Gateway API translation on a small cluster (one class, one Gateway
//! with HTTP and HTTPS listeners and one it cannot serve, HTTPRoutes that
//! compete for a host), and the precedence of the routes it makes, looked
//! up through the proxy's own route table.
use std::path::PathBuf;

use hyper::{header::HeaderValue, HeaderMap, Method};
use serde_json::Value;

use super::{
    routes::REFUSED_BACKEND,
    translate::{translate, GatewayTranslation, StatusKind},
};
use crate::{
    ingress::{files::parse, Objects},
    proxy::{
        route_rules::RequestFacts, routing::RouteTable, tls::check_pair, GatewayConfig,
        GatewayEntrypoint, IngressConfig,
    },
};

const CLUSTER: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: { name: xdpgate, generation: 1 }
spec: { controllerName: xdpgate.io/gateway-controller }
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: { name: other }
spec: { controllerName: example.net/other }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge, namespace: infra, generation: 3 }
spec:
  gatewayClassName: xdpgate
  listeners:
    - { name: http, port: 80, protocol: HTTP, allowedRoutes: { namespaces: { from: All } } }
    - { name: admin, port: 80, protocol: HTTP, hostname: "*.admin.example.com" }
    - { name: raw, port: 5432, protocol: TCP }
    - { name: nowhere, port: 8443, protocol: HTTP }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: theirs, namespace: infra }
spec: { gatewayClassName: other, listeners: [{ name: http, port: 80, protocol: HTTP }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z", generation: 7 }
spec:
  parentRefs: [{ name: edge, namespace: infra, sectionName: http }]
  hostnames: [api.example.com]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v1 } }]
      backendRefs: [{ name: v1, port: 8000 }]
    - matches: [{ path: { type: Exact, value: /v1/login } }]
      backendRefs: [{ name: login, port: 8000 }]
    - matches:
        - path: { type: PathPrefix, value: /v1 }
          headers: [{ name: X-Canary, value: "yes" }]
      backendRefs: [{ name: canary, port: 8000 }]
    - matches:
        - path: { type: PathPrefix, value: /v1 }
          method: POST
      backendRefs: [{ name: writes, port: 8000 }]
    - matches:
        - path: { type: PathPrefix, value: /v1 }
          queryParams: [{ name: beta, value: "1" }]
      backendRefs: [{ name: beta, port: 8000 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: wide, namespace: shop, creationTimestamp: "2025-01-02T00:00:00Z" }
spec:
  parentRefs: [{ name: edge, namespace: infra, sectionName: http }]
  hostnames: ["*.example.com"]
  rules:
    - backendRefs: [{ name: wide, port: 8000 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: regex, namespace: shop }
spec:
  parentRefs: [{ name: edge, namespace: infra }]
  rules:
    - matches: [{ path: { type: RegularExpression, value: "/x.*" } }]
      backendRefs: [{ name: v1, port: 8000 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: elsewhere, namespace: shop }
spec:
  parentRefs: [{ name: edge, namespace: infra, sectionName: admin }]
  hostnames: [shop.example.org]
  rules: [{ backendRefs: [{ name: v1, port: 8000 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: offhost, namespace: infra }
spec:
  parentRefs: [{ name: edge, sectionName: admin }]
  hostnames: [shop.example.org]
  rules: [{ backendRefs: [{ name: v1, port: 8000 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: borrow, namespace: shop }
spec:
  parentRefs: [{ name: edge, namespace: infra, sectionName: http }]
  hostnames: [borrow.example.net]
  rules:
    - backendRefs:
        - { name: billing, namespace: billing, port: 9000, weight: 3 }
        - { name: v1, port: 8000, weight: 1 }
"#;

fn config() -> IngressConfig {
    let mut config = IngressConfig::new("xdpgate");
    config.files = Some(PathBuf::from("/unused"));
    config.gateway = Some(GatewayConfig {
        controller_name: "xdpgate.io/gateway-controller".to_string(),
        entrypoints: vec![
            GatewayEntrypoint {
                name: "web".into(),
                ports: vec![80],
                tls: false,
                redirects: false,
            },
            GatewayEntrypoint {
                name: "websecure".into(),
                ports: vec![443],
                tls: true,
                redirects: false,
            },
        ],
    });
    config
}

fn run(objects: &Objects) -> GatewayTranslation {
    translate(objects, &config(), &|c, k| check_pair(c, k))
}

fn status(out: &GatewayTranslation, kind: StatusKind, name: &str) -> Value {
    out.statuses
        .iter()
        .find(|s| s.kind == kind && s.key.1 == name)
        .unwrap_or_else(|| panic!("no status for {kind:?} {name}"))
        .status
        .clone()
}

/// The weighted members behind an HTTPRoute's (first) route.
fn members(out: &GatewayTranslation, route: &str) -> Vec<(String, u32)> {
    let service = &out
        .routes
        .iter()
        .find(|r| r.origin.1 == route)
        .expect("a route")
        .config
        .service;
    out.weighted[service]
        .members
        .iter()
        .map(|m| (m.service.clone(), m.weight))
        .collect()
}

fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} in {conditions}"))
}

#[test]
fn listeners_xdpgate_cannot_serve_say_why_and_the_others_serve() {
    let out = run(&parse(CLUSTER).unwrap());
    let class = status(&out, StatusKind::GatewayClass, "xdpgate");
    assert_eq!(
        condition(&class["conditions"], "Accepted")["status"],
        "True"
    );
    assert!(
        !out.statuses
            .iter()
            .any(|s| s.key.1 == "other" || s.key.1 == "theirs"),
        "another controller's objects get no status from us"
    );
    let gateway = status(&out, StatusKind::Gateway, "edge");
    let accepted = condition(&gateway["conditions"], "Accepted");
    assert_eq!(accepted["reason"], "ListenersNotValid");
    assert_eq!(accepted["observedGeneration"], 3);
    assert_eq!(
        condition(&gateway["conditions"], "Programmed")["status"],
        "True"
    );
    let listener = |name: &str| {
        gateway["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let raw = condition(&listener("raw")["conditions"], "Accepted").clone();
    assert_eq!(raw["reason"], "UnsupportedProtocol");
    assert!(raw["message"].as_str().unwrap().contains("`TCP`"), "{raw}");
    let nowhere = condition(&listener("nowhere")["conditions"], "Accepted").clone();
    assert_eq!(nowhere["reason"], "PortUnavailable");
    assert!(
        nowhere["message"].as_str().unwrap().contains("port 8443"),
        "{nowhere}"
    );
    assert_eq!(
        condition(&listener("http")["conditions"], "Programmed")["status"],
        "True"
    );
    // api, wide and borrow attach to `http`; nothing meets `admin`'s rules.
    assert_eq!(listener("http")["attachedRoutes"], 3);
    assert_eq!(listener("admin")["attachedRoutes"], 0);
}

#[test]
fn unsupported_and_unattachable_routes_are_reported_on_their_own() {
    let out = run(&parse(CLUSTER).unwrap());
    let parent = |name: &str| status(&out, StatusKind::HttpRoute, name)["parents"][0].clone();
    let regex = condition(&parent("regex")["conditions"], "Accepted").clone();
    assert_eq!(regex["status"], "False");
    assert_eq!(regex["reason"], "UnsupportedValue");
    assert!(
        regex["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[0].matches[0].path.type `RegularExpression`"),
        "{regex}"
    );
    // `admin` takes routes from its own namespace only...
    let elsewhere = condition(&parent("elsewhere")["conditions"], "Accepted").clone();
    assert_eq!(elsewhere["reason"], "NotAllowedByListeners");
    // ...and only under its hostname.
    let offhost = condition(&parent("offhost")["conditions"], "Accepted").clone();
    assert_eq!(offhost["reason"], "NoMatchingListenerHostname");
    assert!(
        offhost["message"]
            .as_str()
            .unwrap()
            .contains("shop.example.org"),
        "{offhost}"
    );
    let api = parent("api");
    assert_eq!(api["controllerName"], "xdpgate.io/gateway-controller");
    assert_eq!(api["parentRef"]["sectionName"], "http");
    assert_eq!(condition(&api["conditions"], "Accepted")["status"], "True");
    assert_eq!(
        condition(&api["conditions"], "Accepted")["observedGeneration"],
        7
    );
    assert!(out
        .routes
        .iter()
        .all(|r| r.origin.1 != "regex" && r.origin.1 != "elsewhere"));
    assert_eq!(out.accepted_routes, 3);
}

#[test]
fn a_backend_in_another_namespace_needs_a_reference_grant() {
    let mut objects = parse(CLUSTER).unwrap();
    let out = run(&objects);
    let borrow = status(&out, StatusKind::HttpRoute, "borrow");
    let resolved = condition(&borrow["parents"][0]["conditions"], "ResolvedRefs").clone();
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "RefNotPermitted");
    // The refused backend keeps its share, answered 500: no traffic to it.
    assert_eq!(
        members(&out, "borrow"),
        [
            (REFUSED_BACKEND.to_string(), 3),
            ("ingress.shop.v1.8000".to_string(), 1)
        ]
    );

    let grant = parse(
        r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: shop-may-bill, namespace: billing }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop }]
  to: [{ group: "", kind: Service }]
"#,
    )
    .unwrap();
    objects.extend(&grant);
    let out = run(&objects);
    let borrow = status(&out, StatusKind::HttpRoute, "borrow");
    assert_eq!(
        condition(&borrow["parents"][0]["conditions"], "ResolvedRefs")["status"],
        "True"
    );
    assert_eq!(
        members(&out, "borrow"),
        [
            ("ingress.billing.billing.9000".to_string(), 3),
            ("ingress.shop.v1.8000".to_string(), 1)
        ]
    );
}

#[test]
fn precedence_follows_the_gateway_api() {
    let out = run(&parse(CLUSTER).unwrap());
    let routes: Vec<_> = out.routes.iter().map(|r| r.config.clone()).collect();
    let table = RouteTable::new(&routes, None);
    let headers_with = |name: &'static str, value: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    };
    let none = HeaderMap::new();
    let canary = headers_with("x-canary", "yes");
    let service = |host: &str, path: &str, method: &Method, headers: &HeaderMap, query| {
        let facts = RequestFacts {
            method,
            headers,
            query,
        };
        table
            .find_request("web", Some(host), path, &facts)
            .map(|r| r.service.to_string())
    };
    let get = Method::GET;
    let post = Method::POST;
    // (host, path, method, headers, query, the backend that answers)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a Method,
        &'a HeaderMap,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        // Exact beats any prefix, whatever the other matches.
        (
            "api.example.com",
            "/v1/login",
            &post,
            &canary,
            Some("beta=1"),
            Some("login"),
        ),
        // A method match beats header matches...
        (
            "api.example.com",
            "/v1/x",
            &post,
            &canary,
            None,
            Some("writes"),
        ),
        // ...header matches beat query matches...
        (
            "api.example.com",
            "/v1/x",
            &get,
            &canary,
            Some("beta=1"),
            Some("canary"),
        ),
        (
            "api.example.com",
            "/v1/x",
            &get,
            &none,
            Some("beta=1"),
            Some("beta"),
        ),
        // ...which beat the bare prefix.
        (
            "api.example.com",
            "/v1/x",
            &get,
            &none,
            Some("beta=2"),
            Some("v1"),
        ),
        // A path no rule of the exact host matches falls to the wildcard,
        // which covers deeper names too (Gateway API, unlike Ingress).
        ("api.example.com", "/v2", &get, &none, None, Some("wide")),
        ("a.b.example.com", "/", &get, &none, None, Some("wide")),
        ("example.com", "/", &get, &none, None, None),
    ];
    for (host, path, method, headers, query, want) in cases {
        let got = service(host, path, method, headers, *query);
        let want = want.map(|w| format!("ingress.shop.{w}.8000"));
        assert_eq!(
            got, want,
            "{method} http://{host}{path}?{query:?} {headers:?}"
        );
    }
}

#[test]
fn filters_become_route_actions_and_bad_ones_are_refused_by_field() {
    let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: filtered, namespace: infra }
spec:
  parentRefs: [{ name: edge, sectionName: http }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /old } }]
      filters:
        - type: RequestRedirect
          requestRedirect: { scheme: https, statusCode: 301, path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } }
    - matches: [{ path: { type: PathPrefix, value: /app } }]
      filters:
        - type: URLRewrite
          urlRewrite: { hostname: internal.example, path: { type: ReplacePrefixMatch, replacePrefixMatch: / } }
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: X-Env, value: prod }], add: [{ name: X-Trace, value: gw }], remove: [X-Debug] }
        - type: ResponseHeaderModifier
          responseHeaderModifier: { remove: [Server] }
      backendRefs: [{ name: app, port: 80 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: mirror, namespace: infra }
spec:
  parentRefs: [{ name: edge, sectionName: http }]
  rules:
    - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: app, port: 80 } } }]
      backendRefs: [{ name: app, port: 80 }]
"#;
    let mut objects = parse(CLUSTER).unwrap();
    objects.extend(&parse(text).unwrap());
    let out = run(&objects);
    let filtered: Vec<_> = out
        .routes
        .iter()
        .filter(|r| r.origin.1 == "filtered")
        .collect();
    let redirect = filtered[0]
        .config
        .actions
        .redirect
        .as_ref()
        .expect("a redirect");
    assert_eq!(
        redirect.location("http", "shop.example", "/old/page", Some("a=1")),
        "https://shop.example/new/page?a=1"
    );
    assert_eq!(redirect.status, 301);
    let app = &filtered[1].config.actions;
    assert_eq!(app.rewrite.hostname.as_deref(), Some("internal.example"));
    assert_eq!(app.rewrite.path.as_ref().unwrap().apply("/app/x"), "/x");
    assert_eq!(
        app.request_headers.set,
        [("x-env".to_string(), "prod".to_string())]
    );
    assert_eq!(app.request_headers.remove, ["x-debug"]);
    assert_eq!(app.response_headers.remove, ["server"]);
    let mirror = status(&out, StatusKind::HttpRoute, "mirror");
    let accepted = condition(&mirror["parents"][0]["conditions"], "Accepted").clone();
    assert_eq!(accepted["reason"], "UnsupportedValue");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[0].filters[0].type `RequestMirror`"),
        "{accepted}"
    );
}

#[test]
fn listeners_that_are_not_distinct_are_conflicted_and_not_served() {
    let cluster = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: { name: xdpgate }
spec: { controllerName: xdpgate.io/gateway-controller }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge, namespace: infra }
spec:
  gatewayClassName: xdpgate
  listeners:
    - { name: one, port: 80, protocol: HTTP, hostname: shop.example.com }
    - { name: two, port: 80, protocol: HTTP, hostname: shop.example.com }
    - { name: other, port: 80, protocol: HTTP, hostname: api.example.com }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: shop, namespace: infra }
spec:
  parentRefs: [{ name: edge }]
  hostnames: [shop.example.com, api.example.com]
  rules: [{ backendRefs: [{ name: shop, port: 8000 }] }]
"#;
    let out = run(&parse(cluster).unwrap());
    let gateway = status(&out, StatusKind::Gateway, "edge");
    let listener = |name: &str| {
        gateway["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    for (name, partner) in [("one", "two"), ("two", "one")] {
        let conditions = listener(name)["conditions"].clone();
        let conflicted = condition(&conditions, "Conflicted");
        assert_eq!(conflicted["status"], "True", "{name}");
        assert_eq!(conflicted["reason"], "HostnameConflict");
        assert!(
            conflicted["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{partner}`")),
            "{conflicted}"
        );
        assert_eq!(condition(&conditions, "Accepted")["status"], "False");
        assert_eq!(condition(&conditions, "Programmed")["status"], "False");
        assert_eq!(listener(name)["attachedRoutes"], 0);
    }
    let other = listener("other")["conditions"].clone();
    assert_eq!(condition(&other, "Conflicted")["status"], "False");
    assert_eq!(condition(&other, "Programmed")["status"], "True");
    // Only the distinct listener serves: the route gets api, not shop.
    let hosts: Vec<Option<String>> = out.routes.iter().map(|r| r.config.host.clone()).collect();
    assert!(
        !hosts.is_empty()
            && hosts
                .iter()
                .all(|h| h.as_deref() == Some("api.example.com")),
        "{hosts:?}"
    );
    assert_eq!(
        condition(&gateway["conditions"], "Accepted")["reason"],
        "ListenersNotValid"
    );
}
