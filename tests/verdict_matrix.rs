//! The packet-verdict matrix: the real XDP object, loaded by the kernel's
//! verifier and run through `BPF_PROG_TEST_RUN` with frames built by
//! `etherparse`. Every case checks the verdict and the one counter that moved.
//! Needs CAP_BPF + CAP_NET_ADMIN (root); skips saying so otherwise.
//!
//! The cases are grouped by what they exercise: plain shapes (`basics`),
//! headers before the port (`headers`), evasive and truncated frames
//! (`evasive`). Tunnels are `verdict_tunnels.rs`; the policy and the case
//! runner both use are `xdpgate_tests::verdict`.
use xdpgate::policy::{compile, PortRange};
use xdpgate_common::{
    Family::{Ipv4 as V4, Ipv6 as V6, Other},
    Reason::*,
};
use xdpgate_tests::{
    arp_frame, have_bpf_privileges,
    verdict::{
        case, policy, run_cases, spec, syn, Case, CLOUDFLARE_V4, DENIED_V4, OUTSIDER_V4,
        OUTSIDER_V6,
    },
    Flags, Harness, Packet, XDP_DROP, XDP_PASS,
};

#[path = "verdict_matrix/basics.rs"]
mod basics;
#[path = "verdict_matrix/evasive.rs"]
mod evasive;
#[path = "verdict_matrix/headers.rs"]
mod headers;

/// Every shape, in the order the matrix has always run them.
fn shape_cases() -> Vec<Case> {
    let mut c = basics::members_and_non_members();
    c.extend(basics::not_connection_attempts());
    c.extend(basics::syn_variants());
    c.extend(headers::vlan_tags());
    c.extend(headers::ipv4_options());
    c.extend(headers::ipv6_extension_headers());
    c.extend(headers::ipv6_extension_walk_bound());
    c.extend(headers::ipv4_fragments());
    c.extend(headers::fragments_at_an_offset());
    c.extend(headers::ipv6_and_udp_first_fragments());
    c.extend(basics::udp());
    c.extend(basics::deny_sets());
    c.extend(basics::ipv4_mapped_sources());
    c.extend(basics::unbound_ports_and_other_protocols());
    c.extend(basics::not_ip());
    c.extend(evasive::truncation_cases());
    c.extend(headers::priority_tag_cases());
    c.extend(evasive::evasive_per_port_cases());
    c
}

/// Sets the IPv4 total length of an untagged frame (the checksum is left
/// stale: the filter does not check it, the kernel does).
pub(crate) fn with_ip_total_len(mut frame: Vec<u8>, len: u16) -> Vec<u8> {
    frame[16..18].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Sets the version nibble of the IP header of an untagged frame.
pub(crate) fn with_ip_version(mut frame: Vec<u8>, version: u8) -> Vec<u8> {
    frame[14] = (frame[14] & 0x0f) | (version << 4);
    frame
}

/// Sets the IHL nibble of the IPv4 header in an untagged frame.
pub(crate) fn with_ihl(mut frame: Vec<u8>, ihl: u8) -> Vec<u8> {
    frame[14] = (frame[14] & 0xf0) | ihl;
    frame
}

#[test]
fn every_packet_shape_gets_its_verdict_and_counter() {
    if !have_bpf_privileges("every_packet_shape_gets_its_verdict_and_counter") {
        return;
    }
    let cases = shape_cases();
    assert!(cases.len() >= 40, "the matrix keeps at least 40 cases");
    let mut harness = Harness::with_policy(&policy(false));
    run_cases(&mut harness, cases);
}

#[test]
fn strict_mode_drops_every_non_member_segment_to_bound_ports() {
    if !have_bpf_privileges("strict_mode_drops_every_non_member_segment_to_bound_ports") {
        return;
    }
    let mut harness = Harness::with_policy(&policy(true));
    run_cases(
        &mut harness,
        vec![
            case(
                "strict: non-member ACK :443",
                Packet::tcp(OUTSIDER_V4, 443, Flags::Ack).build(),
                DropNotMemberTcp,
                V4,
            ),
            case(
                "strict: non-member RST :443",
                Packet::tcp(OUTSIDER_V4, 443, Flags::Rst).build(),
                DropNotMemberTcp,
                V4,
            ),
            case(
                "strict: non-member v6 SYN+ACK :443",
                Packet::tcp(OUTSIDER_V6, 443, Flags::SynAck).build(),
                DropNotMemberTcp,
                V6,
            ),
            case(
                "strict: member ACK :443",
                Packet::tcp(CLOUDFLARE_V4, 443, Flags::Ack).build(),
                PassMember,
                V4,
            ),
            case(
                "strict: non-member ACK :8080 (unbound)",
                Packet::tcp(OUTSIDER_V4, 8080, Flags::Ack).build(),
                PassUnboundPort,
                V4,
            ),
        ],
    );
}

#[test]
fn an_unarmed_filter_passes_everything() {
    if !have_bpf_privileges("an_unarmed_filter_passes_everything") {
        return;
    }
    let mut harness = Harness::new();
    assert!(!harness.filter.control().unwrap().armed());
    run_cases(
        &mut harness,
        vec![
            case(
                "unarmed: non-member SYN :443",
                syn(OUTSIDER_V4, 443).build(),
                PassUnarmed,
                V4,
            ),
            case(
                "unarmed: v6 non-member SYN :443",
                syn(OUTSIDER_V6, 443).build(),
                PassUnarmed,
                V6,
            ),
            case(
                "unarmed: denied-looking source",
                syn(DENIED_V4, 443).build(),
                PassUnarmed,
                V4,
            ),
            case("unarmed: ARP", arp_frame(), PassNotIp, Other),
        ],
    );
}

#[test]
fn a_policy_swap_takes_effect_between_two_packets() {
    if !have_bpf_privileges("a_policy_swap_takes_effect_between_two_packets") {
        return;
    }
    let mut harness = Harness::with_policy(&policy(false));
    let outsider_syn = syn(OUTSIDER_V4, 443).build();
    let first_generation = harness.filter.control().unwrap().generation;
    assert_eq!(harness.run(&outsider_syn).counted, (DropNotMemberTcp, V4));

    // Add the outsider's /24 to cloudflare: the same SYN now passes.
    let mut widened = spec(false);
    widened
        .sets
        .get_mut("cloudflare")
        .unwrap()
        .push("203.0.114.0/24".parse().unwrap());
    harness.filter.apply(&compile(&widened).unwrap()).unwrap();
    let outcome = harness.run(&outsider_syn);
    assert_eq!(
        (outcome.action, outcome.counted),
        (XDP_PASS, (PassMember, V4))
    );

    // Unbind 443: it passes as an unbound port.
    let mut unbound = spec(false);
    unbound.allow[0].tcp = vec![PortRange::single(80)];
    harness.filter.apply(&compile(&unbound).unwrap()).unwrap();
    assert_eq!(harness.run(&outsider_syn).counted, (PassUnboundPort, V4));

    // And back: the slot written two swaps ago is rewritten correctly.
    harness.filter.apply(&policy(false)).unwrap();
    let outcome = harness.run(&outsider_syn);
    assert_eq!(
        (outcome.action, outcome.counted),
        (XDP_DROP, (DropNotMemberTcp, V4))
    );
    assert_eq!(
        harness.filter.control().unwrap().generation,
        first_generation + 3
    );

    // Counters survived every swap: the outsider's SYN was dropped twice.
    let counters = harness.filter.counters().unwrap();
    assert_eq!(counters.get(DropNotMemberTcp, V4).packets, 2);
    assert_eq!(counters.get(PassMember, V4).packets, 1);
}

/// The program skips the trie for a source whose /16 holds no prefix. Each
/// policy below puts prefixes of every length class (a /7 spanning 512 /16s,
/// a /20 sharing its /16, a /32, IPv6 /15 and /128) where the one before had
/// none, and takes them away again, through both slots twice: a member must
/// pass at both ends of its prefix, and a non-member beside it must drop,
/// whatever the previous policies left in the maps.
#[test]
fn members_pass_in_every_16_their_prefixes_touch_across_swaps() {
    if !have_bpf_privileges("members_pass_in_every_16_their_prefixes_touch_across_swaps") {
        return;
    }
    let layouts: [(&[&str], &[&str], &[&str]); 4] = [
        (
            &[
                "10.0.0.0/7",
                "173.245.48.0/20",
                "192.0.2.77/32",
                "2400::/15",
            ],
            &[
                "10.0.0.1",
                "11.255.255.254",
                "173.245.48.1",
                "173.245.63.254",
                "192.0.2.77",
                "2400::1",
                "2401:ffff::1",
            ],
            &[
                "9.255.255.254",
                "12.0.0.1",
                "173.245.47.254",
                "173.245.64.1",
                "192.0.2.76",
                "192.0.3.77",
                "2402::1",
                "23ff:ffff::1",
            ],
        ),
        (
            &["12.0.0.0/16", "2606:4700::/32", "2001:db8::5/128"],
            &["12.0.0.1", "12.0.255.254", "2606:4700::1", "2001:db8::5"],
            &[
                "10.0.0.1",
                "11.255.255.254",
                "173.245.48.1",
                "192.0.2.77",
                "2400::1",
                "2001:db8::6",
                "2606:4701::1",
            ],
        ),
        (
            &["0.0.0.0/1", "::/1"],
            &["10.0.0.1", "127.255.255.254", "2001:db8::6"],
            &["128.0.0.1", "173.245.48.1", "8000::1"],
        ),
        (
            &["173.245.48.0/20"],
            &["173.245.48.1"],
            &[
                "10.0.0.1",
                "12.0.0.1",
                "173.245.0.1",
                "2606:4700::1",
                "2001:db8::5",
            ],
        ),
    ];
    let mut harness = Harness::new();
    for round in 0..2 {
        for (prefixes, members, outsiders) in layouts {
            let mut layout = spec(false);
            layout.sets.insert(
                "cloudflare".into(),
                prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            );
            harness.filter.apply(&compile(&layout).unwrap()).unwrap();
            for (sources, expected) in [
                (members, (XDP_PASS, PassMember)),
                (outsiders, (XDP_DROP, DropNotMemberTcp)),
            ] {
                for source in sources {
                    let outcome = harness.run(&syn(source, 443).build());
                    assert_eq!(
                        (outcome.action, outcome.counted.0),
                        expected,
                        "round {round}, policy {prefixes:?}: SYN from {source}"
                    );
                }
            }
        }
    }
}
