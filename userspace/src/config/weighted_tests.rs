//! `proxy.services` with `weighted:` and `sticky:`: what parses, and where
//! each refusal points (unknown member, no weight, cycles, bad cookies).
use super::{
    proxy_tests::{proxy, refused, with_entrypoints},
    tests::assert_at,
};
use crate::proxy::{SameSite, StickyConfig, WeightedMember, WeightedServiceConfig};

fn members(list: &[(&str, u32)]) -> Vec<WeightedMember> {
    list.iter()
        .map(|(service, weight)| WeightedMember {
            service: service.to_string(),
            weight: *weight,
        })
        .collect()
}

#[test]
fn weighted_services_and_sticky_cookies_parse() {
    let p = proxy(&with_entrypoints(
        r#"
        services:
          v1: { target: "v1:80", sticky: { cookie: {} } }
          v2: { target: "v2:80" }
          canary:
            weighted:
              - { service: v1, weight: 90 }
              - { service: v2, weight: 10 }
              - { service: "v3:80", weight: 0 }
              - { service: inner }
            sticky:
              cookie: { name: lb, secure: true, http_only: true, same_site: none, max_age: 3600 }
          inner: { weighted: [{ service: v2 }] }
        default_service: canary
    "#,
    ));
    assert_eq!(
        p.weighted["canary"],
        WeightedServiceConfig {
            name: "canary".into(),
            members: members(&[("v1", 90), ("v2", 10), ("v3:80", 0), ("inner", 1)]),
            sticky: Some(StickyConfig {
                cookie: crate::proxy::StickyCookie {
                    name: "lb".into(),
                    secure: true,
                    http_only: true,
                    same_site: Some(SameSite::None),
                    max_age: Some(3600),
                    path: "/".into(),
                }
            }),
        }
    );
    assert!(
        p.services.contains_key("v3:80"),
        "a literal member joins the services"
    );
    assert!(
        !p.services.contains_key("canary"),
        "a weighted service is not a plain one"
    );
    assert_eq!(
        p.services["v1"].sticky,
        Some(StickyConfig::for_service("v1"))
    );
    assert_eq!(p.services["v2"].sticky, None);
    assert_eq!(p.default_service.as_deref(), Some("canary"));
}

fn refusal(services: &str) -> super::ConfigError {
    refused(&with_entrypoints(&format!(
        "services:\n{services}default_service: canary\n"
    )))
}

#[test]
fn weighted_members_must_exist_weigh_something_and_not_loop() {
    let e = refusal("  v1: { target: \"v1:80\" }\n  canary: { weighted: [{ service: v2 }] }\n");
    assert_at(
        &e,
        7,
        "proxy.services.canary.weighted[0].service",
        "unknown service `v2` (did you mean `v1`?)",
    );
    let e = refusal(
        "  v1: { target: \"v1:80\" }\n  canary: { weighted: [{ service: v1, weight: 0 }] }\n",
    );
    assert_at(
        &e,
        7,
        "proxy.services.canary.weighted",
        "no member with a weight above 0",
    );
    let e = refusal(
        "  canary: { weighted: [{ service: a }] }\n  a: { weighted: [{ service: b }] }\n  b: { weighted: [{ service: canary }] }\n",
    );
    assert!(
        e.message.contains("reaches itself") && e.message.contains("a -> b -> canary -> a"),
        "{e}"
    );
    assert!(e.key.ends_with(".weighted[0].service"), "{e}");
    let e = refusal("  canary: { weighted: [{ service: canary }] }\n");
    assert_at(
        &e,
        6,
        "proxy.services.canary.weighted[0].service",
        "canary -> canary",
    );
    let e = refusal(
        "  v1: { target: \"v1:80\" }\n  canary: { weighted: [{ service: v1 }, { service: v1 }] }\n",
    );
    assert_at(
        &e,
        7,
        "proxy.services.canary.weighted[1].service",
        "listed twice",
    );
    let e = refusal("  canary: { target: \"v1:80\", weighted: [] }\n");
    assert!(e.message.contains("unknown key `target`"), "{e}");
    let e = refusal(
        "  v1: { target: \"v1:80\" }\n  canary: { weighted: [{ service: v1, weight: -1 }] }\n",
    );
    assert!(e.key.ends_with("weighted[0].weight"), "{e}");
}

#[test]
fn sticky_cookies_are_checked() {
    for (cookie, key, says) in [
        ("{ name: \"a b\" }", "name", "cannot be a cookie name"),
        ("{ name: \"a=b\" }", "name", "cannot be a cookie name"),
        ("{ same_site: loose }", "same_site", "not a SameSite value"),
        ("{ same_site: none }", "same_site", "set `secure: true`"),
        ("{ path: \"x\" }", "path", "not a cookie path"),
        (
            "{ httpOnly: true }",
            "httpOnly",
            "did you mean `http_only`?",
        ),
    ] {
        let e = refused(&with_entrypoints(&format!(
            "services:\n  v1: {{ target: \"v1:80\", sticky: {{ cookie: {cookie} }} }}\ndefault_service: v1\n"
        )));
        assert_eq!(
            e.key,
            format!("proxy.services.v1.sticky.cookie.{key}"),
            "{e}"
        );
        assert!(e.message.contains(says), "{cookie}: {e}");
    }
    let e = refused(&with_entrypoints(
        "services:\n  v1: { target: \"v1:80\", sticky: {} }\ndefault_service: v1\n",
    ));
    assert!(e.message.contains("`sticky` needs `cookie`"), "{e}");
}
