//! How a refusal reads (file, line, key, then what is wrong), and the
//! refusals of the file's structure: unknown keys, repeated keys, values of
//! the wrong shape, broken YAML.
use super::*;

#[test]
fn the_message_reads_file_line_key_then_what_is_wrong() {
    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
            admins: { file: admins.txt }
          allow:
            - { tcp: [80, 443], from: [cloudflare] }
            - { tcp: [22], from: [cloudfare] }
    ",
    );
    assert_eq!(
        e.to_string(),
        "/etc/xdpgate/config.yaml: line 7: filter.allow[1].from[0]: unknown set `cloudfare` \
         (did you mean `cloudflare`?)"
    );
    let bare = ConfigError {
        path: "c.yaml".into(),
        line: None,
        key: String::new(),
        message: "cannot read".into(),
    };
    assert_eq!(bare.to_string(), "c.yaml: cannot read");
    let keyed = ConfigError {
        key: "filter".into(),
        ..bare
    };
    assert_eq!(keyed.to_string(), "c.yaml: filter: cannot read");
}

// ---- structure ----

#[test]
fn unknown_keys_are_named_with_the_nearest_known_key() {
    let e = error(&format!("{POLICY}    fliter: {{}}\n"));
    assert_at(
        &e,
        6,
        "fliter",
        "unknown key `fliter` (did you mean `filter`?)",
    );

    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
          allow:
            - { tcp: [443], from: [cloudflare] }
            - tcp: [22]
              form: [cloudflare]
    ",
    );
    assert_at(&e, 7, "filter.allow[1].form", "did you mean `from`?");

    let e = error(
        "
        filter:
          sets:
            cloudflare:
              cloudflare: { refrsh: 1h }
    ",
    );
    assert_at(
        &e,
        4,
        "filter.sets.cloudflare.cloudflare.refrsh",
        "did you mean `refresh`?",
    );

    // Nothing close: the known keys are listed instead.
    let e = error(&format!("{POLICY}    admin: {{ port: 9901 }}\n"));
    assert_at(
        &e,
        6,
        "admin.port",
        "unknown key `port`; expected one of: listen",
    );
}

#[test]
fn a_key_given_twice_is_refused() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
            nodes: { cidrs: [10.0.0.2] }
          allow:
            - { tcp: [22], from: [nodes] }
    ",
    );
    assert_at(&e, 4, "filter.sets.nodes", "given twice (first on line 3)");
}

#[test]
fn values_of_the_wrong_shape_are_refused() {
    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
          allow:
            - { tcp: 443, from: [cloudflare] }
    ",
    );
    assert_at(&e, 5, "filter.allow[0].tcp", "expected a list like");

    let e = error(
        "
        filter:
          sets: [cloudflare]
    ",
    );
    assert_at(&e, 2, "filter.sets", "expected a mapping");

    let e = error(&format!("{POLICY}      strict: yes\n"));
    assert_at(&e, 6, "filter.strict", "`yes` is not true or false");

    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
          allow:
            - cloudflare
    ",
    );
    assert_at(&e, 5, "filter.allow[0]", "expected a mapping");

    let e = error(&format!("{POLICY}    state_dir:\n"));
    assert_at(&e, 6, "state_dir", "expected a path, found nothing");
}

#[test]
fn broken_yaml_is_refused_with_its_line() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1 }
    ",
    );
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("not valid YAML"), "{e}");

    let e = error(&format!("{POLICY}    ---\n    filter: {{}}\n"));
    assert_at(&e, 6, "", "one YAML document");
}
