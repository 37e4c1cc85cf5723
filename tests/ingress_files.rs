//! The files source end to end: the daemon, with `proxy.ingress.files`
//! pointing at a directory, follows Ingress YAML being written, edited,
//! broken and deleted, and real requests reach the right backend within 2 s
//! of each change (the times are printed). The reference deployment's two
//! Ingresses are used: `api.example.com` and `example.com` to the API,
//! `admin.example.com` to the admin UI, with their TLS Secret served by SNI.
//! Upstreams are the cluster DNS names, which the daemon resolves through a
//! hosts file of the test's. The Ingresses attach a middleware of the config
//! file's, one by xdpgate's annotation, one by Traefik's. Needs root.
use std::time::Duration;

use serde_json::Value;
use xdpgate_tests::lab::{
    ingress::{from_backend, ingress, no_route, time_until, tls_secret, yaml},
    lab_ready, members, wait_for, Call, Metrics, ProxyLab, ProxySetup,
};

const API: u16 = 9301;
const ADMIN: u16 = 9302;
const API_V2: u16 = 9303;
const LIMIT: Duration = Duration::from_secs(2);

fn problems(status: &Value) -> Vec<String> {
    status["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(String::from))
        .collect()
}

#[test]
fn ingress_files_are_followed_on_create_update_break_and_delete() {
    let test = "ingress_files_are_followed_on_create_update_break_and_delete";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("if", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _api = proxy.echo_backend("api", API);
    let _admin = proxy.echo_backend("admin", ADMIN);
    let _api_v2 = proxy.echo_backend("api-v2", API_V2);
    let dir = proxy.work.path("ingress.d");
    std::fs::create_dir_all(&dir).expect("create ingress.d");
    // A middleware of the config file's, for the Ingresses to name.
    let rest = format!(
        "  ingress:\n    files: {}\n    poll_interval: 200ms\n  middlewares:\n    \
         hsts: {{ security_headers: {{ hsts: {{ max_age: 300 }} }} }}\n",
        dir.display()
    );
    let setup = ProxySetup {
        rest,
        ..ProxySetup::default()
    };
    proxy.start_with_hosts(
        &setup,
        "127.0.0.1 localhost\n127.0.0.1 api.honeydue.svc.cluster.local\n\
         127.0.0.1 admin.honeydue.svc.cluster.local\n",
    );
    let member = members()[0];
    let tls = |host: &str| Call::tls(member).sni(host).host(host);
    assert!(no_route(
        &proxy.send(&Call::plain(member).host("api.example.com"))
    ));

    // Create: the reference deployment's Ingresses and their Secret.
    let origin = proxy
        .pki
        .server(&["api.example.com", "example.com", "admin.example.com"]);
    // The admin Ingress names the middleware the xdpgate way, the API's
    // the Traefik way (`<namespace>-<name>@kubernetescrd`).
    let objects = |api_port: u16| {
        let mut api = ingress(
            "honeydue",
            "api",
            &[
                ("api.example.com", "api", api_port),
                ("example.com", "api", api_port),
            ],
            Some("origin-ca-tls"),
        );
        api["metadata"]["annotations"] = serde_json::json!({
            "traefik.ingress.kubernetes.io/router.middlewares": "honeydue-hsts@kubernetescrd"
        });
        let mut admin = ingress(
            "honeydue",
            "admin",
            &[("admin.example.com", "admin", ADMIN)],
            Some("origin-ca-tls"),
        );
        admin["metadata"]["annotations"] = serde_json::json!({ "xdpgate.io/middlewares": "hsts" });
        yaml(&[api, admin, tls_secret("honeydue", "origin-ca-tls", &origin)])
    };
    let file = dir.join("honeydue.yaml");
    std::fs::write(&file, objects(API)).expect("write honeydue.yaml");
    let created = time_until(
        &proxy,
        &tls("api.example.com"),
        LIMIT,
        "create",
        from_backend("api"),
    );
    for (host, backend) in [("example.com", "api"), ("admin.example.com", "admin")] {
        let reply = proxy.send(&tls(host)).expect(host);
        assert_eq!(
            (reply.status, reply.backend().as_deref()),
            (200, Some(backend)),
            "{host}"
        );
    }
    // Both annotations attach the config file's middleware; the Traefik
    // one is honoured with a warning that names the xdpgate equivalent.
    for host in ["api.example.com", "admin.example.com"] {
        let reply = proxy.send(&tls(host)).expect(host);
        assert_eq!(
            reply
                .headers
                .get("strict-transport-security")
                .and_then(|v| v.to_str().ok()),
            Some("max-age=300"),
            "{host}: the `hsts` middleware named by its Ingress"
        );
    }
    let log = proxy.hosts_daemon().log();
    assert!(
        log.contains("xdpgate.io/middlewares: hsts"),
        "the Traefik annotation's warning names the equivalent"
    );
    // The Secret's certificate is served for its hosts.
    let served = proxy
        .client
        .served_certificate(member, Some("admin.example.com"))
        .expect("handshake for admin.example.com");
    assert_eq!(
        served, origin.der,
        "the Ingress Secret's certificate by SNI"
    );

    // Update: the API moves to another port (another backend).
    std::fs::write(&file, objects(API_V2)).expect("rewrite honeydue.yaml");
    let updated = time_until(
        &proxy,
        &tls("api.example.com"),
        LIMIT,
        "update",
        from_backend("api-v2"),
    );

    // A config file route for a host an Ingress also routes: the reload
    // merges again, the file wins, and the conflict is reported.
    let mut with_route = setup.clone();
    with_route.rest.push_str(&format!(
        "  routes:\n    - {{ name: from-file, host: example.com, service: \"127.0.0.1:{ADMIN}\" }}\n"
    ));
    proxy.write_config(&with_route);
    time_until(
        &proxy,
        &tls("example.com"),
        Duration::from_secs(5),
        "file route wins",
        from_backend("admin"),
    );
    let status = wait_for(
        "the conflict in `xdpgate status`",
        Duration::from_secs(5),
        || proxy.work.status(),
        |s| {
            problems(s).iter().any(|p| {
                p.starts_with("ingress conflict: route `ingress.honeydue.api.1.0`")
                    && p.contains("`from-file` of the config file, which wins")
            })
        },
    );
    assert_eq!(status["healthy"], false);
    assert!(
        from_backend("api-v2")(&proxy.send(&tls("api.example.com"))),
        "the other Ingress route stays"
    );
    proxy.write_config(&setup);
    time_until(
        &proxy,
        &tls("example.com"),
        Duration::from_secs(5),
        "the Ingress route back",
        from_backend("api-v2"),
    );

    // Broken: a file that does not parse is reported by name and line, an
    // Ingress naming an unknown middleware is skipped and counted, and what
    // works keeps working.
    std::fs::write(
        dir.join("broken.yaml"),
        "kind: Ingress\nmetadata: [unclosed\n",
    )
    .unwrap();
    let mut odd = ingress("honeydue", "odd", &[("odd.example.com", "api", API)], None);
    odd["metadata"]["annotations"] = serde_json::json!({ "xdpgate.io/middlewares": "nope" });
    std::fs::write(dir.join("odd.yaml"), yaml(&[odd])).unwrap();
    let status = wait_for(
        "the broken file and the invalid Ingress in `xdpgate status`",
        Duration::from_secs(5),
        || proxy.work.status(),
        |s| {
            let p = problems(s).join("\n");
            p.contains("broken.yaml: line") && p.contains("Ingress honeydue/odd")
        },
    );
    assert_eq!(status["healthy"], false, "{status:#}");
    let metrics = Metrics::scrape(&proxy.lab.server_ns);
    assert_eq!(
        metrics.get("xdpgate_ingress_invalid", &[("reason", "middleware")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.get(
            "xdpgate_ingress_objects",
            &[("source", "files"), ("kind", "Ingress")]
        ),
        Some(3.0)
    );
    assert!(from_backend("api-v2")(&proxy.send(&tls("api.example.com"))));

    // Delete: the routes go.
    std::fs::remove_file(&file).expect("remove honeydue.yaml");
    let deleted = time_until(
        &proxy,
        &Call::plain(member).host("api.example.com"),
        LIMIT,
        "delete",
        no_route,
    );
    println!(
        "files source: create {created:?}, update {updated:?}, delete {deleted:?} \
         (poll_interval 200ms, limit {LIMIT:?})"
    );
    // The Secret's key material is gone from the state directory too.
    let key = proxy
        .work
        .state_dir
        .join("ingress-tls/honeydue/origin-ca-tls/tls.key");
    assert!(!key.exists(), "{} is still there", key.display());
}
