//! Property tests: the compiled single-lookup verdict equals the plain
//! reading of the policy, and every compiled prefix carries the closure.
use proptest::prelude::*;

use super::*;

// Policies and probes come from `policy::strategies`, shared with the kernel
// model test.

/// The union of the bits of every used set containing `addr`, by brute force.
fn naive_mask(spec: &PolicySpec, policy: &CompiledPolicy, addr: IpAddr) -> SetMask {
    let addr = canonical_addr(addr);
    policy
        .set_names
        .iter()
        .enumerate()
        .filter(|(_, name)| {
            spec.sets[*name]
                .iter()
                .any(|n| canonical_net(*n).contains(&addr))
        })
        .fold(0, |m, (i, _)| m | (1 << i))
}

/// The closure property for one family: the compiled keys are exactly the
/// canonical input prefixes of the used sets, and each carries the OR of the
/// bits of every input prefix that contains it.
fn check_closure<N: Copy + Ord + fmt::Debug>(
    spec: &PolicySpec,
    policy: &CompiledPolicy,
    compiled_map: &BTreeMap<N, SetMask>,
    family: impl Fn(IpNet) -> Option<N>,
    contains: impl Fn(&N, &N) -> bool,
) -> Result<(), TestCaseError> {
    let inputs: Vec<(N, SetMask)> = policy
        .set_names
        .iter()
        .enumerate()
        .flat_map(|(i, name)| {
            spec.sets[name]
                .iter()
                .filter_map(|n| family(canonical_net(*n)))
                .map(move |n| (n, 1 << i))
        })
        .collect();
    let keys: BTreeSet<N> = inputs.iter().map(|(n, _)| *n).collect();
    prop_assert_eq!(compiled_map.keys().copied().collect::<BTreeSet<N>>(), keys);
    for (p, mask) in compiled_map {
        let want = inputs
            .iter()
            .filter(|(q, _)| contains(q, p))
            .fold(0, |m, (_, bit)| m | bit);
        prop_assert_eq!(*mask, want, "mask of {:?}", p);
    }
    Ok(())
}

/// Cases per property: enough to hit nested, sibling and mapped shapes many
/// times over, fast enough (under two seconds in a debug build) to run on
/// every `cargo test`.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Failing inputs are printed, shrunk; nothing is written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn compiled_verdict_equals_the_naive_model(
        spec in valid_spec(),
        generated in prop::collection::vec(source(), 8..24),
    ) {
        let policy = match compile(&spec) {
            Ok(policy) => policy,
            Err(e) => return Err(TestCaseError::fail(format!("a valid policy is rejected: {e}"))),
        };
        for addr in probes_for(&spec, &generated) {
            prop_assert_eq!(
                policy.lookup(addr),
                naive_mask(&spec, &policy, addr),
                "mask of {}", addr
            );
            for udp in [false, true] {
                for port in 1..=UNBOUND_PORT {
                    prop_assert_eq!(
                        compiled_allows(&policy, udp, port, addr),
                        naive_allows(&spec, udp, port, addr),
                        "{} port {} from {}", if udp { "udp" } else { "tcp" }, port, addr
                    );
                }
            }
        }
    }

    #[test]
    fn every_compiled_prefix_carries_the_sets_of_every_prefix_covering_it(spec in valid_spec()) {
        let policy = compile(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_closure(
            &spec,
            &policy,
            &policy.v4,
            |n| match n { IpNet::V4(n) => Some(n), IpNet::V6(_) => None },
            |q, p| q.contains(p),
        )?;
        check_closure(
            &spec,
            &policy,
            &policy.v6,
            |n| match n { IpNet::V6(n) => Some(n), IpNet::V4(_) => None },
            |q, p| q.contains(p),
        )?;
        // Mapped prefixes never reach the v6 map.
        for p in policy.v6.keys() {
            prop_assert!(p.network().to_ipv4_mapped().is_none() || p.prefix_len() < 96, "{:?}", p);
        }
        // The same policy compiles to the same maps.
        prop_assert_eq!(compile(&spec), Ok(policy));
    }
}
