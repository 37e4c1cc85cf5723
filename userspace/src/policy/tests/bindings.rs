//! Bits, ports and options: which sets get bits and in what order, how
//! bindings on one port merge, ranges, the deny mask and strictness, the
//! Cloudflare default.
use super::*;

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
