//! basic_auth and body_limit through the running proxy. The htpasswd file
//! is made by Apache's `htpasswd` (bcrypt, SHA-1 and APR1-MD5 users), the
//! logins are sent by curl and by the lab client; the file is then replaced
//! on disk (the proxy picks up the new users) and replaced again with a bad
//! one (the old users stay, the failure is counted, and no secret reaches
//! the log). body_limit answers 413 for a declared length without contacting
//! the upstream, and for a chunked upload once it crosses the limit while
//! streaming. A WebSocket upgrade meets the route's basic_auth before it is
//! forwarded. Needs root.
use std::{path::Path, process::Command, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _, Message};
use xdpgate_tests::lab::{
    access_log, curl, lab_ready, outsiders, tools_ready, wait_for, Backend, Call, Metrics,
    ProxyLab, ProxySetup, PLAIN_PORT,
};

const BACKEND_PORT: u16 = 9100;
const BACKEND: &str = "127.0.0.1:9100";

/// Adds `user` with `password` to `file` with `htpasswd` and the hash
/// option (`-B` bcrypt, `-s` SHA-1, `-m` APR1-MD5).
fn htpasswd(file: &Path, scheme: &str, user: &str, password: &str) {
    let mut args = vec!["-b"];
    if !file.exists() {
        args.push("-c");
    }
    args.push(scheme);
    if scheme == "-B" {
        // The lowest cost: the test checks the scheme, not its strength.
        args.extend(["-C", "4"]);
    }
    let file_arg = file.display().to_string();
    args.extend([file_arg.as_str(), user, password]);
    let out = Command::new("htpasswd")
        .args(&args)
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd {args:?}: {out:?}");
}

/// The hash of every line of an htpasswd file (what must never be logged).
fn hashes_in(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(_, hash)| hash.to_string())
        .collect()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[test]
fn basic_auth_checks_htpasswd_users_and_follows_the_file() {
    let test = "basic_auth_checks_htpasswd_users_and_follows_the_file";
    if !lab_ready(test, &[])
        || !tools_ready(test, &[("htpasswd", "apache2-utils"), ("curl", "curl")])
    {
        return;
    }
    let mut proxy = ProxyLab::new("mwa", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let users = proxy.work.path("htpasswd");
    htpasswd(&users, "-B", "alice", "wonder land");
    htpasswd(&users, "-s", "bob", "hunter2");
    htpasswd(&users, "-m", "carol", "p@ss:word");
    let mut hashes = hashes_in(&users);
    let _backend = proxy.echo_backend("admin", BACKEND_PORT);
    proxy.start(&ProxySetup {
        rest: format!(
            "  routes:
    - {{ name: admin, path: /, service: \"{BACKEND}\", middlewares: [adminauth] }}
  middlewares:
    adminauth: {{ basic_auth: {{ users_file: {}, realm: \"Admin area\", remove_header: true }} }}
",
            users.display()
        ),
        ..ProxySetup::default()
    });
    let outsider = outsiders()[0];
    let login = |user: &str, password: &str| {
        proxy
            .send(
                &Call::tls(outsider)
                    .host("localhost")
                    .h2()
                    .header("authorization", &basic(user, password)),
            )
            .map(|r| r.status)
            .unwrap_or(0)
    };

    // No credentials: 401 with the challenge, from curl.
    let out = curl(
        &proxy.lab,
        &proxy.pki.ca_file,
        &["--include", "https://localhost:8443/"],
        Duration::from_secs(10),
    );
    assert!(out.stdout.starts_with("HTTP/2 401"), "{}", out.stdout);
    assert!(
        out.stdout
            .to_lowercase()
            .contains("www-authenticate: basic realm=\"admin area\""),
        "{}",
        out.stdout
    );
    // Each hash scheme logs in; curl sends the password itself.
    let out = curl(
        &proxy.lab,
        &proxy.pki.ca_file,
        &[
            "--user",
            "alice:wonder land",
            "https://localhost:8443/whoami",
        ],
        Duration::from_secs(10),
    );
    let seen: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    assert_eq!(seen["path"], "/whoami", "bcrypt user through curl");
    assert!(
        seen["headers"].get("authorization").is_none(),
        "remove_header: the backend got {}",
        seen["headers"]
    );
    assert_eq!(login("bob", "hunter2"), 200, "SHA-1 user");
    assert_eq!(
        login("carol", "p@ss:word"),
        200,
        "APR1 user, `:` in the password"
    );
    assert_eq!(login("alice", "wonder"), 401, "wrong password");
    assert_eq!(login("mallory", "hunter2"), 401, "unknown user");
    assert_eq!(login("Bob", "hunter2"), 401, "names are case-sensitive");

    // The file is replaced (as a Secret update does): bob's password
    // changes and dave arrives.
    let next = proxy.work.path("htpasswd.next");
    htpasswd(&next, "-s", "bob", "correct horse");
    htpasswd(&next, "-B", "dave", "d4ve");
    hashes.extend(hashes_in(&next));
    std::fs::rename(&next, &users).unwrap();
    wait_for(
        "bob's new password to work",
        Duration::from_secs(5),
        || login("bob", "correct horse"),
        |status| *status == 200,
    );
    assert_eq!(login("bob", "hunter2"), 401, "the old password is gone");
    assert_eq!(login("dave", "d4ve"), 200);
    assert_eq!(login("alice", "wonder land"), 401, "alice was removed");

    // A bad file keeps the users in force, and is reported without its content.
    // Replaced whole, as before: written in place, the upkeep could read it
    // empty first (refused as "no user", counted once) and the count would
    // reach 1 before the bad line was read and logged.
    let bad = proxy.work.path("htpasswd.bad");
    std::fs::write(&bad, "eve:plaintextsecret\n").unwrap();
    std::fs::rename(&bad, &users).unwrap();
    let metrics = wait_for(
        "the bad file to be counted",
        Duration::from_secs(5),
        || {
            Metrics::scrape(&proxy.lab.server_ns).get(
                "xdpgate_middleware_file_errors_total",
                &[("middleware", "adminauth")],
            )
        },
        |count| *count == Some(1.0),
    );
    assert_eq!(metrics, Some(1.0));
    assert_eq!(login("dave", "d4ve"), 200, "the old users stay");
    assert_eq!(login("eve", "plaintextsecret"), 401);

    // Every 401 is counted, and logged under the route without who tried.
    let lines = access_log(&proxy.work);
    let logged_401 = lines.iter().filter(|l| l["status"] == 401).count();
    assert!(logged_401 >= 7, "{lines:#?}");
    assert!(lines
        .iter()
        .filter(|l| l["status"] == 401)
        .all(|l| l["router"] == "admin"));
    let refusals = Metrics::scrape(&proxy.lab.server_ns)
        .get(
            "xdpgate_middleware_rejections_total",
            &[
                ("middleware", "adminauth"),
                ("kind", "basic_auth"),
                ("code", "401"),
            ],
        )
        .unwrap_or(0.0);
    assert_eq!(refusals, logged_401 as f64, "the 401s are counted");
    let log = proxy.daemon().log();
    assert!(log.contains("line 1"), "the log names the bad line:\n{log}");
    let access = format!("{:?}", access_log(&proxy.work));
    let header = basic("bob", "hunter2");
    let mut secrets = vec![
        "plaintextsecret",
        "hunter2",
        "wonder land",
        "d4ve",
        "correct horse",
    ];
    secrets.push(&header["Basic ".len()..]);
    secrets.extend(hashes.iter().map(String::as_str));
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "the daemon log holds {secret:?}:\n{log}"
        );
        assert!(!access.contains(secret), "the access log holds {secret:?}");
    }
}

#[test]
fn body_limit_answers_413_up_front_and_while_streaming() {
    let test = "body_limit_answers_413_up_front_and_while_streaming";
    if !lab_ready(test, &[]) {
        return;
    }
    const LIMIT: u64 = 1 << 20;
    let mut proxy = ProxyLab::new("mwb", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let backend = proxy.echo_backend("uploads", BACKEND_PORT);
    proxy.start(&ProxySetup {
        rest: format!(
            "  routes:
    - {{ name: uploads, path: /, service: \"{BACKEND}\", middlewares: [cap] }}
  middlewares:
    cap: {{ body_limit: {{ max_bytes: 1MiB }} }}
"
        ),
        ..ProxySetup::default()
    });
    let outsider = outsiders()[0];
    let upload = |call: Call| proxy.send(&call.method("POST").path("/upload"));

    // Within the limit, declared or chunked: the whole body arrives.
    for (what, call) in [
        ("declared", Call::plain(outsider).upload(LIMIT)),
        ("chunked", Call::plain(outsider).upload(LIMIT).chunked()),
        (
            "h2 without a length",
            Call::tls(outsider)
                .host("localhost")
                .h2()
                .upload(LIMIT)
                .chunked(),
        ),
    ] {
        let reply = upload(call).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        assert_eq!(reply.json()["body_bytes"], LIMIT, "{what}");
    }
    let served = backend.served();

    // A declared length over the limit: 413 without contacting the upstream.
    let reply = upload(Call::plain(outsider).upload(LIMIT + 1)).unwrap();
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(backend.served(), served, "the upstream was not contacted");

    // No length: the proxy counts while it streams and stops at the limit.
    for (what, call) in [
        ("chunked", Call::plain(outsider).upload(8 * LIMIT).chunked()),
        (
            "h2 without a length",
            Call::tls(outsider)
                .host("localhost")
                .h2()
                .upload(8 * LIMIT)
                .chunked(),
        ),
    ] {
        let reply = upload(call).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply.status, 413, "{what}: {}", reply.text());
        assert!(reply.text().contains("1048576"), "{what}: {}", reply.text());
    }
    let refusals = Metrics::scrape(&proxy.lab.server_ns)
        .get(
            "xdpgate_middleware_rejections_total",
            &[
                ("middleware", "cap"),
                ("kind", "body_limit"),
                ("code", "413"),
            ],
        )
        .unwrap_or(0.0);
    assert_eq!(refusals, 3.0);
    let lines = wait_for(
        "access log lines",
        Duration::from_secs(5),
        || access_log(&proxy.work),
        |lines| lines.iter().filter(|l| l["status"] == 413).count() == 3,
    );
    assert!(lines
        .iter()
        .filter(|l| l["status"] == 413)
        .all(|l| l["router"] == "uploads"));
    let log = proxy.daemon().log();
    assert!(
        !log.contains("upstream error"),
        "a client's oversized body is not the upstream's error:\n{log}"
    );
}

/// Upgrades stay inside the route's stack: a WebSocket handshake to a
/// route behind basic_auth is answered 401 by the proxy and never reaches
/// the upstream; with the password it is forwarded and the session works.
#[test]
fn a_websocket_upgrade_meets_basic_auth_before_the_upstream() {
    let test = "a_websocket_upgrade_meets_basic_auth_before_the_upstream";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("htpasswd", "apache2-utils")]) {
        return;
    }
    let mut proxy = ProxyLab::new("mww", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let users = proxy.work.path("htpasswd");
    htpasswd(&users, "-s", "bob", "hunter2");
    let ws = Backend::websocket(
        &proxy.lab.server_ns,
        std::net::SocketAddr::from(([127, 0, 0, 1], BACKEND_PORT)),
    );
    proxy.start(&ProxySetup {
        rest: format!(
            "  routes:
    - {{ name: chat, path: /ws, service: \"{BACKEND}\", middlewares: [adminauth] }}
  middlewares:
    adminauth: {{ basic_auth: {{ users_file: {}, realm: \"chat\" }} }}
",
            users.display()
        ),
        ..ProxySetup::default()
    });
    let client = &proxy.client;
    let url = format!("ws://localhost:{PLAIN_PORT}/ws/chat");
    let handshake = |authorization: Option<String>| {
        let url = url.clone();
        client.block_on(async move {
            let tcp = client
                .connect(outsiders()[0], PLAIN_PORT)
                .await
                .expect("connect");
            let mut request = url.into_client_request().expect("a WebSocket request");
            if let Some(value) = authorization {
                request
                    .headers_mut()
                    .insert("authorization", value.parse().unwrap());
            }
            match tokio_tungstenite::client_async(request, tcp).await {
                Ok((mut socket, response)) => {
                    let hello = Message::text("hello through the stack");
                    socket.send(hello.clone()).await.expect("send");
                    let echoed = socket.next().await.expect("an echo").expect("a message");
                    assert_eq!(echoed, hello);
                    response.status().as_u16()
                }
                Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
                Err(other) => panic!("WebSocket handshake: {other}"),
            }
        })
    };
    assert_eq!(handshake(None), 401, "no credentials: the proxy answers");
    assert_eq!(
        handshake(Some(basic("bob", "wrong"))),
        401,
        "a wrong password: the proxy answers"
    );
    assert_eq!(
        ws.served(),
        0,
        "the upstream never saw the refused upgrades"
    );
    assert_eq!(handshake(Some(basic("bob", "hunter2"))), 101);
    assert_eq!(ws.served(), 1, "the admitted upgrade reached the upstream");
}
