//! `filter.tunnels`: the three spellings, what they compile to, and where
//! each refusal points.
use std::path::Path;

use super::{
    parse,
    tests::{assert_at, dedent, ORIGIN},
    Config, ConfigError,
};
use crate::policy::{compile, Tunnels};
use xdpgate_common::{OPT_FILTER_TUNNELS, TUNNEL_UDP_PORTS};

fn with_tunnels(tunnels: &str) -> String {
    format!(
        "
        filter:
          tunnels: {tunnels}
          sets:
            cloudflare: {{ cidrs: [198.41.128.0/17] }}
            nodes: {{ cidrs: [10.0.0.0/24] }}
            badguys: {{ cidrs: [203.0.113.0/24] }}
          allow:
            - {{ tcp: [443], from: [cloudflare] }}
            - {{ udp: [8472], from: [nodes] }}
          deny: [badguys]
    "
    )
}

fn parsed(text: &str) -> Result<Config, ConfigError> {
    parse(&dedent(text), Path::new(ORIGIN))
}

#[test]
fn tunnels_are_not_filtered_unless_the_file_says_so() {
    let c = parsed(&with_tunnels("pass")).unwrap();
    assert_eq!(c.filter.tunnels, Tunnels::Pass);
    let text = with_tunnels("pass").replace("          tunnels: pass\n", "");
    assert_eq!(parsed(&text).unwrap().filter.tunnels, Tunnels::Pass);
}

#[test]
fn drop_and_from_compile_to_filtered_tunnels() {
    let dropped = parsed(&with_tunnels("drop")).unwrap();
    assert_eq!(dropped.filter.tunnels, Tunnels::From(vec![]));
    let from = parsed(&with_tunnels("{ from: [nodes] }")).unwrap();
    assert_eq!(from.filter.tunnels, Tunnels::From(vec!["nodes".into()]));

    let contents = [
        (
            "cloudflare".to_string(),
            vec!["198.41.128.0/17".parse().unwrap()],
        ),
        ("nodes".to_string(), vec!["10.0.0.0/24".parse().unwrap()]),
        (
            "badguys".to_string(),
            vec!["203.0.113.0/24".parse().unwrap()],
        ),
    ]
    .into_iter()
    .collect();
    let policy = compile(&from.policy_spec(&contents)).unwrap();
    assert_ne!(policy.options.flags & OPT_FILTER_TUNNELS, 0);
    let nodes = 1 << policy.set_names.iter().position(|s| s == "nodes").unwrap();
    assert_eq!(policy.options.tunnel_mask, nodes);
    for port in TUNNEL_UDP_PORTS {
        assert_eq!(policy.udp_ports[&port], nodes, "udp {port}");
    }
}

#[test]
fn bad_tunnel_rules_are_named_where_they_are_written() {
    let e = parsed(&with_tunnels("block")).unwrap_err();
    assert_at(&e, 2, "filter.tunnels", "`block` is not `pass`, `drop`");

    let e = parsed(&with_tunnels("{ form: [nodes] }")).unwrap_err();
    assert_at(&e, 2, "filter.tunnels.form", "did you mean `from`?");

    let e = parsed(&with_tunnels("{ from: [node] }")).unwrap_err();
    assert_at(
        &e,
        2,
        "filter.tunnels.from[0]",
        "unknown set `node` (did you mean `nodes`?)",
    );

    let e = parsed(&with_tunnels("{ from: [nodes, badguys] }")).unwrap_err();
    assert_at(
        &e,
        2,
        "filter.tunnels.from[1]",
        "set `badguys` is also in filter.deny",
    );
}
