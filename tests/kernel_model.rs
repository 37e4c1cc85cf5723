//! The kernel against the model: random policies (nested, overlapping and
//! IPv4-mapped prefixes, colliding port bindings, deny sets, strict or not)
//! are compiled, written into the real XDP program's maps, and probed with
//! SYNs, ACKs and UDP datagrams through `BPF_PROG_TEST_RUN`, plain or in the
//! shapes an attacker reaches for: behind 0 to 8 VID-0 tags (or too many),
//! as tiny first fragments that show the port but not the flags, IPv6
//! extension chains past the walk bound, and tunnel protocols. Every verdict
//! must be the plain reading of the policy ([`naive_allows`]: is the source
//! in a set bound to the port?, [`naive_allows_tunnel`]) whatever the shape,
//! and every counted reason must say why. One
//! program serves all cases, each policy swapped in over the last, so the
//! double-buffered slot rewriting (diffs of tries and port arrays) is under
//! test too. Needs CAP_BPF + CAP_NET_ADMIN (root); skips saying so otherwise.
use std::{cell::RefCell, net::IpAddr};

use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestError, TestRunner},
};
use xdpgate::policy::{
    compile, naive_allows, naive_allows_tunnel,
    strategies::{edges, source, valid_spec, UNBOUND_PORT},
    PolicySpec, Tunnels,
};
use xdpgate_common::{Family, Reason, MAX_VLAN_TAGS, TUNNEL_UDP_PORTS};
use xdpgate_tests::{have_bpf_privileges, tunnel, Ext, Flags, Harness, Packet, XDP_DROP, XDP_PASS};

/// What a probe sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A TCP connection attempt.
    Syn,
    /// A TCP segment of an established connection: only strict mode judges it.
    Ack,
    Udp,
    /// A first fragment carrying 8 bytes of TCP: the port, not the flags.
    TinySyn,
    /// A first fragment carrying 4 bytes of UDP: the ports only.
    TinyUdp,
    /// A SYN behind more IPv6 extension headers than the walk takes (for
    /// an IPv4 source, behind a first fragment with 2 bytes of TCP): no
    /// port to judge.
    HiddenSyn,
    /// IPIP (IPv4-in-IPv6 for an IPv6 source).
    Tunnel,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    src: IpAddr,
    kind: Kind,
    port: u16,
    /// VID-0 tags in front of the IP header, alternating 802.1ad and 802.1Q.
    tags: usize,
}

/// A probe from the pools ([`source`]) or from the policy's [`edges`].
fn probe(edges: Vec<IpAddr>) -> impl Strategy<Value = Probe> {
    let max_tags = MAX_VLAN_TAGS as usize;
    (
        prop_oneof![source(), prop::sample::select(edges)],
        prop_oneof![
            4 => Just(Kind::Syn),
            1 => Just(Kind::Ack),
            3 => Just(Kind::Udp),
            2 => Just(Kind::TinySyn),
            1 => Just(Kind::TinyUdp),
            1 => Just(Kind::HiddenSyn),
            1 => Just(Kind::Tunnel),
        ],
        prop_oneof![
            6 => 1..=UNBOUND_PORT,
            1 => prop::sample::select(TUNNEL_UDP_PORTS.to_vec()),
        ],
        prop_oneof![3 => Just(0), 2 => 1..=max_tags, 1 => Just(max_tags + 1)],
    )
        .prop_map(|(src, kind, port, tags)| Probe {
            src,
            kind,
            port,
            tags,
        })
}

/// Whether any rule (or the tunnel rule) binds `port`.
fn bound(spec: &PolicySpec, udp: bool, port: u16) -> bool {
    let by_rule = spec.allow.iter().any(|b| {
        let ranges = if udp { &b.udp } else { &b.tcp };
        ranges.iter().any(|r| r.ports().any(|p| p == port))
    });
    let by_tunnels =
        udp && TUNNEL_UDP_PORTS.contains(&port) && matches!(spec.tunnels, Tunnels::From(_));
    by_rule || by_tunnels
}

/// The (action, reason, family) the model expects for `probe`.
fn expected(spec: &PolicySpec, probe: &Probe) -> (u32, Reason, Family) {
    let family = match probe.src {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    };
    let done = |reason: Reason, family| {
        let action = if reason.is_drop() { XDP_DROP } else { XDP_PASS };
        (action, reason, family)
    };
    // Past the tag walk nothing is seen, not even the source.
    if probe.tags > MAX_VLAN_TAGS as usize {
        return done(Reason::DropEvasive, Family::Other);
    }
    let udp = matches!(probe.kind, Kind::Udp | Kind::TinyUdp);
    // On a port no rule binds, only a deny set can refuse a source.
    if !naive_allows(spec, udp, UNBOUND_PORT, probe.src) {
        return done(Reason::DropDeny, family);
    }
    let allowed = naive_allows(spec, udp, probe.port, probe.src);
    let reason = match probe.kind {
        Kind::HiddenSyn => Reason::DropEvasive,
        Kind::Tunnel => match (&spec.tunnels, naive_allows_tunnel(spec, probe.src)) {
            (Tunnels::Pass, _) => Reason::PassOtherProtocol,
            (_, true) => Reason::PassMember,
            (_, false) => Reason::DropTunnel,
        },
        _ if !bound(spec, udp, probe.port) => Reason::PassUnboundPort,
        Kind::Ack if !spec.strict => Reason::PassNotSyn,
        _ if allowed => Reason::PassMember,
        Kind::Udp => Reason::DropNotMemberUdp,
        Kind::TinySyn | Kind::TinyUdp => Reason::DropEvasive,
        _ => Reason::DropNotMemberTcp,
    };
    done(reason, family)
}

fn frame(probe: &Probe) -> Vec<u8> {
    let src = probe.src.to_string();
    let port = probe.port;
    let packet = match probe.kind {
        Kind::Syn => Packet::tcp(&src, port, Flags::Syn),
        Kind::Ack => Packet::tcp(&src, port, Flags::Ack),
        Kind::Udp => Packet::udp(&src, port),
        Kind::TinySyn | Kind::TinyUdp => {
            let (packet, carried) = if probe.kind == Kind::TinySyn {
                (Packet::tcp(&src, port, Flags::Syn), 8)
            } else {
                (Packet::udp(&src, port), 4)
            };
            let packet = packet.l4_truncated(carried);
            match probe.src {
                IpAddr::V4(_) => packet.ipv4_fragment(0, true),
                IpAddr::V6(_) => packet.exts(&[Ext::Fragment {
                    offset: 0,
                    more: true,
                }]),
            }
        }
        Kind::HiddenSyn => match probe.src {
            IpAddr::V4(_) => Packet::tcp(&src, port, Flags::Syn)
                .l4_truncated(2)
                .ipv4_fragment(0, true),
            IpAddr::V6(_) => Packet::tcp(&src, port, Flags::Syn).exts(&[Ext::DestOpts; 9]),
        },
        Kind::Tunnel => tunnel(&src, 4),
    };
    let tags: Vec<(u16, u16)> = (0..probe.tags)
        .map(|i| (if i % 2 == 0 { 0x88a8 } else { 0x8100 }, 0))
        .collect();
    packet.tags(&tags).build()
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
            // The property itself: whatever the shape, a port is reached
            // only from a set bound to it. ACKs are connection attempts only
            // under strict; a hidden port or a tag chain past the walk is
            // reached by nobody.
            let udp = matches!(probe.kind, Kind::Udp | Kind::TinyUdp);
            let model_drops = match probe.kind {
                _ if probe.tags > MAX_VLAN_TAGS as usize => Some(true),
                Kind::HiddenSyn => Some(true),
                Kind::Tunnel => Some(!naive_allows_tunnel(&spec, probe.src)),
                Kind::Ack if !spec.strict => None,
                _ => Some(!naive_allows(&spec, udp, probe.port, probe.src)),
            };
            if let Some(model_drops) = model_drops {
                if (outcome.action == XDP_DROP) != model_drops {
                    problems.push(format!(
                        "kernel action {}, the model says {}",
                        outcome.action,
                        if model_drops { "drop" } else { "pass" }
                    ));
                }
            }
            // And the counter says why.
            let (action, reason, family) = expected(&spec, probe);
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
