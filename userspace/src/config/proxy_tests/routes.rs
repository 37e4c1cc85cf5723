//! Routes: names, hosts, paths, services, entrypoints, and repeated
//! matches.
use super::*;

#[test]
fn route_names_are_valid_and_unique() {
    let e = refused(&with_entrypoints(
        "
        routes:
          - { name: \"api v1\", service: \"api:8000\" }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.routes[0].name",
        "`api v1` is not a valid route name",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - { name: api, host: a.example.com, service: \"api:8000\" }
          - name: api
            host: b.example.com
            service: \"api:8000\"
    ",
    ));
    assert_at(
        &e,
        7,
        "proxy.routes[1].name",
        "route name `api` is already taken by proxy.routes[0] (line 6)",
    );
    // A written name may not take the default name of a later route.
    let e = refused(&with_entrypoints(
        "
        routes:
          - { name: route-2, host: a.example.com, service: \"api:8000\" }
          - { host: b.example.com, service: \"api:8000\" }
    ",
    ));
    assert_at(
        &e,
        7,
        "proxy.routes[1]",
        "this route's default name `route-2` is already taken by proxy.routes[0] (line 6)",
    );
}

#[test]
fn route_hosts_are_host_names() {
    let host = |host: &str| {
        refused(&with_entrypoints(&format!(
            "
            routes:
              - {{ service: \"api:8000\" }}
              - host: {host}
                service: \"api:8000\"
            "
        )))
    };
    for (bad, says) in [
        ("api.example.com:443", "has a port"),
        ("\"https://api.example.com\"", "has a scheme"),
        (
            "\"a.*.example.com\"",
            "a wildcard is one `*` label at the left",
        ),
        ("\"*\"", "leave `host` out to match any host"),
        ("api_v1.example.com", "is not a host name"),
    ] {
        let e = host(bad);
        assert_at(&e, 7, "proxy.routes[1].host", says);
    }
}

#[test]
fn route_paths_and_path_types_are_checked() {
    let route = |fields: &str| {
        refused(&with_entrypoints(&format!(
            "
            routes:
              - {{ service: \"api:8000\", {fields} }}
            "
        )))
    };
    let e = route("path: api");
    assert_at(&e, 6, "proxy.routes[0].path", "does not start with `/`");
    let e = route("path: \"/api?v=1\"");
    assert_at(&e, 6, "proxy.routes[0].path", "query");
    let e = route("path_type: Exakt");
    assert_at(
        &e,
        6,
        "proxy.routes[0].path_type",
        "`Exakt` is not a path type: use Prefix or Exact (did you mean `Exact`?)",
    );
    let e = route("path_type: ImplementationSpecific");
    assert_at(
        &e,
        6,
        "proxy.routes[0].path_type",
        "is not a path type: use Prefix or Exact",
    );
}

#[test]
fn route_services_are_names_or_host_and_port() {
    let e = refused(&with_entrypoints(
        "
        services:
          api: { target: \"api:8000\" }
          admin: { target: \"admin:3000\" }
        routes:
          - { host: a.example.com, service: api }
          - host: b.example.com
            service: apl
    ",
    ));
    assert_at(
        &e,
        11,
        "proxy.routes[1].service",
        "unknown service `apl` (did you mean `api`?)",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - { service: backend }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.routes[0].service",
        "unknown service `backend`: it is neither a name under proxy.services nor a host:port",
    );
    let e = refused(&with_entrypoints(
        "
        routes:
          - { service: \"api:80800\" }
    ",
    ));
    assert_at(&e, 6, "proxy.routes[0].service", "is not a port (1-65535)");
    let e = refused(&with_entrypoints(
        "
        routes:
          - { host: a.example.com }
    ",
    ));
    assert_at(&e, 6, "proxy.routes[0]", "this route has no `service`");
    let e = refused(&with_entrypoints("default_service: apii\n"));
    assert_at(&e, 5, "proxy.default_service", "unknown service `apii`");
}

#[test]
fn route_entrypoints_exist_and_serve_requests() {
    let route = |entrypoints: &str| {
        refused(&with_entrypoints(&format!(
            "
            routes:
              - service: \"api:8000\"
                entrypoints: {entrypoints}
            "
        )))
    };
    let e = route("[websecur]");
    assert_at(
        &e,
        7,
        "proxy.routes[0].entrypoints[0]",
        "unknown entrypoint `websecur` (did you mean `websecure`?)",
    );
    let e = route("[websecure, web]");
    assert_at(
        &e,
        7,
        "proxy.routes[0].entrypoints[1]",
        "entrypoint `web` redirects every request to `websecure`",
    );
    let e = route("[websecure, websecure]");
    assert_at(
        &e,
        7,
        "proxy.routes[0].entrypoints[1]",
        "entrypoint `websecure` is listed twice",
    );
    let e = route("websecure");
    assert_at(
        &e,
        7,
        "proxy.routes[0].entrypoints",
        "expected a list like [websecure]",
    );
}

#[test]
fn a_route_that_repeats_an_earlier_match_is_refused() {
    let e = refused(&with_entrypoints(
        "
        routes:
          - { host: API.example.com, path: /api, service: \"a:80\" }
          - { host: other.example.com, service: \"b:80\" }
          - { host: api.example.com, path: /api/, service: \"b:80\", entrypoints: [websecure] }
    ",
    ));
    assert_at(
        &e,
        8,
        "proxy.routes[2]",
        "route `route-3` matches the same host, path and path type as route `route-1` \
         (proxy.routes[0], line 6) on entrypoint `websecure`",
    );
}
