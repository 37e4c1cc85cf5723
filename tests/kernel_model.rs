//! The kernel against the model: random policies (nested, overlapping and
//! IPv4-mapped prefixes, colliding port bindings, deny sets, strict or not)
//! are compiled, written into the real XDP program's maps, and probed with
//! SYNs, ACKs and UDP datagrams through `BPF_PROG_TEST_RUN`. Every verdict
//! must be the plain reading of the policy ([`naive_allows`]: is the source
//! in a set bound to the port?) and every counted reason must say why. One
//! program serves all cases, each policy swapped in over the last, so the
//! double-buffered slot rewriting (diffs of tries and port arrays) is under
//! test too. Needs CAP_BPF + CAP_NET_ADMIN (root); skips saying so otherwise.
use std::{cell::RefCell, net::IpAddr};

use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestError, TestRunner},
};
use xdpgate::policy::{
    compile, naive_allows,
    strategies::{edges, source, valid_spec, UNBOUND_PORT},
    PolicySpec,
};
use xdpgate_common::{Family, Reason};
use xdpgate_tests::{have_bpf_privileges, Flags, Harness, Packet, XDP_DROP, XDP_PASS};

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

/// A probe from the pools ([`source`]) or from the policy's [`edges`].
fn probe(edges: Vec<IpAddr>) -> impl Strategy<Value = Probe> {
    (
        prop_oneof![source(), prop::sample::select(edges)],
        prop_oneof![4 => Just(Kind::Syn), 1 => Just(Kind::Ack), 3 => Just(Kind::Udp)],
        1..=UNBOUND_PORT,
    )
        .prop_map(|(src, kind, port)| Probe { src, kind, port })
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
