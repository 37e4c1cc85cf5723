//! `proxy.ingress`: what it parses into, and where each refusal points (the
//! line numbers are those of the text in each test).
use std::{path::Path, time::Duration};

use super::{
    parse,
    tests::{assert_at, dedent, ORIGIN},
    ConfigError,
};
use crate::proxy::{IngressConfig, KubernetesConfig, PublishStatus};

const REST: &str = "\
filter:
  sets:
    nodes: { cidrs: [10.0.0.1] }
  allow:
    - { tcp: [443], from: [nodes] }
";

fn file(ingress: &str) -> String {
    let head = "\
proxy:
  entrypoints:
    web: { listen: \"127.0.0.1:8080\", redirect: websecure }
    websecure: { listen: \"127.0.0.1:8443\", tls: {} }
    plain: { listen: \"127.0.0.1:8081\" }
  ingress:
";
    let body: String = dedent(ingress)
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!("{head}{body}{REST}")
}

fn read(ingress: &str) -> IngressConfig {
    match parse(&file(ingress), Path::new(ORIGIN)) {
        Ok(c) => c.proxy.unwrap().ingress.unwrap(),
        Err(e) => panic!("expected the config to parse, got: {e}"),
    }
}

fn refused(ingress: &str) -> ConfigError {
    parse(&file(ingress), Path::new(ORIGIN)).expect_err("expected a refusal")
}

#[test]
fn a_full_ingress_section_and_its_defaults() {
    let c = read(
        "
        class: public
        entrypoints: [websecure, plain]
        endpoint_slices: true
        files: /etc/xdpgate/ingress.d
        poll_interval: 500ms
        kubernetes: { kubeconfig: /etc/xdpgate/kubeconfig, namespaces: [honeydue], resync: 1m }
        ",
    );
    assert_eq!(c.class, "public");
    assert_eq!(c.entrypoints, ["websecure", "plain"]);
    // The first TLS entrypoint gets the certificates when none is named.
    assert_eq!(c.tls_entrypoint.as_deref(), Some("websecure"));
    assert!(c.endpoint_slices);
    assert_eq!(
        c.files.as_deref(),
        Some(Path::new("/etc/xdpgate/ingress.d"))
    );
    assert_eq!(c.poll_interval, Duration::from_millis(500));
    assert_eq!(
        c.kubernetes,
        Some(KubernetesConfig {
            kubeconfig: Some("/etc/xdpgate/kubeconfig".into()),
            namespaces: vec!["honeydue".into()],
            resync: Duration::from_secs(60),
            ..KubernetesConfig::default()
        })
    );
    assert!(!c.allow_cross_namespace, "off unless asked, as in Traefik");
    assert!(read("files: /x\nallow_cross_namespace: true").allow_cross_namespace);
    let c = read("kubernetes: {}");
    assert_eq!(c.class, "xdpgate");
    assert_eq!(c.kubernetes, Some(KubernetesConfig::default()));
    assert_eq!(c.poll_interval, Duration::from_secs(1));
}

#[test]
fn a_proxy_with_only_an_ingress_source_needs_no_route() {
    let c = read("files: /tmp/ingress.d");
    assert_eq!(c.files.as_deref(), Some(Path::new("/tmp/ingress.d")));
}

#[test]
fn ingress_mistakes_point_at_their_line_and_key() {
    let e = refused("class: xdpgate");
    assert_at(&e, 6, "proxy.ingress", "neither `files` nor `kubernetes`");
    let e = refused("files: /x\nentrypoints: [websecur]");
    assert_at(
        &e,
        8,
        "proxy.ingress.entrypoints[0]",
        "did you mean `websecure`",
    );
    let e = refused("files: /x\nentrypoints: [web]");
    assert_at(
        &e,
        8,
        "proxy.ingress.entrypoints[0]",
        "redirects every request",
    );
    let e = refused("files: /x\ntls_entrypoint: plain");
    assert_at(&e, 8, "proxy.ingress.tls_entrypoint", "has no `tls`");
    let e = refused("files: /x\npoll_interval: 1ms");
    assert_at(&e, 8, "proxy.ingress.poll_interval", "at most every 100ms");
    let e = refused("kubernetes: { resync: 1s }");
    assert_at(&e, 7, "proxy.ingress.kubernetes.resync", "10s or longer");
    let e = refused("kubernetes: { namespaces: [Honey_Due] }");
    assert_at(
        &e,
        7,
        "proxy.ingress.kubernetes.namespaces[0]",
        "not a namespace name",
    );
    let e = refused("files: /x\nclas: a");
    assert_at(&e, 8, "proxy.ingress.clas", "did you mean `class`");
}

#[test]
fn publish_status_defaults_to_the_nodes_and_takes_a_list_or_off() {
    let kube = |ingress: &str| read(ingress).kubernetes.unwrap();
    let c = kube("kubernetes: {}");
    assert_eq!(
        c.publish_status,
        PublishStatus::Nodes {
            selector: Default::default(),
            address_types: vec!["ExternalIP".into(), "InternalIP".into()],
        },
        "a hostNetwork DaemonSet is reached on its nodes' addresses"
    );
    assert_eq!(
        c.service_account_dir,
        Path::new("/var/run/secrets/kubernetes.io/serviceaccount")
    );
    assert_eq!(
        kube("kubernetes: { publish_status: off }").publish_status,
        PublishStatus::Off
    );
    assert_eq!(
        kube("kubernetes: { publish_status: { addresses: [203.0.113.10, lb.example.com] } }")
            .publish_status,
        PublishStatus::Addresses(vec!["203.0.113.10".into(), "lb.example.com".into()])
    );
    let c = kube(
        "kubernetes:\n  publish_status:\n    nodes: { selector: { xdpgate.io/edge: \"true\" }, address_types: [InternalIP] }",
    );
    assert_eq!(
        c.publish_status,
        PublishStatus::Nodes {
            selector: [("xdpgate.io/edge".to_string(), "true".to_string())].into(),
            address_types: vec!["InternalIP".into()],
        }
    );
    assert_eq!(
        kube("kubernetes: { service_account_dir: /run/sa }").service_account_dir,
        Path::new("/run/sa")
    );
}

#[test]
fn publish_status_mistakes_name_the_key() {
    let e = refused("kubernetes: { publish_status: { addresses: [\"not an address\"] } }");
    assert_at(
        &e,
        7,
        "proxy.ingress.kubernetes.publish_status.addresses[0]",
        "neither an IP address nor a host name",
    );
    let e = refused("kubernetes: { publish_status: { nodes: { address_types: [ExternalIp] } } }");
    assert_at(
        &e,
        7,
        "proxy.ingress.kubernetes.publish_status.nodes.address_types[0]",
        "did you mean `ExternalIP`",
    );
    let e = refused("kubernetes: { publish_status: always }");
    assert_at(
        &e,
        7,
        "proxy.ingress.kubernetes.publish_status",
        "not a publish_status",
    );
    let e = refused("kubernetes: { kubeconfig: /k, service_account_dir: /sa }");
    assert_at(
        &e,
        7,
        "proxy.ingress.kubernetes.service_account_dir",
        "one or the other",
    );
}
