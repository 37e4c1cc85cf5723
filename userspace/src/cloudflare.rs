//! Cloudflare's published address ranges: the embedded, dated snapshot that is
//! the default `cloudflare` set. Refreshing it from Cloudflare's API is the
//! sets subsystem's job, not this module's.
use ipnet::IpNet;

/// When the embedded list was taken. Cloudflare's list has been stable for
/// years; the sets subsystem replaces it with the live list when it can.
pub const SNAPSHOT_DATE: &str = "2026-11";

/// <https://www.cloudflare.com/ips-v4>, 15 prefixes.
pub const IPV4: [&str; 15] = [
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
];

/// <https://www.cloudflare.com/ips-v6>, 7 prefixes.
pub const IPV6: [&str; 7] = [
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// The snapshot as prefixes.
pub fn snapshot() -> Vec<IpNet> {
    IPV4.iter()
        .chain(IPV6.iter())
        .map(|s| s.parse().expect("embedded Cloudflare prefix parses"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_has_every_published_prefix() {
        let nets = super::snapshot();
        assert_eq!(
            nets.iter()
                .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
                .count(),
            15
        );
        assert_eq!(
            nets.iter()
                .filter(|n| matches!(n, ipnet::IpNet::V6(_)))
                .count(),
            7
        );
        assert!(
            nets.iter().all(|n| n.trunc() == *n),
            "no host bits in the snapshot"
        );
    }
}
