//! Forwarded headers and the client IP through the running proxy. A peer in
//! the trusted set (`members`, 198.51.100.0/29 and 2001:db8:1::/64, standing
//! in for Cloudflare) is believed: its `CF-Connecting-IP`, or else the
//! right-most untrusted `X-Forwarded-For` entry, is the client, and its
//! `X-Forwarded-Proto` stays. Anyone else (203.0.113.x, 2001:db8:2::x) is
//! not: whatever it claims in `CF-Connecting-IP`, `X-Forwarded-*`,
//! `X-Real-IP`, `Forwarded` or `True-Client-IP` never reaches the backend,
//! which sees the peer's own address instead. The echo backend shows what
//! arrived; the access log shows the client IP the proxy settled on.
//! Needs root.
use std::{net::IpAddr, time::Duration};

use xdpgate_tests::lab::{
    access_log, lab_ready, members, outsiders, wait_for, Call, ProxyLab, ProxySetup,
};

const BACKEND_PORT: u16 = 9100;

/// What one request sent and what the backend and the access log must show.
struct Case {
    /// Also the request path, to find the access log line.
    name: &'static str,
    call: Call,
    /// `None`: the header must not reach the backend at all.
    expect: Vec<(&'static str, Option<String>)>,
    client_ip: String,
}

fn spoofing_headers(call: Call) -> Call {
    call.header("cf-connecting-ip", "192.0.2.66")
        .header("x-forwarded-for", "192.0.2.66")
        .header("x-real-ip", "192.0.2.66")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-port", "1")
        .header("forwarded", "for=192.0.2.66;proto=https")
        .header("true-client-ip", "192.0.2.66")
}

fn cases() -> Vec<Case> {
    let member = members()[0];
    let member_v6 = members()[6];
    let outsider = outsiders()[0];
    let outsider_v6 = outsiders()[6];
    let s = |v: &str| Some(v.to_string());
    let ip = |a: IpAddr| Some(a.to_string());
    vec![
        Case {
            name: "trusted-cf-connecting-ip",
            call: Call::plain(member)
                .host("app.example.com")
                .header("cf-connecting-ip", "198.18.0.7")
                .header("x-forwarded-for", "198.18.0.7"),
            expect: vec![
                ("x-real-ip", s("198.18.0.7")),
                ("x-forwarded-for", s(&format!("198.18.0.7, {member}"))),
                ("cf-connecting-ip", s("198.18.0.7")),
                ("x-forwarded-proto", s("http")),
                ("x-forwarded-host", s("app.example.com")),
                ("x-forwarded-port", s("8080")),
            ],
            client_ip: "198.18.0.7".into(),
        },
        Case {
            // Cloudflare terminated HTTPS and says so; a chain whose last hop
            // is another trusted proxy names the client before it.
            name: "trusted-forwarded-for-chain",
            call: Call::plain(member)
                .host("app.example.com")
                .header("x-forwarded-for", "198.18.0.9, 198.51.100.3")
                .header("x-forwarded-proto", "https"),
            expect: vec![
                ("x-real-ip", s("198.18.0.9")),
                (
                    "x-forwarded-for",
                    s(&format!("198.18.0.9, 198.51.100.3, {member}")),
                ),
                ("x-forwarded-proto", s("https")),
            ],
            client_ip: "198.18.0.9".into(),
        },
        Case {
            name: "trusted-v6-over-tls",
            call: Call::tls(member_v6)
                .host("localhost")
                .h2()
                .header("cf-connecting-ip", "2001:db8:ffff::7"),
            expect: vec![
                ("x-real-ip", s("2001:db8:ffff::7")),
                ("x-forwarded-for", ip(member_v6)),
                ("x-forwarded-proto", s("https")),
                ("x-forwarded-port", s("8443")),
            ],
            client_ip: "2001:db8:ffff::7".into(),
        },
        Case {
            name: "untrusted-spoofing-over-tls",
            call: spoofing_headers(Call::tls(outsider).host("localhost")),
            expect: vec![
                ("x-forwarded-for", ip(outsider)),
                ("x-real-ip", ip(outsider)),
                ("x-forwarded-proto", s("https")),
                ("x-forwarded-host", s("localhost")),
                ("x-forwarded-port", s("8443")),
                ("forwarded", None),
                ("true-client-ip", None),
            ],
            client_ip: outsider.to_string(),
        },
        Case {
            name: "untrusted-spoofing-v6-h2",
            call: spoofing_headers(Call::tls(outsider_v6).host("localhost:8443").h2()),
            expect: vec![
                ("x-forwarded-for", ip(outsider_v6)),
                ("x-real-ip", ip(outsider_v6)),
                ("x-forwarded-proto", s("https")),
                ("x-forwarded-host", s("localhost:8443")),
                ("x-forwarded-port", s("8443")),
            ],
            client_ip: outsider_v6.to_string(),
        },
        Case {
            name: "untrusted-spoofing-plain",
            call: spoofing_headers(Call::plain(outsider).host("app.example.com")),
            expect: vec![
                ("x-forwarded-for", ip(outsider)),
                ("x-real-ip", ip(outsider)),
                ("x-forwarded-proto", s("http")),
                ("x-forwarded-host", s("app.example.com")),
                ("x-forwarded-port", s("8080")),
            ],
            client_ip: outsider.to_string(),
        },
    ]
}

#[test]
fn trusted_peers_are_believed_and_everyone_else_is_seen_as_the_peer_address() {
    let test = "trusted_peers_are_believed_and_everyone_else_is_seen_as_the_peer_address";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("fw", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backend = proxy.echo_backend("app", BACKEND_PORT);
    proxy.start(&ProxySetup {
        rest: format!("  default_service: \"127.0.0.1:{BACKEND_PORT}\"\n"),
        ..ProxySetup::default()
    });

    let cases = cases();
    let mut wrong = Vec::new();
    for case in &cases {
        let path = format!("/{}", case.name);
        let reply = proxy
            .send(&case.call.clone().path(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(reply.status, 200, "{}: {}", case.name, reply.text());
        for (header, expected) in &case.expect {
            let got = reply.upstream_header(header);
            if &got != expected {
                wrong.push(format!(
                    "{}: the backend got {header}: {got:?}, expected {expected:?}",
                    case.name
                ));
            }
        }
        if case.name.starts_with("untrusted") {
            // The spoofed address must not reach the backend in any header.
            let headers = reply.json()["headers"].to_string();
            if headers.contains("192.0.2.66") || headers.contains("evil.example") {
                wrong.push(format!(
                    "{}: a spoofed claim reached the backend: {headers}",
                    case.name
                ));
            }
            // The claim is overwritten with the peer address (every
            // untrusted case here sends one).
            let cf = reply.upstream_header("cf-connecting-ip");
            let peer = reply.upstream_header("x-forwarded-for");
            if cf.is_none() || cf != peer {
                wrong.push(format!(
                    "{}: cf-connecting-ip {cf:?} is not the peer {peer:?}",
                    case.name
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "forwarded headers:\n{}", wrong.join("\n"));

    // The access log names the client the proxy settled on, and the peer.
    let lines = wait_for(
        "an access log line for every request",
        Duration::from_secs(5),
        || access_log(&proxy.work),
        |lines| lines.len() >= cases.len(),
    );
    for case in &cases {
        let path = format!("/{}", case.name);
        let line = lines
            .iter()
            .find(|l| l["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no access log line for {path}: {lines:#?}"));
        assert_eq!(
            line["client_ip"],
            case.client_ip.as_str(),
            "access log client_ip for {}: {line}",
            case.name
        );
        assert_eq!(line["status"], 200, "{line}");
    }
}
