//! The Kubernetes source end to end: the daemon watches a stand-in API
//! server (hyper, in this process, see `lab::kube_api`) through a
//! kubeconfig, with `endpoint_slices: true` so the upstreams are the
//! EndpointSlices' ready addresses (echo backends on 127.0.0.1). Real
//! requests must follow an Ingress being created, updated and deleted
//! within 2 s (the times are printed), also after a watch broken in the
//! middle of an event (a reconnect) and after a `410 Gone` (a relist), and
//! the TLS Secret's certificate must be served by SNI. Needs root.
use std::time::Duration;

use xdpgate_tests::lab::{
    ingress::{from_backend, ingress, no_route, time_until, tls_secret},
    kube_api::{endpoint_slice, KubeApi},
    lab_ready, members, wait_for, Call, Metrics, ProxyLab, ProxySetup,
};

const API_PORT: u16 = 9700;
const LIMIT: Duration = Duration::from_secs(2);

fn counter(proxy: &ProxyLab, name: &str) -> f64 {
    Metrics::scrape(&proxy.lab.server_ns)
        .get(name, &[])
        .unwrap_or(0.0)
}

#[test]
fn the_kubernetes_watch_is_followed_through_changes_breaks_and_410_gone() {
    let test = "the_kubernetes_watch_is_followed_through_changes_breaks_and_410_gone";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("ik", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backends: Vec<_> = [
        ("api", 9401),
        ("admin", 9402),
        ("api-v2", 9403),
        ("late", 9404),
    ]
    .into_iter()
    .map(|(name, port)| proxy.echo_backend(name, port))
    .collect();
    let api = KubeApi::start(&proxy.lab.server_ns, API_PORT);
    let origin = proxy.pki.server(&["api.example.com", "example.com"]);
    let api_ingress = |service: &str| {
        ingress(
            "honeydue",
            "api",
            &[
                ("api.example.com", service, 80),
                ("example.com", service, 80),
            ],
            Some("origin-ca-tls"),
        )
    };
    api.put(api_ingress("api"));
    api.put(tls_secret("honeydue", "origin-ca-tls", &origin));
    for (service, port) in [
        ("api", 9401),
        ("admin", 9402),
        ("api-v2", 9403),
        ("late", 9404),
    ] {
        api.put(endpoint_slice("honeydue", service, port));
    }
    let kubeconfig = proxy.work.write("kubeconfig", &api.kubeconfig());
    let rest = format!(
        "  ingress:\n    endpoint_slices: true\n    kubernetes: {{ kubeconfig: {}, resync: 10m }}\n",
        kubeconfig.display()
    );
    proxy.start(&ProxySetup {
        rest,
        ..ProxySetup::default()
    });
    let member = members()[0];
    let plain = |host: &str| Call::plain(member).host(host);

    // Ready means listed: the first request after /readyz is routed.
    let first = proxy.send(&plain("api.example.com"));
    assert!(
        from_backend("api")(&first),
        "the first request after ready: {:?}",
        first.map(|r| (r.status, r.text()))
    );
    let served = proxy
        .client
        .served_certificate(member, Some("example.com"))
        .expect("handshake for example.com");
    assert_eq!(served, origin.der, "the Secret's certificate by SNI");
    let reply = proxy
        .send(&Call::tls(member).sni("example.com").host("example.com"))
        .expect("TLS request to example.com");
    assert_eq!(reply.backend().as_deref(), Some("api"));

    // Create, update, delete through the live watch.
    let admin = ingress(
        "honeydue",
        "admin",
        &[("admin.example.com", "admin", 80)],
        None,
    );
    api.put(admin.clone());
    let created = time_until(
        &proxy,
        &plain("admin.example.com"),
        LIMIT,
        "create",
        from_backend("admin"),
    );
    api.put(api_ingress("api-v2"));
    let updated = time_until(
        &proxy,
        &plain("api.example.com"),
        LIMIT,
        "update",
        from_backend("api-v2"),
    );
    api.delete(&admin);
    let deleted = time_until(
        &proxy,
        &plain("admin.example.com"),
        LIMIT,
        "delete",
        no_route,
    );

    // The Service's endpoints move: the EndpointSlice is followed.
    api.put(endpoint_slice("honeydue", "api-v2", 9404));
    let moved = time_until(
        &proxy,
        &plain("api.example.com"),
        LIMIT,
        "slice update",
        from_backend("late"),
    );
    api.put(endpoint_slice("honeydue", "api-v2", 9403));
    time_until(
        &proxy,
        &plain("api.example.com"),
        LIMIT,
        "slice back",
        from_backend("api-v2"),
    );

    // A renewed Secret: the next handshake gets the new certificate.
    let renewed = proxy.pki.server(&["api.example.com", "example.com"]);
    assert_ne!(renewed.der, origin.der);
    api.put(tls_secret("honeydue", "origin-ca-tls", &renewed));
    let started = std::time::Instant::now();
    wait_for(
        "the renewed Secret's certificate",
        LIMIT,
        || {
            proxy
                .client
                .served_certificate(member, Some("api.example.com"))
                .ok()
        },
        |served| served.as_ref() == Some(&renewed.der),
    );
    let secret_updated = started.elapsed();

    // A watch cut in the middle of an event: the client watches again and
    // the change made meanwhile arrives.
    let (_, watches_before) = api.ingress_requests();
    api.cut_watches();
    let late = ingress("shop", "late", &[("late.example.com", "late", 80)], None);
    api.put(endpoint_slice("shop", "late", 9404));
    api.put(late.clone());
    let after_cut = time_until(
        &proxy,
        &plain("late.example.com"),
        LIMIT,
        "create after a cut watch",
        from_backend("late"),
    );
    let (_, watches_after) = api.ingress_requests();
    assert!(
        watches_after > watches_before,
        "no new Ingress watch after the cut ({watches_before} → {watches_after})"
    );

    // 410 Gone: the next watch is refused as too old, the client lists again
    // and finds the change it missed.
    let (lists, _) = api.ingress_requests();
    let relists = counter(&proxy, "xdpgate_ingress_watch_relists_total");
    let reconnects = counter(&proxy, "xdpgate_ingress_watch_reconnects_total");
    api.gone_on_next_watch();
    api.cut_watches();
    api.delete(&late);
    let after_gone = time_until(
        &proxy,
        &plain("late.example.com"),
        LIMIT,
        "delete after 410 Gone",
        no_route,
    );
    let (lists_after, watches) = api.ingress_requests();
    assert!(
        lists_after > lists,
        "no new Ingress list after 410 Gone ({lists} → {lists_after}, {watches} watches)"
    );
    assert!(counter(&proxy, "xdpgate_ingress_watch_relists_total") > relists);
    assert!(counter(&proxy, "xdpgate_ingress_watch_reconnects_total") > reconnects);

    // Everything still served, and the status is clean.
    assert!(from_backend("api-v2")(&proxy.send(&plain("example.com"))));
    let status = wait_for(
        "a clean Ingress status",
        Duration::from_secs(5),
        || proxy.work.status(),
        |s| {
            s["daemon"]["status"]["ingress"]["problems"]
                .as_array()
                .is_some_and(|p| p.is_empty())
        },
    );
    assert_eq!(status["daemon"]["status"]["ingress"]["certificates"], 1);
    let metrics = Metrics::scrape(&proxy.lab.server_ns);
    assert_eq!(
        metrics.get(
            "xdpgate_ingress_objects",
            &[("source", "kubernetes"), ("kind", "Ingress")]
        ),
        Some(1.0)
    );
    println!(
        "kubernetes source: create {created:?}, update {updated:?}, \
         delete {deleted:?}, slice update {moved:?}, secret update {secret_updated:?}, create after a cut watch {after_cut:?}, delete after 410 Gone \
         {after_gone:?} (limit {LIMIT:?}); Ingress lists served {lists_after}, watches {watches}"
    );
}
