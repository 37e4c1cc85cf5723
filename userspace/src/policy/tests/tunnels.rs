//! Tunnels: their UDP ports are bound beside the rules, and their sets must
//! exist and not be denied.
use super::*;

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
