//! The shared rate limit's store over TLS with an ACL user, on a real
//! `redis-server` (Debian's is built with TLS) started by the test in the
//! server namespace: TLS only (`--port 0 --tls-port`), the server's
//! certificate from a test CA, the `default` user off and one user
//! `xdpgate` (an ACL file) allowed the script's commands on the limit's keys only. One
//! daemon has three middlewares on that store:
//! * the right CA, username file and password file: the budget is enforced
//!   by the store (a burst of 20 passes, then 429; no fallback counted);
//! * a wrong password: the log says the store refused the credentials read
//!   from the files, the fallback (`local`) is counted, and neither the
//!   wrong nor the right password appears in the log or on /metrics;
//! * a CA that did not sign the server's certificate: the log names the
//!   TLS failure (the certificate's unknown issuer), the fallback counted.
//!
//! Then the user is given the password the file has (`ACL SETUSER`, as an
//! operator fixing the store's side): without a reload the middleware with
//! the refused password is decided by the store again within seconds.
//!
//! Needs root (namespaces, XDP) and redis-server.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use xdpgate_tests::lab::{
    in_netns, lab_ready, loopback_status, store_errors, wait_for, Backend, Daemon, Lab, ProxyPki,
    StoreKind, StoreServer, Workdir,
};

const BURST: usize = 20;
const STORE_PORT: u16 = 6380;
const BACKEND_PORT: u16 = 8090;
const PROXY_PORT: u16 = 8081;
const PASSWORD: &str = "store-pass-4b1f0c9e";
const WRONG_PASSWORD: &str = "not-the-pass-77d2a3";
const ADMIN_PASSWORD: &str = "admin-pass-0e6c2d";

#[test]
fn tls_and_acl_store_enforces_the_budget_and_names_what_is_wrong() {
    let test = "tls_and_acl_store";
    if !lab_ready(test, &[]) || !StoreServer::installed(test, StoreKind::Redis) {
        return;
    }
    let lab = Lab::new("rlt");
    let work = Workdir::new("rlt", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let pki = ProxyPki::new(&work, "store-ca");
    let other_ca = ProxyPki::new(&work, "other-ca");
    let _backend = Backend::echo(
        &lab.server_ns,
        ([127, 0, 0, 1], BACKEND_PORT).into(),
        "backend",
    );
    let _store = start_store(&lab, &work, &pki);
    let config = write_config(&lab, &work, &pki, &other_ca);
    let daemon = Daemon::start_ready(&lab, &work, &config, "daemon");

    let (good, bad_password, bad_ca) = in_netns(&lab.server_ns, || {
        let count = |host: &str, n: usize| {
            (0..n)
                .filter(|_| loopback_status(PROXY_PORT, host) == 200)
                .count()
        };
        (
            count("good.test", BURST + 10),
            count("password.test", 5),
            count("ca.test", 5),
        )
    });
    let metrics = daemon.metrics();
    let fallbacks = |middleware: &str, outcome: &str| store_errors(&metrics, middleware, outcome);
    let log = daemon.log();
    assert_eq!(
        (good, fallbacks("good", "deny")),
        (BURST, 0),
        "over TLS as user xdpgate the store decides: one burst passes, no fallback\n{log}"
    );
    assert_eq!(
        (bad_password, fallbacks("bad_password", "local")),
        (5, 5),
        "a refused password: the local limit decides, counted\n{log}"
    );
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    };
    let refused = line("authentication failed");
    assert!(
        refused.contains("username_file and password_file")
            && refused.contains("middleware=bad_password"),
        "the log says which middleware's store refused the credentials from the files:\n{log}"
    );
    assert_eq!(
        (bad_ca, fallbacks("bad_ca", "local")),
        (5, 5),
        "an unknown CA: the local limit decides, counted\n{log}"
    );
    assert!(
        line("TLS handshake failed: invalid peer certificate: UnknownIssuer")
            .contains("middleware=bad_ca"),
        "the log names the TLS failure and the middleware:\n{log}"
    );
    // The operator fixes the store's side instead of the file: the user
    // now also accepts the password the file has. Without a reload, the
    // middleware's connections are opened anew (at most once a second
    // each) and the store decides again: eight requests in a row without
    // a fallback.
    give_the_user_the_wrong_password(&lab, &pki);
    wait_until_the_store_decides(&lab, &daemon);
    let log = daemon.log();
    assert!(
        log.contains("the rate limit store answers again"),
        "the log says the store answers again:\n{log}"
    );

    let scrape = xdpgate_tests::lab::admin_get(&lab.server_ns, "/metrics")
        .expect("GET /metrics")
        .body;
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(
            !log.contains(secret) && !scrape.contains(secret),
            "a password is in the log or on /metrics"
        );
    }
}

/// The store: TLS only, certificate from `pki`, the ACL file's users.
fn start_store(lab: &Lab, work: &Workdir, pki: &ProxyPki) -> StoreServer {
    let (cert, key) = pki.server(&["127.0.0.1"]).write(work, "store");
    let path = |p: &Path| p.display().to_string();
    let acl = work.write(
        "users.acl",
        &format!(
            "user default off\n\
             user admin on >{ADMIN_PASSWORD} ~* &* +@all\n\
             user xdpgate on >{PASSWORD} ~xdpgate:rate_limit:* resetchannels -@all +evalsha +eval \
             +script|load +time +get +set\n"
        ),
    );
    StoreServer::start(
        StoreKind::Redis,
        &lab.server_ns,
        STORE_PORT,
        &[
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            STORE_PORT.to_string(),
            "--tls-cert-file".into(),
            path(&cert),
            "--tls-key-file".into(),
            path(&key),
            "--tls-ca-cert-file".into(),
            path(&pki.ca_file),
            "--tls-auth-clients".into(),
            "no".into(),
            "--aclfile".into(),
            path(&acl),
        ],
        work.path("redis.log"),
    )
}

/// One daemon, three middlewares on the store: `good` (right CA and
/// password, `on_error: deny`), `bad_password`, `bad_ca` (`on_error: local`).
fn write_config(lab: &Lab, work: &Workdir, pki: &ProxyPki, other_ca: &ProxyPki) -> PathBuf {
    let username = work.write("username", "xdpgate\n");
    let password = work.write("password", &format!("{PASSWORD}\n"));
    let wrong_password = work.write("wrong-password", &format!("{WRONG_PASSWORD}\n"));
    let store = |ca: &Path, password: &Path, on_error: &str| {
        format!(
            "{{ redis: {{ address: \"127.0.0.1:{STORE_PORT}\", tls: {{ ca: {} }}, \
             username_file: {}, password_file: {}, timeout: 500ms, on_error: {on_error} }} }}",
            ca.display(),
            username.display(),
            password.display()
        )
    };
    let limit = |store: String| {
        format!("{{ rate_limit: {{ average: 1, period: 1h, burst: {BURST}, store: {store} }} }}")
    };
    work.write(
        "config.yaml",
        &format!(
            r#"filter:
  interfaces: [{interface}]
  sets:
    nodes: {{ cidrs: [198.51.100.0/29] }}
  allow:
    - {{ tcp: [22], from: [nodes] }}
proxy:
  access_log: {{ enabled: false }}
  entrypoints:
    web: {{ listen: "127.0.0.1:{PROXY_PORT}" }}
  middlewares:
    good: {good}
    bad_password: {bad_password}
    bad_ca: {bad_ca}
  routes:
    - {{ host: good.test, service: "127.0.0.1:{BACKEND_PORT}", middlewares: [good] }}
    - {{ host: password.test, service: "127.0.0.1:{BACKEND_PORT}", middlewares: [bad_password] }}
    - {{ host: ca.test, service: "127.0.0.1:{BACKEND_PORT}", middlewares: [bad_ca] }}
"#,
            interface = lab.server_if,
            good = limit(store(&pki.ca_file, &password, "deny")),
            bad_password = limit(store(&pki.ca_file, &wrong_password, "local")),
            bad_ca = limit(store(&other_ca.ca_file, &password, "local")),
        ),
    )
}

/// `ACL SETUSER xdpgate >WRONG_PASSWORD` as the admin user, over TLS.
fn give_the_user_the_wrong_password(lab: &Lab, pki: &ProxyPki) {
    let cli = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.server_ns))
        .args(["--", "redis-cli", "--tls", "--cacert"])
        .arg(&pki.ca_file)
        .args(["-h", "127.0.0.1", "-p", &STORE_PORT.to_string()])
        .args([
            "--user",
            "admin",
            "--pass",
            ADMIN_PASSWORD,
            "--no-auth-warning",
        ])
        .args(["ACL", "SETUSER", "xdpgate", &format!(">{WRONG_PASSWORD}")])
        .output()
        .expect("run redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout).trim(),
        "OK",
        "ACL SETUSER: {cli:?}"
    );
}

/// Waits until eight requests in a row on `bad_password` take no fallback.
fn wait_until_the_store_decides(lab: &Lab, daemon: &Daemon) {
    let local_fallbacks = || store_errors(&daemon.metrics(), "bad_password", "local");
    wait_for(
        "eight requests on bad_password decided by the store",
        Duration::from_secs(10),
        || {
            let before = local_fallbacks();
            in_netns(&lab.server_ns, || {
                (0..8).for_each(|_| {
                    loopback_status(PROXY_PORT, "password.test");
                })
            });
            local_fallbacks() - before
        },
        |fallbacks| *fallbacks == 0,
    );
}
