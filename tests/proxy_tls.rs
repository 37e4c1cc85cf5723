//! TLS on the running proxy's `websecure` entrypoint, as clients see it:
//! the certificate chosen by SNI (two names, a wildcard, and the default for
//! an unknown or missing SNI); a certificate replaced on disk (renamed over
//! the old file, or swapped in through a Kubernetes-style `..data` symlink)
//! served from the next handshake on without a restart; a corrupt
//! replacement refused (the old certificate stays, and
//! `xdpgate_tls_cert_reload_failures` counts it); `xdpgate_tls_certs_not_after`
//! following the certificates; and with `client_ca` set, no HTTP answer at
//! all without a valid client certificate. Needs root.
use std::{os::unix::fs::symlink, path::Path, time::Duration};

use xdpgate_tests::lab::{
    lab_ready, members, wait_for, Call, Client, Issued, Metrics, ProxyLab, ProxySetup,
};

const BACKEND_PORT: u16 = 9100;
const ROUTES: &str = "  default_service: \"127.0.0.1:9100\"\n";
/// January 1st 2031, 00:00 UTC, in Unix seconds.
const JAN_2031: f64 = 1_924_992_000.0;

fn metric(proxy: &ProxyLab, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    Metrics::scrape(&proxy.lab.server_ns).get(name, labels)
}

fn not_after(proxy: &ProxyLab, names: &str, default: bool) -> Option<f64> {
    let default = default.to_string();
    metric(
        proxy,
        "xdpgate_tls_certs_not_after",
        &[
            ("entrypoint", "websecure"),
            ("names", names),
            ("default", default.as_str()),
        ],
    )
}

fn reload_failures(proxy: &ProxyLab) -> f64 {
    metric(
        proxy,
        "xdpgate_tls_cert_reload_failures",
        &[("entrypoint", "websecure")],
    )
    .unwrap_or(0.0)
}

/// A Kubernetes Secret volume: `<dir>/tls.crt -> ..data/tls.crt`, and
/// `..data -> ..<version>`, the directory holding this version's files.
/// A later version is swapped in by renaming a new `..data` link over the
/// old one, as the kubelet does.
fn k8s_secret(dir: &Path, version: &str, issued: &Issued) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).expect("secret version directory");
    std::fs::write(versioned.join("tls.crt"), &issued.cert_pem).expect("tls.crt");
    std::fs::write(versioned.join("tls.key"), &issued.key_pem).expect("tls.key");
    let staged = dir.join("..data_tmp");
    symlink(format!("..{version}"), &staged).expect("..data_tmp link");
    std::fs::rename(&staged, dir.join("..data")).expect("swap ..data");
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if !link.exists() {
            symlink(format!("..data/{file}"), &link).expect("file link");
        }
    }
}

#[test]
fn sni_picks_the_certificate_and_files_changed_on_disk_are_served_without_a_restart() {
    let test = "sni_picks_the_certificate_and_files_changed_on_disk_are_served_without_a_restart";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("ts", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backend = proxy.echo_backend("app", BACKEND_PORT);
    let a1 = proxy.pki.server(&["a.example.com"]);
    let a_files = a1.write(&proxy.work, "a");
    let secret = proxy.work.path("secret-b");
    let b1 = proxy.pki.server(&["b.example.com"]);
    k8s_secret(&secret, "2024_01_01", &b1);
    let wild = proxy.pki.server(&["*.w.example.com"]);
    let wild_files = wild.write(&proxy.work, "wild");
    let default = proxy.server_cert.clone();
    proxy.start(&ProxySetup {
        certs: vec![
            default,
            a_files.clone(),
            (secret.join("tls.crt"), secret.join("tls.key")),
            wild_files,
        ],
        rest: ROUTES.into(),
        ..ProxySetup::default()
    });
    let member = members()[0];
    let served = |sni: Option<&str>| {
        proxy
            .client
            .served_certificate(member, sni)
            .unwrap_or_else(|e| panic!("handshake with SNI {sni:?}: {e}"))
    };
    let default_der = served(Some("localhost"));

    // Each name gets its certificate, verified by a real client as well.
    assert_eq!(served(Some("a.example.com")), a1.der, "SNI a.example.com");
    assert_eq!(served(Some("A.Example.COM")), a1.der, "SNI in mixed case");
    assert_eq!(served(Some("b.example.com")), b1.der, "SNI b.example.com");
    assert_eq!(
        served(Some("x.w.example.com")),
        wild.der,
        "SNI x.w.example.com"
    );
    assert_eq!(
        served(Some("unknown.example.org")),
        default_der,
        "unknown SNI"
    );
    assert_eq!(served(None), default_der, "no SNI");
    assert_ne!(default_der, a1.der);
    for host in [
        "a.example.com",
        "b.example.com",
        "x.w.example.com",
        "localhost",
    ] {
        let reply = proxy
            .send(&Call::tls(member).host(host))
            .unwrap_or_else(|e| panic!("HTTPS to {host} with the test CA: {e}"));
        assert_eq!(reply.status, 200, "HTTPS to {host}: {}", reply.text());
    }
    for (names, default) in [
        ("localhost", true),
        ("a.example.com", false),
        ("b.example.com", false),
        ("*.w.example.com", false),
    ] {
        let expiry = not_after(&proxy, names, default);
        assert!(
            expiry.is_some_and(|t| t > 1.9e9),
            "xdpgate_tls_certs_not_after for {names}: {expiry:?}"
        );
    }

    // A renewed certificate renamed over the old file.
    let a2 = proxy.pki.renew(&a1, &["a.example.com"], 2031);
    let staged = proxy.work.write("a.crt.new", &a2.cert_pem);
    std::fs::rename(&staged, &a_files.0).expect("rename the new certificate over a.crt");
    wait_for(
        "the renamed a.example.com certificate to be served",
        Duration::from_secs(5),
        || served(Some("a.example.com")) == a2.der,
        |swapped| *swapped,
    );
    assert_eq!(
        not_after(&proxy, "a.example.com", false),
        Some(JAN_2031),
        "xdpgate_tls_certs_not_after shows the renewed certificate's expiry"
    );

    // A new certificate and key swapped in through `..data`.
    let b2 = proxy.pki.server(&["b.example.com"]);
    k8s_secret(&secret, "2024_02_01", &b2);
    wait_for(
        "the b.example.com certificate swapped in through ..data to be served",
        Duration::from_secs(5),
        || served(Some("b.example.com")) == b2.der,
        |swapped| *swapped,
    );
    let reply = proxy.send(&Call::tls(member).host("b.example.com"));
    assert_eq!(
        reply.map(|r| r.status).ok(),
        Some(200),
        "HTTPS to b.example.com after the swap"
    );

    // A corrupt file is refused and counted; the last good certificate stays.
    let failures_before = reload_failures(&proxy);
    let corrupt = proxy.work.write(
        "a.crt.corrupt",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    std::fs::rename(&corrupt, &a_files.0).expect("rename a corrupt file over a.crt");
    wait_for(
        "xdpgate_tls_cert_reload_failures to count the corrupt file",
        Duration::from_secs(5),
        || reload_failures(&proxy),
        |failures| *failures >= failures_before + 1.0,
    );
    assert_eq!(
        served(Some("a.example.com")),
        a2.der,
        "the last good certificate stays"
    );
    let reply = proxy.send(&Call::tls(member).host("a.example.com"));
    assert_eq!(
        reply.map(|r| r.status).ok(),
        Some(200),
        "HTTPS to a.example.com"
    );
    assert_eq!(
        not_after(&proxy, "a.example.com", false),
        Some(JAN_2031),
        "the expiry metric still shows the certificate served"
    );
}

#[test]
fn with_client_ca_only_clients_with_a_certificate_from_that_ca_get_an_answer() {
    let test = "with_client_ca_only_clients_with_a_certificate_from_that_ca_get_an_answer";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("tc", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backend = proxy.echo_backend("app", BACKEND_PORT);
    // The origin-pull CA is not the CA of the server certificate.
    let pull_ca = xdpgate_tests::lab::ProxyPki::new(&proxy.work, "origin-pull-ca");
    proxy.start(&ProxySetup {
        tls_extra: format!("client_ca: {}", pull_ca.ca_file.display()),
        rest: ROUTES.into(),
        ..ProxySetup::default()
    });
    let member = members()[0];
    let (ns, ca) = (&proxy.lab.client_ns, &proxy.pki.ca_file);

    for h2 in [false, true] {
        let call = if h2 {
            Call::tls(member).h2()
        } else {
            Call::tls(member)
        };
        let call = call.timeout(Duration::from_secs(5));
        match proxy.send(&call) {
            Ok(reply) => panic!(
                "a client without a certificate got an HTTP answer (h2 {h2}): {} {}",
                reply.status,
                reply.text()
            ),
            Err(e) => println!("without a client certificate (h2 {h2}): {e}"),
        }

        let stranger = proxy.pki.client("stranger");
        let wrong_ca = Client::new(ns, ca).with_identity(&stranger.cert_pem, &stranger.key_pem);
        if let Ok(reply) = wrong_ca.send(&call) {
            panic!(
                "a client certificate from another CA got an HTTP answer (h2 {h2}): {}",
                reply.status
            );
        }

        let cloudflare = pull_ca.client("cloudflare origin pull");
        let pulling = Client::new(ns, ca).with_identity(&cloudflare.cert_pem, &cloudflare.key_pem);
        let reply = pulling
            .send(&call)
            .unwrap_or_else(|e| panic!("a client with a valid certificate (h2 {h2}): {e}"));
        assert_eq!(
            reply.status,
            200,
            "with a valid client certificate: {}",
            reply.text()
        );
        assert_eq!(reply.backend().as_deref(), Some("app"));
    }
    let errors = metric(
        &proxy,
        "xdpgate_tls_handshake_errors_total",
        &[("entrypoint", "websecure")],
    );
    assert!(
        errors.is_some_and(|n| n >= 4.0),
        "xdpgate_tls_handshake_errors_total counts the four refused clients: {errors:?}"
    );
}
