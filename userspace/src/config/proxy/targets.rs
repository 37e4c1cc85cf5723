//! The network names of the proxy section as text: upstream `host:port`
//! targets, the hosts and paths routes match, and whether two listen
//! addresses would fight over one socket. Pure functions over strings; each
//! error is a sentence for the proxy section's reader to place at a key and line.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// RFC 1035: a name is at most 253 characters written out, a label 63.
const MAX_DNS_NAME: usize = 253;
const MAX_DNS_LABEL: usize = 63;

/// An upstream `host:port`: a DNS name (a trailing dot is allowed, to skip
/// the resolver's search list), an IPv4 address, or an IPv6 address in
/// brackets; port 1-65535. Returns the target trimmed, as written otherwise.
pub(crate) fn target(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.contains("://") {
        return Err(format!(
            "`{text}` has a scheme: write only host:port, like api.default.svc.cluster.local:8000"
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` has no port: write host:port, like {text}:8000"
        ));
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "`{text}`: an IPv6 address goes in brackets, like [fd00::1]:8000"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => {}
        _ => return Err(format!("`{port}` in `{text}` is not a port (1-65535)")),
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().is_ok(),
        None => {
            host.parse::<Ipv4Addr>().is_ok() || dns_name(host.strip_suffix('.').unwrap_or(host))
        }
    };
    if !host_ok {
        return Err(format!(
            "`{host}` in `{text}` is not a host name or IP address (write host:port, like \
             api.default.svc.cluster.local:8000, 10.0.0.5:8000 or [fd00::1]:8000)"
        ));
    }
    Ok(text.to_string())
}

/// The host a route matches, lowercased: a DNS name, or `*.` and a DNS name
/// (one wildcard label, leftmost).
pub(crate) fn route_host(text: &str) -> Result<String, String> {
    let host = text.trim().to_ascii_lowercase();
    if host.contains("://") {
        return Err(format!(
            "`{text}` has a scheme: a route matches the host name only, like api.example.com"
        ));
    }
    if host.contains('/') {
        return Err(format!(
            "`{text}` has a path: give the host name here and the path in `path`"
        ));
    }
    if host == "*" {
        return Err("`*` is every host: leave `host` out to match any host".to_string());
    }
    if host.starts_with('[') || host.parse::<Ipv6Addr>().is_ok() {
        return Err(format!(
            "`{text}` is an IPv6 address, not a host name a route can match; leave `host` out \
             to match any host"
        ));
    }
    if let Some((name, _port)) = host.rsplit_once(':') {
        return Err(format!(
            "`{text}` has a port: a route matches the host name without its port; write \
             `{name}` (entrypoints choose the ports)"
        ));
    }
    let name = host.strip_prefix("*.").unwrap_or(&host);
    if name.contains('*') {
        return Err(format!(
            "`{text}`: a wildcard is one `*` label at the left, like *.example.com"
        ));
    }
    if !dns_name(name) {
        return Err(format!(
            "`{text}` is not a host name like api.example.com or *.example.com (letters, digits \
             and `-` in dot-separated labels; internationalized names in their xn-- form)"
        ));
    }
    Ok(host)
}

/// A route path: starts with `/`, and is only a path.
pub(crate) fn route_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "`{text}` does not start with `/`; write /{}",
            text.trim_start_matches('/')
        ));
    }
    if text.contains(['?', '#']) {
        return Err(format!(
            "`{text}` has a query or fragment: a route matches the path only"
        ));
    }
    if text.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{text}` contains spaces or control characters"));
    }
    Ok(text.to_string())
}

/// Letters, digits and `-` (not first or last) in labels of 1-63, at most
/// 253 in all, no empty label.
fn dns_name(name: &str) -> bool {
    (1..=MAX_DNS_NAME).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=MAX_DNS_LABEL).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Whether two listeners would fight over one socket: the same port, and the
/// same address or one that takes the port on every address of the other's
/// family. `[::]` is bound dual stack, so it takes IPv4 too. Port 0 asks the
/// kernel for a free port and never collides.
pub(super) fn listen_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

fn covers(wide: IpAddr, other: IpAddr) -> bool {
    match wide {
        IpAddr::V6(wide) => wide.is_unspecified(),
        IpAddr::V4(wide) => wide.is_unspecified() && other.is_ipv4(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_host_and_port() {
        for good in [
            "api.honeydue.svc.cluster.local:8000",
            "api.honeydue.svc.cluster.local.:8000",
            "localhost:1",
            "10.0.0.5:65535",
            "[fd00::1]:8000",
            "API.Example.com:80",
        ] {
            assert_eq!(target(good).as_deref(), Ok(good), "{good}");
        }
        for (bad, says) in [
            ("api", "has no port"),
            ("http://api:80", "has a scheme"),
            ("api:0", "is not a port"),
            ("api:65536", "is not a port"),
            ("api:http", "is not a port"),
            ("fd00::1:8000", "in brackets"),
            ("[fd00::zz]:8000", "is not a host name"),
            ("-api:8000", "is not a host name"),
            ("a..b:8000", "is not a host name"),
            (":8000", "is not a host name"),
            ("my_api:8000", "is not a host name"),
        ] {
            let e = target(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn route_hosts_are_names_or_one_leftmost_wildcard() {
        assert_eq!(route_host("API.Example.COM").unwrap(), "api.example.com");
        assert_eq!(route_host("*.example.com").unwrap(), "*.example.com");
        assert_eq!(route_host("203.0.113.7").unwrap(), "203.0.113.7");
        for (bad, says) in [
            ("api.example.com:443", "write `api.example.com`"),
            ("https://api.example.com", "has a scheme"),
            ("api.example.com/v1", "has a path"),
            ("*", "every host"),
            ("a.*.example.com", "a wildcard is one `*` label"),
            ("*.*.example.com", "a wildcard is one `*` label"),
            ("*example.com", "a wildcard is one `*` label"),
            ("bücher.example", "xn--"),
            ("[::1]", "IPv6"),
            ("api.example.com.", "is not a host name"),
            (&format!("{}.com", "a".repeat(64)), "is not a host name"),
        ] {
            let e = route_host(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn route_paths_start_with_a_slash_and_have_no_query() {
        assert_eq!(route_path("/api/v1").unwrap(), "/api/v1");
        assert!(route_path("api").unwrap_err().contains("write /api"));
        assert!(route_path("/a?b=1").unwrap_err().contains("query"));
        assert!(route_path("/a b").unwrap_err().contains("spaces"));
    }

    #[test]
    fn listeners_overlap_on_one_port_when_one_address_covers_the_other() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listen_overlap(a("[::]:443"), a("[::]:443")));
        assert!(
            listen_overlap(a("[::]:443"), a("0.0.0.0:443")),
            "dual stack"
        );
        assert!(listen_overlap(a("10.0.0.1:443"), a("[::]:443")));
        assert!(listen_overlap(a("0.0.0.0:9901"), a("127.0.0.1:9901")));
        assert!(!listen_overlap(a("0.0.0.0:443"), a("[::1]:443")));
        assert!(!listen_overlap(a("10.0.0.1:443"), a("10.0.0.2:443")));
        assert!(!listen_overlap(a("[::]:443"), a("[::]:8443")));
        assert!(!listen_overlap(a("127.0.0.1:0"), a("127.0.0.1:0")));
    }
}
