//! Routing through the running proxy, as a client sees it: the
//! ingress-controller-conformance path cases (element-wise `Prefix`:
//! `/aaa` does not match `/aaaccc`, `/foo` matches `/foo/bar`; `Exact` beats
//! `Prefix`), exact and wildcard hosts (`*.wild.com` covers one label only),
//! hosts with a port and in mixed case, and what happens to a request that
//! matches nothing: a clear 404, or the `default_service` when there is one.
//! Every route has its own echo backend, which names itself in the answer,
//! and every case is sent over plain HTTP/1.1 and over TLS with HTTP/2.
//! Needs root.
use xdpgate_tests::lab::{
    lab_ready, members, outsiders, Backend, Call, Metrics, ProxyLab, ProxySetup,
};

/// `(route name, host, path, path_type)`; each route's backend is named
/// after the route and listens on 127.0.0.1:9100+i.
const ROUTES: [(&str, Option<&str>, &str, &str); 7] = [
    ("aaa", None, "/aaa", "Prefix"),
    ("aaa-bbb", None, "/aaa/bbb", "Prefix"),
    ("foo-prefix", None, "/foo", "Prefix"),
    ("foo-exact", None, "/foo", "Exact"),
    ("exact-only", None, "/exact", "Exact"),
    ("host-exact", Some("foo.bar.com"), "/", "Prefix"),
    ("host-wild", Some("*.wild.com"), "/", "Prefix"),
];
const FIRST_BACKEND_PORT: u16 = 9100;
const DEFAULT_BACKEND_PORT: u16 = 9199;

/// `(host, path, the route that must answer; None: no route matches)`.
const CASES: [(&str, &str, Option<&str>); 27] = [
    // Element-wise prefixes (ingress-controller-conformance path_rules).
    ("any.test", "/aaa", Some("aaa")),
    ("any.test", "/aaa/", Some("aaa")),
    ("any.test", "/aaa/ccc", Some("aaa")),
    ("any.test", "/aaaccc", None),
    ("any.test", "/aaa/bbb", Some("aaa-bbb")),
    ("any.test", "/aaa/bbb/", Some("aaa-bbb")),
    ("any.test", "/aaa/bbb/ccc", Some("aaa-bbb")),
    ("any.test", "/aaa/bbbccc", Some("aaa")),
    ("any.test", "/foo/bar", Some("foo-prefix")),
    ("any.test", "/foo/", Some("foo-prefix")),
    ("any.test", "/foobar", None),
    // Paths are case-sensitive.
    ("any.test", "/AAA", None),
    // Exact beats Prefix for the same path; the query plays no part.
    ("any.test", "/foo", Some("foo-exact")),
    ("any.test", "/foo?x=1", Some("foo-exact")),
    ("any.test", "/exact", Some("exact-only")),
    ("any.test", "/exact/", None),
    // Exact host, with a port and in mixed case; it wins over host-less routes.
    ("foo.bar.com", "/", Some("host-exact")),
    ("foo.bar.com:8080", "/x", Some("host-exact")),
    ("FOO.Bar.COM", "/y", Some("host-exact")),
    ("foo.bar.com", "/aaa", Some("host-exact")),
    ("foo.bar.com.", "/", Some("host-exact")),
    // A wildcard covers exactly one label.
    ("a.wild.com", "/", Some("host-wild")),
    ("A.Wild.COM:8443", "/z", Some("host-wild")),
    ("wild.com", "/", None),
    ("a.b.wild.com", "/", None),
    ("other.com", "/", None),
    ("192.0.2.1:8080", "/nothing", None),
];

fn setup(default_service: bool) -> ProxySetup {
    let mut rest = String::from("  routes:\n");
    for (i, (name, host, path, path_type)) in ROUTES.iter().enumerate() {
        let host = host.map(|h| format!("host: \"{h}\", ")).unwrap_or_default();
        let port = FIRST_BACKEND_PORT + i as u16;
        rest.push_str(&format!(
            "    - {{ name: {name}, {host}path: {path}, path_type: {path_type}, service: \"127.0.0.1:{port}\" }}\n"
        ));
    }
    if default_service {
        rest.push_str(&format!(
            "  default_service: \"127.0.0.1:{DEFAULT_BACKEND_PORT}\"\n"
        ));
    }
    ProxySetup {
        rest,
        ..ProxySetup::default()
    }
}

fn backends(proxy: &ProxyLab) -> Vec<Backend> {
    let mut backends: Vec<Backend> = ROUTES
        .iter()
        .enumerate()
        .map(|(i, (name, ..))| proxy.echo_backend(name, FIRST_BACKEND_PORT + i as u16))
        .collect();
    backends.push(proxy.echo_backend("default", DEFAULT_BACKEND_PORT));
    backends
}

/// Sends every case over plain HTTP/1.1 and TLS HTTP/2, from a member over
/// IPv4 and an outsider over IPv6, and returns what went wrong.
fn run_cases(proxy: &ProxyLab, unmatched: Option<&str>) -> Vec<String> {
    let (member, outsider_v6) = (members()[0], outsiders()[6]);
    let mut wrong = Vec::new();
    for (host, path, route) in CASES {
        for (how, call) in [
            ("http/1.1", Call::plain(member)),
            ("h2 over TLS", Call::tls(outsider_v6).sni("localhost").h2()),
        ] {
            let call = call.path(path).host(host);
            let expected = route.or(unmatched);
            let what = format!("{how} host `{host}` path `{path}`");
            match (proxy.send(&call), expected) {
                (Ok(reply), Some(backend)) => {
                    if reply.status != 200 || reply.backend().as_deref() != Some(backend) {
                        wrong.push(format!(
                            "{what}: expected backend {backend}, got {} from {:?}: {}",
                            reply.status,
                            reply.backend(),
                            reply.text().trim()
                        ));
                    } else if reply.json()["path"] != path.split('?').next().unwrap_or(path) {
                        wrong.push(format!("{what}: the backend saw {}", reply.json()["path"]));
                    }
                }
                (Ok(reply), None) => {
                    let text = reply.text();
                    let plain_path = path.split('?').next().unwrap_or(path);
                    if reply.status != 404
                        || reply.backend().is_some()
                        || !text.contains(plain_path)
                    {
                        wrong.push(format!(
                            "{what}: expected a 404 naming the path, got {} from {:?}: {}",
                            reply.status,
                            reply.backend(),
                            text.trim()
                        ));
                    }
                }
                (Err(e), _) => wrong.push(format!("{what}: {e}")),
            }
        }
    }
    wrong
}

#[test]
fn ingress_path_and_host_rules_pick_the_route_and_nothing_matching_is_a_clear_404() {
    let test = "ingress_path_and_host_rules_pick_the_route_and_nothing_matching_is_a_clear_404";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("rt", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let backends = backends(&proxy);
    proxy.start(&setup(false));

    let wrong = run_cases(&proxy, None);
    assert!(
        wrong.is_empty(),
        "routing went wrong:\n{}",
        wrong.join("\n")
    );
    let default = backends.last().expect("the default backend");
    assert_eq!(
        default.served(),
        0,
        "without default_service nobody reaches the default backend"
    );

    // The router metric counts per route, under the route's name.
    let metrics = Metrics::scrape(&proxy.lab.server_ns);
    let served = |router: &str| {
        metrics
            .get(
                "xdpgate_router_requests_total",
                &[
                    ("router", router),
                    ("service", "127.0.0.1:9100"),
                    ("code", "200"),
                    ("method", "GET"),
                ],
            )
            .unwrap_or(0.0)
    };
    // `aaa` answers 4 cases (each sent twice).
    assert_eq!(
        served("aaa"),
        8.0,
        "xdpgate_router_requests_total for route aaa"
    );
}

#[test]
fn a_request_that_matches_no_route_goes_to_the_default_service() {
    let test = "a_request_that_matches_no_route_goes_to_the_default_service";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("rd", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backends = backends(&proxy);
    proxy.start(&setup(true));

    let wrong = run_cases(&proxy, Some("default"));
    assert!(
        wrong.is_empty(),
        "routing went wrong:\n{}",
        wrong.join("\n")
    );
}
