//! Weighted services and sticky cookies through the running proxy: a
//! 90/10 canary splits 2,000 requests within ±5% of its weights; a weighted
//! service with a sticky cookie keeps a client on one member for 1,000
//! requests; a load-balanced service with a sticky cookie keeps a client on
//! one endpoint for 1,000 requests, and when that endpoint stops the client
//! is served by another and given a new cookie. The cookie never shows an
//! address, and a forged one only gets a request balanced as usual. Needs
//! root.
use std::{collections::BTreeMap, net::SocketAddr};

use xdpgate_tests::lab::{lab_ready, members, Backend, Call, ProxyLab, ProxySetup};

const PORT: u16 = 9300;

fn at(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Which backend answered, or the failure.
fn backend_of(proxy: &ProxyLab, call: &Call) -> String {
    match proxy.send(call) {
        Ok(reply) if reply.status == 200 => reply.backend().unwrap_or_default(),
        Ok(reply) => format!("{} {}", reply.status, reply.text().trim()),
        Err(e) => format!("error: {e}"),
    }
}

/// The `name=value` pair of the `Set-Cookie` for `name`, and the whole line.
fn set_cookie(reply: &xdpgate_tests::lab::client::Reply, name: &str) -> Option<(String, String)> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|line| line.starts_with(&format!("{name}=")))
        .map(|line| {
            let pair = line.split(';').next().unwrap_or("").to_string();
            (pair, line.to_string())
        })
}

#[test]
fn a_weighted_service_splits_by_weight_and_a_sticky_one_keeps_its_member() {
    let test = "a_weighted_service_splits_by_weight_and_a_sticky_one_keeps_its_member";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("wt", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let ns = proxy.lab.server_ns.clone();
    let _v1 = Backend::echo(&ns, at([127, 0, 0, 1], PORT), "v1");
    let _v2 = Backend::echo(&ns, at([127, 0, 0, 1], PORT + 1), "v2");
    let rest = format!(
        "  services:
    v1: {{ target: \"127.0.0.1:{PORT}\" }}
    v2: {{ target: \"127.0.0.1:{v2}\" }}
    canary:
      weighted:
        - {{ service: v1, weight: 90 }}
        - {{ service: v2, weight: 10 }}
    halves:
      weighted: [{{ service: v1 }}, {{ service: v2 }}]
      sticky: {{ cookie: {{ name: member, http_only: true }} }}
  routes:
    - {{ host: canary.test, service: canary }}
    - {{ host: halves.test, service: halves }}
",
        v2 = PORT + 1,
    );
    proxy.start(&ProxySetup {
        rest,
        ..ProxySetup::default()
    });

    let canary = Call::plain(members()[0]).host("canary.test");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..2000 {
        *counts.entry(backend_of(&proxy, &canary)).or_insert(0) += 1;
    }
    let v1 = counts.get("v1").copied().unwrap_or(0);
    let v2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(
        v1 + v2,
        2000,
        "every request served by v1 or v2: {counts:?}"
    );
    assert!(
        (1700..=1900).contains(&v1) && (100..=300).contains(&v2),
        "90/10 within ±5% of 2,000: {counts:?}"
    );

    // Without a cookie the sticky service alternates; with one it holds.
    let halves = Call::plain(members()[1]).host("halves.test");
    let first = proxy.send(&halves).expect("a first request to halves");
    assert_eq!(first.status, 200, "{}", first.text());
    let (pair, line) = set_cookie(&first, "member").expect("the first reply sets the cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("Path=/"),
        "{line}"
    );
    let held = first.backend().expect("a backend");
    let with_cookie = halves.clone().header("cookie", &pair);
    for i in 0..1000 {
        let reply = proxy.send(&with_cookie).expect("a request with the cookie");
        assert_eq!(
            reply.backend().as_deref(),
            Some(held.as_str()),
            "request {i}"
        );
        assert!(
            set_cookie(&reply, "member").is_none(),
            "request {i}: no new cookie while the member holds"
        );
    }
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        *spread.entry(backend_of(&proxy, &halves)).or_insert(0) += 1;
    }
    assert_eq!(
        spread,
        BTreeMap::from([("v1".to_string(), 5), ("v2".to_string(), 5)]),
        "clients without the cookie are still balanced"
    );
}

#[test]
fn a_sticky_endpoint_holds_and_a_stopped_one_hands_over_with_a_new_cookie() {
    let test = "a_sticky_endpoint_holds_and_a_stopped_one_hands_over_with_a_new_cookie";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("se", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let ns = proxy.lab.server_ns.clone();
    let mut one = Backend::echo(&ns, at([127, 0, 0, 1], PORT), "one");
    let mut two = Backend::echo(&ns, at([127, 0, 0, 2], PORT), "two");
    let rest = format!(
        "  services:
    pool:
      target: \"pool.test:{PORT}\"
      eject_for: 30s
      sticky: {{ cookie: {{ name: lb, secure: true, http_only: true, same_site: lax }} }}
  default_service: pool
"
    );
    proxy.start_with_hosts(
        &ProxySetup {
            rest,
            ..ProxySetup::default()
        },
        "127.0.0.1 localhost\n127.0.0.1 pool.test\n127.0.0.2 pool.test\n",
    );
    let call = Call::plain(members()[0]).host("app.test");

    let first = proxy.send(&call).expect("a first request");
    assert_eq!(first.status, 200, "{}", first.text());
    let (pair, line) = set_cookie(&first, "lb").expect("the first reply sets the cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(line.contains(attribute), "{attribute} in {line}");
    }
    assert!(
        !line.contains("127.0.0") && !line.contains(&PORT.to_string()),
        "the cookie shows no address: {line}"
    );
    let held = first.backend().expect("a backend");
    let sticky = call.clone().header("cookie", &pair);
    for i in 0..1000 {
        let reply = proxy.send(&sticky).expect("a request with the cookie");
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(
            reply.backend().as_deref(),
            Some(held.as_str()),
            "request {i}"
        );
        assert!(
            set_cookie(&reply, "lb").is_none(),
            "request {i}: no new cookie"
        );
    }

    // A forged cookie names nothing in the pool: balanced, and replaced.
    let forged = call.clone().header("cookie", "lb=0123456789abcdef");
    let reply = proxy.send(&forged).expect("a request with a forged cookie");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        set_cookie(&reply, "lb").is_some(),
        "a forged cookie is replaced"
    );

    // The endpoint the cookie names stops: the client is served by the other
    // one and told so with a new cookie, which then holds.
    let other = if held == "one" {
        one.stop();
        "two"
    } else {
        two.stop();
        "one"
    };
    let reply = proxy
        .send(&sticky)
        .expect("a request after the endpoint stopped");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.backend().as_deref(), Some(other), "handed over");
    let (new_pair, _) = set_cookie(&reply, "lb").expect("a new cookie for the new endpoint");
    assert_ne!(new_pair, pair);
    let moved = call.clone().header("cookie", &new_pair);
    for i in 0..50 {
        let reply = proxy.send(&moved).expect("a request with the new cookie");
        assert_eq!(reply.backend().as_deref(), Some(other), "request {i}");
        assert!(
            set_cookie(&reply, "lb").is_none(),
            "request {i}: no new cookie"
        );
    }
    // The old cookie, while its endpoint is out, keeps being redirected.
    let reply = proxy.send(&sticky).expect("the old cookie again");
    assert_eq!(reply.backend().as_deref(), Some(other));
    assert!(set_cookie(&reply, "lb").is_some());
}
