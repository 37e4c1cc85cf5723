//! Headers between the frame and the port: VLAN tags (and chains of
//! priority tags), IPv4 options and header length, IPv6 extension headers
//! and the bound on their walk, and fragments of both families.
use xdpgate_common::{
    Family::{Ipv4 as V4, Ipv6 as V6, Other},
    Reason::*,
};
use xdpgate_tests::{
    verdict::{
        case, syn, Case, CLOUDFLARE_V4, CLOUDFLARE_V6, DENIED_V4, NODE_V6, OUTSIDER_V4, OUTSIDER_V6,
    },
    Ext, Packet,
};

use crate::with_ihl;

/// VLAN tags.
pub(crate) fn vlan_tags() -> Vec<Case> {
    vec![
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
    ]
}

/// Linux strips any chain of VID-0 (priority) tags, of either TPID, before
/// IP: the filter walks up to eight tags of any VID and judges what is
/// inside; a frame tagged deeper is dropped, its source unseen.
pub(crate) fn priority_tag_cases() -> Vec<Case> {
    let mut c = priority_tag_chains();
    c.extend(priority_tags_at_and_past_the_walk());
    c
}

/// Chains of three to eight VID-0 tags, of one TPID or alternating.
fn priority_tag_chains() -> Vec<Case> {
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
    c
}

/// Members behind eight tags, a tagged VID before the priority tags, chains
/// past the walk, a TPID Linux keeps, and what tags do not hide.
fn priority_tags_at_and_past_the_walk() -> Vec<Case> {
    vec![
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
    ]
}

/// IPv4 options and header length.
pub(crate) fn ipv4_options() -> Vec<Case> {
    vec![
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
    ]
}

/// IPv6 extension headers, one kind at a time and chained.
pub(crate) fn ipv6_extension_headers() -> Vec<Case> {
    vec![
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
    ]
}

/// IPv6 extension header chains at and past the walk bound.
pub(crate) fn ipv6_extension_walk_bound() -> Vec<Case> {
    vec![
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
    ]
}

/// First and later IPv4 fragments, and tiny first ones.
pub(crate) fn ipv4_fragments() -> Vec<Case> {
    vec![
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
    ]
}

/// IPv4 fragments that start 8 bytes into the transport header.
pub(crate) fn fragments_at_an_offset() -> Vec<Case> {
    vec![
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
    ]
}

/// IPv6 first and later fragments, and a tiny UDP first fragment.
pub(crate) fn ipv6_and_udp_first_fragments() -> Vec<Case> {
    vec![
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
    ]
}
