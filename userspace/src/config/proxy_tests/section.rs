//! The `proxy:` section as a whole: what it needs, unknown keys, trusted
//! sets, and the drain and access-log settings.
use super::*;

#[test]
fn the_section_needs_an_entrypoint_and_somewhere_to_send_requests() {
    let e = refused(
        "
        proxy:
          trusted: [cloudflare]
    ",
    );
    assert_at(&e, 1, "proxy", "the proxy has no entrypoint");
    let e = refused(
        "
        proxy:
          entrypoints: {}
          default_service: \"api:8000\"
    ",
    );
    assert_at(&e, 2, "proxy.entrypoints", "the proxy has no entrypoint");

    let e = refused(ENTRYPOINTS);
    assert_at(
        &e,
        1,
        "proxy",
        "no route, no default_service and no ingress source",
    );
    let e = refused(&with_entrypoints("routes: []\n"));
    assert_at(
        &e,
        5,
        "proxy.routes",
        "no route, no default_service and no ingress source",
    );
}

#[test]
fn unknown_proxy_keys_are_named_with_the_nearest_known_key() {
    let e = refused(&with_entrypoints(
        "
        default_service: \"api:8000\"
        acces_log: { enabled: false }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.acces_log",
        "unknown key `acces_log` (did you mean `access_log`?)",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80", limits: { max_header_byte: 4096 } }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web.limits.max_header_byte",
        "did you mean `max_header_bytes`?",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - service: \"api:8000\"
            pathtype: Exact
    ",
    ));
    assert_at(
        &e,
        7,
        "proxy.routes[0].pathtype",
        "did you mean `path_type`?",
    );
}

#[test]
fn trusted_names_are_sets_of_the_filter() {
    let e = refused(
        "
        proxy:
          trusted:
            - nodes
            - cloudfare
    ",
    );
    assert_at(
        &e,
        4,
        "proxy.trusted[1]",
        "unknown set `cloudfare` (did you mean `cloudflare`?)",
    );
    let e = refused("proxy: { trusted: [office] }\n");
    assert_at(
        &e,
        1,
        "proxy.trusted[0]",
        "unknown set `office`: it is not defined under filter.sets",
    );
    let e = refused("proxy: { trusted: [nodes, nodes] }\n");
    assert_at(&e, 1, "proxy.trusted[1]", "set `nodes` is listed twice");
}

#[test]
fn drain_and_access_log_values_are_checked() {
    let e = refused(&with_entrypoints(
        "
        default_service: \"api:8000\"
        drain: { grace_timeout: 30 }
    ",
    ));
    assert_at(&e, 6, "proxy.drain.grace_timeout", "`30` is not a duration");
    let e = refused(&with_entrypoints(
        "
        default_service: \"api:8000\"
        access_log:
          enabled: on
    ",
    ));
    assert_at(
        &e,
        7,
        "proxy.access_log.enabled",
        "`on` is not true or false",
    );
    let e = refused(&with_entrypoints(
        "
        default_service: \"api:8000\"
        access_log: { path: \"\" }
    ",
    ));
    assert_at(&e, 6, "proxy.access_log.path", "the path is empty");
}

#[test]
fn services_are_keyed_by_name() {
    // The map's keys are what routes refer to; a named service's `name` is
    // its key, a literal's is the literal.
    let p = proxy(&with_entrypoints(
        "
        services:
          web-api: { target: \"api:8000\" }
        routes:
          - { service: web-api }
          - { host: x.example.com, service: \"x:80\" }
    ",
    ));
    let expected: BTreeMap<&str, &str> = [("web-api", "web-api"), ("x:80", "x:80")]
        .into_iter()
        .collect();
    let actual: BTreeMap<&str, &str> = p
        .services
        .iter()
        .map(|(k, s)| (k.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(actual, expected);
}
