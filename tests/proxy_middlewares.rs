//! Middlewares through the running proxy, as a client sees them: the exact
//! security headers on answers and on a middleware's own refusal, the rate
//! limit (429 with `Retry-After` after the burst, then recovery; keyed by
//! `CF-Connecting-IP` from a trusted peer and by the peer address from
//! anyone else), the IP allowlist by set and by CIDR on the real client IP,
//! the scheme redirect, path prefixes and request headers, and compression
//! as curl negotiates it. The echo backend
//! shows what reached it; the metrics and the access log show the refusals.
//! basic_auth and body_limit are in `proxy_middlewares_auth.rs`. Needs root.
use std::time::Duration;

use xdpgate_tests::lab::{
    access_log, curl, lab_ready, members, outsiders, tools_ready, wait_for, Backend, Call, Metrics,
    ProxyLab, ProxySetup,
};

const BACKEND_PORT: u16 = 9100;
const BACKEND: &str = "127.0.0.1:9100";

fn start(tag: &str, routes_and_middlewares: &str) -> (ProxyLab, Backend) {
    let mut proxy = ProxyLab::new(tag, env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let backend = proxy.echo_backend("app", BACKEND_PORT);
    proxy.start(&ProxySetup {
        rest: routes_and_middlewares.to_string(),
        ..ProxySetup::default()
    });
    (proxy, backend)
}

fn rejections(proxy: &ProxyLab, middleware: &str, kind: &str, code: &str) -> f64 {
    Metrics::scrape(&proxy.lab.server_ns)
        .get(
            "xdpgate_middleware_rejections_total",
            &[("middleware", middleware), ("kind", kind), ("code", code)],
        )
        .unwrap_or(0.0)
}

#[test]
fn security_headers_are_exactly_those_configured_also_on_a_refusal() {
    let test = "security_headers_are_exactly_those_configured_also_on_a_refusal";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, _backend) = start(
        "mws",
        &format!(
            "  routes:
    - {{ name: secure, path: /, service: \"{BACKEND}\", middlewares: [sec, members] }}
    - {{ name: plain, path: /plain, service: \"{BACKEND}\" }}
  middlewares:
    members: {{ ip_allow: {{ sets: [members] }} }}
    sec:
      security_headers:
        hsts: {{ max_age: 63072000, include_subdomains: true, preload: true }}
        content_type_nosniff: true
        frame_options: sameorigin
        frame_ancestors: \"'self'\"
        referrer_policy: strict-origin-when-cross-origin
        permissions_policy: \"camera=(), geolocation=()\"
        content_security_policy: \"default-src 'self'\"
        content_security_policy_report_only: \"script-src 'none'; report-uri /csp\"
        cross_origin_opener_policy: same-origin
        cross_origin_resource_policy: same-site
        custom_response_headers: {{ X-Served-By: xdpgate, X-Backend: \"\" }}
"
        ),
    );
    let expected = [
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains; preload",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "SAMEORIGIN"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("permissions-policy", "camera=(), geolocation=()"),
        (
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'self'",
        ),
        (
            "content-security-policy-report-only",
            "script-src 'none'; report-uri /csp",
        ),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-site"),
        ("x-served-by", "xdpgate"),
    ];
    let member = members()[0];
    let outsider = outsiders()[0];
    for (what, call, status) in [
        ("a member over h1", Call::plain(member), 200),
        (
            "a member over h2+TLS",
            Call::tls(member).host("localhost").h2(),
            200,
        ),
        // ip_allow refuses; the headers listed before it still apply.
        ("an outsider (403)", Call::plain(outsider), 403),
    ] {
        let reply = proxy.send(&call.path("/page")).expect(what);
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        for (name, value) in expected {
            assert_eq!(
                reply.headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{what}: {name} in {:?}",
                reply.headers
            );
        }
        assert!(
            reply.headers.get("x-backend").is_none(),
            "{what}: the upstream's X-Backend is removed"
        );
    }
    // A route without the middleware gets none of them.
    let reply = proxy.send(&Call::plain(outsider).path("/plain")).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend().as_deref(), Some("app"));
    for (name, _) in expected {
        assert!(reply.headers.get(name).is_none(), "{name} on /plain");
    }
    assert_eq!(rejections(&proxy, "members", "ip_allow", "403"), 1.0);
}

#[test]
fn rate_limit_answers_429_after_the_burst_and_recovers_per_real_client() {
    let test = "rate_limit_answers_429_after_the_burst_and_recovers_per_real_client";
    if !lab_ready(test, &[]) {
        return;
    }
    // Two requests a second, three at once.
    let (proxy, backend) = start(
        "mwr",
        &format!(
            "  routes:
    - {{ name: limited, path: /, service: \"{BACKEND}\", middlewares: [limit] }}
  middlewares:
    limit: {{ rate_limit: {{ average: 2, period: 1s, burst: 3 }} }}
"
        ),
    );
    let outsider = outsiders()[0];
    let status = |call: Call| proxy.send(&call).map(|r| r.status).unwrap_or(0);

    // The burst passes, the next is refused with Retry-After.
    for n in 0..3 {
        assert_eq!(status(Call::plain(outsider)), 200, "burst request {n}");
    }
    let refused = proxy.send(&Call::plain(outsider)).unwrap();
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "{:?}",
        refused.headers
    );
    assert_eq!(backend.served(), 3, "the 429 never reached the backend");
    // Another client has its own bucket.
    assert_eq!(status(Call::plain(outsiders()[1])), 200);
    // Recovery: one request every 500ms.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(status(Call::plain(outsider)), 200, "after 600ms");
    assert_eq!(status(Call::plain(outsider)), 429);

    // From a trusted peer (Cloudflare), the client is CF-Connecting-IP:
    // one peer carries many visitors, each limited on its own.
    let member = members()[0];
    let via_cf = |visitor: &str| {
        Call::tls(member)
            .host("localhost")
            .header("cf-connecting-ip", visitor)
    };
    for n in 0..3 {
        assert_eq!(status(via_cf("192.0.2.77")), 200, "visitor 77, {n}");
    }
    assert_eq!(status(via_cf("192.0.2.77")), 429, "visitor 77 is limited");
    assert_eq!(status(via_cf("192.0.2.78")), 200, "visitor 78 is not");

    // From anyone else the claim is not believed: rotating it does not
    // escape the limit of the peer address.
    let spoofer = outsiders()[2];
    let claims = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
    let got: Vec<u16> = claims
        .iter()
        .map(|ip| status(Call::plain(spoofer).header("cf-connecting-ip", ip)))
        .collect();
    assert_eq!(got, [200, 200, 200, 429], "keyed by the peer {spoofer}");

    let refused = rejections(&proxy, "limit", "rate_limit", "429");
    assert_eq!(refused, 4.0, "xdpgate_middleware_rejections_total");
    let keys = Metrics::scrape(&proxy.lab.server_ns)
        .get("xdpgate_rate_limit_keys", &[("middleware", "limit")])
        .unwrap_or(-1.0);
    assert!(
        (1.0..=6.0).contains(&keys),
        "xdpgate_rate_limit_keys {keys}"
    );
    // The access log records the 429s under the route, with the visitor.
    let lines = wait_for(
        "access log lines for every request",
        Duration::from_secs(5),
        || access_log(&proxy.work),
        |lines| lines.len() >= 16,
    );
    let limited: Vec<_> = lines.iter().filter(|l| l["status"] == 429).collect();
    assert_eq!(limited.len(), 4, "{lines:#?}");
    assert!(limited.iter().all(|l| l["router"] == "limited"));
    assert!(limited.iter().any(|l| l["client_ip"] == "192.0.2.77"));
}

#[test]
fn ip_allow_admits_sets_and_cidrs_by_the_real_client_ip() {
    let test = "ip_allow_admits_sets_and_cidrs_by_the_real_client_ip";
    if !lab_ready(test, &[]) {
        return;
    }
    let allowed = outsiders()[1];
    let allowed_v6 = outsiders()[7];
    let (proxy, backend) = start(
        "mwi",
        &format!(
            "  routes:
    - {{ name: byset, path: /set, service: \"{BACKEND}\", middlewares: [members] }}
    - {{ name: bycidr, path: /cidr, service: \"{BACKEND}\", middlewares: [one] }}
  middlewares:
    members: {{ ip_allow: {{ sets: [members] }} }}
    one: {{ ip_allow: {{ cidrs: [\"{allowed}/32\", \"{allowed_v6}/128\"] }} }}
"
        ),
    );
    let member_v6 = members()[6];
    let outsider = outsiders()[0];
    let status = |call: Call| proxy.send(&call).map(|r| r.status).unwrap_or(0);
    let cases = [
        ("a member", Call::plain(members()[0]).path("/set"), 200),
        (
            "a v6 member over h2",
            Call::tls(member_v6).host("localhost").h2().path("/set"),
            200,
        ),
        ("an outsider", Call::plain(outsider).path("/set"), 403),
        // Judged on the visitor Cloudflare names, not on Cloudflare.
        (
            "a member forwarding an outsider",
            Call::plain(members()[0])
                .header("cf-connecting-ip", &outsider.to_string())
                .path("/set"),
            403,
        ),
        // An outsider's claim to be a member is not believed.
        (
            "an outsider claiming a member",
            Call::plain(outsider)
                .header("cf-connecting-ip", "198.51.100.1")
                .path("/set"),
            403,
        ),
        (
            "the listed address",
            Call::plain(allowed).path("/cidr"),
            200,
        ),
        (
            "the listed v6 address",
            Call::plain(allowed_v6).path("/cidr"),
            200,
        ),
        ("another address", Call::plain(outsider).path("/cidr"), 403),
        (
            "another v6 address",
            Call::plain(outsiders()[6]).path("/cidr"),
            403,
        ),
        (
            "a member forwarding the listed address",
            Call::plain(members()[0])
                .header("cf-connecting-ip", &allowed.to_string())
                .path("/cidr"),
            200,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, call, expected) in cases {
        let got = status(call);
        if got != expected {
            wrong.push(format!("{what}: {got}, expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(backend.served(), 5, "a 403 never reaches the backend");
    assert_eq!(rejections(&proxy, "members", "ip_allow", "403"), 3.0);
    assert_eq!(rejections(&proxy, "one", "ip_allow", "403"), 2.0);
}

#[test]
fn redirects_prefixes_and_request_headers_change_what_the_upstream_sees() {
    let test = "redirects_prefixes_and_request_headers_change_what_the_upstream_sees";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, _backend) = start(
        "mwx",
        &format!(
            "  routes:
    - {{ name: secure, path: /secure, service: \"{BACKEND}\", middlewares: [tohttps] }}
    - {{ name: temp, path: /temp, service: \"{BACKEND}\", middlewares: [tohttps-temp] }}
    - {{ name: api, path: /api, service: \"{BACKEND}\", middlewares: [noapi, env] }}
    - {{ name: legacy, path: /legacy, service: \"{BACKEND}\", middlewares: [v1] }}
  middlewares:
    tohttps: {{ redirect_scheme: {{ scheme: https, permanent: true, port: 8443 }} }}
    tohttps-temp: {{ redirect_scheme: {{ scheme: https }} }}
    noapi: {{ strip_prefix: {{ prefixes: [/api] }} }}
    v1: {{ add_prefix: {{ prefix: /v1 }} }}
    env: {{ headers: {{ set: {{ X-Env: prod }}, remove: [X-Debug] }} }}
"
        ),
    );
    let outsider = outsiders()[0];
    let member = members()[0];

    let moved = proxy
        .send(
            &Call::plain(outsider)
                .host("localhost:8080")
                .path("/secure/a?x=1"),
        )
        .unwrap();
    assert_eq!(moved.status, 301, "{}", moved.text());
    assert_eq!(
        moved.headers["location"].to_str().unwrap(),
        "https://localhost:8443/secure/a?x=1"
    );
    let post = proxy
        .send(
            &Call::plain(outsider)
                .method("POST")
                .host("localhost")
                .path("/secure"),
        )
        .unwrap();
    assert_eq!(
        post.status, 308,
        "a permanent redirect that keeps the method"
    );
    let temp = proxy
        .send(&Call::plain(outsider).host("localhost").path("/temp"))
        .unwrap();
    assert_eq!(
        (temp.status, temp.headers["location"].to_str().unwrap()),
        (302, "https://localhost/temp")
    );
    // Already HTTPS: here over TLS, or at Cloudflare as a trusted peer says.
    let tls = proxy
        .send(&Call::tls(outsider).host("localhost").path("/secure"))
        .unwrap();
    assert_eq!((tls.status, tls.backend().as_deref()), (200, Some("app")));
    let behind_cf = proxy
        .send(
            &Call::plain(member)
                .header("x-forwarded-proto", "https")
                .path("/secure"),
        )
        .unwrap();
    assert_eq!(behind_cf.status, 200, "{}", behind_cf.text());
    // An outsider's claim to have come over HTTPS is not believed.
    let claimed = proxy
        .send(
            &Call::plain(outsider)
                .header("x-forwarded-proto", "https")
                .path("/secure"),
        )
        .unwrap();
    assert_eq!(claimed.status, 301);

    // strip_prefix and headers, in that order, on one route.
    let api = proxy
        .send(
            &Call::tls(outsider)
                .host("localhost")
                .h2()
                .path("/api/users?id=3")
                .header("x-debug", "1")
                .header("x-env", "dev"),
        )
        .unwrap();
    assert_eq!(api.status, 200, "{}", api.text());
    let seen = api.json();
    assert_eq!(seen["path"], "/users");
    assert_eq!(seen["query"], "id=3");
    assert_eq!(
        api.upstream_header("x-forwarded-prefix").as_deref(),
        Some("/api")
    );
    assert_eq!(api.upstream_header("x-env").as_deref(), Some("prod"));
    assert_eq!(api.upstream_header("x-debug"), None);

    let legacy = proxy
        .send(&Call::plain(outsider).path("/legacy/items"))
        .unwrap();
    assert_eq!(legacy.json()["path"], "/v1/legacy/items");
    assert_eq!(rejections(&proxy, "tohttps", "redirect_scheme", "301"), 2.0);
}

#[test]
fn compress_negotiates_with_curl_and_skips_small_or_refused() {
    let test = "compress_negotiates_with_curl_and_skips_small_or_refused";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("curl", "curl")]) {
        return;
    }
    let (proxy, _backend) = start(
        "mwc",
        &format!(
            "  routes:
    - {{ name: squeezed, path: /, service: \"{BACKEND}\", middlewares: [squeeze] }}
    - {{ name: big-only, path: /big-only, service: \"{BACKEND}\", middlewares: [bigonly] }}
  middlewares:
    squeeze: {{ compress: {{ min_bytes: 64 }} }}
    bigonly: {{ compress: {{ min_bytes: 60000 }} }}
"
        ),
    );
    // curl offers what it was built with (deflate, gzip, br, zstd) and
    // decodes the answer itself.
    for (offer, expected) in [(None, "zstd"), (Some("br"), "br"), (Some("gzip"), "gzip")] {
        let header = offer.map(|offer| format!("accept-encoding: {offer}"));
        let mut args = vec!["--include", "--compressed"];
        if let Some(header) = &header {
            args.extend(["--header", header.as_str()]);
        }
        args.push("https://localhost:8443/page?x=1");
        let out = curl(
            &proxy.lab,
            &proxy.pki.ca_file,
            &args,
            Duration::from_secs(10),
        );
        let (head, body) = out
            .stdout
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{offer:?}: {} {}", out.stdout, out.stderr));
        let head = head.to_lowercase();
        assert!(
            head.contains(&format!("content-encoding: {expected}")),
            "{offer:?}: {head}"
        );
        assert!(head.contains("vary: accept-encoding"), "{offer:?}: {head}");
        let seen: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{offer:?}: curl could not decode ({e}): {body:?}"));
        assert_eq!(seen["path"], "/page", "{offer:?}");
    }
    let outsider = outsiders()[0];
    let gzip = proxy
        .send(&Call::plain(outsider).header("accept-encoding", "gzip"))
        .unwrap();
    assert_eq!(gzip.headers["content-encoding"], "gzip");
    assert_eq!(&gzip.body[..2], &[0x1f, 0x8b], "a gzip stream");
    for (what, call) in [
        (
            "identity only",
            Call::plain(outsider).header("accept-encoding", "identity"),
        ),
        ("no accept-encoding", Call::plain(outsider)),
        (
            "smaller than min_bytes",
            Call::plain(outsider)
                .header("accept-encoding", "gzip")
                .path("/big-only"),
        ),
    ] {
        let reply = proxy.send(&call).unwrap();
        assert!(reply.headers.get("content-encoding").is_none(), "{what}");
        assert_eq!(reply.json()["backend"], "app", "{what}: plain JSON");
    }
}
