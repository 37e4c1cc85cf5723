//! Forwarded headers and hop-by-hop headers: what a request's headers become
//! on the way to the upstream, who the client is, and what an upstream
//! response's headers become on the way back. Claims about the client
//! (`X-Forwarded-*`, `X-Real-IP`, `CF-Connecting-IP`, `Forwarded`) are
//! believed only from trusted peers (Cloudflare, in the reference
//! deployment); from anyone else they are replaced by what this proxy saw.
//! Pure header surgery: no I/O, no policy beyond that.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use hyper::http::{
    header::{self, HeaderName},
    HeaderMap, HeaderValue,
};
use ipnet::IpNet;

/// The peers whose forwarded headers are believed: the union of the trusted
/// sets' prefixes. Cheap to clone; the default trusts nobody.
#[derive(Clone, Debug, Default)]
pub struct TrustedPeers {
    /// Sorted, disjoint, inclusive address ranges.
    v4: Arc<[(u32, u32)]>,
    v6: Arc<[(u128, u128)]>,
}

impl TrustedPeers {
    /// An IPv4-mapped IPv6 prefix (`::ffff:10.0.0.0/104`) counts as the IPv4
    /// prefix it spells, and a mapped address is looked up as IPv4 (as the
    /// filter judges them); so `::/0` does not cover IPv4 peers.
    pub fn new(prefixes: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in prefixes {
            match net {
                IpNet::V4(net) => v4.push((u32::from(net.network()), u32::from(net.broadcast()))),
                IpNet::V6(net) => {
                    let mapped = (net.prefix_len() >= 96)
                        .then(|| {
                            net.network()
                                .to_ipv4_mapped()
                                .zip(net.broadcast().to_ipv4_mapped())
                        })
                        .flatten();
                    match mapped {
                        Some((first, last)) => v4.push((u32::from(first), u32::from(last))),
                        None => v6.push((u128::from(net.network()), u128::from(net.broadcast()))),
                    }
                }
            }
        }
        TrustedPeers {
            v4: merge_ranges(v4).into(),
            v6: merge_ranges(v6).into(),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => in_ranges(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6, u128::from(v6)),
        }
    }

    /// True when nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

fn merge_ranges<T: Ord + Copy>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(prev) if first <= prev.1 => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= x);
    after > 0 && x <= ranges[after - 1].1
}

/// What the proxy knows about the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarding {
    pub peer: SocketAddr,
    /// The peer is in the trusted sets.
    pub trusted: bool,
    /// `"http"` or `"https"`: the entrypoint's scheme.
    pub proto: &'static str,
    /// The entrypoint's local port.
    pub port: u16,
}

/// RFC 9110 7.6.1, plus the non-standard ones proxies have always removed.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    // h2c's upgrade settings: meaningless on any other hop.
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PORT: &str = "x-forwarded-port";
const X_REAL_IP: &str = "x-real-ip";
const CF_CONNECTING_IP: &str = "cf-connecting-ip";

/// Claims about the client or the original request that only a trusted peer
/// may make. Beyond the ones this proxy sets, this covers what Traefik (which
/// this proxy replaces) strips, and Cloudflare's other client-address
/// headers, since upstream applications may believe any of them.
const CLIENT_CLAIMS: [&str; 16] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_REAL_IP,
    CF_CONNECTING_IP,
    "forwarded",
    "cf-connecting-ipv6",
    "true-client-ip",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
];

/// Rewrites a request's headers for the upstream and returns the client IP
/// (IPv4-mapped addresses as IPv4).
///
///  - removes hop-by-hop headers: Connection, Keep-Alive, Proxy-Connection,
///    Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
///    Transfer-Encoding, Upgrade, and every header named in Connection
///    (except Host); keeps `TE: trailers` when the client sent it (gRPC
///    needs it end to end); if `upgrade` is Some (a WebSocket/Upgrade request
///    the caller will pass through), sets `Connection: upgrade` +
///    `Upgrade: <value>`;
///  - from an untrusted peer: drops every incoming claim about the client
///    (`X-Forwarded-*`, `X-Real-IP`, `CF-Connecting-IP`, `Forwarded`,
///    `True-Client-IP`...) and sets X-Forwarded-For = peer ip, X-Real-IP =
///    peer ip, X-Forwarded-Proto = proto, X-Forwarded-Host = host,
///    X-Forwarded-Port = port;
///  - from a trusted peer: the client IP is CF-Connecting-IP if present and
///    valid, else the right-most untrusted address of X-Forwarded-For
///    (walking from the right, skipping trusted addresses, stopping at an
///    unparseable one), else the peer; appends the peer to X-Forwarded-For;
///    keeps incoming X-Forwarded-Proto/-Host/-Port if present (else sets
///    them); X-Real-IP = client IP;
///  - malformed values (unparseable IPs) are ignored, never fatal.
pub fn prepare_request(
    headers: &mut HeaderMap,
    host: Option<&str>,
    upgrade: Option<&HeaderValue>,
    fwd: &Forwarding,
    trusted: &TrustedPeers,
) -> IpAddr {
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| has_token(v, "trailers"));
    remove_hop_by_hop(headers);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        set_upgrade(headers, upgrade.clone());
    }

    let peer = fwd.peer.ip().to_canonical();
    let client = if fwd.trusted {
        let client = cf_connecting_ip(headers)
            .or_else(|| rightmost_untrusted(headers, trusted))
            .unwrap_or(peer);
        append_forwarded_for(headers, peer);
        set_if_absent(
            headers,
            X_FORWARDED_PROTO,
            HeaderValue::from_str(fwd.proto).ok(),
        );
        set_if_absent(
            headers,
            X_FORWARDED_HOST,
            host.and_then(|h| HeaderValue::from_str(h).ok()),
        );
        set_if_absent(headers, X_FORWARDED_PORT, Some(HeaderValue::from(fwd.port)));
        client
    } else {
        // A CF-Connecting-IP claim is overwritten with the peer rather than
        // dropped: applications written for Cloudflare read it, and must
        // read the truth.
        let claimed_cf = headers.contains_key(CF_CONNECTING_IP);
        for name in CLIENT_CLAIMS {
            headers.remove(name);
        }
        if claimed_cf {
            insert_ip(headers, CF_CONNECTING_IP, peer);
        }
        insert_ip(headers, X_FORWARDED_FOR, peer);
        if let Ok(proto) = HeaderValue::from_str(fwd.proto) {
            headers.insert(X_FORWARDED_PROTO, proto);
        }
        if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(X_FORWARDED_HOST, host);
        }
        headers.insert(X_FORWARDED_PORT, HeaderValue::from(fwd.port));
        peer
    };
    insert_ip(headers, X_REAL_IP, client);
    client
}

/// Claims that name one client, one scheme, one host or one port: a second
/// line of any of them makes the request mean two things (the first decides
/// here, an upstream may read the last). `X-Forwarded-For` and `Forwarded`
/// are lists and may repeat.
const SINGLE_CLAIMS: [&str; 7] = [
    CF_CONNECTING_IP,
    "cf-connecting-ipv6",
    X_REAL_IP,
    "true-client-ip",
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
];

/// The first single-valued client claim that a trusted peer's request
/// carries more than once (the request is refused), if any.
pub fn repeated_claim(headers: &HeaderMap) -> Option<&'static str> {
    SINGLE_CLAIMS
        .into_iter()
        .find(|name| headers.get_all(*name).iter().nth(1).is_some())
}

/// Removes hop-by-hop headers from an upstream response (keeping
/// `Connection: upgrade` and `Upgrade` for a 101 Switching Protocols when
/// `switching` is true).
pub fn strip_response(headers: &mut HeaderMap, switching: bool) {
    let upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        set_upgrade(headers, upgrade);
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        // Host is never hop-by-hop; removing it would change the upstream's
        // idea of which site was asked for.
        .filter(|name| name != header::HOST)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn set_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',').any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(token)
        })
    })
}

fn cf_connecting_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get(CF_CONNECTING_IP)?.to_str().ok()?;
    value
        .trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The nearest address in X-Forwarded-For that is not one of our trusted
/// proxies. An unparseable entry ends the walk: whatever is left of it was
/// not written by a proxy we can vouch for.
fn rightmost_untrusted(headers: &HeaderMap, trusted: &TrustedPeers) -> Option<IpAddr> {
    let entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    for entry in entries.into_iter().rev() {
        let ip = parse_forwarded_ip(entry)?;
        if !trusted.contains(ip) {
            return Some(ip);
        }
    }
    None
}

/// `192.0.2.1`, `2001:db8::1`, and the forms some proxies write with a port
/// or brackets: `192.0.2.1:4711`, `[2001:db8::1]:4711`, `[2001:db8::1]`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

/// Joins every incoming X-Forwarded-For line into one and appends `peer`.
fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let mut joined = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            joined.extend_from_slice(value);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(peer.to_string().as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(value) => {
            headers.insert(X_FORWARDED_FOR, value);
        }
        Err(_) => insert_ip(headers, X_FORWARDED_FOR, peer),
    }
}

fn set_if_absent(headers: &mut HeaderMap, name: &'static str, value: Option<HeaderValue>) {
    let present = headers.get(name).is_some_and(|v| !v.is_empty());
    if let (false, Some(value)) = (present, value) {
        headers.insert(name, value);
    }
}

fn insert_ip(headers: &mut HeaderMap, name: &'static str, ip: IpAddr) {
    if let Ok(value) = HeaderValue::from_str(&ip.to_string()) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trusted_peers(prefixes: &[&str]) -> TrustedPeers {
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

    fn ip(s: &str) -> IpAddr {
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

    #[test]
    fn trusted_peers_union_of_prefixes() {
        let peers = trusted_peers(&[
            "10.0.0.0/8",
            "10.1.0.0/16",  // inside the previous one
            "192.0.2.0/25", // adjacent to the next one
            "192.0.2.128/25",
            "203.0.113.7/32",
            "198.51.100.77/24", // host bits set
            "2001:db8::/32",
            "::ffff:100.64.0.0/106", // an IPv4 prefix spelt as IPv6
            "::/0",                  // all of IPv6, not IPv4
        ]);
        for inside in [
            "10.0.0.0",
            "10.255.255.255",
            "192.0.2.0",
            "192.0.2.255",
            "203.0.113.7",
            "198.51.100.0",
            "198.51.100.255",
            "100.64.0.1",
            "::ffff:100.64.0.1",
            "::ffff:10.2.3.4",
            "2001:db8::1",
            "fe80::1",
        ] {
            assert!(peers.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "9.255.255.255",
            "11.0.0.0",
            "192.0.3.0",
            "203.0.113.6",
            "203.0.113.8",
            "100.128.0.0",
            "::ffff:11.0.0.1",
        ] {
            assert!(!peers.contains(ip(outside)), "{outside}");
        }
        let nobody = TrustedPeers::default();
        assert!(nobody.is_empty());
        assert!(!nobody.contains(ip("10.0.0.1")));
        assert!(!nobody.contains(ip("::1")));
    }

    fn v4_net() -> impl Strategy<Value = IpNet> {
        // Few distinct top bytes, so that prefixes overlap and nest.
        (0u8..4, any::<u32>(), 0u8..=32).prop_map(|(top, rest, len)| {
            let addr = (u32::from(top) << 24 | rest >> 8).into();
            IpNet::V4(ipnet::Ipv4Net::new(addr, len).expect("len <= 32"))
        })
    }

    proptest! {
        #[test]
        fn contains_agrees_with_a_linear_scan(
            nets in prop::collection::vec(v4_net(), 0..2000),
            probes in prop::collection::vec((0u8..4, any::<u32>()), 200),
        ) {
            let peers = TrustedPeers::new(nets.iter().copied());
            for (top, rest) in probes {
                let addr = IpAddr::V4((u32::from(top) << 24 | rest >> 8).into());
                let expected = nets.iter().any(|n| n.contains(&addr));
                prop_assert_eq!(peers.contains(addr), expected, "{}", addr);
            }
        }
    }

    const _: fn() = || {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<TrustedPeers>();
    };
}
