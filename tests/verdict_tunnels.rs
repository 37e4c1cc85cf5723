//! Tunnels through the real XDP object: IP-in-IP, GRE and the other
//! encapsulations, and UDP tunnel ports, pass by default, are dropped from
//! everyone but the tunnel sets when tunnels are limited, and from everyone
//! when they are dropped. Needs CAP_BPF + CAP_NET_ADMIN (root); skips saying
//! so otherwise. The policy and the case runner are `xdpgate_tests::verdict`.
use xdpgate::policy::{compile, Tunnels};
use xdpgate_common::{
    Family::{Ipv4 as V4, Ipv6 as V6},
    Reason::{self, *},
};
use xdpgate_tests::{
    have_bpf_privileges, tunnel,
    verdict::{
        case, policy, run_cases, spec, syn, Case, ADMIN_V4, DENIED_V4, NODE_V4, NODE_V6,
        OUTSIDER_V4, OUTSIDER_V6,
    },
    Ext, Harness, Packet, L4,
};

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
    let mut c = ip_tunnels(nodes_tunnel);
    c.extend(tunnel_shapes_and_non_tunnels(nodes_tunnel));
    c.extend(udp_tunnel_ports(nodes_udp));
    c
}

/// Every IP-in-IP protocol, from a non-member of both families, from a
/// member of a set that is no tunnel set, and from a node.
fn ip_tunnels(nodes_tunnel: Reason) -> Vec<Case> {
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
    c
}

/// Tunnels behind extension headers and tags, from a denied source, and
/// protocols that are no tunnel.
fn tunnel_shapes_and_non_tunnels(nodes_tunnel: Reason) -> Vec<Case> {
    vec![
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
    ]
}

/// UDP tunnel ports: closed to everyone but nodes, unless a rule binds them.
fn udp_tunnel_ports(nodes_udp: Reason) -> Vec<Case> {
    vec![
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
    ]
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
