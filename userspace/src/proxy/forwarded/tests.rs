//! Tests of the request and response rewriting: what an upstream sees of a
//! client's claims, from trusted and untrusted peers, and which hop-by-hop
//! headers survive.
use hyper::http::header::HeaderName;
use ipnet::IpNet;

use super::{hop_by_hop::HOP_BY_HOP, *};

pub(super) fn trusted_peers(prefixes: &[&str]) -> TrustedPeers {
    TrustedPeers::new(
        prefixes
            .iter()
            .map(|p| p.parse::<IpNet>().expect("test prefix")),
    )
}

/// Cloudflare-like trusted ranges.
fn cloudflare() -> TrustedPeers {
    trusted_peers(&["173.245.48.0/20", "104.16.0.0/13", "2400:cb00::/32"])
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for &(name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

fn get<'a>(map: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    map.get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect()
}

fn forwarding(peer: &str, trusted: &TrustedPeers) -> Forwarding {
    let peer: SocketAddr = peer.parse().expect("test peer");
    Forwarding {
        peer,
        trusted: trusted.contains(peer.ip()),
        proto: "https",
        port: 443,
    }
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test ip")
}

const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-port", "8080"),
    ("x-real-ip", "6.6.6.6"),
    ("cf-connecting-ip", "6.6.6.6"),
    ("true-client-ip", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6;proto=http"),
    ("x-forwarded-prefix", "/admin"),
];

#[test]
fn untrusted_peer_cannot_claim_anything() {
    let trusted = cloudflare();
    let mut map = headers(SPOOFED);
    map.append("accept", HeaderValue::from_static("*/*"));
    let fwd = forwarding("198.51.100.7:50000", &trusted);
    assert!(!fwd.trusted);
    let client = prepare_request(&mut map, Some("api.example.com"), None, &fwd, &trusted);
    assert_eq!(client, ip("198.51.100.7"));
    assert_eq!(get(&map, "x-forwarded-for"), ["198.51.100.7"]);
    assert_eq!(get(&map, "x-real-ip"), ["198.51.100.7"]);
    assert_eq!(get(&map, "x-forwarded-proto"), ["https"]);
    assert_eq!(get(&map, "x-forwarded-host"), ["api.example.com"]);
    assert_eq!(get(&map, "x-forwarded-port"), ["443"]);
    assert_eq!(get(&map, "cf-connecting-ip"), ["198.51.100.7"]);
    for gone in ["true-client-ip", "forwarded", "x-forwarded-prefix"] {
        assert!(map.get(gone).is_none(), "{gone} kept");
    }
    assert_eq!(get(&map, "accept"), ["*/*"]);
}

#[test]
fn untrusted_peer_without_host_gets_no_forwarded_host() {
    let trusted = TrustedPeers::default();
    let mut map = headers(&[("x-forwarded-host", "evil.example")]);
    let fwd = forwarding("198.51.100.7:50000", &trusted);
    prepare_request(&mut map, None, None, &fwd, &trusted);
    assert!(map.get("x-forwarded-host").is_none());
}

#[test]
fn trusted_peer_is_believed_through_cf_connecting_ip() {
    let trusted = cloudflare();
    let mut map = headers(&[
        ("cf-connecting-ip", "203.0.113.5"),
        ("x-forwarded-for", "203.0.113.5"),
        ("x-forwarded-proto", "https"),
        ("x-real-ip", "6.6.6.6"),
    ]);
    let fwd = Forwarding {
        proto: "http",
        port: 80,
        ..forwarding("173.245.48.10:40000", &trusted)
    };
    assert!(fwd.trusted);
    let client = prepare_request(&mut map, Some("api.example.com"), None, &fwd, &trusted);
    assert_eq!(client, ip("203.0.113.5"));
    assert_eq!(get(&map, "x-forwarded-for"), ["203.0.113.5, 173.245.48.10"]);
    assert_eq!(get(&map, "x-real-ip"), ["203.0.113.5"]);
    // Cloudflare's view of the scheme wins over this entrypoint's.
    assert_eq!(get(&map, "x-forwarded-proto"), ["https"]);
    // What Cloudflare did not say, this proxy fills in.
    assert_eq!(get(&map, "x-forwarded-host"), ["api.example.com"]);
    assert_eq!(get(&map, "x-forwarded-port"), ["80"]);
    assert_eq!(get(&map, "cf-connecting-ip"), ["203.0.113.5"]);
}

#[test]
fn trusted_peer_keeps_incoming_forwarded_host_and_port() {
    let trusted = cloudflare();
    let mut map = headers(&[
        ("x-forwarded-host", "www.example.com"),
        ("x-forwarded-port", "8443"),
    ]);
    let fwd = forwarding("173.245.48.10:40000", &trusted);
    prepare_request(&mut map, Some("origin.example.com"), None, &fwd, &trusted);
    assert_eq!(get(&map, "x-forwarded-host"), ["www.example.com"]);
    assert_eq!(get(&map, "x-forwarded-port"), ["8443"]);
    assert_eq!(get(&map, "x-forwarded-proto"), ["https"]);
}

#[test]
fn trusted_peer_client_from_forwarded_for_chain() {
    let trusted = cloudflare();
    let fwd = forwarding("173.245.48.10:40000", &trusted);
    // (X-Forwarded-For lines, client)
    let cases: &[(&[&str], &str)] = &[
        // The client may prepend anything; the entry Cloudflare added is
        // the right-most untrusted one.
        (&["6.6.6.6, 203.0.113.5"], "203.0.113.5"),
        // Trusted hops on the right are skipped.
        (&["6.6.6.6, 203.0.113.5, 104.16.0.1"], "203.0.113.5"),
        // Several lines are one list, in order.
        (&["6.6.6.6", "203.0.113.5", "104.16.0.1"], "203.0.113.5"),
        // Ports and brackets, as some proxies write them.
        (&["203.0.113.5:4711"], "203.0.113.5"),
        (&["[2001:db8::5]:4711, 104.16.0.1"], "2001:db8::5"),
        (&["[2001:db8::5]"], "2001:db8::5"),
        (&["::ffff:203.0.113.5"], "203.0.113.5"),
        // Garbage left of the believable part does not matter...
        (&["unknown, 203.0.113.5"], "203.0.113.5"),
        // ...garbage right of it ends the walk: fall back to the peer.
        (&["203.0.113.5, unknown"], "173.245.48.10"),
        (&["203.0.113.5, , 104.16.0.1"], "203.0.113.5"),
        // Only trusted hops: the peer.
        (&["104.16.0.1, 2400:cb00::1"], "173.245.48.10"),
        (&[], "173.245.48.10"),
    ];
    for &(lines, want) in cases {
        let pairs: Vec<_> = lines.iter().map(|l| ("x-forwarded-for", *l)).collect();
        let mut map = headers(&pairs);
        let client = prepare_request(&mut map, None, None, &fwd, &trusted);
        assert_eq!(client, ip(want), "{lines:?}");
        assert_eq!(get(&map, "x-real-ip"), [want], "{lines:?}");
        let mut chain: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
        chain.push("173.245.48.10");
        assert_eq!(
            get(&map, "x-forwarded-for"),
            [chain.join(", ")],
            "{lines:?}"
        );
    }
}

#[test]
fn invalid_cf_connecting_ip_falls_back_to_forwarded_for() {
    let trusted = cloudflare();
    let fwd = forwarding("173.245.48.10:40000", &trusted);
    for bad in ["not an ip", "203.0.113.5, 6.6.6.6", ""] {
        let mut map = headers(&[
            ("cf-connecting-ip", bad),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        let client = prepare_request(&mut map, None, None, &fwd, &trusted);
        assert_eq!(client, ip("203.0.113.9"), "{bad:?}");
    }
}

#[test]
fn non_utf8_values_are_ignored_not_fatal() {
    let trusted = cloudflare();
    let fwd = forwarding("173.245.48.10:40000", &trusted);
    let mut map = HeaderMap::new();
    let odd = HeaderValue::from_bytes(b"\xff\xfe").expect("obs-text is a valid value");
    map.insert("cf-connecting-ip", odd.clone());
    map.insert("x-forwarded-for", odd.clone());
    map.insert(header::CONNECTION, odd);
    let client = prepare_request(&mut map, None, None, &fwd, &trusted);
    assert_eq!(client, ip("173.245.48.10"));
    assert_eq!(
        map.get("x-forwarded-for").map(HeaderValue::as_bytes),
        Some(&b"\xff\xfe, 173.245.48.10"[..])
    );
}

#[test]
fn ipv6_and_v4_mapped_peers() {
    let trusted = cloudflare();

    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
    let mapped = forwarding("[::ffff:173.245.48.10]:40000", &trusted);
    assert!(mapped.trusted);
    let mut map = headers(&[("x-forwarded-for", "203.0.113.5")]);
    assert_eq!(
        prepare_request(&mut map, None, None, &mapped, &trusted),
        ip("203.0.113.5")
    );
    assert_eq!(get(&map, "x-forwarded-for"), ["203.0.113.5, 173.245.48.10"]);

    let mapped_untrusted = forwarding("[::ffff:198.51.100.7]:40000", &trusted);
    let mut map = HeaderMap::new();
    assert_eq!(
        prepare_request(&mut map, None, None, &mapped_untrusted, &trusted),
        ip("198.51.100.7")
    );
    assert_eq!(get(&map, "x-forwarded-for"), ["198.51.100.7"]);
    assert_eq!(get(&map, "x-real-ip"), ["198.51.100.7"]);

    let v6 = forwarding("[2400:cb00::7]:40000", &trusted);
    assert!(v6.trusted);
    let mut map = headers(&[("cf-connecting-ip", "2001:db8::5")]);
    assert_eq!(
        prepare_request(&mut map, None, None, &v6, &trusted),
        ip("2001:db8::5")
    );
    assert_eq!(get(&map, "x-forwarded-for"), ["2400:cb00::7"]);

    let v6_untrusted = forwarding("[2001:db8::66]:40000", &trusted);
    let mut map = headers(&[("cf-connecting-ip", "203.0.113.5")]);
    assert_eq!(
        prepare_request(&mut map, None, None, &v6_untrusted, &trusted),
        ip("2001:db8::66")
    );
    assert_eq!(get(&map, "x-real-ip"), ["2001:db8::66"]);
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let trusted = TrustedPeers::default();
    let fwd = forwarding("198.51.100.7:50000", &trusted);
    let mut map = headers(&[
        ("connection", "keep-alive, X-Secret-Hop"),
        ("connection", "x-other-hop, host"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("proxy-authenticate", "Basic"),
        ("te", "gzip"),
        ("trailer", "x-checksum"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("x-secret-hop", "1"),
        ("x-other-hop", "1"),
        ("host", "api.example.com"),
        ("authorization", "Bearer t"),
    ]);
    prepare_request(&mut map, Some("api.example.com"), None, &fwd, &trusted);
    for gone in HOP_BY_HOP.iter().chain(&["x-secret-hop", "x-other-hop"]) {
        assert!(map.get(*gone).is_none(), "{gone} kept");
    }
    assert_eq!(get(&map, "host"), ["api.example.com"]);
    assert_eq!(get(&map, "authorization"), ["Bearer t"]);
}

#[test]
fn te_trailers_survives_for_grpc() {
    let trusted = TrustedPeers::default();
    let fwd = forwarding("198.51.100.7:50000", &trusted);
    let mut map = headers(&[("te", "gzip, trailers")]);
    prepare_request(&mut map, None, None, &fwd, &trusted);
    assert_eq!(get(&map, "te"), ["trailers"]);
}

#[test]
fn upgrade_requests_keep_connection_upgrade() {
    let trusted = TrustedPeers::default();
    let fwd = forwarding("198.51.100.7:50000", &trusted);
    let mut map = headers(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]);
    let upgrade = map.get(header::UPGRADE).cloned();
    prepare_request(&mut map, None, upgrade.as_ref(), &fwd, &trusted);
    assert_eq!(get(&map, "connection"), ["upgrade"]);
    assert_eq!(get(&map, "upgrade"), ["websocket"]);
    assert_eq!(get(&map, "sec-websocket-key"), ["dGhlIHNhbXBsZSBub25jZQ=="]);
}

#[test]
fn response_hop_by_hop_headers_are_removed() {
    let mut map = headers(&[
        ("connection", "close, x-hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("content-type", "text/plain"),
    ]);
    strip_response(&mut map, false);
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(map.get(gone).is_none(), "{gone} kept");
    }
    assert_eq!(get(&map, "content-type"), ["text/plain"]);
}

#[test]
fn switching_protocols_response_keeps_upgrade() {
    let mut map = headers(&[
        ("connection", "Upgrade, x-hop"),
        ("upgrade", "websocket"),
        ("x-hop", "1"),
        ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]);
    strip_response(&mut map, true);
    assert_eq!(get(&map, "connection"), ["upgrade"]);
    assert_eq!(get(&map, "upgrade"), ["websocket"]);
    assert!(map.get("x-hop").is_none());
    assert_eq!(
        get(&map, "sec-websocket-accept"),
        ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
    );
}

/// Every claim in the list, each sent twice and in upper case, from an
/// untrusted peer: none of the client's values reaches the upstream, and
/// the claims this proxy sets carry only what it saw.
#[test]
fn every_client_claim_from_an_untrusted_peer_is_replaced_or_removed() {
    let trusted = cloudflare();
    let spoofed: Vec<(String, &str)> = CLIENT_CLAIMS
        .iter()
        .flat_map(|name| {
            [
                (name.to_uppercase(), "6.6.6.6"),
                (name.to_string(), "7.7.7.7"),
            ]
        })
        .collect();
    let pairs: Vec<(&str, &str)> = spoofed.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let mut map = headers(&pairs);
    let fwd = forwarding("198.51.100.7:50000", &trusted);
    prepare_request(&mut map, Some("api.example.com"), None, &fwd, &trusted);
    for (name, value) in map.iter() {
        let value = value.to_str().expect("ascii");
        assert!(
            !value.contains("6.6.6.6") && !value.contains("7.7.7.7"),
            "{name}: {value} reached the upstream"
        );
    }
    // The names the proxy writes are claims it strips first.
    for set in [
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        X_FORWARDED_PORT,
        X_REAL_IP,
        CF_CONNECTING_IP,
    ] {
        assert!(CLIENT_CLAIMS.contains(&set.as_str()), "{set} not stripped");
        assert_eq!(map.get_all(&set).iter().count(), 1, "{set}");
    }
}

/// A trusted peer's request that carries a single-valued claim twice is
/// named, whichever claim it is and however it was spelled.
#[test]
fn a_repeated_single_claim_is_named() {
    for name in SINGLE_CLAIMS {
        let map = headers(&[
            ("accept", "*/*"),
            (&name.to_uppercase(), "1.1.1.1"),
            (name, "2.2.2.2"),
        ]);
        assert_eq!(repeated_claim(&map), Some(name));
        let once = headers(&[(name, "1.1.1.1"), ("x-forwarded-for", "1.1.1.1")]);
        let twice_list = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        assert_eq!(repeated_claim(&once), None, "{name} once");
        assert_eq!(
            repeated_claim(&twice_list),
            None,
            "X-Forwarded-For is a list"
        );
    }
}
