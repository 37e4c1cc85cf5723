//! What the proxy lets through besides the path (issue 12): `Upgrade: h2c`
//! and unlisted upgrades are served as ordinary requests and never reach
//! the upstream (WebSocket still upgrades; listing `h2c` is a config
//! error); CONNECT and TRACE get 405 with `Allow` from the proxy itself;
//! requests with two framings, a Transfer-Encoding other than `chunked`, or
//! Transfer-Encoding on HTTP/1.0 get 400 and a closed connection, so a
//! request smuggled behind them is never answered; unknown methods are one
//! `method="other"` in the metrics however many there are; header names
//! with anything but letters, digits and `-` (`X_Forwarded_For`,
//! `X.Forwarded.For`...) are dropped, refused or kept as configured; and a
//! trusted peer's repeated client-IP headers are refused. Requests go as
//! exact bytes on TCP and TLS, from curl, nghttp, Python's h2 and the lab
//! client; the echo backend shows what arrived. Needs root and curl.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
    time::Duration,
};

use serde_json::{json, Value};
use xdpgate_tests::lab::{
    admin_get, curl, h2py, lab_ready, members, outsiders, python_h2_ready, raw_request,
    tools_ready, wait_for, xdpgate, Backend, Call, ProxyLab, ProxySetup, Tool,
};

const ECHO_PORT: u16 = 9100;
const WS_PORT: u16 = 9101;
const WAIT: Duration = Duration::from_secs(10);

/// Everything to the echo backend, `/ws` to a WebSocket server.
fn start(tag: &str, entrypoint: &str) -> (ProxyLab, Backend, Backend) {
    let mut proxy = ProxyLab::new(tag, env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let echo = proxy.echo_backend("echo", ECHO_PORT);
    let ws = Backend::websocket(
        &proxy.lab.server_ns,
        std::net::SocketAddr::from(([127, 0, 0, 1], WS_PORT)),
    );
    proxy.start(&ProxySetup {
        rest: format!(
            "  routes:
    - {{ path: /ws, service: \"127.0.0.1:{WS_PORT}\" }}
  default_service: \"127.0.0.1:{ECHO_PORT}\"
"
        ),
        entrypoint: entrypoint.to_string(),
        ..ProxySetup::default()
    });
    (proxy, echo, ws)
}

/// The header names the echo backend received.
fn upstream_headers(echoed: &Value) -> BTreeMap<String, String> {
    echoed["headers"]
        .as_object()
        .expect("the echo's headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

#[test]
fn h2c_and_unlisted_upgrades_are_served_as_plain_requests() {
    let test = "h2c_and_unlisted_upgrades_are_served_as_plain_requests";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("curl", "curl")]) {
        return;
    }
    let (proxy, echo, _ws) = start("ph1", "");
    let outsider = outsiders()[0];
    let upgrade = |name: &str, protocol: &str, settings: bool| {
        let settings = if settings {
            "Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        } else {
            "Connection: Upgrade\r\n"
        };
        format!(
            "GET /{name} HTTP/1.1\r\nHost: localhost\r\nUpgrade: {protocol}\r\n{settings}\r\n\
             GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
    };
    for tls in [false, true] {
        for (name, protocol, settings) in [
            ("h2c", "h2c", true),
            ("h2c-only", "h2c", false),
            ("upper-case", "H2C", true),
            ("settings-only", "", true),
            ("other", "foo/1.0", false),
        ] {
            let mut request = upgrade(name, protocol, settings);
            if protocol.is_empty() {
                request = request.replace("Upgrade: \r\n", "");
            }
            let reply = raw_request(&proxy.client, outsider, tls, request.as_bytes(), WAIT)
                .expect("exchange");
            let what = format!("{name} (tls: {tls})");
            assert_eq!(
                reply.statuses(),
                vec![200, 200],
                "{what}: no 101, and the connection stays HTTP/1.1 for the next request:\n{}",
                reply.text()
            );
            let echoed = reply.json();
            assert_eq!(echoed["path"], format!("/{name}"));
            let headers = upstream_headers(&echoed);
            for hidden in ["upgrade", "http2-settings"] {
                assert!(
                    !headers.contains_key(hidden),
                    "{what}: the upstream got `{hidden}`: {headers:?}"
                );
            }
            if let Some(connection) = headers.get("connection") {
                assert!(
                    !connection.to_lowercase().contains("upgrade"),
                    "{what}: the upstream got connection {connection}"
                );
            }
        }
    }

    // curl --http2 on plain http:// offers h2c with an Upgrade: it stays on
    // HTTP/1.1 and the upstream hears nothing of it.
    let out = curl(
        &proxy.lab,
        &proxy.pki.ca_file,
        &[
            "--http2",
            "--write-out",
            "\n%{http_version} %{http_code}",
            "http://localhost:8080/curl-h2c",
        ],
        WAIT,
    );
    let (body, last) = out
        .stdout
        .rsplit_once('\n')
        .expect("curl's --write-out line");
    assert_eq!(last, "1.1 200", "{out:?}");
    let echoed: Value = serde_json::from_str(body).expect("the echo's JSON");
    let headers = upstream_headers(&echoed);
    assert!(
        !headers.contains_key("upgrade") && !headers.contains_key("http2-settings"),
        "curl's h2c upgrade reached the upstream: {headers:?}"
    );
    let served = echo.served();

    // WebSocket is still listed by default: its handshake is answered 101.
    let handshake = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n";
    let reply = raw_request(
        &proxy.client,
        outsider,
        false,
        handshake.as_bytes(),
        Duration::from_secs(2),
    )
    .expect("exchange");
    assert_eq!(reply.status(), 101, "{}", reply.text());
    assert_eq!(echo.served(), served, "the WebSocket went to its own route");
}

#[test]
fn h2c_cannot_be_listed_as_an_upgrade() {
    let bin = Path::new(env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let check = |upgrades: &str| {
        let file = scratch.path().join("config.yaml");
        std::fs::write(
            &file,
            format!(
                "filter:
  interfaces: [lo]
  sets:
    members: {{ cidrs: [198.51.100.0/29] }}
  allow:
    - {{ tcp: [22], from: [members] }}
proxy:
  entrypoints:
    web: {{ listen: \"[::]:8080\", upgrades: [{upgrades}] }}
  default_service: \"127.0.0.1:9100\"
"
            ),
        )
        .expect("write config.yaml");
        xdpgate(bin, &["config", "check", file.to_str().expect("utf-8")])
    };
    let ok = check("websocket");
    assert_eq!(ok.code, 0, "upgrades: [websocket] is valid: {ok:?}");
    let refused = check("websocket, h2c");
    assert_eq!(refused.code, 4, "upgrades: [websocket, h2c]: {refused:?}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(said.contains("h2c"), "the error names h2c: {said}");
    assert!(said.contains("upgrades"), "the error names the key: {said}");
}

#[test]
fn connect_and_trace_get_405_from_the_proxy_and_never_reach_the_upstream() {
    let test = "connect_and_trace_get_405_from_the_proxy_and_never_reach_the_upstream";
    if !lab_ready(test, &[])
        || !tools_ready(test, &[("curl", "curl"), ("nghttp", "nghttp2-client")])
    {
        return;
    }
    let python = python_h2_ready(test);
    let (proxy, echo, _ws) = start("ph2", "");
    let outsider = outsiders()[0];
    for tls in [false, true] {
        for request in [
            "CONNECT 127.0.0.1:9100 HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nConnection: close\r\n\r\n",
            "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\nConnection: close\r\n\r\n",
            "TRACE / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            "TRACE /x?y HTTP/1.1\r\nHost: localhost\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n",
        ] {
            let reply = raw_request(&proxy.client, outsider, tls, request.as_bytes(), WAIT)
                .expect("exchange");
            let line = request.lines().next().unwrap();
            assert_eq!(reply.status(), 405, "{line} (tls {tls}): {}", reply.text());
            let allow = reply.header("allow").unwrap_or_default();
            assert!(allow.contains("GET"), "{line}: Allow: {allow:?}");
            assert!(!allow.contains("TRACE") && !allow.contains("CONNECT"), "{allow}");
        }
    }
    let out = curl(
        &proxy.lab,
        &proxy.pki.ca_file,
        &[
            "--http2",
            "--request",
            "TRACE",
            "--include",
            "https://localhost:8443/curl",
        ],
        WAIT,
    );
    assert!(out.stdout.starts_with("HTTP/2 405"), "{out:?}");
    assert!(out.stdout.to_lowercase().contains("\nallow:"), "{out:?}");
    // nghttp does not check the certificate; 192.0.2.1 gets the default one.
    let out = Tool::spawn(
        &proxy.lab.client_ns,
        "nghttp",
        &[
            "-v",
            "-H",
            ":method: TRACE",
            "https://192.0.2.1:8443/nghttp",
        ],
    )
    .wait(WAIT);
    assert!(out.stdout.contains(":status: 405"), "nghttp TRACE: {out:?}");
    if let Some(python) = python {
        let request = |headers: Vec<[&str; 2]>| json!({ "headers": headers });
        let plan = json!({
            "mode": "requests",
            "requests": [
                request(vec![[":method", "CONNECT"], [":authority", "127.0.0.1:9100"]]),
                request(vec![
                    [":method", "TRACE"], [":scheme", "https"],
                    [":authority", "localhost"], [":path", "/h2"],
                ]),
            ],
        });
        let report = h2py(&proxy, &python, outsider, true, plan, WAIT * 2);
        for result in report["results"].as_array().expect("results") {
            assert_eq!(result["status"], 405, "HTTP/2 CONNECT and TRACE: {report}");
        }
    }
    assert_eq!(
        echo.served(),
        0,
        "CONNECT and TRACE never reach the upstream"
    );
}

/// Requests whose length two parsers could read differently, each with a
/// second request behind it that only a confused server would answer.
fn ambiguous_framings() -> Vec<(&'static str, String)> {
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let post = |version: &str, headers: &str, body: &str| {
        format!("POST /first {version}\r\nHost: localhost\r\n{headers}\r\n{body}{smuggled}")
    };
    vec![
        (
            "content-length and chunked",
            post(
                "HTTP/1.1",
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
        ),
        (
            "chunked and content-length",
            post(
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
        ),
        (
            "gzip, chunked",
            post(
                "HTTP/1.1",
                "Transfer-Encoding: gzip, chunked\r\n",
                "0\r\n\r\n",
            ),
        ),
        (
            "chunked twice",
            post(
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
        ),
        (
            "identity",
            post("HTTP/1.1", "Transfer-Encoding: identity\r\n", ""),
        ),
        (
            "identity with a length",
            post(
                "HTTP/1.1",
                "Transfer-Encoding: identity\r\nContent-Length: 0\r\n",
                "",
            ),
        ),
        (
            "xchunked",
            post("HTTP/1.1", "Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
        ),
        (
            "chunked on HTTP/1.0",
            post("HTTP/1.0", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        ),
        (
            "chunked and a length on HTTP/1.0",
            post(
                "HTTP/1.0",
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
        ),
    ]
}

#[test]
fn ambiguous_framing_gets_400_and_the_connection_closes_before_a_smuggled_request() {
    let test = "ambiguous_framing_gets_400_and_the_connection_closes_before_a_smuggled_request";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, echo, _ws) = start("ph3", "");
    let outsider = outsiders()[0];

    // The same shape with one honest framing: both requests are answered,
    // so a missing second answer below means it was refused.
    let honest = "POST /first HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
                  4\r\nbody\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: localhost\r\n\
                  Connection: close\r\n\r\n";
    let reply = raw_request(&proxy.client, outsider, false, honest.as_bytes(), WAIT).unwrap();
    assert_eq!(reply.statuses(), vec![200, 200], "{}", reply.text());
    assert!(reply.closed);
    let served = echo.served();

    for tls in [false, true] {
        for (name, request) in ambiguous_framings() {
            let reply =
                raw_request(&proxy.client, outsider, tls, request.as_bytes(), WAIT).unwrap();
            assert_eq!(
                reply.statuses(),
                vec![400],
                "{name} (tls {tls}): one 400 and nothing for the smuggled request:\n{}",
                reply.text()
            );
            assert!(
                reply.closed,
                "{name} (tls {tls}): the connection is closed after the 400 (waited {:?})",
                reply.took
            );
        }
    }
    assert_eq!(
        echo.served(),
        served,
        "no ambiguous request reached the upstream"
    );
}

/// Every value of the `method` label in `/metrics`, and how many series
/// carry the label.
fn method_labels(server_ns: &str) -> (BTreeSet<String>, usize) {
    let text = admin_get(server_ns, "/metrics").expect("GET /metrics").body;
    let mut methods = BTreeSet::new();
    let mut series = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, rest)) = line.split_once("method=\"") {
            series += 1;
            methods.insert(rest.split('"').next().unwrap_or_default().to_string());
        }
    }
    (methods, series)
}

/// The sum of `name` over every series whose labels include `label`.
fn metric_sum(server_ns: &str, name: &str, label: &str) -> f64 {
    let text = admin_get(server_ns, "/metrics").expect("GET /metrics").body;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn unknown_methods_are_one_other_series_in_the_metrics() {
    let test = "unknown_methods_are_one_other_series_in_the_metrics";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, echo, _ws) = start("ph4", "");
    let outsider = outsiders()[0];
    assert_eq!(proxy.send(&Call::plain(outsider)).unwrap().status, 200);
    let (_, series_before) = method_labels(&proxy.lab.server_ns);

    let methods: Vec<String> = (0..2000)
        .map(|i| format!("M{i:04}X"))
        .chain(["PROPFIND", "MKCOL", "PURGE", "get", "Post"].map(String::from))
        .collect();
    for batch in methods.chunks(50) {
        let calls: Vec<_> = batch
            .iter()
            .map(|m| proxy.client.spawn(Call::plain(outsider).method(m)))
            .collect();
        for (method, call) in batch.iter().zip(calls) {
            let reply = proxy.client.block_on(call).unwrap().unwrap();
            assert_eq!(reply.status, 200, "{method}: {}", reply.text());
            assert_eq!(reply.json()["method"], method.as_str(), "forwarded as sent");
        }
    }
    for method in ["PROPFIND", "M9999Y"] {
        let reply = proxy
            .send(&Call::tls(outsider).host("localhost").h2().method(method))
            .unwrap();
        assert_eq!(reply.status, 200, "HTTP/2 {method}");
    }
    assert!(echo.served() >= 2007);

    let (labels, series_after) = method_labels(&proxy.lab.server_ns);
    let known: BTreeSet<String> = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other",
    ]
    .map(String::from)
    .into();
    assert!(
        labels.is_subset(&known),
        "method labels beyond the known ones: {:?}",
        labels.difference(&known).collect::<Vec<_>>()
    );
    assert!(labels.contains("other"), "{labels:?}");
    assert!(
        series_after - series_before <= 12,
        "2,007 unknown methods added {} series with a method label",
        series_after - series_before
    );
    wait_for(
        "every unknown method counted as other",
        Duration::from_secs(5),
        || {
            metric_sum(
                &proxy.lab.server_ns,
                "xdpgate_entrypoint_requests_total",
                "method=\"other\"",
            )
        },
        |others| *others == 2007.0,
    );
}

/// Header names a CGI-style upstream would read as a forwarding header.
const UNDERSCORE_HEADERS: &[(&str, &str)] = &[
    ("X_Forwarded_For", "192.0.2.66"),
    ("CF_Connecting_IP", "192.0.2.66"),
    ("True_Client_IP", "192.0.2.66"),
    ("X_Real_IP", "192.0.2.66"),
    ("X.Forwarded.For", "192.0.2.66"),
    ("Remote_User", "admin"),
    ("X~Forwarded~Host", "evil.example"),
    ("X+Real+IP", "192.0.2.66"),
];

fn with_underscores(mut call: Call) -> Call {
    for (name, value) in UNDERSCORE_HEADERS {
        call = call.header(name, value);
    }
    call.header("x-ordinary", "yes")
}

fn underscore_calls(source: IpAddr) -> Vec<(&'static str, Call)> {
    vec![
        ("h1", with_underscores(Call::plain(source).path("/u"))),
        (
            "h2",
            with_underscores(Call::tls(source).host("localhost").h2().path("/u")),
        ),
    ]
}

#[test]
fn underscore_headers_are_dropped_by_default() {
    let test = "underscore_headers_are_dropped_by_default";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, _echo, _ws) = start("ph5", "");
    for source in [outsiders()[0], members()[0]] {
        for (how, call) in underscore_calls(source) {
            let reply = proxy.send(&call).unwrap();
            assert_eq!(reply.status, 200, "{how} from {source}: {}", reply.text());
            let headers = upstream_headers(&reply.json());
            for (name, _) in UNDERSCORE_HEADERS {
                assert!(
                    !headers.contains_key(&name.to_ascii_lowercase()),
                    "{how} from {source}: {name} reached the upstream: {headers:?}"
                );
            }
            assert_eq!(reply.upstream_header("x-ordinary").as_deref(), Some("yes"));
            // Not mistaken for CF-Connecting-IP from a trusted peer either.
            assert_eq!(
                reply.upstream_header("x-real-ip"),
                Some(source.to_string()),
                "{how} from {source}"
            );
        }
    }
}

#[test]
fn underscore_headers_can_be_refused_or_kept() {
    let test = "underscore_headers_can_be_refused_or_kept";
    if !lab_ready(test, &[]) {
        return;
    }
    let outsider = outsiders()[0];
    {
        let (proxy, echo, _ws) = start("ph6", "underscore_headers: reject");
        for (how, call) in underscore_calls(outsider) {
            let reply = proxy.send(&call).unwrap();
            assert_eq!(reply.status, 400, "{how}: {}", reply.text());
        }
        for name in ["X_Forwarded_For", "X.Forwarded.For", "a_b"] {
            let reply = proxy
                .send(&Call::plain(outsider).header(name, "1"))
                .unwrap();
            assert_eq!(reply.status, 400, "{name}: {}", reply.text());
        }
        assert_eq!(echo.served(), 0, "a refused request reaches no upstream");
        let reply = proxy
            .send(&Call::plain(outsider).header("x-ordinary-header", "1"))
            .unwrap();
        assert_eq!(reply.status, 200, "an ordinary header is fine");
    }
    let (proxy, _echo, _ws) = start("ph7", "underscore_headers: keep");
    for (how, call) in underscore_calls(outsider) {
        let reply = proxy.send(&call).unwrap();
        assert_eq!(reply.status, 200, "{how}: {}", reply.text());
        for (name, value) in UNDERSCORE_HEADERS {
            assert_eq!(
                reply.upstream_header(name).as_deref(),
                Some(*value),
                "{how}: keep forwards {name}"
            );
        }
    }
}

#[test]
fn a_trusted_peer_repeating_a_client_ip_header_gets_400() {
    let test = "a_trusted_peer_repeating_a_client_ip_header_gets_400";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, echo, _ws) = start("ph8", "");
    let member = members()[0];
    let outsider = outsiders()[0];
    let calls = |source: IpAddr| {
        [
            ("h1", Call::plain(source)),
            ("h2", Call::tls(source).host("localhost").h2()),
        ]
    };
    for (how, call) in calls(member) {
        for name in ["CF-Connecting-IP", "X-Real-IP"] {
            let reply = proxy
                .send(
                    &call
                        .clone()
                        .header(name, "198.18.0.7")
                        .header(name, "198.18.0.8"),
                )
                .unwrap();
            assert_eq!(
                reply.status,
                400,
                "{how}: two {name} lines: {}",
                reply.text()
            );
        }
    }
    assert_eq!(echo.served(), 0, "the refused requests reached no upstream");
    for (how, call) in calls(member) {
        let reply = proxy
            .send(&call.header("CF-Connecting-IP", "198.18.0.7"))
            .unwrap();
        assert_eq!(reply.status, 200, "{how}: one line is believed");
        assert_eq!(
            reply.upstream_header("x-real-ip").as_deref(),
            Some("198.18.0.7")
        );
    }
    // From an untrusted peer the headers are replaced anyway.
    for (how, call) in calls(outsider) {
        let reply = proxy
            .send(
                &call
                    .header("CF-Connecting-IP", "198.18.0.7")
                    .header("CF-Connecting-IP", "198.18.0.8"),
            )
            .unwrap();
        assert_eq!(reply.status, 200, "{how}: {}", reply.text());
        assert_eq!(
            reply.upstream_header("x-real-ip"),
            Some(outsider.to_string())
        );
    }
}
