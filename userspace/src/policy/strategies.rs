//! proptest strategies for random, valid policies and probe addresses; used by
//! the compiler's unit tests and the kernel model test. Policies are built
//! from small address pools, so prefixes nest, overlap and collide often;
//! port bindings share a small port range so they collide too. Probes come
//! from the same pools and from the edges of a policy's prefixes, where an
//! off-by-one in a prefix length or a key's byte order would show.
//!
//! Compiled only for this crate's tests and with the `strategies` feature.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::{Binding, PolicySpec, PortRange, Tunnels};

/// Highest port a generated binding uses; probes go one above it
/// ([`UNBOUND_PORT`]), so every policy has an unbound port in the probed range.
pub const MAX_BOUND_PORT: u16 = 19;

/// A port no generated binding uses.
pub const UNBOUND_PORT: u16 = MAX_BOUND_PORT + 1;

/// Set names, deliberately not in index order, so bit order (by name) and
/// generation order differ.
pub const SET_NAMES: [&str; 6] = ["nodes", "admins", "zeta", "cloudflare", "alpha", "m"];

/// Prefix lengths of generated IPv4 prefixes (and, plus 96, of mapped ones).
pub const V4_LENGTHS: [u8; 9] = [8, 12, 16, 17, 20, 24, 28, 31, 32];

/// IPv4 addresses from a small pool inside 10.0.0.0/8, so prefixes collide and
/// nest often, and their boundaries (0, 15/16, 255) are probed.
pub fn v4_pool_addr() -> impl Strategy<Value = Ipv4Addr> {
    (
        0u8..3,
        prop::sample::select(vec![0u8, 1, 15, 16, 17, 255]),
        prop::sample::select(vec![0u8, 1, 15, 16, 200, 255]),
    )
        .prop_map(|(a, b, c)| Ipv4Addr::new(10, a, b, c))
}

/// IPv6 addresses from a small pool inside fd00::/16.
pub fn v6_pool_addr() -> impl Strategy<Value = Ipv6Addr> {
    (
        0u16..3,
        prop::sample::select(vec![0u16, 1, 0x8000]),
        prop::sample::select(vec![0u16, 1, 0xff, 0x100, 0x8000, 0xffff]),
    )
        .prop_map(|(a, b, c)| Ipv6Addr::new(0xfd00, a, b, 0, 0, 0, 0, c))
}

/// Prefixes from the pools, host bits left in (the compiler clears them).
pub fn v4_prefix() -> impl Strategy<Value = IpNet> {
    (v4_pool_addr(), prop::sample::select(V4_LENGTHS.to_vec()))
        .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(a, len).unwrap()))
}

/// IPv6 prefixes from the pool, host bits left in.
pub fn v6_prefix() -> impl Strategy<Value = IpNet> {
    (
        v6_pool_addr(),
        prop::sample::select(vec![16u8, 32, 33, 48, 64, 112, 120, 128]),
    )
        .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(a, len).unwrap()))
}

/// `::ffff:10.x.y.z/(96 + len)`: an IPv4 prefix spelt as IPv6; compiles into
/// the IPv4 map.
pub fn mapped_prefix() -> impl Strategy<Value = IpNet> {
    (v4_pool_addr(), prop::sample::select(V4_LENGTHS.to_vec()))
        .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(a.to_ipv6_mapped(), 96 + len).unwrap()))
}

/// Rare shapes: catch-alls, a v6 prefix covering the mapped range without
/// being mapped itself, prefixes outside the pools.
pub fn odd_prefix() -> impl Strategy<Value = IpNet> {
    prop::sample::select(vec![
        "0.0.0.0/0",
        "::/0",
        "::/80",
        "::ffff:0:0/96",
        "192.0.2.0/24",
        "2001:db8::/32",
        "10.0.0.0/7",
    ])
    .prop_map(|s| s.parse::<IpNet>().unwrap())
}

/// Any prefix a generated set holds: mostly from the pools, rarely odd.
pub fn prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        10 => v4_prefix(),
        8 => v6_prefix(),
        4 => mapped_prefix(),
        1 => odd_prefix(),
    ]
}

/// Probe sources from the same pools, their mapped forms, and strangers.
pub fn source() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => v4_pool_addr().prop_map(IpAddr::V4),
        3 => v6_pool_addr().prop_map(IpAddr::V6),
        2 => v4_pool_addr().prop_map(|a| IpAddr::V6(a.to_ipv6_mapped())),
        1 => prop::sample::select(vec![
            "192.0.2.1", "8.8.8.8", "11.0.0.1", "2001:db8::1", "::1", "::ffff:192.0.2.1",
            "fe80::1", "0.0.0.0",
        ])
        .prop_map(|s| s.parse::<IpAddr>().unwrap()),
    ]
}

/// A port range inside `1..=MAX_BOUND_PORT`, one to four ports wide.
pub fn port_range() -> impl Strategy<Value = PortRange> {
    (1..=MAX_BOUND_PORT, 0u16..4).prop_map(|(first, width)| PortRange {
        first,
        last: (first + width).min(MAX_BOUND_PORT),
    })
}

/// A binding: 1..4 port ranges split between TCP and UDP, from 1..3 of the
/// first `sets` of [`SET_NAMES`].
pub fn binding(sets: usize) -> impl Strategy<Value = Binding> {
    (
        prop::collection::vec((any::<bool>(), port_range()), 1..4),
        prop::collection::vec(0..sets, 1..=3),
    )
        .prop_map(|(ranges, from)| Binding {
            tcp: ranges.iter().filter(|(u, _)| !u).map(|(_, r)| *r).collect(),
            udp: ranges.iter().filter(|(u, _)| *u).map(|(_, r)| *r).collect(),
            from: from.iter().map(|i| SET_NAMES[*i].to_string()).collect(),
        })
}

/// A policy that compiles: bound sets are non-empty, denied sets are not
/// bound, tunnel sets (when tunnels are filtered) are not denied. Sets neither bound nor denied are left in (they get no bit), and
/// unbound sets may be empty.
pub fn valid_spec() -> impl Strategy<Value = PolicySpec> {
    (1usize..=6)
        .prop_flat_map(|n| {
            (
                prop::collection::vec((prop::collection::vec(prefix(), 1..12), any::<bool>()), n),
                prop::collection::vec(binding(n), 1..4),
                prop::collection::vec(0..n, 0..=2),
                any::<bool>(),
                prop::option::of(prop::collection::vec(0..n, 0..=2)),
            )
        })
        .prop_map(|(sets, allow, deny, strict, tunnels)| {
            let bound: BTreeSet<String> = allow.iter().flat_map(|b| b.from.clone()).collect();
            let sets = sets
                .into_iter()
                .enumerate()
                .map(|(i, (mut nets, emptied))| {
                    let name = SET_NAMES[i].to_string();
                    if emptied && !bound.contains(&name) {
                        nets.clear();
                    }
                    (name, nets)
                })
                .collect();
            let deny: Vec<String> = deny
                .into_iter()
                .map(|i| SET_NAMES[i].to_string())
                .filter(|s| !bound.contains(s))
                .collect();
            let tunnels = match tunnels {
                None => Tunnels::Pass,
                Some(from) => Tunnels::From(
                    from.into_iter()
                        .map(|i| SET_NAMES[i].to_string())
                        .filter(|s| !deny.contains(s))
                        .collect(),
                ),
            };
            PolicySpec {
                sets,
                allow,
                deny,
                strict,
                tunnels,
            }
        })
}

/// The first and last address of every prefix in the policy, the addresses
/// just outside it, and the IPv4-mapped forms of the IPv4 ones: where an
/// off-by-one in a prefix length or a key's byte order would show. Sorted,
/// without repeats; never empty for a [`valid_spec`] (a bound set has a
/// prefix).
pub fn edges(spec: &PolicySpec) -> Vec<IpAddr> {
    let mut edges = BTreeSet::new();
    for net in spec.sets.values().flatten() {
        match net.trunc() {
            IpNet::V4(n) => {
                let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
                for a in [first, last, first.wrapping_sub(1), last.wrapping_add(1)] {
                    edges.insert(IpAddr::V4(a.into()));
                    edges.insert(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()));
                }
            }
            IpNet::V6(n) => {
                let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
                for a in [first, last, first.wrapping_sub(1), last.wrapping_add(1)] {
                    edges.insert(IpAddr::V6(a.into()));
                }
            }
        }
    }
    edges.into_iter().collect()
}

/// Probes for a spec: the `generated` ones plus all its [`edges`], sorted,
/// without repeats.
pub fn probes_for(spec: &PolicySpec, generated: &[IpAddr]) -> Vec<IpAddr> {
    let mut probes: BTreeSet<IpAddr> = generated.iter().copied().collect();
    probes.extend(edges(spec));
    probes.into_iter().collect()
}
