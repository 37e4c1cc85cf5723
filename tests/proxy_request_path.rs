//! The request path through the running proxy, with `/admin` behind
//! basic_auth and `/` open (issue 12). Every spelling of `/admin` (escaped
//! letters, dot segments, duplicate slashes, escaped dots, in either case of
//! hex) is routed to `/admin` and answered 401 without credentials, and with
//! them the upstream receives exactly the normalised path; every spelling
//! that cannot be normalised safely (an encoded `/`, `\`, NUL, `;`, `%`, `?`,
//! `#`, a literal backslash or `;`, a bad escape, a climb above the root) is
//! a 400 that reaches no upstream. Sent as exact bytes over HTTP/1.1 (plain
//! and TLS), by curl `--path-as-is` (HTTP/1.1 and HTTP/2), and by Python's
//! `h2` over HTTP/2. A real nginx upstream, which normalises paths itself,
//! shows that none of them gets its admin page out without credentials.
//! `path.parameters: strip` and `path.allow_encoded` change the rules as
//! documented. Needs root, curl and htpasswd (nginx and Python's h2 for
//! some parts).
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};
use xdpgate_tests::lab::{
    curl, h2py, in_netns, lab_ready, outsiders, python_h2_ready, raw_request, tools_ready,
    ProxyLab, ProxySetup, Tool,
};

const ADMIN_PORT: u16 = 9100;
const PUBLIC_PORT: u16 = 9101;
const NGINX_PORT: u16 = 9200;
const WAIT: Duration = Duration::from_secs(10);

/// Spellings of `/admin/...` and the path the upstream must receive.
const SPELLINGS: &[(&str, &str)] = &[
    ("/admin", "/admin"),
    ("/%61dmin", "/admin"),
    ("/%61%64%6d%69%6e", "/admin"),
    ("/%61%64%6D%69%6E", "/admin"),
    ("/adm%69n/", "/admin/"),
    ("//admin", "/admin"),
    ("///admin//x", "/admin/x"),
    ("/admin//", "/admin/"),
    ("/./admin", "/admin"),
    ("/x/../admin", "/admin"),
    ("/x/y/../../admin/z", "/admin/z"),
    ("/public/../admin/secret", "/admin/secret"),
    ("/%2e/admin", "/admin"),
    ("/%2E/admin", "/admin"),
    ("/x/%2E%2e/admin", "/admin"),
    ("/x/%2e%2E/admin", "/admin"),
    ("/x/.%2e/admin", "/admin"),
    ("/x/%2e./admin", "/admin"),
    ("/admin/./", "/admin/"),
    ("/admin/.", "/admin/"),
    ("/admin/x/..", "/admin/"),
    ("/admin/x/%2e%2e/", "/admin/"),
    ("/./%61dmin/./x/../", "/admin/"),
    ("/admin/%7e%2D%5f%2E%41", "/admin/~-_.A"),
    ("/admin/caf%c3%a9", "/admin/caf%C3%A9"),
];

/// Requests that must be refused with 400 whatever route they would match.
const REFUSED: &[&str] = &[
    "/%2Fadmin",
    "/%2fadmin",
    "/admin%2Fsecret",
    "/%5Cadmin",
    "/%5cadmin",
    "/\\admin",
    "/x\\..\\admin",
    "/admin%00",
    "/%00/admin",
    "/admin;x=1",
    "/admin;",
    "/x;/../admin",
    "/%3Badmin",
    "/admin%3b",
    "/%25%36%31dmin",
    "/admin%25",
    "/admin%3F",
    "/admin%3f.html",
    "/admin%23x",
    "/adm%ZZin",
    "/admin%",
    "/admin%6",
    "/%g1dmin",
    "/..",
    "/../admin",
    "/%2e%2e/admin",
    "/.%2E/admin",
    "/a/../../admin",
    "/admin/../../admin",
];

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// An htpasswd file with `alice`, password `wonderland` (bcrypt, low cost).
fn users_file(proxy: &ProxyLab) -> PathBuf {
    let file = proxy.work.path("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-b", "-c", "-B", "-C", "4"])
        .arg(&file)
        .args(["alice", "wonderland"])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd: {out:?}");
    file
}

/// `/admin` (Prefix) behind basic_auth on `admin`, `/` open on `public`;
/// `entrypoint`: more keys of both entrypoints.
fn start(proxy: &mut ProxyLab, admin: SocketAddr, public: SocketAddr, entrypoint: &str) {
    let users = users_file(proxy);
    proxy.start(&ProxySetup {
        rest: format!(
            "  routes:
    - {{ name: admin, path: /admin, path_type: Prefix, service: \"{admin}\", middlewares: [adminauth] }}
    - {{ name: public, path: /, service: \"{public}\" }}
  middlewares:
    adminauth: {{ basic_auth: {{ users_file: {}, realm: \"Admin\" }} }}
",
            users.display()
        ),
        entrypoint: entrypoint.to_string(),
        ..ProxySetup::default()
    });
}

/// What one request got, however it was sent.
#[derive(Debug, Clone)]
struct Seen {
    /// 0 when no response came (then `body` says why).
    status: u16,
    backend: Option<String>,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not the echo's JSON ({e}): {self:?}"))
    }
}

/// `GET path` with exact bytes on a new HTTP/1.1 connection (TLS or not);
/// `path` is the request target as sent (origin or absolute form).
fn h1(proxy: &ProxyLab, source: IpAddr, tls: bool, path: &str, auth: Option<&str>) -> Seen {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    let reply = raw_request(&proxy.client, source, tls, request.as_bytes(), WAIT)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    Seen {
        status: reply.status(),
        backend: reply.header("x-backend"),
        body: reply.body(),
    }
}

/// `GET path` for every path, each on its own stream of one HTTP/2
/// connection made by Python's h2, `:path` sent exactly as given.
fn h2(
    proxy: &ProxyLab,
    python: &Path,
    source: IpAddr,
    paths: &[&str],
    auth: Option<&str>,
) -> Vec<Seen> {
    let requests: Vec<Value> = paths
        .iter()
        .map(|path| {
            let mut headers = vec![
                json!([":method", "GET"]),
                json!([":scheme", "https"]),
                json!([":authority", "localhost"]),
                json!([":path", path]),
            ];
            if let Some(auth) = auth {
                headers.push(json!(["authorization", auth]));
            }
            json!({ "headers": headers })
        })
        .collect();
    let plan = json!({ "mode": "requests", "requests": requests });
    let report = h2py(proxy, python, source, true, plan, Duration::from_secs(60));
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| Seen {
            status: r["status"].as_u64().unwrap_or(0) as u16,
            backend: r["headers"]
                .as_array()
                .and_then(|h| h.iter().find(|kv| kv[0] == "x-backend"))
                .and_then(|kv| kv[1].as_str())
                .map(str::to_string),
            body: match r["status"].as_u64() {
                Some(_) => r["body"].as_str().unwrap_or_default().to_string(),
                None => format!("no response; stream reset: {}", r["reset"]),
            },
        })
        .collect()
}

/// The status curl `--path-as-is` got for each path, in order, HTTP/1.1 or
/// HTTP/2 over TLS.
fn curl_statuses(proxy: &ProxyLab, http2: bool, paths: &[&str], user: Option<&str>) -> Vec<u16> {
    let version = if http2 { "--http2" } else { "--http1.1" };
    let mut args = vec!["--path-as-is", version, "--write-out", "%{http_code}\n"];
    if let Some(user) = user {
        args.extend(["--user", user]);
    }
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("https://localhost:8443{p}"))
        .collect();
    for url in &urls {
        args.extend(["--output", "/dev/null", url.as_str()]);
    }
    let out = curl(
        &proxy.lab,
        &proxy.pki.ca_file,
        &args,
        Duration::from_secs(60),
    );
    let codes: Vec<u16> = out
        .stdout
        .lines()
        .map(|l| l.trim().parse().unwrap_or(0))
        .collect();
    assert_eq!(codes.len(), paths.len(), "curl {args:?}: {out:?}");
    codes
}

/// Every transport's answer to every path: (transport, path, what it saw).
fn ask_everywhere(
    proxy: &ProxyLab,
    python: Option<&Path>,
    paths: &[&str],
    auth: Option<&str>,
) -> Vec<(String, String, Seen)> {
    let source = outsiders()[0];
    let source_v6 = outsiders()[6];
    let mut all = Vec::new();
    for path in paths {
        for (transport, from, tls) in [("h1", source, false), ("h1-tls-v6", source_v6, true)] {
            all.push((
                transport.into(),
                path.to_string(),
                h1(proxy, from, tls, path, auth),
            ));
        }
        // The absolute form a client may send to a proxy.
        if !path.starts_with('/') {
            continue;
        }
        let absolute = format!("http://localhost:8080{path}");
        all.push((
            "h1-absolute-form".into(),
            path.to_string(),
            h1(proxy, source, false, &absolute, auth),
        ));
    }
    if let Some(python) = python {
        for (path, seen) in paths.iter().zip(h2(proxy, python, source, paths, auth)) {
            all.push(("h2".into(), path.to_string(), seen));
        }
    }
    all
}

#[test]
fn every_spelling_of_admin_needs_credentials_and_the_upstream_sees_the_normalised_path() {
    let test =
        "every_spelling_of_admin_needs_credentials_and_the_upstream_sees_the_normalised_path";
    if !lab_ready(test, &[])
        || !tools_ready(test, &[("curl", "curl"), ("htpasswd", "apache2-utils")])
    {
        return;
    }
    let python = python_h2_ready(test);
    let mut proxy = ProxyLab::new("rp1", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let admin = proxy.echo_backend("admin", ADMIN_PORT);
    let public = proxy.echo_backend("public", PUBLIC_PORT);
    start(&mut proxy, admin.addr, public.addr, "");
    let spellings: Vec<&str> = SPELLINGS.iter().map(|(s, _)| *s).collect();
    let login = basic("alice", "wonderland");

    // Without credentials: every spelling is the admin route's 401.
    let mut wrong = Vec::new();
    for (transport, path, seen) in ask_everywhere(&proxy, python.as_deref(), &spellings, None) {
        if seen.status != 401 {
            wrong.push(format!("{transport} GET {path}: {seen:?}"));
        }
    }
    for http2 in [false, true] {
        for (path, code) in spellings
            .iter()
            .zip(curl_statuses(&proxy, http2, &spellings, None))
        {
            if code != 401 {
                wrong.push(format!("curl http2={http2} GET {path}: {code}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "spellings of /admin without credentials must get 401:\n{}",
        wrong.join("\n")
    );
    assert_eq!(admin.served(), 0, "no request reached the admin upstream");
    assert_eq!(public.served(), 0, "no spelling of /admin went to `/`");

    // With credentials: the admin upstream gets exactly the normalised path.
    for (transport, path, seen) in
        ask_everywhere(&proxy, python.as_deref(), &spellings, Some(&login))
    {
        let expected = SPELLINGS.iter().find(|(s, _)| *s == path).unwrap().1;
        if seen.status != 200 || seen.backend.as_deref() != Some("admin") {
            wrong.push(format!("{transport} GET {path} with credentials: {seen:?}"));
        } else if seen.json()["path"] != expected {
            wrong.push(format!(
                "{transport} GET {path}: upstream saw {}, not {expected}",
                seen.json()["path"]
            ));
        }
    }
    let with_user = curl_statuses(&proxy, true, &spellings, Some("alice:wonderland"));
    for (path, code) in spellings.iter().zip(with_user) {
        if code != 200 {
            wrong.push(format!("curl --http2 --user GET {path}: {code}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(public.served(), 0, "no spelling of /admin went to `/`");

    // The query string is left as it came; only the path is normalised.
    let seen = h1(
        &proxy,
        outsiders()[0],
        false,
        "/x/../%61dmin?next=/../%2f&a=%61",
        Some(&login),
    );
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(seen.json()["path"], "/admin");
    assert_eq!(seen.json()["query"], "next=/../%2f&a=%61");
}

#[test]
fn unsafe_paths_get_400_and_reach_no_upstream() {
    let test = "unsafe_paths_get_400_and_reach_no_upstream";
    if !lab_ready(test, &[])
        || !tools_ready(test, &[("curl", "curl"), ("htpasswd", "apache2-utils")])
    {
        return;
    }
    let python = python_h2_ready(test);
    let mut proxy = ProxyLab::new("rp2", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let admin = proxy.echo_backend("admin", ADMIN_PORT);
    let public = proxy.echo_backend("public", PUBLIC_PORT);
    start(&mut proxy, admin.addr, public.addr, "");
    let login = basic("alice", "wonderland");

    let mut wrong = Vec::new();
    for auth in [None, Some(login.as_str())] {
        for (transport, path, seen) in ask_everywhere(&proxy, python.as_deref(), REFUSED, auth) {
            if seen.status != 400 {
                wrong.push(format!(
                    "{transport} GET {path} (auth: {}): {seen:?}",
                    auth.is_some()
                ));
            }
        }
    }
    let curlable: Vec<&str> = REFUSED
        .iter()
        .copied()
        .filter(|p| !p.contains('\\'))
        .collect();
    for http2 in [false, true] {
        for (path, code) in curlable.iter().zip(curl_statuses(
            &proxy,
            http2,
            &curlable,
            Some("alice:wonderland"),
        )) {
            if code != 400 {
                wrong.push(format!("curl http2={http2} --user GET {path}: {code}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe paths must get 400:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        admin.served(),
        0,
        "no refused path reached the admin upstream"
    );
    assert_eq!(
        public.served(),
        0,
        "no refused path reached the open upstream"
    );

    // The same entrypoint still serves an ordinary path.
    let seen = h1(&proxy, outsiders()[0], false, "/hello/world", None);
    assert_eq!(
        (seen.status, seen.backend.as_deref()),
        (200, Some("public"))
    );
    assert_eq!(seen.json()["path"], "/hello/world");
}

#[test]
fn parameters_strip_removes_semicolon_parameters_before_routing() {
    let test = "parameters_strip_removes_semicolon_parameters_before_routing";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("htpasswd", "apache2-utils")]) {
        return;
    }
    let mut proxy = ProxyLab::new("rp3", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let admin = proxy.echo_backend("admin", ADMIN_PORT);
    let public = proxy.echo_backend("public", PUBLIC_PORT);
    start(
        &mut proxy,
        admin.addr,
        public.addr,
        "path: { parameters: strip }",
    );
    let outsider = outsiders()[0];
    let login = basic("alice", "wonderland");
    for (path, expected) in [
        ("/admin;jsessionid=1", "/admin"),
        ("/admin;/x", "/admin/x"),
        ("/x;y/../admin", "/admin"),
        ("/x/..;/admin", "/admin"),
        ("/adm%69n;a=b;c=d/z;q", "/admin/z"),
    ] {
        let seen = h1(&proxy, outsider, false, path, None);
        assert_eq!(seen.status, 401, "GET {path} without credentials: {seen:?}");
        let seen = h1(&proxy, outsider, true, path, Some(&login));
        assert_eq!(
            seen.backend.as_deref(),
            Some("admin"),
            "GET {path}: {seen:?}"
        );
        assert_eq!(seen.json()["path"], expected, "GET {path}");
    }
    assert_eq!(public.served(), 0, "no stripped /admin went to `/`");
    let seen = h1(&proxy, outsider, false, "/a;x/b;y=1?q=;", None);
    assert_eq!(
        (seen.status, seen.backend.as_deref()),
        (200, Some("public"))
    );
    assert_eq!(
        seen.json()["path"],
        "/a/b",
        "parameters gone from every segment"
    );
    assert_eq!(seen.json()["query"], "q=;", "the query is not touched");
    // `..;` is still `..` once stripped: above the root is refused.
    let seen = h1(&proxy, outsider, false, "/..;/admin", None);
    assert_eq!(seen.status, 400, "{seen:?}");
    // An encoded `;` is not a parameter: still refused unless allowed.
    let seen = h1(&proxy, outsider, false, "/admin%3Bx", Some(&login));
    assert_eq!(seen.status, 400, "{seen:?}");
}

#[test]
fn allow_encoded_passes_only_the_listed_escapes_through_unchanged() {
    let test = "allow_encoded_passes_only_the_listed_escapes_through_unchanged";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("htpasswd", "apache2-utils")]) {
        return;
    }
    let mut proxy = ProxyLab::new("rp4", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let admin = proxy.echo_backend("admin", ADMIN_PORT);
    let public = proxy.echo_backend("public", PUBLIC_PORT);
    start(
        &mut proxy,
        admin.addr,
        public.addr,
        "path: { allow_encoded: [slash, percent] }",
    );
    let outsider = outsiders()[0];
    for (path, expected) in [
        ("/files/a%2Fb", "/files/a%2Fb"),
        ("/files/a%2fb", "/files/a%2Fb"),
        ("/files/100%25", "/files/100%25"),
        ("/files/%2e/a%2Fb", "/files/a%2Fb"),
    ] {
        let seen = h1(&proxy, outsider, false, path, None);
        assert_eq!(
            (seen.status, seen.backend.as_deref()),
            (200, Some("public")),
            "GET {path}: {seen:?}"
        );
        assert_eq!(seen.json()["path"], expected, "GET {path}");
    }
    for path in ["/files/a%5Cb", "/files/a%00", "/files/a%3Bb", "/files/a%3F"] {
        let seen = h1(&proxy, outsider, false, path, None);
        assert_eq!(seen.status, 400, "GET {path} (not allowed): {seen:?}");
    }
    // An allowed `%25` is not decoded again: a double-encoded `..` stays
    // what it is, and does not climb into `/admin`.
    let seen = h1(&proxy, outsider, false, "/x/%252e%252e/admin", None);
    assert_eq!(seen.backend.as_deref(), Some("public"), "{seen:?}");
    assert_eq!(seen.json()["path"], "/x/%252e%252e/admin");
    assert_eq!(admin.served(), 0);
}

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

    // nginx itself decodes and normalises: these spellings are its admin page.
    for path in [
        "/%61dmin",
        "//admin",
        "/x/../admin",
        "/%2e/admin",
        "/admin;x",
    ] {
        let reply = nginx_direct(&proxy, path);
        assert!(
            reply.contains("ADMIN-SECRET"),
            "nginx serves its admin page for {path} when asked directly: {reply}"
        );
    }

    let mut paths: Vec<&str> = SPELLINGS.iter().map(|(s, _)| *s).collect();
    paths.extend(REFUSED);
    // Targets that are not an origin-form path at all.
    paths.extend(["admin", "*", "http://localhost/%61dmin", "/%61dmin#x"]);
    let mut leaked = Vec::new();
    for (transport, path, seen) in ask_everywhere(&proxy, python.as_deref(), &paths, None) {
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
            .zip(curl_statuses(&proxy, http2, &curlable, None))
        {
            if code == 200 {
                leaked.push(format!("curl http2={http2} GET {path}: {code}"));
            }
        }
    }
    assert!(
        leaked.is_empty(),
        "spellings of /admin got past basic_auth to nginx:\n{}",
        leaked.join("\n")
    );

    // With credentials the admin page is served, over HTTP/1.1 and HTTP/2.
    let login = basic("alice", "wonderland");
    for tls in [false, true] {
        let seen = h1(&proxy, outsiders()[0], tls, "/admin", Some(&login));
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
    let seen = h1(&proxy, outsiders()[0], false, "/index.html", None);
    assert_eq!((seen.status, seen.body.as_str()), (200, "public\n"));
}
