//! The daemon as a cluster member, against the stand-in API server
//! (`lab::kube_api`):
//!
//! * it publishes where our Ingresses are reached in their
//!   `.status.loadBalancer.ingress` (the Ready Nodes its selector picks),
//!   never touches an Ingress of another class, and writes nothing while
//!   nothing changes;
//! * with the in-cluster configuration it reaches an HTTPS API server
//!   through `KUBERNETES_SERVICE_HOST/PORT`, verifies it against the service
//!   account's `ca.crt` and authenticates with the `token` file, which it
//!   never logs; with the wrong CA it names the problem and serves nothing
//!   from the cluster, and with a token the server refuses (401) neither.
//!
//! Needs root.
use std::time::Duration;

use serde_json::{json, Value};
use xdpgate_tests::lab::{
    ingress::{from_backend, ingress, no_route, time_until},
    kube_api::{endpoint_slice, KubeApi, KubeTls},
    lab_ready, members, wait_for, Call, ProxyLab, ProxyPki, ProxySetup,
};

/// A Node with `labels`, its Ready condition `ready` and `addresses`
/// (`(type, address)`).
fn node(name: &str, labels: Value, ready: bool, addresses: &[(&str, &str)]) -> Value {
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|(kind, address)| json!({ "type": kind, "address": address }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": labels },
        "status": {
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            "addresses": addresses
        }
    })
}

fn published(api: &KubeApi, like: &Value) -> Value {
    api.get(like).expect("the Ingress")["status"]["loadBalancer"]["ingress"].clone()
}

/// Status writes the daemon sent for the Ingress `like`.
fn writes_for(api: &KubeApi, like: &Value) -> usize {
    let name = like["metadata"]["name"].as_str().unwrap_or_default();
    api.status_updates()
        .iter()
        .filter(|u| u.kind == "Ingress" && u.name == name)
        .count()
}

#[test]
fn our_ingresses_publish_the_selected_nodes_addresses_once_and_others_are_untouched() {
    let test = "our_ingresses_publish_the_selected_nodes_addresses_once_and_others_are_untouched";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("ips", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let api = KubeApi::start(&proxy.lab.server_ns, 9710);
    let edge = json!({ "xdpgate.io/edge": "true" });
    api.put(node(
        "edge-a",
        edge.clone(),
        true,
        &[("InternalIP", "10.0.0.1"), ("ExternalIP", "203.0.113.1")],
    ));
    api.put(node(
        "edge-b",
        edge.clone(),
        true,
        &[("InternalIP", "10.0.0.2")],
    ));
    api.put(node(
        "worker",
        json!({}),
        true,
        &[("ExternalIP", "203.0.113.3")],
    ));
    let ours = ingress("honeydue", "api", &[("api.example.com", "api", 80)], None);
    let mut theirs = ingress("honeydue", "nginx", &[("n.example.com", "n", 80)], None);
    theirs["spec"]["ingressClassName"] = json!("nginx");
    api.put(ours.clone());
    api.put(theirs.clone());
    let kubeconfig = proxy.work.write("kubeconfig", &api.kubeconfig());
    let rest = format!(
        "  ingress:\n    kubernetes:\n      kubeconfig: {}\n      resync: 10m\n      \
         publish_status: {{ nodes: {{ selector: {{ xdpgate.io/edge: \"true\" }} }} }}\n",
        kubeconfig.display()
    );
    proxy.start(&ProxySetup {
        rest,
        ..ProxySetup::default()
    });

    // ExternalIP where a Node has one, else InternalIP; the unselected
    // worker is not published.
    let both = json!([{ "ip": "10.0.0.2" }, { "ip": "203.0.113.1" }]);
    wait_for(
        "the Ingress status to show the edge nodes",
        Duration::from_secs(5),
        || published(&api, &ours),
        |p| *p == both,
    );
    assert!(
        api.get(&theirs).expect("the nginx Ingress")["status"].is_null(),
        "an Ingress of another class is not ours to publish"
    );
    assert_eq!(writes_for(&api, &theirs), 0);
    let writes = writes_for(&api, &ours);
    assert_eq!(writes, 1, "{:#?}", api.status_updates());

    // Nothing that changes the list writes anything: another Ingress
    // changes, a Node gains an unrelated label, and the daemon's 10 s retry
    // comes and goes.
    theirs["spec"]["rules"][0]["host"] = json!("n2.example.com");
    api.put(theirs.clone());
    api.put(node(
        "worker",
        json!({ "zone": "b" }),
        true,
        &[("ExternalIP", "203.0.113.3")],
    ));
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        writes_for(&api, &ours),
        writes,
        "an unchanged status was written again: {:#?}",
        api.status_updates()
    );
    assert_eq!(published(&api, &ours), both);

    // A Node that stops being Ready leaves the list, with one write.
    api.put(node("edge-b", edge, false, &[("InternalIP", "10.0.0.2")]));
    wait_for(
        "the NotReady node to leave the status",
        Duration::from_secs(5),
        || published(&api, &ours),
        |p| *p == json!([{ "ip": "203.0.113.1" }]),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(writes_for(&api, &ours), writes + 1);
    assert!(api.get(&theirs).expect("the nginx Ingress")["status"].is_null());
}

#[test]
fn in_cluster_the_daemon_verifies_the_ca_and_authenticates_with_the_token_file() {
    let test = "in_cluster_the_daemon_verifies_the_ca_and_authenticates_with_the_token_file";
    if !lab_ready(test, &[]) {
        return;
    }
    const PORT: u16 = 9711;
    let mut proxy = ProxyLab::new("iic", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backend = proxy.echo_backend("api", 9412);
    let token = "eyJhbGciOi.lab-service-account-token.Zm9vYmFy";
    let api_cert = proxy.pki.server(&["127.0.0.1"]);
    let api = KubeApi::start_tls(
        &proxy.lab.server_ns,
        PORT,
        &KubeTls {
            cert_pem: &api_cert.cert_pem,
            key_pem: &api_cert.key_pem,
            token,
        },
    );
    api.put(ingress(
        "honeydue",
        "api",
        &[("api.example.com", "api", 80)],
        None,
    ));
    api.put(endpoint_slice("honeydue", "api", 9412));

    // The service account as the kubelet mounts it, but elsewhere; first
    // with a CA that did not sign the API server's certificate.
    let other_ca = ProxyPki::new(&proxy.work, "other-ca");
    let account = proxy.work.path("serviceaccount");
    std::fs::create_dir_all(&account).expect("service account dir");
    let ca_file = account.join("ca.crt");
    std::fs::write(account.join("token"), token).expect("token");
    std::fs::write(account.join("namespace"), "xdpgate").expect("namespace");
    std::fs::copy(&other_ca.ca_file, &ca_file).expect("wrong ca.crt");
    let setup = ProxySetup {
        rest: format!(
            "  ingress:\n    endpoint_slices: true\n    kubernetes:\n      \
             service_account_dir: {}\n      resync: 10m\n      publish_status: off\n",
            account.display()
        ),
        env: vec![
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), PORT.to_string()),
        ],
        ..ProxySetup::default()
    };
    let member = members()[0];
    let call = Call::plain(member).host("api.example.com");

    proxy.start_unready(&setup);
    let refused = wait_for(
        "the daemon to report the API server's certificate",
        Duration::from_secs(10),
        || proxy.daemon().log(),
        |log| log.contains("does not verify against"),
    );
    let line = refused
        .lines()
        .find(|l| l.contains("does not verify against"))
        .unwrap_or_default();
    eprintln!("the daemon says: {line}");
    assert!(
        line.contains(&ca_file.display().to_string()),
        "the error names the CA file it checked against: {line}"
    );
    let (lists, _) = api.ingress_requests();
    assert_eq!(lists, 0, "no request got past the TLS handshake");
    let reply = proxy.send(&call.clone().timeout(Duration::from_secs(2)));
    assert!(
        no_route(&reply),
        "nothing from the cluster is served: {:?}",
        reply.map(|r| (r.status, r.text()))
    );

    // The right CA and a token the API server does not know: refused
    // (401), so the stand-in's check is real; still nothing served.
    std::fs::copy(&proxy.pki.ca_file, &ca_file).expect("right ca.crt");
    let stale = "eyJhbGciOi.revoked-service-account-token.YmFy";
    std::fs::write(account.join("token"), stale).expect("stale token");
    proxy.start_unready(&setup);
    wait_for(
        "the daemon to report the refused token",
        Duration::from_secs(10),
        || proxy.daemon().log(),
        |log| log.contains("Unauthorized"),
    );
    assert!(api.unauthorized() > 0);
    let reply = proxy.send(&call.clone().timeout(Duration::from_secs(2)));
    assert!(no_route(&reply), "nothing served without a valid token");
    assert!(
        !proxy
            .daemon()
            .log()
            .contains("revoked-service-account-token"),
        "the token reached the log"
    );

    // The right token: the watch lists with it, and the route is served.
    std::fs::write(account.join("token"), token).expect("token");
    let refused_before = api.unauthorized();
    proxy.start(&setup);
    time_until(
        &proxy,
        &call,
        Duration::from_secs(5),
        "the Ingress route over the in-cluster config",
        from_backend("api"),
    );
    let (lists, _) = api.ingress_requests();
    assert!(lists >= 1, "the Ingresses were listed");
    assert_eq!(
        api.unauthorized(),
        refused_before,
        "every request carried the service account's bearer token"
    );
    let log = proxy.daemon().log();
    assert!(
        !log.contains(token) && !log.contains("lab-service-account-token"),
        "the token reached the log"
    );
}
