//! The plain shapes: members and non-members of both families, segments
//! that are no connection attempt, SYN variants, UDP, deny sets,
//! IPv4-mapped sources, unbound ports and other protocols, and frames that
//! are not IP.
use xdpgate_common::{
    Family::{Ipv4 as V4, Ipv6 as V6, Other},
    Reason::*,
};
use xdpgate_tests::{
    arp_frame, ethertype_frame,
    verdict::{
        case, syn, Case, ADMIN_V4, CLOUDFLARE_V4, CLOUDFLARE_V6, DENIED_V4, DENIED_V6, NODE_V4,
        NODE_V6, OUTSIDER_V4, OUTSIDER_V6,
    },
    Flags, Packet, L4,
};

/// Members and non-members, both families.
pub(crate) fn members_and_non_members() -> Vec<Case> {
    vec![
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
    ]
}

/// Not connection attempts: the kernel answers these itself.
pub(crate) fn not_connection_attempts() -> Vec<Case> {
    vec![
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
    ]
}

/// SYN variants.
pub(crate) fn syn_variants() -> Vec<Case> {
    vec![
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
    ]
}

/// UDP.
pub(crate) fn udp() -> Vec<Case> {
    vec![
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
    ]
}

/// Deny sets drop everything, on every port.
pub(crate) fn deny_sets() -> Vec<Case> {
    vec![
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
    ]
}

/// IPv4-mapped IPv6 sources are judged against the IPv4 sets.
pub(crate) fn ipv4_mapped_sources() -> Vec<Case> {
    vec![
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
    ]
}

/// Unbound ports and other protocols.
pub(crate) fn unbound_ports_and_other_protocols() -> Vec<Case> {
    vec![
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
    ]
}

/// Not IP.
pub(crate) fn not_ip() -> Vec<Case> {
    vec![
        case("ARP request", arp_frame(), PassNotIp, Other),
        case("LLDP", ethertype_frame(0x88cc), PassNotIp, Other),
        case(
            "unknown ethertype 0x1234",
            ethertype_frame(0x1234),
            PassNotIp,
            Other,
        ),
    ]
}
