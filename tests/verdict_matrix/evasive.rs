//! Evasive shapes: the ones that show a port but hide the rest are judged
//! as a connection attempt to that port, the ones that hide the port are
//! dropped from everyone; and frames cut at every header boundary.
use xdpgate_common::{
    Family::{Ipv4 as V4, Ipv6 as V6, Other},
    Reason::*,
};
use xdpgate_tests::{
    verdict::{
        case, syn, Case, ADMIN_V4, CLOUDFLARE_V4, CLOUDFLARE_V6, NODE_V4, NODE_V6, OUTSIDER_V4,
        OUTSIDER_V6,
    },
    Ext, Packet,
};

use crate::{with_ip_total_len, with_ip_version};

/// Shapes that show the destination port but hide the rest are judged as a
/// connection attempt to that port: a member of one set never reaches a
/// port bound to another. Shapes that hide the port are dropped from
/// everyone.
pub(crate) fn evasive_per_port_cases() -> Vec<Case> {
    let mut c = tiny_first_fragments_on_every_port();
    c.extend(ports_out_of_reach());
    c.extend(lying_headers());
    c
}

fn tiny_tcp(src: &str, port: u16) -> Vec<u8> {
    syn(src, port)
        .l4_truncated(8)
        .ipv4_fragment(0, true)
        .build()
}

fn tiny_tcp_v6(src: &str, port: u16) -> Vec<u8> {
    syn(src, port)
        .l4_truncated(8)
        .exts(&[Ext::Fragment {
            offset: 0,
            more: true,
        }])
        .build()
}

fn tiny_udp(src: &str, port: u16) -> Vec<u8> {
    Packet::udp(src, port)
        .l4_truncated(4)
        .ipv4_fragment(0, true)
        .build()
}

fn deep_chain(src: &str, port: u16) -> Vec<u8> {
    syn(src, port).exts(&[Ext::DestOpts; 9]).build()
}

/// Tiny first fragments, which show the port, from members of other sets.
pub(crate) fn tiny_first_fragments_on_every_port() -> Vec<Case> {
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
    ]
}

/// Shapes whose port is out of reach: no port in the first fragment, a chain past the walk bound, a transport header that starts in a later fragment.
pub(crate) fn ports_out_of_reach() -> Vec<Case> {
    vec![
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
    ]
}

/// Headers whose lengths or versions lie, and tiny fragments behind priority tags.
pub(crate) fn lying_headers() -> Vec<Case> {
    vec![
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

/// Frames cut at every header boundary, and inside each header.
pub(crate) fn truncation_cases() -> Vec<Case> {
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
