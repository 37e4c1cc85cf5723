//! What the compiler refuses, each error naming its culprit: unknown sets,
//! too many sets, bad ports and ranges, empty bindings, contradictions, a
//! policy that enforces nothing.
use super::*;

fn two_sets() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("cloudflare", &["198.41.128.0/17"]),
        ("admins", &["203.0.113.0/24"]),
    ]
}

#[test]
fn an_unknown_set_in_an_allow_rule_names_the_rule_and_the_set() {
    let spec = spec(
        &two_sets(),
        vec![tcp(&[22], &["admins"]), tcp(&[443], &["cloudfare"])],
        &[],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::UnknownSet {
            set: "cloudfare".into(),
            place: "allow rule 2".into(),
            suggestion: Some("cloudflare".into()),
        }
    );
    let text = err.to_string();
    assert!(text.contains("allow rule 2"), "{text}");
    assert!(text.contains("`cloudfare`"), "{text}");
    assert!(text.contains("did you mean `cloudflare`"), "{text}");
}

#[test]
fn an_unknown_set_that_resembles_nothing_gets_no_suggestion() {
    let spec = spec(&two_sets(), vec![tcp(&[443], &["marketing"])], &[]);
    let err = compile_err(&spec);
    assert!(
        matches!(
            &err,
            PolicyError::UnknownSet {
                suggestion: None,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("allow rule 1") && text.contains("`marketing`"),
        "{text}"
    );
    assert!(!text.contains("did you mean"), "{text}");
}

#[test]
fn an_unknown_set_in_the_deny_list_names_deny_and_the_set() {
    let spec = spec(&two_sets(), vec![tcp(&[443], &["cloudflare"])], &["abusrs"]);
    let err = compile_err(&spec);
    assert!(
        matches!(&err, PolicyError::UnknownSet { set, place, .. } if set == "abusrs" && place == "deny"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.starts_with("deny names set `abusrs`"), "{text}");
}

fn many_sets(count: usize) -> PolicySpec {
    let sets: BTreeMap<String, Vec<IpNet>> = (0..count)
        .map(|i| (format!("s{i:02}"), vec![net(&format!("10.{i}.0.0/16"))]))
        .collect();
    PolicySpec {
        allow: vec![Binding {
            tcp: ports(&[443]),
            udp: vec![],
            from: sets.keys().cloned().collect(),
        }],
        sets,
        deny: vec![],
        strict: false,
        tunnels: Tunnels::Pass,
    }
}

#[test]
fn more_sets_than_mask_bits_is_an_error_naming_both_numbers() {
    let err = compile_err(&many_sets(MAX_SETS + 1));
    assert_eq!(err, PolicyError::TooManySets { count: 65, max: 64 });
    let text = err.to_string();
    assert!(text.contains("65") && text.contains("64"), "{text}");
}

#[test]
fn exactly_as_many_sets_as_mask_bits_compiles_and_uses_the_top_bit() {
    let policy = compiled(&many_sets(MAX_SETS));
    assert_eq!(policy.set_names.len(), 64);
    assert_eq!(bit(&policy, "s63"), 1 << 63);
    assert_eq!(policy.tcp_ports[&443], u64::MAX);
    assert_eq!(policy.lookup(ip("10.63.1.1")), 1 << 63);
}

#[test]
fn unused_sets_do_not_count_towards_the_limit() {
    let mut spec = many_sets(MAX_SETS + 10);
    spec.allow[0].from.truncate(MAX_SETS);
    assert_eq!(compiled(&spec).set_names.len(), MAX_SETS);
}

#[test]
fn port_zero_is_an_error_naming_the_rule() {
    let spec = spec(
        &two_sets(),
        vec![tcp(&[443], &["cloudflare"]), udp(&[0], &["admins"])],
        &[],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::PortZero {
            place: "allow rule 2".into()
        }
    );
    assert!(err.to_string().starts_with("allow rule 2: port 0"), "{err}");
}

#[test]
fn a_backwards_range_is_an_error_naming_the_rule_and_the_range() {
    let mut binding = tcp(&[], &["cloudflare"]);
    binding.tcp = vec!["443-80".parse().unwrap()];
    let err = compile_err(&spec(&two_sets(), vec![binding], &[]));
    assert_eq!(
        err,
        PolicyError::BackwardsRange {
            place: "allow rule 1".into(),
            range: PortRange {
                first: 443,
                last: 80
            },
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("allow rule 1") && text.contains("443-80"),
        "{text}"
    );
}

#[test]
fn a_binding_without_ports_is_an_error_naming_the_rule() {
    let spec = spec(
        &two_sets(),
        vec![tcp(&[443], &["cloudflare"]), tcp(&[], &["admins"])],
        &[],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::NoPorts {
            place: "allow rule 2".into()
        }
    );
    assert!(
        err.to_string()
            .contains("allow rule 2 lists no tcp or udp ports"),
        "{err}"
    );
}

#[test]
fn a_binding_from_no_set_is_an_error_naming_the_rule() {
    let err = compile_err(&spec(&two_sets(), vec![tcp(&[22], &[])], &[]));
    assert_eq!(
        err,
        PolicyError::NoSets {
            place: "allow rule 1".into()
        }
    );
    assert!(
        err.to_string().contains("allow rule 1 allows no set"),
        "{err}"
    );
}

#[test]
fn a_set_both_denied_and_allowed_is_a_contradiction_naming_both() {
    let spec = spec(
        &two_sets(),
        vec![tcp(&[443], &["cloudflare"]), tcp(&[22], &["admins"])],
        &["admins"],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::DeniedAndAllowed {
            set: "admins".into(),
            place: "allow rule 2".into(),
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("set `admins`") && text.contains("allow rule 2"),
        "{text}"
    );
}

#[test]
fn binding_an_empty_set_is_an_error_naming_the_set_and_the_rule() {
    let spec = spec(
        &[("cloudflare", &["198.41.128.0/17"]), ("nobody", &[])],
        vec![tcp(&[443], &["cloudflare"]), udp(&[8472], &["nobody"])],
        &[],
    );
    let err = compile_err(&spec);
    assert_eq!(
        err,
        PolicyError::EmptyBoundSet {
            set: "nobody".into(),
            place: "allow rule 2".into(),
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("set `nobody` is empty") && text.contains("allow rule 2"),
        "{text}"
    );
}

#[test]
fn an_empty_set_may_be_defined_or_denied_without_being_bound() {
    let spec = spec(
        &[
            ("cloudflare", &["198.41.128.0/17"]),
            ("nobody", &[]),
            ("blocked", &[]),
        ],
        vec![tcp(&[443], &["cloudflare"])],
        &["blocked"],
    );
    let policy = compiled(&spec);
    assert!(compiled_allows(&policy, false, 80, ip("192.0.2.1")));
}

#[test]
fn a_policy_that_binds_and_denies_nothing_is_an_error() {
    let err = compile_err(&spec(&two_sets(), vec![], &[]));
    assert_eq!(err, PolicyError::EmptyPolicy);
    assert!(err.to_string().contains("nothing to enforce"), "{err}");
    assert_eq!(
        compile_err(&PolicySpec::default()),
        PolicyError::EmptyPolicy
    );
}

#[test]
fn a_deny_only_policy_compiles_and_drops_the_denied_on_every_port() {
    let policy = compiled(&spec(&two_sets(), vec![], &["admins"]));
    assert!(policy.tcp_ports.is_empty() && policy.udp_ports.is_empty());
    for port in [1, 22, 443, 65535] {
        for udp in [false, true] {
            assert!(!compiled_allows(&policy, udp, port, ip("203.0.113.5")));
            assert!(compiled_allows(&policy, udp, port, ip("198.41.128.5")));
        }
    }
}
