//! The reference deployment's Traefik objects (tests/fixtures/reference),
//! unchanged, through `translate`: IngressClass ownership, the
//! `@kubernetescrd` references resolved to Middleware objects, and a bad
//! Middleware contained.
use std::collections::BTreeSet;

use super::{files::parse, translate::translate, Objects};
use crate::proxy::{ClientSource, IngressConfig, MiddlewareConfig};

const INGRESSES: &str = include_str!("../../../tests/fixtures/reference/ingresses.yaml");
const MIDDLEWARES: &str = include_str!("../../../tests/fixtures/reference/middlewares.yaml");
const OUR_DEFAULT_CLASS: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: xdpgate
  annotations: { ingressclass.kubernetes.io/is-default-class: \"true\" }
spec: { controller: xdpgate.io/ingress-controller }
";

fn objects(extra: &str) -> Objects {
    parse(&format!("{INGRESSES}---\n{MIDDLEWARES}---\n{extra}")).unwrap()
}

/// The fixtures hold no TLS Secret (a test adds one): that problem is
/// left out here.
fn run(objects: &Objects) -> super::translate::Translation {
    run_with(objects, &IngressConfig::new("xdpgate"))
}

fn run_with(objects: &Objects, config: &IngressConfig) -> super::translate::Translation {
    let mut t = translate(objects, config, &BTreeSet::new(), &|_, _| Ok(()));
    t.problems.retain(|p| p.reason != "tls-secret");
    t
}

#[test]
fn classless_ingresses_are_ours_only_through_our_default_ingress_class() {
    assert_eq!(run(&objects("")).routes.len(), 0);
    let other_default = OUR_DEFAULT_CLASS.replace(
        "xdpgate.io/ingress-controller",
        "traefik.io/ingress-controller",
    );
    assert_eq!(run(&objects(&other_default)).routes.len(), 0);
    let not_default = OUR_DEFAULT_CLASS.replace("\"true\"", "\"false\"");
    assert_eq!(run(&objects(&not_default)).routes.len(), 0);
    assert_eq!(run(&objects(OUR_DEFAULT_CLASS)).routes.len(), 3);
    // A class named by the Ingress: ours when an IngressClass of our
    // controller has that name (or it is `proxy.ingress.class`).
    let named = INGRESSES.replace("spec:\n  tls:", "spec:\n  ingressClassName: edge\n  tls:");
    let class = OUR_DEFAULT_CLASS
        .replace("name: xdpgate", "name: edge")
        .replace("\"true\"", "\"false\"");
    let objects = parse(&format!("{named}---\n{MIDDLEWARES}---\n{class}")).unwrap();
    assert_eq!(run(&objects).routes.len(), 3);
}

#[test]
fn the_annotation_resolves_to_the_middleware_objects() {
    let t = run(&objects(OUR_DEFAULT_CLASS));
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let api = t.routes.iter().find(|r| r.origin.1 == "api").unwrap();
    assert_eq!(
        api.config.middlewares,
        [
            "kubernetescrd.honeydue.security-headers",
            "kubernetescrd.honeydue.cloudflare-only",
            "kubernetescrd.honeydue.rate-limit"
        ]
    );
    let admin = t.routes.iter().find(|r| r.origin.1 == "admin").unwrap();
    assert_eq!(
        admin.config.middlewares,
        [
            "kubernetescrd.honeydue.security-headers",
            "kubernetescrd.honeydue.admin-auth"
        ]
    );
    let MiddlewareConfig::IpAllow(allow) = &t.middlewares["kubernetescrd.honeydue.cloudflare-only"]
    else {
        panic!()
    };
    assert_eq!(
        (allow.cidrs.len(), &allow.source),
        (22, &ClientSource::Peer)
    );
    assert!(matches!(
        &t.middlewares["kubernetescrd.honeydue.admin-auth"],
        MiddlewareConfig::BasicAuth(a) if a.users.is_some()
    ));
    // No "write xdpgate.io/middlewares instead": these are objects.
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

#[test]
fn a_bad_middleware_is_reported_alone_and_its_ingress_answers_503() {
    let bad = MIDDLEWARES.replace(
        "    burst: 200\n",
        "    burst: 200\n    redis: { endpoints: [\"r:6379\"] }\n",
    );
    let objects = parse(&format!("{INGRESSES}---\n{bad}---\n{OUR_DEFAULT_CLASS}")).unwrap();
    let t = run(&objects);
    let problems: Vec<String> = t
        .problems
        .iter()
        .map(|p| format!("{} [{}]", p, p.reason))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("Middleware honeydue/rate-limit: spec.rateLimit.redis"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("Ingress honeydue/api: `honeydue-rate-limit@kubernetescrd`"),
        "{problems:?}"
    );
    assert!(problems[1].contains("answer 503"), "{problems:?}");
    assert_eq!(t.valid, 1, "admin stays served");
    let admin = t.routes.iter().find(|r| r.origin.1 == "admin").unwrap();
    assert_eq!(admin.config.middlewares.len(), 2);
    for route in t.routes.iter().filter(|r| r.origin.1 == "api") {
        assert_eq!(
            t.services[&route.config.service].endpoints,
            Some(Vec::new())
        );
    }
}

#[test]
fn middlewares_of_another_namespace_need_allow_cross_namespace() {
    let elsewhere = MIDDLEWARES.replace("namespace: honeydue", "namespace: shared");
    let ingresses = INGRESSES.replace("honeydue-", "shared-");
    let objects = parse(&format!(
        "{ingresses}---\n{elsewhere}---\n{OUR_DEFAULT_CLASS}"
    ))
    .unwrap();
    let mut config = IngressConfig::new("xdpgate");
    let t = run_with(&objects, &config);
    assert_eq!(t.valid, 0);
    assert!(
        t.problems
            .iter()
            .all(|p| p.message.contains("allow_cross_namespace")),
        "{:?}",
        t.problems
    );
    config.allow_cross_namespace = true;
    let t = run_with(&objects, &config);
    assert_eq!(t.valid, 2, "{:?}", t.problems);
}

#[test]
fn docs_migrating_shows_the_fixtures_unchanged() {
    let guide = include_str!("../../../docs/migrating.md");
    assert!(
        guide.contains(INGRESSES),
        "docs/migrating.md lost the reference Ingresses"
    );
    assert!(
        guide.contains(MIDDLEWARES),
        "docs/migrating.md lost the reference Middlewares"
    );
}
