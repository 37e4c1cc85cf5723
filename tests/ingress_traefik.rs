//! The reference deployment's Traefik objects, unchanged
//! (tests/fixtures/reference: two Ingresses, four Middleware objects and
//! the basic-auth Secret), through the files source and through the watch,
//! each middleware seen acting on real responses through the daemon:
//! security headers (HSTS and the rest) on every answer, 403 on the
//! Cloudflare-only API for a peer outside Cloudflare's ranges, 429 once
//! the burst of 200 is spent, 401 without and 200 with credentials on
//! admin. The test adds only what the migration adds: xdpgate's
//! IngressClass (the cluster default, so the class-less Ingresses are
//! ours) and the TLS Secret. A Cloudflare address (173.245.48.1) is given
//! to the client namespace so the allow list has someone to admit. Then a
//! Middleware with a field xdpgate cannot honour is added: it is reported
//! on its own (status, metric) and everything keeps working. Apart from
//! the reference objects, a `stripPrefix` Middleware strips plain text as
//! Traefik does (`/api` turns `/apiv2/x` into `/v2/x`). Needs root.
use std::{net::IpAddr, path::Path, time::Duration};

use serde::Deserialize as _;
use serde_json::Value;
use xdpgate_tests::lab::{
    client::Reply,
    ingress::{tls_secret, yaml},
    kube_api::KubeApi,
    lab_ready, members,
    net::run,
    outsiders, wait_for, Call, Metrics, ProxyLab, ProxySetup,
};

const CLOUDFLARE_PEER: &str = "173.245.48.1";
const KUBE_API_PORT: u16 = 9480;
const HOSTS: &str = "127.0.0.1 localhost\n127.0.0.1 api.honeydue.svc.cluster.local\n\
                     127.0.0.1 admin.honeydue.svc.cluster.local\n";
const OUR_DEFAULT_CLASS: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: xdpgate
  annotations: { ingressclass.kubernetes.io/is-default-class: \"true\" }
spec: { controller: xdpgate.io/ingress-controller }
";
const BROKEN: &str = "\
apiVersion: traefik.containo.us/v1alpha1
kind: Middleware
metadata: { name: sticky-limit, namespace: honeydue }
spec:
  rateLimit:
    average: 10
    sourceCriterion: { requestHost: true }
";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/reference")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every document of a YAML text, as JSON.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("fixture YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// A lab with the API and admin backends on the fixtures' ports and a
/// Cloudflare address on the client side.
fn lab(tag: &str) -> (ProxyLab, Vec<xdpgate_tests::lab::Backend>) {
    let proxy = ProxyLab::new(tag, env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let backends = vec![
        proxy.echo_backend("api", 8000),
        proxy.echo_backend("admin", 3000),
    ];
    let (lab, peer) = (&proxy.lab, CLOUDFLARE_PEER);
    run(
        "ip",
        &[
            "-n",
            &lab.client_ns,
            "addr",
            "add",
            &format!("{peer}/32"),
            "dev",
            &lab.client_if,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &lab.server_ns,
            "route",
            "add",
            &format!("{peer}/32"),
            "dev",
            &lab.server_if,
        ],
    );
    (proxy, backends)
}

fn header(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// What a user of the reference deployment sees, middleware by middleware.
fn the_reference_middlewares_act(proxy: &ProxyLab) {
    let member = members()[0];
    let cloudflare: IpAddr = CLOUDFLARE_PEER.parse().unwrap();
    let tls = |source: IpAddr, host: &str| Call::tls(source).sni(host).host(host);
    let admin = |source: IpAddr| tls(source, "admin.example.com");

    // Ready: admin answers, asking for a password (`basicAuth`, realm
    // Traefik's default).
    let refused = wait_for(
        "admin served",
        Duration::from_secs(10),
        || proxy.send(&admin(member)).ok().filter(|r| r.status == 401),
        Option::is_some,
    )
    .expect("a 401 from admin");
    assert_eq!(
        header(&refused, "www-authenticate").as_deref(),
        Some("Basic realm=\"traefik\"")
    );
    let wrong = proxy
        .send(&admin(member).header("authorization", "Basic YWRtaW46aHVudGVyMw=="))
        .expect("admin with a wrong password");
    assert_eq!(wrong.status, 401, "admin:hunter3");
    let allowed = proxy
        .send(&admin(member).header("authorization", "Basic YWRtaW46aHVudGVyMg=="))
        .expect("admin with the password");
    assert_eq!(
        (allowed.status, allowed.backend().as_deref()),
        (200, Some("admin"))
    );
    assert_eq!(
        allowed.upstream_header("authorization"),
        None,
        "removeHeader"
    );

    // `headers`: on the refusal and on the answer alike.
    for reply in [&refused, &allowed] {
        assert_eq!(
            header(reply, "strict-transport-security").as_deref(),
            Some("max-age=63072000; includeSubDomains; preload")
        );
        assert_eq!(header(reply, "x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(
            header(reply, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header(reply, "x-xss-protection").as_deref(),
            Some("1; mode=block")
        );
        assert_eq!(
            header(reply, "referrer-policy").as_deref(),
            Some("strict-origin-when-cross-origin")
        );
    }

    // `ipAllowList`: the API admits Cloudflare's peers only.
    for source in [outsiders()[0], outsiders()[7], member] {
        let reply = proxy.send(&tls(source, "api.example.com")).expect("api");
        assert_eq!(reply.status, 403, "{source} is not a Cloudflare peer");
        assert!(header(&reply, "strict-transport-security").is_some());
    }
    let first = proxy
        .send(&tls(cloudflare, "api.example.com"))
        .expect("api");
    assert_eq!(
        (first.status, first.backend().as_deref()),
        (200, Some("api"))
    );

    // `rateLimit`: 100 a minute, a burst of 200, per peer. The first 429
    // comes once the burst is spent (plus what refilled meanwhile).
    let started = std::time::Instant::now();
    let mut passed = 1u32;
    let limited = loop {
        let reply = proxy.send(&tls(cloudflare, "example.com")).expect("api");
        match reply.status {
            200 => passed += 1,
            429 => break reply,
            other => panic!("request {}: {other}", passed + 1),
        }
        assert!(passed <= 400, "no 429 after {passed} requests");
    };
    let refilled = (started.elapsed().as_secs_f64() * 100.0 / 60.0).ceil() as u32;
    println!("429 after {passed} requests in {:?}", started.elapsed());
    assert!(
        (200..=200 + refilled + 1).contains(&passed),
        "{passed} passed before the first 429 (burst 200, {refilled} refilled)"
    );
    assert!(header(&limited, "retry-after").is_some());
    assert!(header(&limited, "strict-transport-security").is_some());
    // Per peer: admin (no rate limit) and other peers are unaffected.
    let after = proxy
        .send(&admin(member).header("authorization", "Basic YWRtaW46aHVudGVyMg=="))
        .expect("admin");
    assert_eq!(after.status, 200);
}

/// A Middleware asking what xdpgate cannot do is reported on its own, in
/// `xdpgate status` and the metric, and nothing else changes.
fn a_bad_middleware_is_contained(proxy: &ProxyLab) {
    let problems = |s: &Value| -> Vec<String> {
        s["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect()
    };
    let status = wait_for(
        "the bad Middleware in `xdpgate status`",
        Duration::from_secs(10),
        || proxy.work.status(),
        |s| problems(s).iter().any(|p| p.contains("sticky-limit")),
    );
    let problems = problems(&status);
    assert_eq!(problems.len(), 1, "reported on its own: {problems:?}");
    assert!(
        problems[0].contains(
            "Middleware honeydue/sticky-limit: spec.rateLimit.sourceCriterion.requestHost"
        ),
        "{problems:?}"
    );
    let metrics = Metrics::scrape(&proxy.lab.server_ns);
    assert_eq!(
        metrics.get(
            "xdpgate_ingress_invalid",
            &[("reason", "traefik-middleware")]
        ),
        Some(1.0)
    );
    let member = members()[0];
    let reply = proxy
        .send(
            &Call::tls(member)
                .sni("admin.example.com")
                .host("admin.example.com")
                .header("authorization", "Basic YWRtaW46aHVudGVyMg=="),
        )
        .expect("admin");
    assert_eq!(reply.status, 200, "admin keeps working");
    assert!(proxy.hosts_daemon().log().contains("sticky-limit"));
}

#[test]
fn the_reference_traefik_objects_act_through_the_files_source() {
    let test = "the_reference_traefik_objects_act_through_the_files_source";
    if !lab_ready(test, &[]) {
        return;
    }
    let (mut proxy, _backends) = lab("tf");
    let dir = proxy.work.path("ingress.d");
    std::fs::create_dir_all(&dir).expect("create ingress.d");
    for name in ["ingresses.yaml", "middlewares.yaml"] {
        std::fs::write(dir.join(name), fixture(name)).expect("copy the fixture");
    }
    let origin = proxy
        .pki
        .server(&["api.example.com", "example.com", "admin.example.com"]);
    std::fs::write(dir.join("class.yaml"), OUR_DEFAULT_CLASS).expect("class");
    std::fs::write(
        dir.join("tls.yaml"),
        yaml(&[tls_secret("honeydue", "origin-ca-tls", &origin)]),
    )
    .expect("tls");
    let rest = format!(
        "  ingress:\n    files: {}\n    poll_interval: 200ms\n",
        dir.display()
    );
    let setup = ProxySetup {
        rest,
        ..ProxySetup::default()
    };
    proxy.start_with_hosts(&setup, HOSTS);
    the_reference_middlewares_act(&proxy);
    std::fs::write(dir.join("broken.yaml"), BROKEN).expect("broken");
    a_bad_middleware_is_contained(&proxy);
}

#[test]
fn the_reference_traefik_objects_act_through_the_watch() {
    let test = "the_reference_traefik_objects_act_through_the_watch";
    if !lab_ready(test, &[]) {
        return;
    }
    let (mut proxy, _backends) = lab("tw");
    let api = KubeApi::start(&proxy.lab.server_ns, KUBE_API_PORT);
    for name in ["ingresses.yaml", "middlewares.yaml"] {
        for object in documents(&fixture(name)) {
            api.put(object);
        }
    }
    for object in documents(OUR_DEFAULT_CLASS) {
        api.put(object);
    }
    let origin = proxy
        .pki
        .server(&["api.example.com", "example.com", "admin.example.com"]);
    api.put(tls_secret("honeydue", "origin-ca-tls", &origin));
    let kubeconfig = proxy.work.write("kubeconfig", &api.kubeconfig());
    let rest = format!(
        "  ingress:\n    kubernetes: {{ kubeconfig: {}, resync: 10m }}\n",
        kubeconfig.display()
    );
    let setup = ProxySetup {
        rest,
        ..ProxySetup::default()
    };
    proxy.start_with_hosts(&setup, HOSTS);
    the_reference_middlewares_act(&proxy);
    for object in documents(BROKEN) {
        api.put(object);
    }
    a_bad_middleware_is_contained(&proxy);
}

/// A Traefik stripPrefix Middleware, unchanged, on an Ingress for `/`.
const STRIP_PREFIX: &str = "\
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: { name: strip-api, namespace: honeydue }
spec:
  stripPrefix:
    prefixes: [/api]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: stripped
  namespace: honeydue
  annotations:
    traefik.ingress.kubernetes.io/router.middlewares: honeydue-strip-api@kubernetescrd
spec:
  ingressClassName: xdpgate
  rules:
    - host: strip.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: { service: { name: api, port: { number: 8000 } } }
";

#[test]
fn a_traefik_strip_prefix_strips_plain_text_as_traefik_does() {
    let test = "a_traefik_strip_prefix_strips_plain_text_as_traefik_does";
    if !lab_ready(test, &[]) {
        return;
    }
    let (mut proxy, _backends) = lab("tsp");
    let dir = proxy.work.path("ingress.d");
    std::fs::create_dir_all(&dir).expect("create ingress.d");
    std::fs::write(dir.join("strip.yaml"), STRIP_PREFIX).expect("strip.yaml");
    let rest = format!(
        "  ingress:\n    files: {}\n    poll_interval: 200ms\n",
        dir.display()
    );
    proxy.start_with_hosts(
        &ProxySetup {
            rest,
            ..ProxySetup::default()
        },
        HOSTS,
    );
    let member = members()[0];
    // As Traefik's stripprefix: the prefix is cut as text, and a `/` put
    // back in front of what is left.
    for (sent, seen, prefix) in [
        ("/apiv2/x?q=1", "/v2/x", Some("/api")),
        ("/api/users", "/users", Some("/api")),
        ("/api", "/", Some("/api")),
        ("/other", "/other", None),
    ] {
        let call = Call::plain(member).host("strip.example.com").path(sent);
        let reply = wait_for(
            &format!("{sent} through the stripPrefix"),
            Duration::from_secs(5),
            || proxy.send(&call).ok(),
            |r| r.as_ref().is_some_and(|r| r.status == 200),
        )
        .expect("a reply");
        let echoed = reply.json();
        assert_eq!(echoed["path"], seen, "{sent}");
        if sent.contains('?') {
            assert_eq!(echoed["query"], "q=1", "the query stays");
        }
        assert_eq!(
            reply.upstream_header("x-forwarded-prefix").as_deref(),
            prefix,
            "{sent}"
        );
    }
}
