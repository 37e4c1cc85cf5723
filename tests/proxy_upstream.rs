//! Upstream failures through the running proxy, with the status a client
//! gets: nothing listening (502), a name that resolves to nothing (503), a
//! backend slower than the service's `response_header_timeout` (504), a
//! backend that answers garbage (502), and one that breaks off mid-body (the
//! client sees a broken transfer, never a short body passed off as whole);
//! a pool of two addresses where one goes down (every request, POSTs too,
//! still succeeds on the other) and comes back (served again once
//! `eject_for` has passed); and a service name whose address changes in
//! `/etc/hosts` (requests follow within a few `resolve_interval`s). The
//! daemon runs with its own `/etc/hosts` in a private mount namespace, which
//! the test rewrites. Needs root.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use xdpgate_tests::lab::{
    lab_ready, members, outsiders, Backend, Call, Metrics, ProxyLab, ProxySetup,
};

const PORT: u16 = 9100;

fn at(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// `backend name -> replies`, or `status -> replies` for errors, of `n` GETs.
fn spread(proxy: &ProxyLab, call: &Call, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let key = match proxy.send(call) {
            Ok(reply) if reply.status == 200 => reply.backend().unwrap_or_default(),
            Ok(reply) => format!("{} {}", reply.status, reply.text().trim()),
            Err(e) => format!("error: {e}"),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

#[test]
fn upstream_failures_answer_502_503_504_as_the_failure_deserves() {
    let test = "upstream_failures_answer_502_503_504_as_the_failure_deserves";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("uf", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let ns = proxy.lab.server_ns.clone();
    let _slow = Backend::echo(&ns, at([127, 0, 0, 1], PORT), "slow");
    let _garbage = Backend::garbage(&ns, at([127, 0, 0, 1], PORT + 2));
    let rest = format!(
        "  services:
    down: {{ target: \"127.0.0.1:{down}\" }}
    unresolvable: {{ target: \"nonexistent.invalid:80\" }}
    slow: {{ target: \"127.0.0.1:{PORT}\", response_header_timeout: 1s }}
    garbage: {{ target: \"127.0.0.1:{garbage}\" }}
  routes:
    - {{ host: down.test, service: down }}
    - {{ host: unresolvable.test, service: unresolvable }}
    - {{ host: slow.test, service: slow }}
    - {{ host: garbage.test, service: garbage }}
",
        down = PORT + 1,
        garbage = PORT + 2,
    );
    proxy.start_with_hosts(
        &ProxySetup {
            rest,
            ..ProxySetup::default()
        },
        "127.0.0.1 localhost\n",
    );
    let member = members()[0];
    let cases = [
        ("down.test", "/", 502, "connect"),
        ("unresolvable.test", "/", 503, "no_endpoint"),
        ("slow.test", "/delay/3000", 504, "response_timeout"),
        ("garbage.test", "/", 502, "protocol"),
    ];
    for (host, path, status, kind) in cases {
        for call in [
            Call::plain(member),
            Call::tls(outsiders()[6]).sni("localhost").h2(),
        ] {
            let started = Instant::now();
            let reply = proxy
                .send(&call.host(host).path(path))
                .unwrap_or_else(|e| panic!("{host}{path}: no answer: {e}"));
            assert_eq!(reply.status, status, "{host}{path}: {}", reply.text());
            assert!(
                reply.text().starts_with(&status.to_string()),
                "{host}{path}: the body says what happened: {}",
                reply.text()
            );
            assert!(
                started.elapsed() < Duration::from_millis(2500),
                "{host}{path}: answered after {:?}",
                started.elapsed()
            );
        }
        let service = host.trim_end_matches(".test");
        let counted = Metrics::scrape(&proxy.lab.server_ns).get(
            "xdpgate_upstream_errors_total",
            &[("service", service), ("kind", kind)],
        );
        assert_eq!(
            counted,
            Some(2.0),
            "xdpgate_upstream_errors_total{{service={service},kind={kind}}}"
        );
    }
    // Within the timeout the slow service answers.
    let reply = proxy
        .send(&Call::plain(member).host("slow.test").path("/delay/200"))
        .expect("a request within the timeout");
    assert_eq!(reply.status, 200, "{}", reply.text());

    // A backend that breaks off in the middle of its body: the client must
    // notice (a broken connection or stream), not get a short body as if
    // it were whole.
    for call in [
        Call::plain(member),
        Call::tls(member).sni("localhost"),
        Call::tls(outsiders()[6]).sni("localhost").h2(),
    ] {
        let call = call
            .host("slow.test")
            .path("/truncate/1000000")
            .count_body();
        match proxy.send(&call) {
            Ok(reply) => panic!(
                "a body cut off at the backend arrived as complete: {} with {} of 1000000 bytes",
                reply.status, reply.body_len
            ),
            Err(e) => println!("a truncated upstream body: {e}"),
        }
    }
}

#[test]
fn a_pool_member_that_goes_down_is_left_out_and_served_again_when_it_returns() {
    let test = "a_pool_member_that_goes_down_is_left_out_and_served_again_when_it_returns";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("ue", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let ns = proxy.lab.server_ns.clone();
    let _one = Backend::echo(&ns, at([127, 0, 0, 1], PORT), "one");
    let mut two = Backend::echo(&ns, at([127, 0, 0, 2], PORT), "two");
    let rest = format!(
        "  services:
    pool: {{ target: \"pool.test:{PORT}\", eject_for: 2s, resolve_interval: 1s }}
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

    let both = spread(&proxy, &call, 20);
    assert_eq!(
        both,
        BTreeMap::from([("one".to_string(), 10), ("two".to_string(), 10)]),
        "round robin over both addresses"
    );

    two.stop();
    let down_since = Instant::now();
    // A POST is not replayed once sent, but one that could not even connect
    // was never sent: it goes to the other address.
    let post = call.clone().method("POST").body("order=1");
    let posts = spread(&proxy, &post, 2);
    assert_eq!(
        posts,
        BTreeMap::from([("one".to_string(), 2)]),
        "POSTs right after 127.0.0.2 went down"
    );
    let one_only = spread(&proxy, &call, 30);
    assert_eq!(
        one_only,
        BTreeMap::from([("one".to_string(), 30)]),
        "with 127.0.0.2 down every request succeeds on 127.0.0.1"
    );

    let two = Backend::echo(&ns, at([127, 0, 0, 2], PORT), "two");
    // Ejected for 2s from its failure: back within that and a little more.
    let deadline = down_since + Duration::from_secs(6);
    let mut replies = BTreeMap::new();
    while two.served() == 0 {
        assert!(
            Instant::now() < deadline,
            "127.0.0.2 is not served again 6s after it failed (eject_for 2s): {replies:?}"
        );
        for (key, n) in spread(&proxy, &call, 1) {
            *replies.entry(key).or_insert(0) += n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        replies.keys().all(|k| k == "one" || k == "two"),
        "every request succeeded meanwhile: {replies:?}"
    );
    let again = spread(&proxy, &call, 20);
    assert_eq!(
        again,
        BTreeMap::from([("one".to_string(), 10), ("two".to_string(), 10)]),
        "round robin over both again"
    );
}

#[test]
fn requests_follow_a_service_name_to_its_new_address() {
    let test = "requests_follow_a_service_name_to_its_new_address";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("ud", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let ns = proxy.lab.server_ns.clone();
    let _first = Backend::echo(&ns, at([127, 0, 0, 1], PORT), "first");
    let _second = Backend::echo(&ns, at([127, 0, 0, 2], PORT), "second");
    let rest = format!(
        "  services:
    app: {{ target: \"backend.test:{PORT}\", resolve_interval: 1s }}
  default_service: app
"
    );
    proxy.start_with_hosts(
        &ProxySetup {
            rest,
            ..ProxySetup::default()
        },
        "127.0.0.1 localhost\n127.0.0.1 backend.test\n",
    );
    let call = Call::tls(members()[0]).host("localhost");
    assert_eq!(
        spread(&proxy, &call, 5),
        BTreeMap::from([("first".to_string(), 5)]),
        "backend.test is 127.0.0.1"
    );

    proxy
        .hosts_daemon()
        .set_hosts("127.0.0.1 localhost\n127.0.0.2 backend.test\n");
    let changed = Instant::now();
    let mut replies = BTreeMap::new();
    loop {
        let seen = spread(&proxy, &call, 1);
        let moved = seen.contains_key("second");
        for (key, n) in seen {
            *replies.entry(key).or_insert(0) += n;
        }
        if moved {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "requests still go to 127.0.0.1 5s after backend.test moved \
             (resolve_interval 1s): {replies:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("requests moved after {:?}", changed.elapsed());
    assert!(
        replies.keys().all(|k| k == "first" || k == "second"),
        "no request failed while the name moved: {replies:?}"
    );
    assert_eq!(
        spread(&proxy, &call, 10),
        BTreeMap::from([("second".to_string(), 10)]),
        "backend.test is 127.0.0.2 now"
    );
}
