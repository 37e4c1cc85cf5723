//! The spellings of `/admin` against a real nginx upstream, which decodes
//! and normalises paths itself: asked directly, nginx serves its admin page
//! for many of them; through the proxy, none of them gets it out without
//! credentials, over any transport. The lab is `xdpgate_tests::request_path`.
//! Needs root, curl, htpasswd and nginx (Python's h2 for some parts).
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use xdpgate_tests::{
    lab::{curl, in_netns, lab_ready, outsiders, python_h2_ready, tools_ready, ProxyLab, Tool},
    request_path::{ask_everywhere, basic, curl_statuses, h1, start, REFUSED, SPELLINGS, WAIT},
};

const NGINX_PORT: u16 = 9200;

/// nginx in the server namespace on 127.0.0.1:`NGINX_PORT`, its admin page
/// and its public page as `return`s, run in the foreground from `dir`.
fn start_nginx(proxy: &ProxyLab) -> Tool {
    let dir = proxy.work.path("nginx");
    std::fs::create_dir_all(dir.join("logs")).expect("nginx dir");
    let d = dir.display();
    let conf = format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{NGINX_PORT};
        location /admin {{ return 200 \"ADMIN-SECRET\\n\"; }}
        location / {{ return 200 \"public\\n\"; }}
    }}
}}
"
    );
    let conf_file = proxy.work.write("nginx/nginx.conf", &conf);
    let dir_arg = dir.display().to_string();
    let conf_arg = conf_file.display().to_string();
    let nginx = Tool::spawn(
        &proxy.lab.server_ns,
        "nginx",
        &[
            "-p",
            &dir_arg,
            "-e",
            &format!("{dir_arg}/logs/error.log"),
            "-c",
            &conf_arg,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let address = SocketAddr::from(([127, 0, 0, 1], NGINX_PORT));
    while in_netns(&proxy.lab.server_ns, || {
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
    })
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "nginx never listened on {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

/// `GET path` straight to nginx, from inside the server namespace.
fn nginx_direct(proxy: &ProxyLab, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    in_netns(&proxy.lab.server_ns, || {
        let address = SocketAddr::from(([127, 0, 0, 1], NGINX_PORT));
        let mut tcp = std::net::TcpStream::connect_timeout(&address, WAIT).expect("nginx");
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        let _ = tcp.read_to_string(&mut reply);
        reply
    })
}

#[test]
fn no_spelling_of_admin_gets_a_real_nginx_admin_page_without_credentials() {
    let test = "no_spelling_of_admin_gets_a_real_nginx_admin_page_without_credentials";
    if !lab_ready(test, &[])
        || !tools_ready(
            test,
            &[
                ("curl", "curl"),
                ("htpasswd", "apache2-utils"),
                ("nginx", "nginx"),
            ],
        )
    {
        return;
    }
    let python = python_h2_ready(test);
    let mut proxy = ProxyLab::new("rp5", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _nginx = start_nginx(&proxy);
    let upstream = SocketAddr::from(([127, 0, 0, 1], NGINX_PORT));
    start(&mut proxy, upstream, upstream, "");

    nginx_alone_serves_its_admin_page_for_other_spellings(&proxy);
    let leaked = admin_pages_leaked_without_credentials(&proxy, python.as_deref());
    assert!(
        leaked.is_empty(),
        "spellings of /admin got past basic_auth to nginx:\n{}",
        leaked.join("\n")
    );

    with_credentials_the_admin_page_is_served(&proxy);
}

/// nginx itself decodes and normalises: these spellings are its admin page.
fn nginx_alone_serves_its_admin_page_for_other_spellings(proxy: &ProxyLab) {
    for path in [
        "/%61dmin",
        "//admin",
        "/x/../admin",
        "/%2e/admin",
        "/admin;x",
    ] {
        let reply = nginx_direct(proxy, path);
        assert!(
            reply.contains("ADMIN-SECRET"),
            "nginx serves its admin page for {path} when asked directly: {reply}"
        );
    }
}

/// Every spelling and refused path, over every transport, without
/// credentials: what got nginx's admin page (or anything but its public
/// page) out.
fn admin_pages_leaked_without_credentials(proxy: &ProxyLab, python: Option<&Path>) -> Vec<String> {
    let mut paths: Vec<&str> = SPELLINGS.iter().map(|(s, _)| *s).collect();
    paths.extend(REFUSED);
    // Targets that are not an origin-form path at all.
    paths.extend(["admin", "*", "http://localhost/%61dmin", "/%61dmin#x"]);
    let mut leaked = Vec::new();
    for (transport, path, seen) in ask_everywhere(proxy, python, &paths, None) {
        // The targets that are no path at all may reach nginx's public page.
        let leaked_page = seen.body.contains("ADMIN-SECRET");
        if leaked_page || (seen.status == 200 && seen.body != "public\n") {
            leaked.push(format!("{transport} GET {path}: {seen:?}"));
        }
    }
    let curlable: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| p.starts_with('/') && !p.contains('\\'))
        .collect();
    for http2 in [false, true] {
        for (path, code) in curlable
            .iter()
            .zip(curl_statuses(proxy, http2, &curlable, None))
        {
            if code == 200 {
                leaked.push(format!("curl http2={http2} GET {path}: {code}"));
            }
        }
    }
    leaked
}

/// With credentials the admin page is served, over HTTP/1.1 and HTTP/2.
fn with_credentials_the_admin_page_is_served(proxy: &ProxyLab) {
    let login = basic("alice", "wonderland");
    for tls in [false, true] {
        let seen = h1(proxy, outsiders()[0], tls, "/admin", Some(&login));
        assert_eq!(seen.status, 200, "{seen:?}");
        assert_eq!(seen.body, "ADMIN-SECRET\n");
    }
    let out = curl(
        &proxy.lab,
        &proxy.pki.ca_file,
        &[
            "--http2",
            "--user",
            "alice:wonderland",
            "https://localhost:8443/%61dmin",
        ],
        WAIT,
    );
    assert_eq!(out.stdout, "ADMIN-SECRET\n", "{out:?}");
    // The open route still reaches nginx's public page.
    let seen = h1(proxy, outsiders()[0], false, "/index.html", None);
    assert_eq!((seen.status, seen.body.as_str()), (200, "public\n"));
}
