//! The request-path lab the `proxy_request_path*` tests share: `/admin`
//! behind basic_auth and `/` open on one proxy, the spellings of `/admin`
//! that must be normalised and the paths that must be refused, and the
//! transports that send a path exactly as given (raw HTTP/1.1 plain and TLS,
//! Python's h2, curl `--path-as-is`). What each answer must be is each
//! test's business, not this module's.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};

use crate::lab::{curl, h2py, outsiders, raw_request, ProxyLab, ProxySetup};

pub const ADMIN_PORT: u16 = 9100;
pub const PUBLIC_PORT: u16 = 9101;
pub const WAIT: Duration = Duration::from_secs(10);

/// Spellings of `/admin/...` and the path the upstream must receive.
pub const SPELLINGS: &[(&str, &str)] = &[
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
pub const REFUSED: &[&str] = &[
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

pub fn basic(user: &str, password: &str) -> String {
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
pub fn start(proxy: &mut ProxyLab, admin: SocketAddr, public: SocketAddr, entrypoint: &str) {
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
pub struct Seen {
    /// 0 when no response came (then `body` says why).
    pub status: u16,
    pub backend: Option<String>,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not the echo's JSON ({e}): {self:?}"))
    }
}

/// `GET path` with exact bytes on a new HTTP/1.1 connection (TLS or not);
/// `path` is the request target as sent (origin or absolute form).
pub fn h1(proxy: &ProxyLab, source: IpAddr, tls: bool, path: &str, auth: Option<&str>) -> Seen {
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
pub fn h2(
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
pub fn curl_statuses(
    proxy: &ProxyLab,
    http2: bool,
    paths: &[&str],
    user: Option<&str>,
) -> Vec<u16> {
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
pub fn ask_everywhere(
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
