//! The policy as the compiler checks it: unknown sets, rules without
//! ports or sets, contradictions, a policy that enforces nothing, too many
//! sets.
use super::*;

#[test]
fn unknown_sets_are_named_where_they_are_used() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
            badguys: { cidrs: [203.0.113.0/24] }
          allow:
            - { udp: [8472], from: [nodes] }
          deny:
            - badguys
            - badguy
    ",
    );
    assert_at(
        &e,
        9,
        "filter.deny[1]",
        "unknown set `badguy` (did you mean `badguys`?)",
    );

    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
          allow:
            - tcp: [22]
              from:
                - nodes
                - admins
    ",
    );
    assert_at(
        &e,
        8,
        "filter.allow[0].from[1]",
        "unknown set `admins`: it is not defined under filter.sets",
    );
}

#[test]
fn rules_without_ports_or_sets_are_named() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
          allow:
            - { tcp: [22], from: [nodes] }
            - { from: [nodes] }
    ",
    );
    assert_at(&e, 6, "filter.allow[1]", "lists no tcp or udp ports");

    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
          allow:
            - tcp: [22]
              from: []
    ",
    );
    assert_at(&e, 6, "filter.allow[0].from", "allows no set");
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
          allow:
            - tcp: [22]
    ",
    );
    assert_at(&e, 5, "filter.allow[0]", "allows no set");
}

#[test]
fn a_set_both_denied_and_allowed_is_refused() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
            admins: { cidrs: [10.1.0.0/16] }
          allow:
            - { tcp: [22], from: [nodes, admins] }
          deny: [admins]
    ",
    );
    assert_at(
        &e,
        6,
        "filter.allow[0].from[1]",
        "set `admins` is also in filter.deny",
    );
}

#[test]
fn a_policy_that_enforces_nothing_is_refused() {
    let e = parse("", Path::new(ORIGIN)).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (None, "filter"), "{e}");
    assert!(e.message.contains("nothing to enforce"), "{e}");

    let e = error(
        "
        log: { level: debug }
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
    ",
    );
    assert_at(&e, 2, "filter", "nothing to enforce");
}

#[test]
fn too_many_sets_are_refused() {
    let count = xdpgate_common::MAX_SETS + 1;
    let mut text = String::from("filter:\n  sets:\n");
    for i in 0..count {
        text += &format!("    s{i}: {{ cidrs: [10.0.{i}.0/24] }}\n");
    }
    let all: Vec<String> = (0..count).map(|i| format!("s{i}")).collect();
    text += &format!(
        "  allow:\n    - {{ tcp: [22], from: [{}] }}\n",
        all.join(", ")
    );
    let e = parse(&text, Path::new(ORIGIN)).unwrap_err();
    assert_at(
        &e,
        2,
        "filter.sets",
        &format!("the policy uses {count} sets"),
    );
}
