//! Services: their targets and their names.
use super::*;

#[test]
fn services_need_a_host_and_port_target() {
    let service = |body: &str| {
        refused(&with_entrypoints(&format!(
            "
            services:
              api:
                {body}
            default_service: api
            "
        )))
    };
    let e = service("h2c: true");
    assert_at(&e, 6, "proxy.services.api", "service `api` has no `target`");
    let e = service("target: api.honeydue.svc.cluster.local");
    assert_at(&e, 7, "proxy.services.api.target", "has no port");
    let e = service("target: \"http://api:8000\"");
    assert_at(&e, 7, "proxy.services.api.target", "has a scheme");
    let e = service("target: \"api:0\"");
    assert_at(
        &e,
        7,
        "proxy.services.api.target",
        "is not a port (1-65535)",
    );
    let e = service("targt: \"api:8000\"");
    assert_at(&e, 7, "proxy.services.api.targt", "did you mean `target`?");
    let e = service("{ target: \"api:8000\", h2c: yes }");
    assert_at(
        &e,
        7,
        "proxy.services.api.h2c",
        "`yes` is not true or false",
    );
    for timeout in ["connect_timeout", "response_header_timeout", "idle_timeout"] {
        let e = service(&format!("{{ target: \"api:8000\", {timeout}: 0ms }}"));
        assert_at(
            &e,
            7,
            &format!("proxy.services.api.{timeout}"),
            "a timeout of 0",
        );
    }
    let e = service("{ target: \"api:8000\", resolve_interval: 0s }");
    assert_at(&e, 7, "proxy.services.api.resolve_interval", "busy loop");

    let e = refused(&with_entrypoints(
        "
        services:
          \"api:8000\": { target: \"api:8000\" }
    ",
    ));
    assert_at(
        &e,
        6,
        "proxy.services.api:8000",
        "`api:8000` is not a valid service name",
    );
}
