//! The covering-prefix closure: each compiled prefix carries the sets of
//! every prefix that covers it, in both families, with host bits cleared
//! and IPv4-mapped prefixes judged as IPv4.
use super::*;

#[test]
fn a_nested_prefix_carries_the_sets_of_the_prefix_covering_it() {
    let spec = spec(
        &[("nodes", &["10.0.0.0/8"]), ("admins", &["10.1.0.0/16"])],
        vec![tcp(&[22], &["admins"]), tcp(&[6443], &["nodes"])],
        &[],
    );
    let policy = compiled(&spec);
    let (nodes, admins) = (bit(&policy, "nodes"), bit(&policy, "admins"));
    assert_eq!(
        policy.v4,
        BTreeMap::from([
            (v4("10.0.0.0/8"), nodes),
            (v4("10.1.0.0/16"), nodes | admins)
        ])
    );
    // What an operator sees: an admin inside the node range is still a node.
    // With a bare longest-prefix match the /16 would hide the /8.
    assert!(compiled_allows(&policy, false, 6443, ip("10.1.2.3")));
    assert!(compiled_allows(&policy, false, 22, ip("10.1.2.3")));
    assert!(compiled_allows(&policy, false, 6443, ip("10.2.0.1")));
    assert!(!compiled_allows(&policy, false, 22, ip("10.2.0.1")));
}

#[test]
fn sibling_prefixes_do_not_share_bits() {
    // `c` sorts after `b`, which is nested in `a`: the closure must pop both
    // before it reaches `c`, which neither covers.
    let spec = spec(
        &[
            ("a", &["10.0.0.0/16"]),
            ("b", &["10.0.128.0/17"]),
            ("c", &["10.1.0.0/16"]),
            ("d", &["10.0.0.0/24", "10.0.1.0/24"]),
        ],
        vec![tcp(&[1], &["a", "b", "c", "d"])],
        &[],
    );
    let policy = compiled(&spec);
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|s| bit(&policy, s));
    assert_eq!(
        policy.v4,
        BTreeMap::from([
            (v4("10.0.0.0/16"), a),
            (v4("10.0.0.0/24"), a | d),
            (v4("10.0.1.0/24"), a | d),
            (v4("10.0.128.0/17"), a | b),
            (v4("10.1.0.0/16"), c),
        ])
    );
}

#[test]
fn an_identical_prefix_in_two_sets_becomes_one_entry_with_both_bits() {
    let spec = spec(
        &[
            ("web", &["192.0.2.0/24"]),
            ("ops", &["192.0.2.0/24", "2001:db8::/32"]),
        ],
        vec![tcp(&[443], &["web"]), tcp(&[22], &["ops"])],
        &[],
    );
    let policy = compiled(&spec);
    let (web, ops) = (bit(&policy, "web"), bit(&policy, "ops"));
    assert_eq!(policy.v4, BTreeMap::from([(v4("192.0.2.0/24"), web | ops)]));
    assert_eq!(policy.v6, BTreeMap::from([(v6("2001:db8::/32"), ops)]));
}

#[test]
fn the_closure_reaches_three_levels_down() {
    let spec = spec(
        &[
            ("a", &["10.0.0.0/8"]),
            ("b", &["10.1.0.0/16"]),
            ("c", &["10.1.2.0/24"]),
            ("d", &["10.1.3.0/24"]),
            ("e", &["10.2.0.0/16", "10.1.2.128/25"]),
        ],
        vec![tcp(&[1], &["a", "b", "c", "d", "e"])],
        &[],
    );
    let policy = compiled(&spec);
    let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(|s| bit(&policy, s));
    assert_eq!(
        policy.v4,
        BTreeMap::from([
            (v4("10.0.0.0/8"), a),
            (v4("10.1.0.0/16"), a | b),
            (v4("10.1.2.0/24"), a | b | c),
            (v4("10.1.2.128/25"), a | b | c | e),
            (v4("10.1.3.0/24"), a | b | d),
            (v4("10.2.0.0/16"), a | e),
        ])
    );
    assert_eq!(policy.lookup(ip("10.1.2.200")), a | b | c | e);
    assert_eq!(policy.lookup(ip("10.1.2.1")), a | b | c);
    assert_eq!(policy.lookup(ip("10.9.9.9")), a);
    assert_eq!(policy.lookup(ip("11.0.0.1")), 0);
}

#[test]
fn the_closure_works_for_ipv6_too() {
    let spec = spec(
        &[
            ("nodes", &["fd00::/16"]),
            ("admins", &["fd00:1::/32"]),
            ("ops", &["fd00:1:2::/48", "fd00:1:2::7/128"]),
            ("lab", &["fd00:2::/32"]),
        ],
        vec![
            tcp(&[22], &["admins", "ops"]),
            tcp(&[6443], &["nodes", "lab"]),
        ],
        &[],
    );
    let policy = compiled(&spec);
    let [nodes, admins, ops, lab] = ["nodes", "admins", "ops", "lab"].map(|s| bit(&policy, s));
    assert_eq!(
        policy.v6,
        BTreeMap::from([
            (v6("fd00::/16"), nodes),
            (v6("fd00:1::/32"), nodes | admins),
            (v6("fd00:1:2::/48"), nodes | admins | ops),
            (v6("fd00:1:2::7/128"), nodes | admins | ops),
            (v6("fd00:2::/32"), nodes | lab),
        ])
    );
    assert!(policy.v4.is_empty());
    assert!(compiled_allows(&policy, false, 6443, ip("fd00:1:2::7")));
    assert!(!compiled_allows(&policy, false, 22, ip("fd00:2::1")));
}

#[test]
fn host_bits_are_cleared() {
    let spec = spec(
        &[(
            "a",
            &[
                "10.0.0.1/8",
                "10.200.3.4/8",
                "fd00::1/16",
                "2001:db8::1/128",
            ],
        )],
        vec![tcp(&[1], &["a"])],
        &[],
    );
    let policy = compiled(&spec);
    let a = bit(&policy, "a");
    // Two spellings of the same /8 are one entry.
    assert_eq!(policy.v4, BTreeMap::from([(v4("10.0.0.0/8"), a)]));
    assert_eq!(
        policy.v6,
        BTreeMap::from([(v6("fd00::/16"), a), (v6("2001:db8::1/128"), a)])
    );
    assert!(compiled_allows(&policy, false, 1, ip("10.99.0.1")));
}

#[test]
fn ipv4_mapped_ipv6_prefixes_compile_into_the_ipv4_map() {
    let spec = spec(
        &[
            (
                "mapped",
                &[
                    "::ffff:198.51.100.0/120",
                    "::ffff:192.0.2.7/128",
                    "::ffff:203.0.113.9/120",
                ],
            ),
            ("wide", &["198.51.0.0/16"]),
        ],
        vec![tcp(&[443], &["mapped"]), tcp(&[80], &["wide"])],
        &[],
    );
    let policy = compiled(&spec);
    let (mapped, wide) = (bit(&policy, "mapped"), bit(&policy, "wide"));
    assert_eq!(
        policy.v4,
        BTreeMap::from([
            (v4("192.0.2.7/32"), mapped),
            (v4("198.51.0.0/16"), wide),
            (v4("198.51.100.0/24"), mapped | wide),
            // Host bits of a mapped prefix are cleared too.
            (v4("203.0.113.0/24"), mapped),
        ])
    );
    assert!(
        policy.v6.is_empty(),
        "nothing mapped stays in the v6 map: {:?}",
        policy.v6
    );
    // Both spellings of a source are judged the same.
    for src in ["198.51.100.9", "::ffff:198.51.100.9"] {
        assert!(compiled_allows(&policy, false, 443, ip(src)), "{src}");
        assert!(compiled_allows(&policy, false, 80, ip(src)), "{src}");
    }
    assert!(!compiled_allows(
        &policy,
        false,
        443,
        ip("::ffff:198.51.101.9")
    ));
}

#[test]
fn ipv4_mapped_sources_are_judged_only_against_ipv4_prefixes() {
    // `::/0` reads as "all of IPv6", but a mapped source is an IPv4 source;
    // `::ffff:0:0/96` is the way to spell "all of IPv4" in IPv6 notation.
    let spec = spec(
        &[("v6", &["::/0"]), ("v4", &["::ffff:0:0/96"])],
        vec![tcp(&[22], &["v6"]), tcp(&[80], &["v4"])],
        &[],
    );
    let policy = compiled(&spec);
    assert_eq!(
        policy.v4,
        BTreeMap::from([(v4("0.0.0.0/0"), bit(&policy, "v4"))])
    );
    assert_eq!(
        policy.v6,
        BTreeMap::from([(v6("::/0"), bit(&policy, "v6"))])
    );
    for src in ["::ffff:192.0.2.1", "192.0.2.1"] {
        assert!(!compiled_allows(&policy, false, 22, ip(src)), "{src}");
        assert!(compiled_allows(&policy, false, 80, ip(src)), "{src}");
    }
    assert!(compiled_allows(&policy, false, 22, ip("2001:db8::1")));
    assert!(!compiled_allows(&policy, false, 80, ip("2001:db8::1")));
}
