//! The proxies `bench proxy` runs and how each is configured: the same job
//! for all (TLS on 192.0.2.1:443 with one certificate, one upstream over
//! keep-alive, the five forwarded headers, no access log, one worker), and
//! the two upstreams they forward to: the echo server of the test lab, and
//! nginx answering a fixed ~300-byte body, as real upstreams are.
use std::path::{Path, PathBuf};

/// Where the proxies listen.
pub const LISTEN: &str = "192.0.2.1:443";

/// The proxies, in the order each round runs them.
pub const PROXIES: [&str; 6] = ["nginx", "haproxy", "caddy", "envoy", "traefik", "xdpgate"];

/// An upstream every proxy forwards to in turn.
#[derive(Clone, Copy, Debug)]
pub struct Upstream {
    pub name: &'static str,
    pub address: &'static str,
}

/// The lab's echo server: answers a ~300-byte JSON naming the headers it got.
pub const ECHO: Upstream = Upstream {
    name: "echo",
    address: "127.0.0.1:9000",
};

/// nginx `return 200` with a fixed ~300-byte body.
pub const NGINX_UPSTREAM: Upstream = Upstream {
    name: "nginx-upstream",
    address: "127.0.0.1:9001",
};

/// What starts a proxy: program, arguments and environment.
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, String)>,
}

/// The files every proxy's configuration names.
pub struct Files<'a> {
    /// The directory for pid files, temp paths and logs.
    pub dir: &'a Path,
    pub crt: &'a Path,
    pub key: &'a Path,
    /// Certificate and key in one PEM (HAProxy).
    pub pem: &'a Path,
    /// The venv `cargo xtask setup` installs Traefik and Envoy into.
    pub venv_bin: &'a Path,
}

/// The configuration files of `proxy` for `upstream` (name, text), and how
/// to start it once they are written under `dir` with those names.
pub fn proxy(
    proxy: &str,
    files: &Files<'_>,
    upstream: Upstream,
    xdpgate: &dyn Fn(Upstream, &Path) -> (String, Launch),
) -> (Vec<(String, String)>, Launch) {
    let at = |name: &str| files.dir.join(name);
    let s = |v: &str| v.to_string();
    let up = upstream.name;
    match proxy {
        "nginx" => {
            let conf = format!("nginx-{up}.conf");
            let launch = Launch {
                program: s("nginx"),
                args: vec![
                    s("-c"),
                    path(&at(&conf)),
                    s("-p"),
                    path(files.dir),
                    s("-e"),
                    path(&at("nginx-error.log")),
                ],
                env: vec![],
            };
            (vec![(conf, nginx_conf(files, upstream))], launch)
        }
        "haproxy" => {
            let conf = format!("haproxy-{up}.cfg");
            let launch = Launch {
                program: s("haproxy"),
                args: vec![s("-db"), s("-f"), path(&at(&conf))],
                env: vec![],
            };
            (vec![(conf, haproxy_cfg(files, upstream))], launch)
        }
        "caddy" => {
            let conf = format!("Caddyfile-{up}");
            let dir = path(files.dir);
            let launch = Launch {
                program: s("caddy"),
                args: vec![
                    s("run"),
                    s("--config"),
                    path(&at(&conf)),
                    s("--adapter"),
                    s("caddyfile"),
                ],
                env: vec![
                    ("GOMAXPROCS", s("1")),
                    ("HOME", dir.clone()),
                    ("XDG_DATA_HOME", dir.clone()),
                    ("XDG_CONFIG_HOME", dir),
                ],
            };
            (vec![(conf, caddyfile(files, upstream))], launch)
        }
        "envoy" => {
            let conf = format!("envoy-{up}.yaml");
            let launch = Launch {
                program: path(&files.venv_bin.join("envoy")),
                args: vec![
                    s("-c"),
                    path(&at(&conf)),
                    s("--concurrency"),
                    s("1"),
                    s("--log-level"),
                    s("error"),
                    s("--disable-hot-restart"),
                ],
                env: vec![],
            };
            (vec![(conf, envoy_yaml(files, upstream))], launch)
        }
        "traefik" => {
            let conf = format!("traefik-{up}.yaml");
            let dynamic = format!("traefik-{up}-dynamic.yaml");
            let launch = Launch {
                program: path(&files.venv_bin.join("traefik")),
                args: vec![format!("--configFile={}", path(&at(&conf)))],
                env: vec![("GOMAXPROCS", s("1")), ("HOME", path(files.dir))],
            };
            (
                vec![
                    (conf, traefik_static(&at(&dynamic))),
                    (dynamic, traefik_dynamic(files, upstream)),
                ],
                launch,
            )
        }
        _ => {
            let conf = format!("xdpgate-{up}.yaml");
            let (text, launch) = xdpgate(upstream, &at(&conf));
            (vec![(conf, text)], launch)
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn nginx_conf(files: &Files<'_>, upstream: Upstream) -> String {
    let d = files.dir.display();
    format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         worker_rlimit_nofile 20000;\nevents {{ worker_connections 30000; }}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/nb; proxy_temp_path {d}/np; fastcgi_temp_path {d}/nf; uwsgi_temp_path {d}/nu; scgi_temp_path {d}/ns;\n\
         keepalive_timeout 120s; keepalive_requests 1000000;\n\
         upstream be {{ server {backend}; keepalive 64; }}\n  server {{\n    listen {LISTEN} ssl http2;\n\
         ssl_certificate {crt}; ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    location / {{\n      proxy_pass http://be;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_set_header X-Real-IP $remote_addr;\n\
         proxy_set_header X-Forwarded-Proto https;\n      proxy_set_header X-Forwarded-Host $host;\n\
         proxy_set_header X-Forwarded-Port 443;\n    }}\n  }}\n}}\n",
        backend = upstream.address,
        crt = files.crt.display(),
        key = files.key.display()
    )
}

fn haproxy_cfg(files: &Files<'_>, upstream: Upstream) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 9500\n  pidfile {d}/haproxy.pid\n  tune.ssl.default-dh-param 2048\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n  timeout server 60s\n  timeout http-keep-alive 120s\n\
         frontend fe\n  bind {LISTEN} ssl crt {pem} alpn h2,http/1.1\n  maxconn 9500\n\
         http-request set-header X-Forwarded-For %[src]\n  http-request set-header X-Real-IP %[src]\n\
         http-request set-header X-Forwarded-Proto https\n  http-request set-header X-Forwarded-Host %[req.hdr(host)]\n\
         http-request set-header X-Forwarded-Port 443\n  default_backend be\n\
         backend be\n  http-reuse always\n  server s1 {backend} maxconn 64\n",
        d = files.dir.display(),
        pem = files.pem.display(),
        backend = upstream.address,
    )
}

fn caddyfile(files: &Files<'_>, upstream: Upstream) -> String {
    format!(
        "{{\n  admin off\n  auto_https off\n  default_sni 192.0.2.1\n  servers {{\n    timeouts {{\n      idle 120s\n    }}\n  }}\n}}\n\
         https://{LISTEN} {{\n  tls {crt} {key}\n  reverse_proxy {backend} {{\n\
         header_up X-Forwarded-For {{remote_host}}\n    header_up X-Real-IP {{remote_host}}\n\
         header_up X-Forwarded-Proto https\n    header_up X-Forwarded-Host {{host}}\n    header_up X-Forwarded-Port 443\n  }}\n}}\n",
        crt = files.crt.display(),
        key = files.key.display(),
        backend = upstream.address,
    )
}

/// Envoy's static bootstrap: one TLS listener (h2 and http/1.1 by ALPN) with
/// the HTTP connection manager, one static cluster. `use_remote_address`
/// makes it set X-Forwarded-For and X-Forwarded-Proto itself; the other
/// three are added on the route configuration. No admin listener, no access
/// log, no request ids, no x-envoy-* headers.
fn envoy_yaml(files: &Files<'_>, upstream: Upstream) -> String {
    let (host, port) = upstream.address.split_once(':').expect("host:port");
    let (listen_host, listen_port) = LISTEN.split_once(':').expect("host:port");
    format!(
        r#"static_resources:
  listeners:
  - name: websecure
    address: {{ socket_address: {{ address: {listen_host}, port_value: {listen_port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{ filename: {crt} }}
              private_key: {{ filename: {key} }}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: websecure
          codec_type: AUTO
          use_remote_address: true
          generate_request_id: false
          common_http_protocol_options: {{ idle_timeout: 120s }}
          route_config:
            name: all
            request_headers_to_add:
            - header: {{ key: x-real-ip, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }}
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - header: {{ key: x-forwarded-host, value: "%REQ(:AUTHORITY)%" }}
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - header: {{ key: x-forwarded-port, value: "443" }}
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}
"#,
        crt = files.crt.display(),
        key = files.key.display(),
    )
}

/// Traefik's install (static) configuration: one entrypoint, the file
/// provider, no access log (off unless configured), errors only, and a
/// short grace period on SIGTERM (its default, 10 s, would only slow the
/// benchmark down between proxies).
fn traefik_static(dynamic: &Path) -> String {
    format!(
        "global: {{ checkNewVersion: false, sendAnonymousUsage: false }}\nlog: {{ level: ERROR }}\n\
         entryPoints:\n  websecure:\n    address: \"{LISTEN}\"\n    transport:\n      respondingTimeouts: {{ idleTimeout: 120s }}\n      lifeCycle: {{ graceTimeOut: 1s }}\n\
         providers:\n  file: {{ filename: {}, watch: false }}\n",
        dynamic.display()
    )
}

/// Traefik's routing (dynamic) configuration for the file provider: one
/// router on every path with TLS, one service, the certificate as the
/// default. Traefik sets the X-Forwarded-* headers and X-Real-Ip by default.
fn traefik_dynamic(files: &Files<'_>, upstream: Upstream) -> String {
    format!(
        "http:\n  routers:\n    all:\n      rule: \"PathPrefix(`/`)\"\n      entryPoints: [websecure]\n      service: upstream\n      tls: {{}}\n\
         \x20 services:\n    upstream:\n      loadBalancer:\n        servers:\n        - url: \"http://{backend}\"\n\
         tls:\n  stores:\n    default:\n      defaultCertificate: {{ certFile: {crt}, keyFile: {key} }}\n",
        backend = upstream.address,
        crt = files.crt.display(),
        key = files.key.display(),
    )
}

/// The nginx that plays the second upstream: one worker, keep-alive with
/// `keepalive_requests 100000`, `return 200` with a ~300-byte JSON body.
pub fn upstream_nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    let body = format!(
        "{{\"backend\":\"nginx-upstream\",\"pad\":\"{}\"}}",
        "x".repeat(262)
    );
    format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/upstream-nginx.pid;\n\
         error_log {d}/upstream-nginx-error.log warn;\nworker_rlimit_nofile 20000;\n\
         events {{ worker_connections 16000; }}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/unb; proxy_temp_path {d}/unp; fastcgi_temp_path {d}/unf; uwsgi_temp_path {d}/unu; scgi_temp_path {d}/uns;\n\
         keepalive_timeout 120s; keepalive_requests 100000;\n  server {{\n    listen {address} backlog=4096;\n\
         location / {{ default_type application/json; return 200 '{body}'; }}\n  }}\n}}\n",
        address = NGINX_UPSTREAM.address,
    )
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/xdpgate/venv/bin`, where `cargo xtask
/// setup` installs Traefik and Envoy.
pub fn venv_bin() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(cache.join("xdpgate").join("venv").join("bin"))
}
