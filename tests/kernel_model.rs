//! The kernel against the model: random policies (nested, overlapping and
//! IPv4-mapped prefixes, colliding port bindings, deny sets, strict or not)
//! are compiled, written into the real XDP program's maps, and probed with
//! SYNs, ACKs and UDP datagrams through `BPF_PROG_TEST_RUN`. Every verdict
//! must be the plain reading of the policy ([`naive_allows`]: is the source
//! in a set bound to the port?) and every counted reason must say why. One
//! program serves all cases, each policy swapped in over the last, so the
//! double-buffered slot rewriting (diffs of tries and port arrays) is under
//! test too. Needs CAP_BPF + CAP_NET_ADMIN (root); skips saying so otherwise.
use std::{
    cell::RefCell,
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestError, TestRunner},
};
use xdpgate::policy::{compile, naive_allows, Binding, PolicySpec, PortRange};
use xdpgate_common::{Family, Reason};
use xdpgate_tests::{have_bpf_privileges, Flags, Harness, Packet, XDP_DROP, XDP_PASS};

/// Generated bindings use ports 1..=19; probes also go to 20, never bound.
const MAX_BOUND_PORT: u16 = 19;
const UNBOUND_PORT: u16 = MAX_BOUND_PORT + 1;

/// Set names, deliberately not in index order, so bit order (by name) and
/// generation order differ.
const SET_NAMES: [&str; 6] = ["nodes", "admins", "zeta", "cloudflare", "alpha", "m"];
const V4_LENGTHS: [u8; 9] = [8, 12, 16, 17, 20, 24, 28, 31, 32];

/// IPv4 addresses from a small pool inside 10.0.0.0/8, so prefixes collide and
/// nest often and probes land on their edges.
fn v4_pool_addr() -> impl Strategy<Value = Ipv4Addr> {
    (
        0u8..3,
        prop::sample::select(vec![0u8, 1, 15, 16, 17, 255]),
        prop::sample::select(vec![0u8, 1, 15, 16, 200, 255]),
    )
        .prop_map(|(a, b, c)| Ipv4Addr::new(10, a, b, c))
}

/// IPv6 addresses from a small pool inside fd00::/16.
fn v6_pool_addr() -> impl Strategy<Value = Ipv6Addr> {
    (
        0u16..3,
        prop::sample::select(vec![0u16, 1, 0x8000]),
        prop::sample::select(vec![0u16, 1, 0xff, 0x100, 0x8000, 0xffff]),
    )
        .prop_map(|(a, b, c)| Ipv6Addr::new(0xfd00, a, b, 0, 0, 0, 0, c))
}

fn prefix() -> impl Strategy<Value = IpNet> {
    let v4 = (v4_pool_addr(), prop::sample::select(V4_LENGTHS.to_vec()))
        .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(a, len).unwrap()));
    let v6 = (
        v6_pool_addr(),
        prop::sample::select(vec![16u8, 32, 33, 48, 64, 112, 120, 128]),
    )
        .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(a, len).unwrap()));
    // `::ffff:10.x.y.z/(96 + len)`: an IPv4 prefix spelt as IPv6.
    let mapped = (v4_pool_addr(), prop::sample::select(V4_LENGTHS.to_vec()))
        .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(a.to_ipv6_mapped(), 96 + len).unwrap()));
    let odd = prop::sample::select(vec![
        "0.0.0.0/0",
        "::/0",
        "::/80",
        "::ffff:0:0/96",
        "192.0.2.0/24",
        "2001:db8::/32",
        "10.0.0.0/7",
    ])
    .prop_map(|s| s.parse::<IpNet>().unwrap());
    prop_oneof![10 => v4, 8 => v6, 4 => mapped, 1 => odd]
}

/// Probe sources from the same pools, their mapped forms, and strangers.
fn source() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => v4_pool_addr().prop_map(IpAddr::V4),
        3 => v6_pool_addr().prop_map(IpAddr::V6),
        2 => v4_pool_addr().prop_map(|a| IpAddr::V6(a.to_ipv6_mapped())),
        1 => prop::sample::select(vec![
            "192.0.2.1", "8.8.8.8", "11.0.0.1", "2001:db8::1", "::1", "::ffff:192.0.2.1",
            "fe80::1",
        ])
        .prop_map(|s| s.parse::<IpAddr>().unwrap()),
    ]
}

/// What a probe sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A TCP connection attempt.
    Syn,
    /// A TCP segment of an established connection: only strict mode judges it.
    Ack,
    Udp,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    src: IpAddr,
    kind: Kind,
    port: u16,
}

/// The first and last address of every prefix in the policy, the addresses
/// just outside it, and the IPv4-mapped forms of the IPv4 ones: where an
/// off-by-one in a prefix length or a key's byte order would show.
fn edges(spec: &PolicySpec) -> Vec<IpAddr> {
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

/// A probe from the pools or from the policy's edges.
fn probe(edges: Vec<IpAddr>) -> impl Strategy<Value = Probe> {
    (
        prop_oneof![source(), prop::sample::select(edges)],
        prop_oneof![4 => Just(Kind::Syn), 1 => Just(Kind::Ack), 3 => Just(Kind::Udp)],
        1..=UNBOUND_PORT,
    )
        .prop_map(|(src, kind, port)| Probe { src, kind, port })
}

fn port_range() -> impl Strategy<Value = PortRange> {
    (1..=MAX_BOUND_PORT, 0u16..4).prop_map(|(first, width)| PortRange {
        first,
        last: (first + width).min(MAX_BOUND_PORT),
    })
}

fn binding(sets: usize) -> impl Strategy<Value = Binding> {
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

/// A policy that compiles: bound sets are non-empty and never denied.
fn valid_spec() -> impl Strategy<Value = PolicySpec> {
    (1usize..=6)
        .prop_flat_map(|n| {
            (
                prop::collection::vec((prop::collection::vec(prefix(), 1..12), any::<bool>()), n),
                prop::collection::vec(binding(n), 1..4),
                prop::collection::vec(0..n, 0..=2),
                any::<bool>(),
            )
        })
        .prop_map(|(sets, allow, deny, strict)| {
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
            let deny = deny
                .into_iter()
                .map(|i| SET_NAMES[i].to_string())
                .filter(|s| !bound.contains(s))
                .collect();
            PolicySpec {
                sets,
                allow,
                deny,
                strict,
            }
        })
}

/// The (action, reason) the model expects for `probe`.
fn expected(spec: &PolicySpec, probe: &Probe) -> (u32, Reason) {
    let udp = probe.kind == Kind::Udp;
    let allowed = naive_allows(spec, udp, probe.port, probe.src);
    // On a port no rule binds, only a deny set can refuse a source.
    let denied = !naive_allows(spec, udp, UNBOUND_PORT, probe.src);
    let bound = spec.allow.iter().any(|b| {
        let ranges = if udp { &b.udp } else { &b.tcp };
        ranges.iter().any(|r| r.ports().any(|p| p == probe.port))
    });
    let reason = if denied {
        Reason::DropDeny
    } else if !bound {
        Reason::PassUnboundPort
    } else if probe.kind == Kind::Ack && !spec.strict {
        Reason::PassNotSyn
    } else if allowed {
        Reason::PassMember
    } else if udp {
        Reason::DropNotMemberUdp
    } else {
        Reason::DropNotMemberTcp
    };
    let action = if reason.is_drop() { XDP_DROP } else { XDP_PASS };
    (action, reason)
}

fn frame(probe: &Probe) -> Vec<u8> {
    let src = probe.src.to_string();
    match probe.kind {
        Kind::Syn => Packet::tcp(&src, probe.port, Flags::Syn).build(),
        Kind::Ack => Packet::tcp(&src, probe.port, Flags::Ack).build(),
        Kind::Udp => Packet::udp(&src, probe.port).build(),
    }
}

#[test]
fn kernel_verdict_matches_the_naive_model() {
    if !have_bpf_privileges("kernel_verdict_matches_the_naive_model") {
        return;
    }
    let harness = RefCell::new(Harness::new());
    let config = ProptestConfig {
        cases: 48,
        // Failing inputs are printed, shrunk; nothing is written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = valid_spec().prop_flat_map(|spec| {
        let probes = prop::collection::vec(probe(edges(&spec)), 40);
        (Just(spec), probes)
    });
    let result = runner.run(&strategy, |(spec, probes)| {
        let policy = compile(&spec)
            .map_err(|e| TestCaseError::fail(format!("a valid policy is rejected: {e}")))?;
        let mut harness = harness.borrow_mut();
        harness.filter.apply(&policy).expect("policy applies");
        let mut wrong = Vec::new();
        for probe in &probes {
            let frame = frame(probe);
            let outcome = harness.run(&frame);
            let mut problems = Vec::new();
            // The property itself: dropped exactly when the model refuses.
            // ACKs are connection attempts only under strict.
            if probe.kind != Kind::Ack || spec.strict {
                let udp = probe.kind == Kind::Udp;
                let model_drops = !naive_allows(&spec, udp, probe.port, probe.src);
                if (outcome.action == XDP_DROP) != model_drops {
                    problems.push(format!(
                        "kernel action {}, the model says {}",
                        outcome.action,
                        if model_drops { "drop" } else { "pass" }
                    ));
                }
            }
            // And the counter says why.
            let family = match probe.src {
                IpAddr::V4(_) => Family::Ipv4,
                IpAddr::V6(_) => Family::Ipv6,
            };
            let (action, reason) = expected(&spec, probe);
            let want = (action, (reason, family), frame.len() as u64);
            let got = (outcome.action, outcome.counted, outcome.bytes);
            if want != got {
                problems.push(format!("want {want:?}, got {got:?}"));
            }
            if !problems.is_empty() {
                wrong.push(format!(
                    "{probe:?}: {} (compiled masks: tcp port {:?}, udp port {:?}, source {:#x})",
                    problems.join("; "),
                    policy.tcp_ports.get(&probe.port),
                    policy.udp_ports.get(&probe.port),
                    policy.lookup(probe.src)
                ));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{} of {} probes wrong (action, (reason, family), bytes):\n  {}",
                wrong.len(),
                probes.len(),
                wrong.join("\n  ")
            )))
        }
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (spec, probes))) => {
            panic!("{why}\nminimal policy: {spec:#?}\nprobes: {probes:#?}")
        }
        Err(e) => panic!("{e}"),
    }
}
