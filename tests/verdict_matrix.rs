//! The packet-verdict matrix: the real XDP object, loaded by the kernel's
//! verifier and run through `BPF_PROG_TEST_RUN` with frames built by
//! `etherparse`. Every case checks the verdict and the one counter that moved.
//! Needs CAP_BPF + CAP_NET_ADMIN (root); skips saying so otherwise.
use std::collections::BTreeMap;

use xdpgate::policy::{compile, Binding, CompiledPolicy, PolicySpec, PortRange, Tunnels};
use xdpgate_common::{Family, Reason};
use xdpgate_tests::{
    arp_frame, ethertype_frame, have_bpf_privileges, tunnel, Ext, Flags, Harness, Packet, L4,
    XDP_DROP, XDP_PASS,
};

const CLOUDFLARE_V4: &str = "198.41.128.7";
const CLOUDFLARE_V6: &str = "2606:4700::7";
const OUTSIDER_V4: &str = "203.0.114.9";
const OUTSIDER_V6: &str = "2001:db8:ffff::9";
const ADMIN_V4: &str = "203.0.113.9";
const NODE_V4: &str = "10.0.0.2";
const NODE_V6: &str = "fd00::2";
const DENIED_V4: &str = "198.51.100.7";
const DENIED_V6: &str = "2001:db8:bad::7";

fn spec(strict: bool) -> PolicySpec {
    let nets = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect();
    let mut sets = BTreeMap::new();
    sets.insert(
        "cloudflare".into(),
        nets(&["198.41.128.0/17", "2606:4700::/32"]),
    );
    sets.insert("admins".into(), nets(&["203.0.113.0/24"]));
    sets.insert("nodes".into(), nets(&["10.0.0.0/24", "fd00::/64"]));
    sets.insert(
        "abusers".into(),
        nets(&["198.51.100.0/24", "2001:db8:bad::/48"]),
    );
    let ports = |p: &[u16]| p.iter().map(|p| PortRange::single(*p)).collect();
    PolicySpec {
        sets,
        allow: vec![
            Binding {
                tcp: ports(&[80, 443]),
                udp: vec![],
                from: vec!["cloudflare".into()],
            },
            Binding {
                tcp: ports(&[22]),
                udp: vec![],
                from: vec!["admins".into()],
            },
            Binding {
                tcp: ports(&[6443]),
                udp: ports(&[8472]),
                from: vec!["nodes".into()],
            },
        ],
        deny: vec!["abusers".into()],
        strict,
        tunnels: Tunnels::Pass,
    }
}

fn policy(strict: bool) -> CompiledPolicy {
    compile(&spec(strict)).expect("matrix policy compiles")
}

struct Case {
    name: String,
    frame: Vec<u8>,
    action: u32,
    reason: Reason,
    family: Family,
}

fn case(name: &str, frame: Vec<u8>, reason: Reason, family: Family) -> Case {
    Case {
        name: name.to_string(),
        frame,
        action: if reason.is_drop() { XDP_DROP } else { XDP_PASS },
        reason,
        family,
    }
}

/// Runs every case and fails once, listing every case that went wrong.
fn run_cases(harness: &mut Harness, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let total = cases.len();
    for case in cases {
        let outcome = harness.run(&case.frame);
        let want = (
            case.action,
            (case.reason, case.family),
            case.frame.len() as u64,
        );
        let got = (outcome.action, outcome.counted, outcome.bytes);
        if want != got {
            failures.push(format!("  {}: want {want:?}, got {got:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases wrong (action, (reason, family), bytes):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

use Family::{Ipv4 as V4, Ipv6 as V6, Other};
use Reason::*;

fn syn(src: &str, port: u16) -> Packet {
    Packet::tcp(src, port, Flags::Syn)
}

fn shape_cases() -> Vec<Case> {
    let mut c = vec![
        // Members and non-members, both families.
        case(
            "v4 member SYN :443",
            syn(CLOUDFLARE_V4, 443).build(),
            PassMember,
            V4,
        ),
        case(
            "v4 non-member SYN :443",
            syn(OUTSIDER_V4, 443).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "v6 member SYN :443",
            syn(CLOUDFLARE_V6, 443).build(),
            PassMember,
            V6,
        ),
        case(
            "v6 non-member SYN :443",
            syn(OUTSIDER_V6, 443).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v4 admin SYN :22",
            syn(ADMIN_V4, 22).build(),
            PassMember,
            V4,
        ),
        case(
            "v4 cloudflare SYN :22 (other set)",
            syn(CLOUDFLARE_V4, 22).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "v4 node SYN :6443",
            syn(NODE_V4, 6443).build(),
            PassMember,
            V4,
        ),
        case(
            "v6 node SYN :6443",
            syn(NODE_V6, 6443).build(),
            PassMember,
            V6,
        ),
        // Not connection attempts: the kernel answers these itself.
        case(
            "v4 non-member SYN+ACK",
            Packet::tcp(OUTSIDER_V4, 443, Flags::SynAck).build(),
            PassNotSyn,
            V4,
        ),
        case(
            "v4 non-member ACK",
            Packet::tcp(OUTSIDER_V4, 443, Flags::Ack).build(),
            PassNotSyn,
            V4,
        ),
        case(
            "v4 non-member RST",
            Packet::tcp(OUTSIDER_V4, 443, Flags::Rst).build(),
            PassNotSyn,
            V4,
        ),
        case(
            "v4 non-member FIN",
            Packet::tcp(OUTSIDER_V4, 443, Flags::Fin).build(),
            PassNotSyn,
            V4,
        ),
        case(
            "v6 non-member ACK",
            Packet::tcp(OUTSIDER_V6, 443, Flags::Ack).build(),
            PassNotSyn,
            V6,
        ),
        // SYN variants.
        case(
            "v4 non-member SYN+ECE+CWR",
            Packet::tcp(OUTSIDER_V4, 443, Flags::SynEceCwr).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "v4 member SYN+ECE+CWR",
            Packet::tcp(CLOUDFLARE_V4, 443, Flags::SynEceCwr).build(),
            PassMember,
            V4,
        ),
        case(
            "v4 non-member SYN with payload",
            syn(OUTSIDER_V4, 443).payload(512).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "v6 non-member SYN with payload",
            syn(OUTSIDER_V6, 443).payload(100).build(),
            DropNotMemberTcp,
            V6,
        ),
        // VLAN tags.
        case(
            "802.1Q non-member SYN",
            syn(OUTSIDER_V4, 443).vlans(&[0x8100]).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "802.1ad member SYN",
            syn(CLOUDFLARE_V4, 443).vlans(&[0x88a8]).build(),
            PassMember,
            V4,
        ),
        case(
            "802.1ad+802.1Q non-member SYN",
            syn(OUTSIDER_V4, 443).vlans(&[0x88a8, 0x8100]).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "802.1Q+802.1Q v6 non-member SYN",
            syn(OUTSIDER_V6, 443).vlans(&[0x8100, 0x8100]).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "802.1ad+802.1Q v6 member SYN",
            syn(CLOUDFLARE_V6, 443).vlans(&[0x88a8, 0x8100]).build(),
            PassMember,
            V6,
        ),
        case(
            "three VLAN tags (VIDs 100-102) non-member SYN",
            syn(OUTSIDER_V4, 443)
                .vlans(&[0x88a8, 0x8100, 0x8100])
                .build(),
            DropNotMemberTcp,
            V4,
        ),
        // IPv4 options and header length.
        case(
            "IHL 6 non-member SYN",
            syn(OUTSIDER_V4, 443).ipv4_options(1).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "IHL 10 non-member SYN",
            syn(OUTSIDER_V4, 443).ipv4_options(5).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "IHL 15 non-member SYN",
            syn(OUTSIDER_V4, 443).ipv4_options(10).build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "IHL 15 member SYN",
            syn(CLOUDFLARE_V4, 443).ipv4_options(10).build(),
            PassMember,
            V4,
        ),
        case(
            "IHL 15 non-member SYN to unbound port",
            syn(OUTSIDER_V4, 8080).ipv4_options(10).build(),
            PassUnboundPort,
            V4,
        ),
        case(
            "IHL 4 (bad) non-member",
            with_ihl(syn(OUTSIDER_V4, 443).build(), 4),
            DropEvasive,
            V4,
        ),
        case(
            "IHL 0 (bad) non-member",
            with_ihl(syn(OUTSIDER_V4, 443).build(), 0),
            DropEvasive,
            V4,
        ),
        case(
            "IHL 4 (bad) member: the kernel drops it, so does the filter",
            with_ihl(syn(CLOUDFLARE_V4, 443).build(), 4),
            DropEvasive,
            V4,
        ),
        // IPv6 extension headers.
        case(
            "v6 hop-by-hop non-member SYN",
            syn(OUTSIDER_V6, 443).exts(&[Ext::HopByHop]).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v6 routing non-member SYN",
            syn(OUTSIDER_V6, 443).exts(&[Ext::Routing]).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v6 destination options non-member SYN",
            syn(OUTSIDER_V6, 443).exts(&[Ext::DestOpts]).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v6 AH non-member SYN",
            syn(OUTSIDER_V6, 443).exts(&[Ext::Auth]).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v6 atomic fragment non-member SYN",
            syn(OUTSIDER_V6, 443)
                .exts(&[Ext::Fragment {
                    offset: 0,
                    more: false,
                }])
                .build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v6 chain of five non-member SYN",
            syn(OUTSIDER_V6, 443)
                .exts(&[
                    Ext::HopByHop,
                    Ext::DestOpts,
                    Ext::Routing,
                    Ext::Auth,
                    Ext::DestOpts,
                ])
                .build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v6 chain of five member SYN",
            syn(CLOUDFLARE_V6, 443)
                .exts(&[
                    Ext::HopByHop,
                    Ext::DestOpts,
                    Ext::Routing,
                    Ext::Auth,
                    Ext::DestOpts,
                ])
                .build(),
            PassMember,
            V6,
        ),
        case(
            "v6 chain at the walk bound (8) non-member SYN",
            syn(OUTSIDER_V6, 443).exts(&[Ext::DestOpts; 8]).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v6 chain past the walk bound (9) non-member",
            syn(OUTSIDER_V6, 443).exts(&[Ext::DestOpts; 9]).build(),
            DropEvasive,
            V6,
        ),
        case(
            "v6 chain past the walk bound (9) member: its port is not seen",
            syn(CLOUDFLARE_V6, 443).exts(&[Ext::DestOpts; 9]).build(),
            DropEvasive,
            V6,
        ),
        case(
            "v6 chain past the walk bound to unbound port",
            syn(OUTSIDER_V6, 8080).exts(&[Ext::DestOpts; 9]).build(),
            DropEvasive,
            V6,
        ),
        // Fragments.
        case(
            "v4 first fragment non-member SYN",
            syn(OUTSIDER_V4, 443)
                .payload(64)
                .ipv4_fragment(0, true)
                .build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "v4 first fragment member SYN",
            syn(CLOUDFLARE_V4, 443)
                .payload(64)
                .ipv4_fragment(0, true)
                .build(),
            PassMember,
            V4,
        ),
        case(
            "v4 later fragment",
            syn(OUTSIDER_V4, 443).ipv4_fragment(100, false).build(),
            PassFragment,
            V4,
        ),
        case(
            "v4 tiny first fragment (8 TCP bytes) non-member",
            syn(OUTSIDER_V4, 443)
                .l4_truncated(8)
                .ipv4_fragment(0, true)
                .build(),
            DropEvasive,
            V4,
        ),
        case(
            "v4 tiny first fragment (13 TCP bytes, no flags) non-member",
            syn(OUTSIDER_V4, 443)
                .l4_truncated(13)
                .ipv4_fragment(0, true)
                .build(),
            DropEvasive,
            V4,
        ),
        case(
            "v4 tiny first fragment member",
            syn(CLOUDFLARE_V4, 443)
                .l4_truncated(8)
                .ipv4_fragment(0, true)
                .build(),
            PassMember,
            V4,
        ),
        case(
            "v4 TCP fragment at offset 8 bytes non-member",
            syn(OUTSIDER_V4, 443)
                .l4_truncated(12)
                .ipv4_fragment(1, false)
                .build(),
            DropEvasive,
            V4,
        ),
        case(
            "v4 TCP fragment at offset 8 bytes member",
            syn(CLOUDFLARE_V4, 443)
                .l4_truncated(12)
                .ipv4_fragment(1, false)
                .build(),
            DropEvasive,
            V4,
        ),
        case(
            "v4 UDP fragment at offset 8 bytes",
            Packet::udp(OUTSIDER_V4, 8472)
                .payload(16)
                .ipv4_fragment(1, false)
                .build(),
            PassFragment,
            V4,
        ),
        case(
            "v6 first fragment non-member SYN",
            syn(OUTSIDER_V6, 443)
                .payload(64)
                .exts(&[Ext::Fragment {
                    offset: 0,
                    more: true,
                }])
                .build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "v6 later fragment",
            syn(OUTSIDER_V6, 443)
                .exts(&[Ext::Fragment {
                    offset: 50,
                    more: true,
                }])
                .build(),
            PassFragment,
            V6,
        ),
        case(
            "v6 tiny first fragment non-member",
            syn(OUTSIDER_V6, 443)
                .l4_truncated(8)
                .exts(&[Ext::Fragment {
                    offset: 0,
                    more: true,
                }])
                .build(),
            DropEvasive,
            V6,
        ),
        case(
            "v6 first fragment without the TCP header non-member",
            syn(OUTSIDER_V6, 443)
                .l4_truncated(0)
                .exts(&[
                    Ext::HopByHop,
                    Ext::Fragment {
                        offset: 0,
                        more: true,
                    },
                ])
                .build(),
            DropEvasive,
            V6,
        ),
        case(
            "v4 tiny UDP first fragment non-member",
            Packet::udp(OUTSIDER_V4, 8472)
                .l4_truncated(3)
                .ipv4_fragment(0, true)
                .build(),
            DropEvasive,
            V4,
        ),
        // UDP.
        case(
            "v4 UDP :8472 from a node",
            Packet::udp(NODE_V4, 8472).payload(50).build(),
            PassMember,
            V4,
        ),
        case(
            "v4 UDP :8472 from a non-member",
            Packet::udp(OUTSIDER_V4, 8472).payload(50).build(),
            DropNotMemberUdp,
            V4,
        ),
        case(
            "v6 UDP :8472 from a non-member",
            Packet::udp(OUTSIDER_V6, 8472).build(),
            DropNotMemberUdp,
            V6,
        ),
        case(
            "v6 UDP :8472 from a node",
            Packet::udp(NODE_V6, 8472).build(),
            PassMember,
            V6,
        ),
        case(
            "v4 UDP :53 (unbound) from a non-member",
            Packet::udp(OUTSIDER_V4, 53).build(),
            PassUnboundPort,
            V4,
        ),
        case(
            "v4 UDP :443 (bound for TCP only)",
            Packet::udp(OUTSIDER_V4, 443).build(),
            PassUnboundPort,
            V4,
        ),
        // Deny sets drop everything, on every port.
        case(
            "v4 denied source to unbound port",
            syn(DENIED_V4, 8080).build(),
            DropDeny,
            V4,
        ),
        case(
            "v4 denied source ACK",
            Packet::tcp(DENIED_V4, 443, Flags::Ack).build(),
            DropDeny,
            V4,
        ),
        case(
            "v4 denied source UDP",
            Packet::udp(DENIED_V4, 53).build(),
            DropDeny,
            V4,
        ),
        case(
            "v6 denied source SYN :443",
            syn(DENIED_V6, 443).build(),
            DropDeny,
            V6,
        ),
        case(
            "v4 denied source later fragment",
            syn(DENIED_V4, 443).ipv4_fragment(100, false).build(),
            DropDeny,
            V4,
        ),
        // IPv4-mapped IPv6 sources are judged against the IPv4 sets.
        case(
            "mapped cloudflare SYN :443",
            syn("::ffff:198.41.128.7", 443).build(),
            PassMember,
            V6,
        ),
        case(
            "mapped outsider SYN :443",
            syn("::ffff:203.0.114.9", 443).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "mapped admin SYN :443 (wrong set)",
            syn("::ffff:203.0.113.9", 443).build(),
            DropNotMemberTcp,
            V6,
        ),
        case(
            "mapped denied source",
            syn("::ffff:198.51.100.7", 8080).build(),
            DropDeny,
            V6,
        ),
        // Unbound ports and other protocols.
        case(
            "v4 non-member SYN :8080 (unbound)",
            syn(OUTSIDER_V4, 8080).build(),
            PassUnboundPort,
            V4,
        ),
        case(
            "v6 non-member SYN :8080 (unbound)",
            syn(OUTSIDER_V6, 8080).build(),
            PassUnboundPort,
            V6,
        ),
        case(
            "v4 ICMP echo from a non-member",
            Packet::new(
                OUTSIDER_V4,
                L4::Other {
                    protocol: 1,
                    bytes: vec![8, 0, 0, 0, 0, 1, 0, 1],
                },
            )
            .build(),
            PassOtherProtocol,
            V4,
        ),
        case(
            "v6 ICMPv6 echo from a non-member",
            Packet::new(
                OUTSIDER_V6,
                L4::Other {
                    protocol: 58,
                    bytes: vec![128, 0, 0, 0, 0, 1, 0, 1],
                },
            )
            .build(),
            PassOtherProtocol,
            V6,
        ),
        // Not IP.
        case("ARP request", arp_frame(), PassNotIp, Other),
        case("LLDP", ethertype_frame(0x88cc), PassNotIp, Other),
        case(
            "unknown ethertype 0x1234",
            ethertype_frame(0x1234),
            PassNotIp,
            Other,
        ),
    ];
    c.extend(truncation_cases());
    c.extend(priority_tag_cases());
    c.extend(evasive_per_port_cases());
    c
}

/// Linux strips any chain of VID-0 (priority) tags, of either TPID, before
/// IP: the filter walks up to eight tags of any VID and judges what is
/// inside; a frame tagged deeper is dropped, its source unseen.
fn priority_tag_cases() -> Vec<Case> {
    let mut c = Vec::new();
    for count in 3..=8 {
        c.push(case(
            &format!("{count} VID-0 tags v4 non-member SYN"),
            syn(OUTSIDER_V4, 443).priority_tags(count).build(),
            DropNotMemberTcp,
            V4,
        ));
        c.push(case(
            &format!("{count} VID-0 tags v6 non-member SYN"),
            syn(OUTSIDER_V6, 443).priority_tags(count).build(),
            DropNotMemberTcp,
            V6,
        ));
        // 802.1ad and 802.1Q alternating, all VID 0.
        let mixed: Vec<(u16, u16)> = (0..count)
            .map(|i| (if i % 2 == 0 { 0x88a8 } else { 0x8100 }, 0))
            .collect();
        c.push(case(
            &format!("{count} VID-0 802.1ad/802.1Q tags v4 non-member UDP :8472"),
            Packet::udp(OUTSIDER_V4, 8472).tags(&mixed).build(),
            DropNotMemberUdp,
            V4,
        ));
    }
    c.extend([
        case(
            "8 VID-0 tags v4 member SYN",
            syn(CLOUDFLARE_V4, 443).priority_tags(8).build(),
            PassMember,
            V4,
        ),
        case(
            "8 VID-0 tags v6 admin-less node SYN :6443",
            syn(NODE_V6, 6443).priority_tags(8).build(),
            PassMember,
            V6,
        ),
        case(
            "VID 100 then three VID-0 tags non-member SYN",
            syn(OUTSIDER_V4, 443)
                .tags(&[(0x8100, 100), (0x8100, 0), (0x88a8, 0), (0x8100, 0)])
                .build(),
            DropNotMemberTcp,
            V4,
        ),
        case(
            "9 VID-0 tags non-member SYN",
            syn(OUTSIDER_V4, 443).priority_tags(9).build(),
            DropEvasive,
            Other,
        ),
        case(
            "9 VID-0 tags member SYN: the source is past the walk",
            syn(CLOUDFLARE_V4, 443).priority_tags(9).build(),
            DropEvasive,
            Other,
        ),
        case(
            "12 VID-0 tags v6 non-member SYN",
            syn(OUTSIDER_V6, 443).priority_tags(12).build(),
            DropEvasive,
            Other,
        ),
        case(
            "0x9100 tag (Linux does not untag it)",
            syn(OUTSIDER_V4, 443).tags(&[(0x9100, 0)]).build(),
            PassNotIp,
            Other,
        ),
        case(
            "4 VID-0 tags denied source",
            syn(DENIED_V4, 8080).priority_tags(4).build(),
            DropDeny,
            V4,
        ),
        case(
            "5 VID-0 tags v4 later fragment",
            syn(OUTSIDER_V4, 443)
                .ipv4_fragment(100, false)
                .priority_tags(5)
                .build(),
            PassFragment,
            V4,
        ),
    ]);
    c
}

/// Shapes that show the destination port but hide the rest are judged as a
/// connection attempt to that port: a member of one set never reaches a
/// port bound to another. Shapes that hide the port are dropped from
/// everyone.
fn evasive_per_port_cases() -> Vec<Case> {
    let tiny_tcp = |src: &str, port: u16| {
        syn(src, port)
            .l4_truncated(8)
            .ipv4_fragment(0, true)
            .build()
    };
    let tiny_tcp_v6 = |src: &str, port: u16| {
        syn(src, port)
            .l4_truncated(8)
            .exts(&[Ext::Fragment {
                offset: 0,
                more: true,
            }])
            .build()
    };
    let tiny_udp = |src: &str, port: u16| {
        Packet::udp(src, port)
            .l4_truncated(4)
            .ipv4_fragment(0, true)
            .build()
    };
    let deep_chain = |src: &str, port: u16| syn(src, port).exts(&[Ext::DestOpts; 9]).build();
    vec![
        case(
            "admin tiny first fragment :443",
            tiny_tcp(ADMIN_V4, 443),
            DropEvasive,
            V4,
        ),
        case(
            "admin tiny first fragment :6443",
            tiny_tcp(ADMIN_V4, 6443),
            DropEvasive,
            V4,
        ),
        case(
            "admin tiny first fragment :22 (its port)",
            tiny_tcp(ADMIN_V4, 22),
            PassMember,
            V4,
        ),
        case(
            "cloudflare tiny first fragment :22",
            tiny_tcp(CLOUDFLARE_V4, 22),
            DropEvasive,
            V4,
        ),
        case(
            "node tiny first fragment :443",
            tiny_tcp(NODE_V4, 443),
            DropEvasive,
            V4,
        ),
        case(
            "non-member tiny first fragment :8080 (unbound)",
            tiny_tcp(OUTSIDER_V4, 8080),
            PassUnboundPort,
            V4,
        ),
        case(
            "admin tiny UDP first fragment :8472",
            tiny_udp(ADMIN_V4, 8472),
            DropEvasive,
            V4,
        ),
        case(
            "node tiny UDP first fragment :8472 (its port)",
            tiny_udp(NODE_V4, 8472),
            PassMember,
            V4,
        ),
        case(
            "v6 node tiny first fragment :443",
            tiny_tcp_v6(NODE_V6, 443),
            DropEvasive,
            V6,
        ),
        case(
            "v6 node tiny first fragment :6443 (its port)",
            tiny_tcp_v6(NODE_V6, 6443),
            PassMember,
            V6,
        ),
        case(
            "v6 cloudflare tiny first fragment :6443",
            tiny_tcp_v6(CLOUDFLARE_V6, 6443),
            DropEvasive,
            V6,
        ),
        case(
            "mapped admin tiny first fragment :443",
            tiny_tcp_v6("::ffff:203.0.113.9", 443),
            DropEvasive,
            V6,
        ),
        case(
            "cloudflare first fragment with 2 TCP bytes (no port)",
            syn(CLOUDFLARE_V4, 443)
                .l4_truncated(2)
                .ipv4_fragment(0, true)
                .build(),
            DropEvasive,
            V4,
        ),
        case(
            "node first fragment with 3 UDP bytes (no port)",
            Packet::udp(NODE_V4, 8472)
                .l4_truncated(3)
                .ipv4_fragment(0, true)
                .build(),
            DropEvasive,
            V4,
        ),
        case(
            "node v6 chain past the walk bound :8472",
            Packet::udp(NODE_V6, 8472).exts(&[Ext::HopByHop; 9]).build(),
            DropEvasive,
            V6,
        ),
        case(
            "node v6 chain past the walk bound :6443",
            deep_chain(NODE_V6, 6443),
            DropEvasive,
            V6,
        ),
        case(
            "v6 TCP fragment at offset 8 bytes member",
            syn(CLOUDFLARE_V6, 443)
                .l4_truncated(12)
                .exts(&[Ext::Fragment {
                    offset: 1,
                    more: false,
                }])
                .build(),
            DropEvasive,
            V6,
        ),
        case(
            "v6 UDP fragment at offset 8 bytes",
            Packet::udp(OUTSIDER_V6, 8472)
                .payload(16)
                .exts(&[Ext::Fragment {
                    offset: 1,
                    more: false,
                }])
                .build(),
            PassFragment,
            V6,
        ),
        case(
            "v6 first fragment whose options push TCP into the next fragment",
            syn(NODE_V6, 443)
                .l4_truncated(0)
                .exts(&[
                    Ext::Fragment {
                        offset: 0,
                        more: true,
                    },
                    Ext::DestOpts,
                ])
                .build(),
            DropEvasive,
            V6,
        ),
        case(
            "admin SYN :443 whose IP length ends 8 bytes into TCP",
            with_ip_total_len(syn(ADMIN_V4, 443).build(), 28),
            DropEvasive,
            V4,
        ),
        case(
            "admin SYN :22 whose IP length ends 8 bytes into TCP",
            with_ip_total_len(syn(ADMIN_V4, 22).build(), 28),
            PassMember,
            V4,
        ),
        case(
            "cloudflare SYN with IP total length below the header",
            with_ip_total_len(syn(CLOUDFLARE_V4, 443).build(), 16),
            DropEvasive,
            V4,
        ),
        case(
            "cloudflare SYN with IP version 6 in an IPv4 frame",
            with_ip_version(syn(CLOUDFLARE_V4, 443).build(), 6),
            DropEvasive,
            V4,
        ),
        case(
            "cloudflare SYN with IP version 4 in an IPv6 frame",
            with_ip_version(syn(CLOUDFLARE_V6, 443).build(), 4),
            DropEvasive,
            V6,
        ),
        case(
            "node SYN :6443 with 4 VID-0 tags and a tiny fragment",
            syn(NODE_V4, 6443)
                .l4_truncated(8)
                .ipv4_fragment(0, true)
                .priority_tags(4)
                .build(),
            PassMember,
            V4,
        ),
        case(
            "admin SYN :443 with 4 VID-0 tags and a tiny fragment",
            syn(ADMIN_V4, 443)
                .l4_truncated(8)
                .ipv4_fragment(0, true)
                .priority_tags(4)
                .build(),
            DropEvasive,
            V4,
        ),
    ]
}

/// Sets the IPv4 total length of an untagged frame (the checksum is left
/// stale: the filter does not check it, the kernel does).
fn with_ip_total_len(mut frame: Vec<u8>, len: u16) -> Vec<u8> {
    frame[16..18].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Sets the version nibble of the IP header of an untagged frame.
fn with_ip_version(mut frame: Vec<u8>, version: u8) -> Vec<u8> {
    frame[14] = (frame[14] & 0x0f) | (version << 4);
    frame
}

/// Sets the IHL nibble of the IPv4 header in an untagged frame.
fn with_ihl(mut frame: Vec<u8>, ihl: u8) -> Vec<u8> {
    frame[14] = (frame[14] & 0xf0) | ihl;
    frame
}

/// Frames cut at every header boundary, and inside each header.
fn truncation_cases() -> Vec<Case> {
    let v4 = syn(OUTSIDER_V4, 443).build();
    let v4_member = syn(CLOUDFLARE_V4, 443).build();
    let v4_tagged = syn(OUTSIDER_V4, 443).vlans(&[0x88a8, 0x8100]).build();
    let v4_options = syn(OUTSIDER_V4, 443).ipv4_options(3).build();
    let v6 = syn(OUTSIDER_V6, 443).exts(&[Ext::HopByHop]).build();
    let udp = Packet::udp(OUTSIDER_V4, 8472).build();
    let cut = |name: &str, frame: &[u8], len: usize, reason, family| {
        case(
            &format!("{name} cut at {len} bytes"),
            frame[..len].to_vec(),
            reason,
            family,
        )
    };
    vec![
        cut("tagged v4", &v4_tagged, 14, PassNotIp, Other),
        cut("tagged v4", &v4_tagged, 16, PassNotIp, Other),
        cut("tagged v4", &v4_tagged, 18, PassNotIp, Other),
        cut("tagged v4", &v4_tagged, 22, PassUnparsed, V4),
        cut("tagged v4", &v4_tagged, 22 + 19, PassUnparsed, V4),
        cut("tagged v4", &v4_tagged, 22 + 20, DropEvasive, V4),
        cut("tagged v4", &v4_tagged, 22 + 20 + 13, DropEvasive, V4),
        cut("v4", &v4, 14, PassUnparsed, V4),
        cut("v4", &v4, 14 + 20, DropEvasive, V4),
        cut("v4", &v4, 14 + 20 + 19, DropEvasive, V4),
        cut("v4 member", &v4_member, 14 + 20 + 10, PassMember, V4),
        cut("v4 with options", &v4_options, 14 + 24, DropEvasive, V4),
        cut("v4 with options", &v4_options, 14 + 32 + 4, DropEvasive, V4),
        cut("v6", &v6, 14 + 39, PassUnparsed, V6),
        cut("v6", &v6, 14 + 40, DropEvasive, V6),
        cut("v6", &v6, 14 + 40 + 1, DropEvasive, V6),
        cut("v6", &v6, 14 + 48, DropEvasive, V6),
        cut("v6", &v6, 14 + 48 + 19, DropEvasive, V6),
        cut("v4 UDP", &udp, 14 + 20 + 7, DropEvasive, V4),
    ]
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
fn tunnels_pass_by_default() {
    if !have_bpf_privileges("tunnels_pass_by_default") {
        return;
    }
    let mut harness = Harness::with_policy(&policy(false));
    run_cases(
        &mut harness,
        vec![
            case(
                "default: IPIP from a non-member",
                tunnel(OUTSIDER_V4, 4).build(),
                PassOtherProtocol,
                V4,
            ),
            case(
                "default: GRE from a non-member",
                tunnel(OUTSIDER_V6, 47).build(),
                PassOtherProtocol,
                V6,
            ),
            case(
                "default: VXLAN :4789 from a non-member",
                Packet::udp(OUTSIDER_V4, 4789).payload(58).build(),
                PassUnboundPort,
                V4,
            ),
        ],
    );
}

fn tunnel_cases(from_nodes: bool) -> Vec<Case> {
    let nodes_tunnel = if from_nodes { PassMember } else { DropTunnel };
    let nodes_udp = if from_nodes {
        PassMember
    } else {
        DropNotMemberUdp
    };
    let mut c = Vec::new();
    for (name, protocol) in [
        ("IPIP", 4),
        ("SIT/6in4", 41),
        ("GRE", 47),
        ("EtherIP", 97),
        ("L2TPv3", 115),
        ("MPLS-in-IP", 137),
    ] {
        c.push(case(
            &format!("v4 {name} from a non-member"),
            tunnel(OUTSIDER_V4, protocol).build(),
            DropTunnel,
            V4,
        ));
        c.push(case(
            &format!("v6 {name} from a non-member"),
            tunnel(OUTSIDER_V6, protocol).build(),
            DropTunnel,
            V6,
        ));
        c.push(case(
            &format!("v4 {name} from an admin (not a tunnel set)"),
            tunnel(ADMIN_V4, protocol).build(),
            DropTunnel,
            V4,
        ));
        c.push(case(
            &format!("v4 {name} from a node"),
            tunnel(NODE_V4, protocol).build(),
            nodes_tunnel,
            V4,
        ));
    }
    c.extend([
        case(
            "v6 GRE after a destination-options header from a non-member",
            tunnel(OUTSIDER_V6, 47).exts(&[Ext::DestOpts]).build(),
            DropTunnel,
            V6,
        ),
        case(
            "v6 IPv4-in-IPv6 from a node",
            tunnel(NODE_V6, 4).build(),
            nodes_tunnel,
            V6,
        ),
        case(
            "IPIP behind 5 VID-0 tags from a non-member",
            tunnel(OUTSIDER_V4, 4).priority_tags(5).build(),
            DropTunnel,
            V4,
        ),
        case(
            "IPIP from a denied source",
            tunnel(DENIED_V4, 4).build(),
            DropDeny,
            V4,
        ),
        case(
            "ICMP from a non-member is no tunnel",
            Packet::new(
                OUTSIDER_V4,
                L4::Other {
                    protocol: 1,
                    bytes: vec![8, 0, 0, 0, 0, 1, 0, 1],
                },
            )
            .build(),
            PassOtherProtocol,
            V4,
        ),
        case(
            "ESP from a non-member is no tunnel anyone can open",
            tunnel(OUTSIDER_V4, 50).build(),
            PassOtherProtocol,
            V4,
        ),
        case(
            "VXLAN :4789 from a non-member",
            Packet::udp(OUTSIDER_V4, 4789).payload(58).build(),
            DropNotMemberUdp,
            V4,
        ),
        case(
            "Geneve :6081 from an admin",
            Packet::udp(ADMIN_V4, 6081).payload(58).build(),
            DropNotMemberUdp,
            V4,
        ),
        case(
            "VXLAN :4789 from a node",
            Packet::udp(NODE_V4, 4789).payload(58).build(),
            nodes_udp,
            V4,
        ),
        case(
            "v6 GUE :6080 from a node",
            Packet::udp(NODE_V6, 6080).payload(58).build(),
            nodes_udp,
            V6,
        ),
        case(
            "tiny VXLAN first fragment from an admin",
            Packet::udp(ADMIN_V4, 4789)
                .l4_truncated(4)
                .ipv4_fragment(0, true)
                .build(),
            DropEvasive,
            V4,
        ),
        // 8472 is bound to nodes by a rule: the rule still holds.
        case(
            "flannel VXLAN :8472 from a node",
            Packet::udp(NODE_V4, 8472).payload(58).build(),
            PassMember,
            V4,
        ),
        case(
            "TCP :4789 is no tunnel port",
            syn(OUTSIDER_V4, 4789).build(),
            PassUnboundPort,
            V4,
        ),
    ]);
    c
}

#[test]
fn tunnels_from_nodes_drop_every_tunnel_shape_from_everyone_else() {
    if !have_bpf_privileges("tunnels_from_nodes_drop_every_tunnel_shape_from_everyone_else") {
        return;
    }
    let mut spec = spec(false);
    spec.tunnels = Tunnels::From(vec!["nodes".into()]);
    let mut harness = Harness::with_policy(&compile(&spec).unwrap());
    run_cases(&mut harness, tunnel_cases(true));
}

#[test]
fn tunnels_drop_drops_every_tunnel_shape_from_everyone() {
    if !have_bpf_privileges("tunnels_drop_drops_every_tunnel_shape_from_everyone") {
        return;
    }
    let mut spec = spec(false);
    spec.tunnels = Tunnels::From(vec![]);
    let mut harness = Harness::with_policy(&compile(&spec).unwrap());
    run_cases(&mut harness, tunnel_cases(false));
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
