//! The Gateway API end to end: a GatewayClass, a Gateway and HTTPRoutes
//! applied through the stand-in API server (`lab::kube_api`), the daemon
//! watching it with `gateway_api: true` and `endpoint_slices: true`, and
//! real requests through the proxy to echo backends. It shows matching
//! (host, Exact against PathPrefix, header, query, method, precedence), a
//! 90/10 weighted split counted at the two backends, the filters acting on
//! what the client and the backend see, a backend in another namespace
//! refused until a ReferenceGrant allows it, an unsupported route and an
//! unservable listener reported on their own while the rest works, and
//! the status written back. Needs root.
use std::time::Duration;

use serde_json::{json, Value};
use xdpgate_tests::lab::{
    ingress::{from_backend, time_until, tls_secret},
    kube_api::{endpoint_slice, KubeApi},
    lab_ready, members, wait_for, Call, ProxyLab, ProxySetup, PLAIN_PORT, TLS_PORT,
};

const API_PORT: u16 = 9701;
const LIMIT: Duration = Duration::from_secs(5);
const GROUP: &str = "gateway.networking.k8s.io";

/// `(name, port)` of the echo backends, each a Service in `shop` (and
/// `billing` in `billing`).
const BACKENDS: [(&str, u16); 9] = [
    ("prefix", 9421),
    ("exact", 9422),
    ("canary", 9423),
    ("query", 9424),
    ("method", 9425),
    ("heavy", 9426),
    ("light", 9427),
    ("app", 9428),
    ("billing", 9429),
];

fn class() -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "GatewayClass",
        "metadata": { "name": "xdpgate", "generation": 1 },
        "spec": { "controllerName": "xdpgate.io/gateway-controller" }
    })
}

fn gateway() -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "Gateway",
        "metadata": { "name": "edge", "namespace": "infra", "generation": 2 },
        "spec": {
            "gatewayClassName": "xdpgate",
            "listeners": [
                { "name": "http", "port": PLAIN_PORT, "protocol": "HTTP",
                  "allowedRoutes": { "namespaces": { "from": "All" } } },
                { "name": "https", "port": TLS_PORT, "protocol": "HTTPS",
                  "hostname": "secure.example.com",
                  "tls": { "mode": "Terminate", "certificateRefs": [{ "name": "edge-tls" }] },
                  "allowedRoutes": { "namespaces": { "from": "All" } } },
                { "name": "postgres", "port": 5432, "protocol": "TCP" }
            ]
        }
    })
}

fn route(name: &str, hostnames: &[&str], rules: Value) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "HTTPRoute",
        "metadata": { "name": name, "namespace": "shop", "generation": 4 },
        "spec": {
            "parentRefs": [{ "name": "edge", "namespace": "infra", "sectionName": "http" }],
            "hostnames": hostnames,
            "rules": rules
        }
    })
}

fn backend(name: &str, weight: u32) -> Value {
    json!({ "name": name, "port": 80, "weight": weight })
}

fn matching_route() -> Value {
    let prefix = json!({ "type": "PathPrefix", "value": "/api" });
    route(
        "matching",
        &["match.example.com"],
        json!([
            { "matches": [{ "path": prefix }], "backendRefs": [backend("prefix", 1)] },
            { "matches": [{ "path": { "type": "Exact", "value": "/api/login" } }],
              "backendRefs": [backend("exact", 1)] },
            { "matches": [{ "path": prefix, "headers": [{ "name": "X-Canary", "value": "yes" }] }],
              "backendRefs": [backend("canary", 1)] },
            { "matches": [{ "path": prefix, "queryParams": [{ "name": "tier", "value": "gold" }] }],
              "backendRefs": [backend("query", 1)] },
            { "matches": [{ "path": prefix, "method": "DELETE" }],
              "backendRefs": [backend("method", 1)] }
        ]),
    )
}

fn filters_route() -> Value {
    route(
        "filters",
        &["filters.example.com"],
        json!([
            { "matches": [{ "path": { "type": "PathPrefix", "value": "/old" } }],
              "filters": [{ "type": "RequestRedirect", "requestRedirect": {
                  "scheme": "https", "hostname": "secure.example.com", "statusCode": 301,
                  "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/new" } } }] },
            { "matches": [{ "path": { "type": "PathPrefix", "value": "/app" } }],
              "filters": [
                { "type": "URLRewrite", "urlRewrite": { "hostname": "app.internal",
                    "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2" } } },
                { "type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{ "name": "X-Env", "value": "prod" }],
                    "add": [{ "name": "X-Trace", "value": "gw" }],
                    "remove": ["X-Debug"] } },
                { "type": "ResponseHeaderModifier", "responseHeaderModifier": {
                    "set": [{ "name": "X-Served-By", "value": "xdpgate" }],
                    "remove": ["Content-Type"] } }
              ],
              "backendRefs": [backend("app", 1)] },
            { "matches": [{ "path": { "type": "Exact", "value": "/full/path" } }],
              "filters": [{ "type": "URLRewrite", "urlRewrite": {
                  "path": { "type": "ReplaceFullPath", "replaceFullPath": "/replaced" } } }],
              "backendRefs": [backend("app", 1)] }
        ]),
    )
}

fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// The conditions the stand-in holds for our parent of an HTTPRoute.
fn parent_conditions(api: &KubeApi, like: &Value) -> Value {
    api.get(like)
        .and_then(|o| o["status"]["parents"].as_array().cloned())
        .and_then(|parents| {
            parents
                .into_iter()
                .find(|p| p["controllerName"] == "xdpgate.io/gateway-controller")
        })
        .map(|p| p["conditions"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn gateway_api_routes_filters_weights_and_status_through_the_watch() {
    let test = "gateway_api_routes_filters_weights_and_status_through_the_watch";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("gw", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let backends: Vec<_> = BACKENDS
        .iter()
        .map(|(name, port)| proxy.echo_backend(name, *port))
        .collect();
    let served = |name: &str| {
        backends
            .iter()
            .find(|b| b.name == name)
            .map_or(0, |b| b.served())
    };
    let api = KubeApi::start(&proxy.lab.server_ns, API_PORT);
    for (name, port) in BACKENDS {
        let ns = if name == "billing" { "billing" } else { "shop" };
        api.put(endpoint_slice(ns, name, port));
    }
    let secure = proxy.pki.server(&["secure.example.com"]);
    api.put(tls_secret("infra", "edge-tls", &secure));
    api.put(class());
    api.put(gateway());
    api.put(matching_route());
    api.put(filters_route());
    api.put(route(
        "split",
        &["split.example.com"],
        json!([{ "backendRefs": [backend("heavy", 90), backend("light", 10)] }]),
    ));
    let unsupported = route(
        "regex",
        &["regex.example.com"],
        json!([{ "matches": [{ "path": { "type": "RegularExpression", "value": "/x.*" } }],
                 "backendRefs": [backend("prefix", 1)] }]),
    );
    api.put(unsupported.clone());
    let mut borrow = route(
        "borrow",
        &["borrow.example.com"],
        json!([{ "backendRefs": [{ "name": "billing", "namespace": "billing", "port": 80 }] }]),
    );
    borrow["metadata"]["namespace"] = json!("shop");
    api.put(borrow.clone());
    let mut secure_route = route(
        "secure",
        &[],
        json!([{ "backendRefs": [backend("app", 1)] }]),
    );
    secure_route["spec"]["parentRefs"][0]["sectionName"] = json!("https");
    api.put(secure_route);

    let kubeconfig = proxy.work.write("kubeconfig", &api.kubeconfig());
    let rest = format!(
        "  ingress:\n    endpoint_slices: true\n    gateway_api: true\n    \
         kubernetes: {{ kubeconfig: {}, resync: 10m }}\n",
        kubeconfig.display()
    );
    proxy.start(&ProxySetup {
        rest,
        ..ProxySetup::default()
    });
    let member = members()[0];
    let call = |host: &str, path: &str| Call::plain(member).host(host).path(path);
    let backend_of = |call: Call| {
        let reply = proxy.send(&call).expect("a reply");
        (reply.status, reply.backend())
    };

    // Matching and precedence (ready means listed: no waiting needed).
    let cases: [(Call, &str); 8] = [
        (call("match.example.com", "/api/x"), "prefix"),
        (call("match.example.com", "/api"), "prefix"),
        (call("match.example.com", "/api/login"), "exact"),
        // Exact beats a prefix whatever else matches.
        (
            call("match.example.com", "/api/login").header("x-canary", "yes"),
            "exact",
        ),
        (
            call("match.example.com", "/api/x").header("x-canary", "yes"),
            "canary",
        ),
        (call("match.example.com", "/api/x?tier=gold"), "query"),
        // A method match beats header and query matches.
        (
            call("match.example.com", "/api/x?tier=gold")
                .header("x-canary", "yes")
                .method("DELETE"),
            "method",
        ),
        // Header matches beat query matches.
        (
            call("match.example.com", "/api/x?tier=gold").header("X-CANARY", "yes"),
            "canary",
        ),
    ];
    for (call, want) in cases {
        let got = backend_of(call.clone());
        assert_eq!(got, (200, Some(want.to_string())), "{call:?}");
    }
    // Element-wise prefix, an unknown host, a header value that differs.
    assert_eq!(backend_of(call("match.example.com", "/apix")).0, 404);
    assert_eq!(backend_of(call("other.example.com", "/api")).0, 404);
    assert_eq!(
        backend_of(call("match.example.com", "/api/x").header("x-canary", "no")).1,
        Some("prefix".to_string())
    );

    // Weights: 90/10 over 2,000 requests, counted at the backends.
    let (heavy_before, light_before) = (served("heavy"), served("light"));
    for n in 0..2000 {
        let reply = proxy
            .send(&call("split.example.com", "/"))
            .expect("split reply");
        assert_eq!(reply.status, 200, "request {n}: {}", reply.text());
    }
    let heavy = served("heavy") - heavy_before;
    let light = served("light") - light_before;
    let share = heavy as f64 / (heavy + light) as f64;
    assert_eq!(heavy + light, 2000, "every request reached one of the two");
    assert!(
        (0.85..=0.95).contains(&share),
        "heavy got {heavy}, light {light}"
    );

    // Filters: a redirect with its status and Location...
    let reply = proxy
        .send(&call("filters.example.com", "/old/page?x=1"))
        .expect("redirect");
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.headers["location"],
        "https://secure.example.com/new/page?x=1"
    );
    assert!(
        reply.backend().is_none(),
        "a redirect is answered by the proxy"
    );
    // ...a rewrite and request header edits seen by the backend...
    let reply = proxy
        .send(
            &call("filters.example.com", "/app/items?id=3")
                .header("x-debug", "1")
                .header("x-trace", "client"),
        )
        .expect("rewritten request");
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    assert_eq!(seen["path"], "/v2/items", "{seen}");
    assert_eq!(seen["query"], "id=3", "{seen}");
    assert_eq!(
        reply.upstream_header("host").as_deref(),
        Some("app.internal")
    );
    assert_eq!(reply.upstream_header("x-env").as_deref(), Some("prod"));
    assert_eq!(
        reply.upstream_header("x-trace").as_deref(),
        Some("client,gw")
    );
    assert_eq!(reply.upstream_header("x-debug"), None);
    // ...and response header edits seen by the client.
    assert_eq!(reply.headers["x-served-by"], "xdpgate");
    assert!(reply.headers.get("content-type").is_none());
    let reply = proxy
        .send(&call("filters.example.com", "/full/path"))
        .expect("full rewrite");
    assert_eq!(reply.json()["path"], "/replaced");

    // HTTPS listener: the Secret's certificate by SNI, the route behind it.
    let served_cert = proxy
        .client
        .served_certificate(member, Some("secure.example.com"))
        .expect("handshake for secure.example.com");
    assert_eq!(served_cert, secure.der, "the listener's Secret by SNI");
    let reply = proxy
        .send(&Call::tls(member).host("secure.example.com"))
        .expect("TLS request");
    assert_eq!(reply.backend().as_deref(), Some("app"));

    // Contained: the unsupported route is not served, the refused backend
    // gets no traffic (500), and the status says why for each.
    assert_eq!(backend_of(call("regex.example.com", "/x1")).0, 404);
    let billing_before = served("billing");
    assert_eq!(backend_of(call("borrow.example.com", "/")).0, 500);
    assert_eq!(
        served("billing"),
        billing_before,
        "no traffic without a ReferenceGrant"
    );
    let regex = wait_for(
        "the unsupported route's status",
        LIMIT,
        || Some(parent_conditions(&api, &unsupported)),
        |c| condition(c.as_ref().unwrap(), "Accepted")["status"] == "False",
    )
    .unwrap();
    let accepted = condition(&regex, "Accepted");
    assert_eq!(accepted["reason"], "UnsupportedValue");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap_or("")
            .contains("RegularExpression"),
        "{accepted}"
    );
    let refused = parent_conditions(&api, &borrow);
    assert_eq!(
        condition(&refused, "ResolvedRefs")["reason"],
        "RefNotPermitted",
        "{refused}"
    );

    // The ReferenceGrant: the backend in billing gets the traffic.
    api.put(json!({
        "apiVersion": format!("{GROUP}/v1beta1"), "kind": "ReferenceGrant",
        "metadata": { "name": "shop-to-billing", "namespace": "billing" },
        "spec": {
            "from": [{ "group": GROUP, "kind": "HTTPRoute", "namespace": "shop" }],
            "to": [{ "group": "", "kind": "Service" }]
        }
    }));
    let granted = time_until(
        &proxy,
        &call("borrow.example.com", "/"),
        LIMIT,
        "the granted backend",
        from_backend("billing"),
    );
    wait_for(
        "ResolvedRefs after the grant",
        LIMIT,
        || Some(parent_conditions(&api, &borrow)),
        |c| condition(c.as_ref().unwrap(), "ResolvedRefs")["status"] == "True",
    );

    // The status written back.
    let class_status = api.get(&class()).unwrap()["status"].clone();
    assert_eq!(
        condition(&class_status["conditions"], "Accepted")["status"],
        "True"
    );
    let gateway_status = api.get(&gateway()).unwrap()["status"].clone();
    assert_eq!(
        condition(&gateway_status["conditions"], "Programmed")["status"],
        "True"
    );
    let accepted = condition(&gateway_status["conditions"], "Accepted");
    assert_eq!(accepted["reason"], "ListenersNotValid", "{gateway_status}");
    assert_eq!(accepted["observedGeneration"], 2);
    let listeners = gateway_status["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let listener = |name: &str| {
        listeners
            .iter()
            .find(|l| l["name"] == name)
            .cloned()
            .unwrap()
    };
    let postgres = condition(&listener("postgres")["conditions"], "Accepted").clone();
    assert_eq!(postgres["status"], "False");
    assert_eq!(postgres["reason"], "UnsupportedProtocol");
    assert_eq!(listener("http")["attachedRoutes"], 4, "{gateway_status}");
    assert_eq!(listener("https")["attachedRoutes"], 1);
    assert_eq!(
        condition(&listener("https")["conditions"], "ResolvedRefs")["status"],
        "True"
    );
    let matched = parent_conditions(&api, &matching_route());
    assert_eq!(condition(&matched, "Accepted")["status"], "True");
    assert_eq!(condition(&matched, "ResolvedRefs")["status"], "True");
    assert_eq!(condition(&matched, "Accepted")["observedGeneration"], 4);
    assert!(condition(&matched, "Accepted")["lastTransitionTime"].is_string());

    // Written once: the status settles instead of being rewritten on
    // every watch event its own write causes.
    let writes = api.status_writes(&matching_route());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        api.status_writes(&matching_route()),
        writes,
        "the status write loops"
    );
    println!(
        "gateway api: heavy {heavy} / light {light} ({:.1}%), grant followed in {granted:?}, \
         {writes} HTTPRoute status writes",
        share * 100.0
    );
}
