//! The trusted peers: the addresses whose forwarded headers are believed,
//! kept as sorted, merged ranges so that a lookup per request is a binary
//! search however many prefixes the trusted sets hold. What a trusted peer
//! may claim is the parent module's business, not this one's.
use std::{net::IpAddr, sync::Arc};

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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proxy::forwarded::tests::{ip, trusted_peers};

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
