//! Unit and property tests of the policy compiler. Nothing here needs
//! privileges: the compiled maps are checked through [`compiled_allows`] and
//! [`CompiledPolicy::lookup`], which compute what the kernel computes.
use proptest::prelude::*;

use super::{
    strategies::{probes_for, source, valid_spec, UNBOUND_PORT},
    *,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("test prefix {s}: {e}"))
}

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap_or_else(|e| panic!("test prefix {s}: {e}"))
}

fn v6(s: &str) -> Ipv6Net {
    s.parse().unwrap_or_else(|e| panic!("test prefix {s}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("test address {s}: {e}"))
}

fn ports(list: &[u16]) -> Vec<PortRange> {
    list.iter().map(|p| PortRange::single(*p)).collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn tcp(list: &[u16], from: &[&str]) -> Binding {
    Binding {
        tcp: ports(list),
        udp: vec![],
        from: names(from),
    }
}

fn udp(list: &[u16], from: &[&str]) -> Binding {
    Binding {
        tcp: vec![],
        udp: ports(list),
        from: names(from),
    }
}

fn spec(sets: &[(&str, &[&str])], allow: Vec<Binding>, deny: &[&str]) -> PolicySpec {
    PolicySpec {
        sets: sets
            .iter()
            .map(|(name, nets)| (name.to_string(), nets.iter().map(|s| net(s)).collect()))
            .collect(),
        allow,
        deny: names(deny),
        strict: false,
        tunnels: Tunnels::Pass,
    }
}

/// The bit of `set` in `policy`; panics if the set got none.
fn bit(policy: &CompiledPolicy, set: &str) -> SetMask {
    let index = policy
        .set_names
        .iter()
        .position(|n| n == set)
        .unwrap_or_else(|| panic!("set `{set}` has no bit in {:?}", policy.set_names));
    1 << index
}

fn compiled(spec: &PolicySpec) -> CompiledPolicy {
    compile(spec).unwrap_or_else(|e| panic!("policy should compile: {e}"))
}

fn compile_err(spec: &PolicySpec) -> PolicyError {
    match compile(spec) {
        Ok(policy) => panic!("policy should not compile, but did: {policy:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------
// The covering-prefix closure
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Errors: each names its culprit
// ---------------------------------------------------------------------------

fn two_sets() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("cloudflare", &["198.41.128.0/17"]),
        ("admins", &["203.0.113.0/24"]),
    ]
}

#[test]
fn an_unknown_set_in_an_allow_rule_names_the_rule_and_the_set() {
    let spec = spec(
        &two_sets(),
        vec![tcp(&[22], &["admins"]), tcp(&[443], &["cloudfare"])],
        &[],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::UnknownSet {
            set: "cloudfare".into(),
            place: "allow rule 2".into(),
            suggestion: Some("cloudflare".into()),
        }
    );
    let text = err.to_string();
    assert!(text.contains("allow rule 2"), "{text}");
    assert!(text.contains("`cloudfare`"), "{text}");
    assert!(text.contains("did you mean `cloudflare`"), "{text}");
}

#[test]
fn an_unknown_set_that_resembles_nothing_gets_no_suggestion() {
    let spec = spec(&two_sets(), vec![tcp(&[443], &["marketing"])], &[]);
    let err = compile_err(&spec);
    assert!(
        matches!(
            &err,
            PolicyError::UnknownSet {
                suggestion: None,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("allow rule 1") && text.contains("`marketing`"),
        "{text}"
    );
    assert!(!text.contains("did you mean"), "{text}");
}

#[test]
fn an_unknown_set_in_the_deny_list_names_deny_and_the_set() {
    let spec = spec(&two_sets(), vec![tcp(&[443], &["cloudflare"])], &["abusrs"]);
    let err = compile_err(&spec);
    assert!(
        matches!(&err, PolicyError::UnknownSet { set, place, .. } if set == "abusrs" && place == "deny"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.starts_with("deny names set `abusrs`"), "{text}");
}

fn many_sets(count: usize) -> PolicySpec {
    let sets: BTreeMap<String, Vec<IpNet>> = (0..count)
        .map(|i| (format!("s{i:02}"), vec![net(&format!("10.{i}.0.0/16"))]))
        .collect();
    PolicySpec {
        allow: vec![Binding {
            tcp: ports(&[443]),
            udp: vec![],
            from: sets.keys().cloned().collect(),
        }],
        sets,
        deny: vec![],
        strict: false,
        tunnels: Tunnels::Pass,
    }
}

#[test]
fn more_sets_than_mask_bits_is_an_error_naming_both_numbers() {
    let err = compile_err(&many_sets(MAX_SETS + 1));
    assert_eq!(err, PolicyError::TooManySets { count: 65, max: 64 });
    let text = err.to_string();
    assert!(text.contains("65") && text.contains("64"), "{text}");
}

#[test]
fn exactly_as_many_sets_as_mask_bits_compiles_and_uses_the_top_bit() {
    let policy = compiled(&many_sets(MAX_SETS));
    assert_eq!(policy.set_names.len(), 64);
    assert_eq!(bit(&policy, "s63"), 1 << 63);
    assert_eq!(policy.tcp_ports[&443], u64::MAX);
    assert_eq!(policy.lookup(ip("10.63.1.1")), 1 << 63);
}

#[test]
fn unused_sets_do_not_count_towards_the_limit() {
    let mut spec = many_sets(MAX_SETS + 10);
    spec.allow[0].from.truncate(MAX_SETS);
    assert_eq!(compiled(&spec).set_names.len(), MAX_SETS);
}

#[test]
fn port_zero_is_an_error_naming_the_rule() {
    let spec = spec(
        &two_sets(),
        vec![tcp(&[443], &["cloudflare"]), udp(&[0], &["admins"])],
        &[],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::PortZero {
            place: "allow rule 2".into()
        }
    );
    assert!(err.to_string().starts_with("allow rule 2: port 0"), "{err}");
}

#[test]
fn a_backwards_range_is_an_error_naming_the_rule_and_the_range() {
    let mut binding = tcp(&[], &["cloudflare"]);
    binding.tcp = vec!["443-80".parse().unwrap()];
    let err = compile_err(&spec(&two_sets(), vec![binding], &[]));
    assert_eq!(
        err,
        PolicyError::BackwardsRange {
            place: "allow rule 1".into(),
            range: PortRange {
                first: 443,
                last: 80
            },
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("allow rule 1") && text.contains("443-80"),
        "{text}"
    );
}

#[test]
fn a_binding_without_ports_is_an_error_naming_the_rule() {
    let spec = spec(
        &two_sets(),
        vec![tcp(&[443], &["cloudflare"]), tcp(&[], &["admins"])],
        &[],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::NoPorts {
            place: "allow rule 2".into()
        }
    );
    assert!(
        err.to_string()
            .contains("allow rule 2 lists no tcp or udp ports"),
        "{err}"
    );
}

#[test]
fn a_binding_from_no_set_is_an_error_naming_the_rule() {
    let err = compile_err(&spec(&two_sets(), vec![tcp(&[22], &[])], &[]));
    assert_eq!(
        err,
        PolicyError::NoSets {
            place: "allow rule 1".into()
        }
    );
    assert!(
        err.to_string().contains("allow rule 1 allows no set"),
        "{err}"
    );
}

#[test]
fn a_set_both_denied_and_allowed_is_a_contradiction_naming_both() {
    let spec = spec(
        &two_sets(),
        vec![tcp(&[443], &["cloudflare"]), tcp(&[22], &["admins"])],
        &["admins"],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::DeniedAndAllowed {
            set: "admins".into(),
            place: "allow rule 2".into(),
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("set `admins`") && text.contains("allow rule 2"),
        "{text}"
    );
}

#[test]
fn binding_an_empty_set_is_an_error_naming_the_set_and_the_rule() {
    let spec = spec(
        &[("cloudflare", &["198.41.128.0/17"]), ("nobody", &[])],
        vec![tcp(&[443], &["cloudflare"]), udp(&[8472], &["nobody"])],
        &[],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::EmptyBoundSet {
            set: "nobody".into(),
            place: "allow rule 2".into(),
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("set `nobody` is empty") && text.contains("allow rule 2"),
        "{text}"
    );
}

#[test]
fn an_empty_set_may_be_defined_or_denied_without_being_bound() {
    let spec = spec(
        &[
            ("cloudflare", &["198.41.128.0/17"]),
            ("nobody", &[]),
            ("blocked", &[]),
        ],
        vec![tcp(&[443], &["cloudflare"])],
        &["blocked"],
    );
    let policy = compiled(&spec);
    assert!(compiled_allows(&policy, false, 80, ip("192.0.2.1")));
}

#[test]
fn a_policy_that_binds_and_denies_nothing_is_an_error() {
    let err = compile_err(&spec(&two_sets(), vec![], &[]));
    assert_eq!(err, PolicyError::EmptyPolicy);
    assert!(err.to_string().contains("nothing to enforce"), "{err}");
    assert_eq!(
        compile_err(&PolicySpec::default()),
        PolicyError::EmptyPolicy
    );
}

#[test]
fn a_deny_only_policy_compiles_and_drops_the_denied_on_every_port() {
    let policy = compiled(&spec(&two_sets(), vec![], &["admins"]));
    assert!(policy.tcp_ports.is_empty() && policy.udp_ports.is_empty());
    for port in [1, 22, 443, 65535] {
        for udp in [false, true] {
            assert!(!compiled_allows(&policy, udp, port, ip("203.0.113.5")));
            assert!(compiled_allows(&policy, udp, port, ip("198.41.128.5")));
        }
    }
}

// ---------------------------------------------------------------------------
// Bits, ports and options
// ---------------------------------------------------------------------------

#[test]
fn only_used_sets_get_bits_in_name_order_and_compiling_is_deterministic() {
    let spec = spec(
        &[
            ("zeta", &["10.0.0.0/8"]),
            ("alpha", &["192.0.2.0/24"]),
            ("unused", &["172.16.0.0/12", "fd00::/8"]),
            ("mid", &["198.51.100.0/24"]),
        ],
        // Rules name the sets out of order; bits follow the names.
        vec![tcp(&[22], &["zeta"]), udp(&[53], &["alpha"])],
        &["mid"],
    );
    let first = compiled(&spec);
    assert_eq!(first.set_names, names(&["alpha", "mid", "zeta"]));
    assert_eq!(
        (
            bit(&first, "alpha"),
            bit(&first, "mid"),
            bit(&first, "zeta")
        ),
        (1, 2, 4)
    );
    // The unused set's prefixes are nowhere in the maps.
    assert!(!first.v4.contains_key(&v4("172.16.0.0/12")));
    assert!(first.v6.is_empty());
    assert_eq!(first.lookup(ip("172.16.0.1")), 0);
    assert_eq!(compiled(&spec), first);
    assert_eq!(first.set_names_in(5), vec!["alpha", "zeta"]);
}

#[test]
fn bindings_naming_the_same_port_merge_their_sets() {
    let mut ranged = tcp(&[], &["c"]);
    ranged.tcp = vec!["1000-1002".parse().unwrap()];
    let spec = spec(
        &[
            ("a", &["10.0.0.0/24"]),
            ("b", &["10.0.1.0/24"]),
            ("c", &["10.0.2.0/24"]),
        ],
        vec![tcp(&[443, 1002], &["a"]), tcp(&[443, 8443], &["b"]), ranged],
        &[],
    );
    let policy = compiled(&spec);
    let [a, b, c] = ["a", "b", "c"].map(|s| bit(&policy, s));
    assert_eq!(
        policy.tcp_ports,
        BTreeMap::from([(443, a | b), (1000, c), (1001, c), (1002, a | c), (8443, b),])
    );
    assert!(policy.udp_ports.is_empty());
    for src in ["10.0.0.1", "10.0.1.1"] {
        assert!(compiled_allows(&policy, false, 443, ip(src)), "{src}");
    }
    assert!(!compiled_allows(&policy, false, 443, ip("10.0.2.1")));
}

#[test]
fn tcp_and_udp_bindings_are_separate() {
    let spec = spec(
        &[("nodes", &["10.0.0.0/24"])],
        vec![udp(&[8472], &["nodes"])],
        &[],
    );
    let policy = compiled(&spec);
    assert!(policy.tcp_ports.is_empty());
    assert!(!compiled_allows(&policy, true, 8472, ip("192.0.2.1")));
    assert!(compiled_allows(&policy, false, 8472, ip("192.0.2.1")));
}

#[test]
fn a_port_range_covers_both_ends() {
    let range: PortRange = "30000-32767".parse().unwrap();
    assert_eq!(
        range,
        PortRange {
            first: 30000,
            last: 32767
        }
    );
    assert_eq!(range.ports().count(), 2768);
    assert_eq!(range.to_string(), "30000-32767");
    assert_eq!("443".parse::<PortRange>(), Ok(PortRange::single(443)));
    assert_eq!(PortRange::single(443).to_string(), "443");

    let mut binding = tcp(&[], &["nodes"]);
    binding.tcp = vec![range];
    let policy = compiled(&spec(&[("nodes", &["10.0.0.0/24"])], vec![binding], &[]));
    assert_eq!(policy.tcp_ports.len(), 2768);
    for port in [30000, 30001, 32766, 32767] {
        assert!(policy.tcp_ports.contains_key(&port), "{port}");
        assert!(
            !compiled_allows(&policy, false, port, ip("192.0.2.1")),
            "{port}"
        );
    }
    for port in [29999, 32768] {
        assert!(!policy.tcp_ports.contains_key(&port), "{port}");
    }
}

#[test]
fn a_bad_port_string_is_an_error_naming_it() {
    for bad in ["70000", "a-b", "", "80-", "-1", "1-65536", "http"] {
        let err = bad.parse::<PortRange>().expect_err(bad);
        assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
    }
}

#[test]
fn options_carry_the_deny_mask_and_strict() {
    let mut spec = spec(
        &[
            ("cloudflare", &["198.41.128.0/17"]),
            ("admins", &["203.0.113.0/24"]),
            ("nodes", &["10.0.0.0/24"]),
            ("abusers", &["198.51.100.0/24"]),
            ("bots", &["192.0.2.0/24"]),
            ("unused", &["172.16.0.0/12"]),
        ],
        vec![
            tcp(&[443], &["cloudflare"]),
            tcp(&[22], &["admins"]),
            udp(&[8472], &["nodes"]),
        ],
        &["abusers", "bots"],
    );
    let policy = compiled(&spec);
    let b = |s: &str| bit(&policy, s);
    assert_eq!(policy.options.deny_mask, b("abusers") | b("bots"));
    assert_eq!(policy.options.flags, 0);
    assert_eq!(policy.options.tunnel_mask, 0);

    spec.strict = true;
    let strict = compiled(&spec);
    assert_eq!(strict.options.flags, OPT_STRICT);
    assert_eq!(strict.options.deny_mask, policy.options.deny_mask);
}

#[test]
fn the_cloudflare_default_binds_tcp_80_and_443_to_cloudflare() {
    let spec = cloudflare_default();
    let policy = compiled(&spec);
    assert_eq!(policy.set_names, names(&["cloudflare"]));
    assert_eq!(
        policy.tcp_ports.keys().copied().collect::<Vec<_>>(),
        vec![80, 443]
    );
    assert!(policy.udp_ports.is_empty());
    assert_eq!(policy.options.deny_mask, 0);
    assert_eq!(
        policy.options.flags, 0,
        "tunnels are not filtered by default"
    );
    assert!(!policy.v4.is_empty() && !policy.v6.is_empty());
    for port in [80, 443] {
        assert!(compiled_allows(&policy, false, port, ip("104.16.0.1")));
        assert!(compiled_allows(&policy, false, port, ip("2606:4700::1")));
        assert!(!compiled_allows(&policy, false, port, ip("8.8.8.8")));
        assert!(!compiled_allows(&policy, false, port, ip("2001:db8::1")));
    }
    // Everything else is not filtered: SSH, and QUIC on 443.
    assert!(compiled_allows(&policy, false, 22, ip("8.8.8.8")));
    assert!(compiled_allows(&policy, true, 443, ip("8.8.8.8")));
}

#[test]
fn parse_net_accepts_hosts_and_names_bad_input() {
    assert_eq!(parse_net("10.0.0.1"), Ok(net("10.0.0.1/32")));
    assert_eq!(parse_net(" fd00::1 "), Ok(net("fd00::1/128")));
    assert_eq!(parse_net("10.0.0.0/8"), Ok(net("10.0.0.0/8")));
    let err = parse_net("10.0.0.0/33").unwrap_err();
    assert!(err.contains("`10.0.0.0/33`"), "{err}");
}

// ---------------------------------------------------------------------------
// Property tests: the compiled single-lookup verdict equals the plain reading
// ---------------------------------------------------------------------------
// Policies and probes come from `super::strategies`, shared with the kernel
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

// Tunnels

#[test]
fn filtered_tunnels_bind_the_tunnel_udp_ports_beside_the_rules() {
    let mut spec = spec(
        &[
            ("nodes", &["10.0.0.0/24"]),
            ("cloudflare", &["198.41.128.0/17"]),
        ],
        vec![tcp(&[443], &["cloudflare"]), udp(&[8472], &["cloudflare"])],
        &[],
    );
    spec.tunnels = Tunnels::From(vec!["nodes".into()]);
    let policy = compiled(&spec);
    let (nodes, cloudflare) = (bit(&policy, "nodes"), bit(&policy, "cloudflare"));
    assert_eq!(policy.options.tunnel_mask, nodes);
    assert_eq!(policy.options.flags, OPT_FILTER_TUNNELS);
    assert_eq!(policy.udp_ports[&4789], nodes);
    // A rule's own binding of a tunnel port keeps its sets.
    assert_eq!(policy.udp_ports[&8472], nodes | cloudflare);
    let node: IpAddr = "10.0.0.9".parse().unwrap();
    let stranger: IpAddr = "192.0.2.9".parse().unwrap();
    assert!(naive_allows(&spec, true, 6081, node));
    assert!(!naive_allows(&spec, true, 6081, stranger));
    assert!(
        naive_allows(&spec, false, 6081, stranger),
        "TCP 6081 is no tunnel"
    );
    assert!(naive_allows_tunnel(&spec, node));
    assert!(!naive_allows_tunnel(&spec, stranger));
    for port in [4789, 6081, 8472] {
        assert_eq!(
            compiled_allows(&policy, true, port, stranger),
            naive_allows(&spec, true, port, stranger),
            "udp {port}"
        );
    }
}

#[test]
fn tunnels_dropped_from_everyone_still_bind_their_ports() {
    let mut spec = spec(
        &[("cloudflare", &["198.41.128.0/17"])],
        vec![tcp(&[443], &["cloudflare"])],
        &[],
    );
    spec.tunnels = Tunnels::From(vec![]);
    let policy = compiled(&spec);
    assert_eq!(policy.options.tunnel_mask, 0);
    // A mask of 0 would mean "unbound": the ports carry a bit no prefix has.
    let nobody = policy.udp_ports[&4789];
    assert_ne!(nobody, 0);
    assert_eq!(nobody & bit(&policy, "cloudflare"), 0);
    let member: IpAddr = "198.41.128.1".parse().unwrap();
    assert!(!compiled_allows(&policy, true, 4789, member));
    assert!(!naive_allows(&spec, true, 4789, member));
    assert!(!naive_allows_tunnel(&spec, member));
}

#[test]
fn tunnel_sets_must_exist_and_not_be_denied() {
    let mut spec = spec(
        &[
            ("cloudflare", &["198.41.128.0/17"]),
            ("bad", &["192.0.2.0/24"]),
        ],
        vec![tcp(&[443], &["cloudflare"])],
        &["bad"],
    );
    spec.tunnels = Tunnels::From(vec!["nodez".into()]);
    assert!(matches!(
        compile(&spec),
        Err(PolicyError::UnknownSet { place, .. }) if place == "tunnels"
    ));
    spec.tunnels = Tunnels::From(vec!["bad".into()]);
    assert_eq!(
        compile(&spec),
        Err(PolicyError::DeniedAndAllowed {
            set: "bad".into(),
            place: "tunnels".into()
        })
    );
}
