//! docs/migrating.md's config for the reference deployment, taken from the
//! document itself (the YAML block after `<!-- test: migration-config -->`),
//! passes `xdpgate config check` as written, and does what the guide says
//! when it runs: the routes that replace the Traefik Ingress objects, the
//! `web` → `websecure` redirect, a 404 for a host no route names, and the
//! filter letting only the `cloudflare` set open connections to :443.
//!
//! To run it in the lab, only these strings of the document's block are
//! replaced (each must occur exactly once, so the test fails if the document
//! drifts); hosts, paths, route names, listen addresses (`[::]:80`,
//! `[::]:443`, bound in the lab's server namespace) and the `allow` rules
//! stay as written:
//! * `interfaces: [eth0]` → the lab's server veth;
//! * the `cloudflare` set's source (Cloudflare's API, which a test must not
//!   reach) → inline CIDRs, the lab's member range (198.51.100.0/29,
//!   2001:db8:1::/64): those sources stand for Cloudflare's addresses and
//!   the lab's outsiders (203.0.113.0/24, 2001:db8:2::/64) for everyone else;
//! * `/etc/xdpgate/admins.txt` and the TLS files under `/etc/xdpgate/tls/`
//!   → files in the workdir (a certificate for `example.com` and
//!   `*.example.com` from a test CA, in place of the Cloudflare Origin CA one);
//! * the Service targets `api.honeydue.svc.cluster.local:8000` and
//!   `admin.honeydue.svc.cluster.local:3000` → echo backends named `api` and
//!   `admin` on 127.0.0.1 in the server namespace.
//!
//! `state_dir` and `admin.listen` are overridden by the lab's command line
//! (`--state-dir`, `--admin-listen`). Needs root.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use xdpgate_tests::lab::{
    in_netns, lab_ready, members, outsiders, tcp_connects, xdpgate, Backend, Call, Client, Daemon,
    Lab, ProxyPki, Workdir,
};

const MARKER: &str = "<!-- test: migration-config -->";
const API_PORT: u16 = 9200;
const ADMIN_APP_PORT: u16 = 9201;

/// The YAML block right after the marker in docs/migrating.md.
fn migration_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/migrating.md");
    let doc =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(
        doc.matches(MARKER).count(),
        1,
        "docs/migrating.md must mark exactly one block with `{MARKER}`"
    );
    let after = doc.split(MARKER).nth(1).expect("the marker");
    let after = after.trim_start();
    let body = after
        .strip_prefix("```yaml\n")
        .unwrap_or_else(|| panic!("`{MARKER}` must be followed by a ```yaml block"));
    let end = body.find("\n```").expect("the yaml block's closing fence");
    format!("{}\n", &body[..end])
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the migration config must contain `{from}` exactly once:\n{text}"
    );
    text.replace(from, to)
}

fn config_check(bin: &str, file: &Path) {
    let out = xdpgate(
        Path::new(bin),
        &["config", "check", file.to_str().expect("utf-8")],
    );
    assert_eq!(
        out.code,
        0,
        "xdpgate config check {} refused it: {out:?}",
        file.display()
    );
}

#[test]
fn the_config_in_docs_migrating_passes_config_check_as_written() {
    let bin = env!("CARGO_BIN_EXE_xdpgate-under-test");
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = scratch.path().join("config.yaml");
    std::fs::write(&file, migration_config()).expect("write config.yaml");
    config_check(bin, &file);
}

#[test]
fn the_migrated_config_routes_redirects_and_filters_like_the_guide_says() {
    let test = "the_migrated_config_routes_redirects_and_filters_like_the_guide_says";
    if !lab_ready(test, &[]) {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_xdpgate-under-test");
    let lab = Lab::new("mig");
    let work = Workdir::new("docs-migration", bin);
    let pki = ProxyPki::new(&work, "migration-ca");
    let (cert, key) = pki
        .server(&["example.com", "*.example.com"])
        .write(&work, "origin");
    let admins = work.write("admins.txt", "198.51.100.0/28\n");
    let client = Client::new(&lab.client_ns, &pki.ca_file);

    let mut config = migration_config();
    for (from, to) in [
        (
            "interfaces: [eth0]".to_string(),
            format!("interfaces: [{}]", lab.server_if),
        ),
        (
            "cloudflare: { cloudflare: { refresh: 6h } }".to_string(),
            "cloudflare: { cidrs: [198.51.100.0/29, \"2001:db8:1::/64\"] }".to_string(),
        ),
        (
            "/etc/xdpgate/admins.txt".to_string(),
            admins.display().to_string(),
        ),
        (
            "/etc/xdpgate/tls/tls.crt".to_string(),
            cert.display().to_string(),
        ),
        (
            "/etc/xdpgate/tls/tls.key".to_string(),
            key.display().to_string(),
        ),
        (
            "api.honeydue.svc.cluster.local:8000".to_string(),
            format!("127.0.0.1:{API_PORT}"),
        ),
        (
            "admin.honeydue.svc.cluster.local:3000".to_string(),
            format!("127.0.0.1:{ADMIN_APP_PORT}"),
        ),
    ] {
        config = substitute(&config, &from, &to);
    }
    let file = work.write("config.yaml", &config);
    config_check(bin, &file);

    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let _api = Backend::echo(&lab.server_ns, local(API_PORT), "api");
    let _admin = Backend::echo(&lab.server_ns, local(ADMIN_APP_PORT), "admin");
    let _daemon = Daemon::start_ready(&lab, &work, &file, "daemon");
    // /readyz can say ready a moment before the entrypoints are bound.
    let deadline = Instant::now() + Duration::from_secs(5);
    for port in [80, 443] {
        while in_netns(&lab.server_ns, || {
            std::net::TcpStream::connect_timeout(&local(port), Duration::from_secs(1))
        })
        .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "entrypoint :{port} never accepted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    let cloudflare: Vec<IpAddr> = vec![members()[0], members()[6]];
    let others: Vec<IpAddr> = vec![outsiders()[0], outsiders()[6]];

    // The routes that replace the two Ingress objects, over TLS on :443,
    // HTTP/1.1 and HTTP/2, from a Cloudflare address of each family.
    let mut wrong = Vec::new();
    for &source in &cloudflare {
        for h2 in [false, true] {
            for (host, path, expected) in [
                ("api.example.com", "/", Some("api")),
                ("api.example.com", "/v1/items?page=2", Some("api")),
                ("example.com", "/", Some("api")),
                ("admin.example.com", "/", Some("admin")),
                ("admin.example.com", "/users/7", Some("admin")),
                ("www.example.com", "/", None),
            ] {
                let mut call = Call::tls(source).port(443).host(host).path(path);
                if h2 {
                    call = call.h2();
                }
                let what = format!(
                    "{source} {} https://{host}{path}",
                    if h2 { "h2" } else { "h1" }
                );
                match (client.send(&call), expected) {
                    (Ok(reply), Some(backend)) => {
                        if reply.status != 200 || reply.backend().as_deref() != Some(backend) {
                            wrong.push(format!(
                                "{what}: expected {backend}, got {} from {:?}: {}",
                                reply.status,
                                reply.backend(),
                                reply.text().trim()
                            ));
                        }
                    }
                    (Ok(reply), None) => {
                        if reply.status != 404 || reply.backend().is_some() {
                            wrong.push(format!(
                                "{what}: expected a 404 from the proxy, got {} from {:?}",
                                reply.status,
                                reply.backend()
                            ));
                        }
                    }
                    (Err(e), _) => wrong.push(format!("{what}: {e}")),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "routing went wrong:\n{}",
        wrong.join("\n")
    );

    // web → websecure: a 308 to https:// with host, path and query kept.
    for (host, path) in [
        ("example.com", "/a/b?x=1&y=2"),
        ("admin.example.com", "/login?next=%2Fusers"),
    ] {
        let reply = client
            .send(&Call::plain(cloudflare[0]).port(80).host(host).path(path))
            .unwrap_or_else(|e| panic!("http://{host}{path}: {e}"));
        let location = reply
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(
            (reply.status, location),
            (308, format!("https://{host}{path}").as_str()),
            "http://{host}{path} must redirect to https://"
        );
    }

    // The filter: on :443 (and :80) only the `cloudflare` set connects.
    for port in [443, 80] {
        for &source in &cloudflare {
            assert!(
                tcp_connects(&lab.client_ns, source, port, Duration::from_secs(2)),
                "{source} is in the cloudflare set: its connection to :{port} must be accepted"
            );
        }
        for &source in &others {
            assert!(
                !tcp_connects(&lab.client_ns, source, port, Duration::from_millis(500)),
                "{source} is in no set: its SYN to :{port} must be dropped by the filter"
            );
        }
    }
    let (code, action) = work.check(&others[0].to_string(), "tcp", 443);
    assert_eq!(
        (code, action.as_str()),
        (5, "drop"),
        "xdpgate check on a non-member"
    );
    let (code, action) = work.check(&cloudflare[0].to_string(), "tcp", 443);
    assert_eq!(
        (code, action.as_str()),
        (0, "pass"),
        "xdpgate check on a member"
    );
}
