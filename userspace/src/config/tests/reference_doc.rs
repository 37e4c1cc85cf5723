//! docs/config.md against the reader: every example in it is a valid file,
//! and every key the reader accepts is documented in it.
use super::*;

/// Every ```yaml block in docs/config.md is a whole config file.
fn doc_examples() -> Vec<String> {
    let doc = include_str!("../../../../docs/config.md");
    doc.split("```yaml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_examples_in_the_reference_doc_are_valid() {
    let examples = doc_examples();
    assert_eq!(
        examples.len(),
        2,
        "the reference deployment and the default"
    );
    let reference = parse(&examples[0], Path::new("docs/config.md")).unwrap();
    let allowed: Vec<(Vec<PortRange>, Vec<PortRange>, Vec<String>)> = reference
        .filter
        .allow
        .iter()
        .map(|b| (b.tcp.clone(), b.udp.clone(), b.from.clone()))
        .collect();
    assert_eq!(
        allowed,
        vec![
            (
                ports(&[(80, 80), (443, 443)]),
                vec![],
                names(&["cloudflare"])
            ),
            (ports(&[(22, 22)]), vec![], names(&["admins"])),
            (
                ports(&[(6443, 6443), (10250, 10250)]),
                ports(&[(8472, 8472)]),
                names(&["nodes"])
            ),
        ]
    );
    assert_eq!(
        reference.filter.sets[0].sources,
        vec![SourceSpec::File("/etc/xdpgate/admins.txt".into())]
    );
    let proxy = reference
        .proxy
        .expect("the reference deployment runs the proxy");
    assert_eq!(proxy.trusted, names(&["cloudflare"]));
    let routes: Vec<(Option<&str>, &str)> = proxy
        .routes
        .iter()
        .map(|r| (r.host.as_deref(), r.service.as_str()))
        .collect();
    let admin = "admin.honeydue.svc.cluster.local:3000";
    assert_eq!(
        routes,
        [
            (Some("api.example.com"), "api"),
            (Some("example.com"), "api"),
            (Some("admin.example.com"), admin),
        ]
    );
    assert_eq!(
        proxy.services.keys().collect::<Vec<_>>(),
        [admin, "api"],
        "the literal upstream joins the named one"
    );
    let redirect = proxy.entrypoints[0]
        .redirect
        .as_ref()
        .map(|r| r.to.as_str());
    assert_eq!(redirect, Some("websecure"));
    let default = parse(&examples[1], Path::new("docs/config.md")).unwrap();
    assert_eq!(
        default,
        embedded_default(),
        "the doc shows the real default"
    );
}

/// A config that visits every table the reader knows, so that the keys each
/// table accepts are all recorded.
const EVERY_TABLE: &str = r#"
state_dir: /var/lib/xdpgate
watch_interval: 500ms
log: { level: info, format: json }
admin: { listen: "127.0.0.1:9901" }
filter:
  interfaces: [eth0]
  pin_dir: /sys/fs/bpf/xdpgate
  strict: false
  sets:
    cloudflare: { cloudflare: { url: "https://api.cloudflare.com/client/v4/ips", refresh: 6h, timeout: 10s, ca_file: /etc/ssl/ca.pem }, max_shrink: 0.5 }
    nodes: { cidrs: [10.0.0.1/32], files: [/etc/xdpgate/nodes.txt] }
    admins: { file: /etc/xdpgate/admins.txt }
    bad: { cidrs: [192.0.2.0/24] }
  allow:
    - { tcp: [443], udp: [8472], from: [cloudflare, nodes] }
    - { tcp: [22], from: [admins] }
  deny: [bad]
proxy:
  trusted: [cloudflare]
  entrypoints:
    web: { listen: "[::]:80", redirect: { to: websecure, code: 308 } }
    websecure:
      listen: ["[::]:443"]
      tls: { certs: [{ cert: /etc/xdpgate/tls/tls.crt, key: /etc/xdpgate/tls/tls.key }], client_ca: /etc/xdpgate/aop.pem, min_version: "1.2" }
      limits: { header_read_timeout: 10s, max_header_bytes: 32768, idle_timeout: 60s, max_connections: 100, h2_max_concurrent_streams: 100, handshake_timeout: 10s }
  services:
    api: { target: "api.default.svc.cluster.local:8000", h2c: false, connect_timeout: 5s, response_header_timeout: 60s, idle_timeout: 90s, resolve_interval: 5s, eject_for: 10s }
  routes:
    - { name: api, host: api.example.com, path: /, path_type: Prefix, service: api, entrypoints: [websecure], middlewares: [sec] }
  default_service: api
  drain: { accept_grace: 5s, grace_timeout: 30s }
  access_log: { enabled: true, path: /var/log/xdpgate/access.log }
  middlewares:
    sec:
      security_headers:
        hsts: { max_age: 63072000, include_subdomains: true, preload: true }
        content_type_nosniff: true
        frame_options: DENY
        frame_ancestors: "'none'"
        referrer_policy: no-referrer
        permissions_policy: "camera=()"
        content_security_policy: "default-src 'self'"
        content_security_policy_report_only: "default-src 'none'"
        cross_origin_opener_policy: same-origin
        cross_origin_resource_policy: same-origin
        custom_response_headers: { X-Served-By: xdpgate }
    limit: { rate_limit: { average: 100, period: 1m, burst: 200, ipv6_subnet: 64, max_keys: 65536 } }
    office: { ip_allow: { sets: [admins], cidrs: [192.0.2.0/24] } }
    auth: { basic_auth: { users_file: /etc/xdpgate/htpasswd, realm: admin, remove_header: true } }
    tohttps: { redirect_scheme: { scheme: https, port: 443, permanent: true } }
    cap: { body_limit: { max_bytes: 10MiB } }
    strip: { strip_prefix: { prefixes: [/api] } }
    add: { add_prefix: { prefix: /v1 } }
    reqheaders: { headers: { set: { X-Env: prod }, remove: [X-Debug] } }
    squeeze: { compress: { min_bytes: 1024 } }
"#;

#[test]
fn every_key_the_reader_accepts_is_in_the_reference_doc() {
    yaml::KNOWN_KEYS.with(|k| k.borrow_mut().clear());
    parse(EVERY_TABLE, Path::new("every-table.yaml")).expect("the every-table config parses");
    let mut keys = yaml::KNOWN_KEYS.with(|k| k.borrow().clone());
    // Maps keyed by the operator's own names (sets, entrypoints, services)
    // accept the names defined in them; those are not schema keys.
    for own_name in [
        "bad",
        "nodes",
        "admins",
        "web",
        "websecure",
        "api",
        "sec",
        "limit",
        "office",
        "auth",
        "tohttps",
        "cap",
        "strip",
        "add",
        "reqheaders",
        "squeeze",
        "X-Served-By",
        "X-Env",
    ] {
        keys.remove(own_name);
    }
    assert!(
        keys.len() > 60,
        "the reader's tables were visited: {keys:?}"
    );
    let doc = include_str!("../../../../docs/config.md");
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|key| !doc.contains(&format!("`{key}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys the config reader accepts but docs/config.md never names: {undocumented:?}"
    );
}
