use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;

use super::*;
use crate::{
    logging::LogFormat,
    policy::{compile, Binding, PortRange},
    sets::{CloudflareSpec, SetSpec, SourceSpec, DEFAULT_MAX_SHRINK},
};

pub(super) const ORIGIN: &str = "/etc/xdpgate/config.yaml";

/// Strips the indentation the test source adds, so that line 1 is the first
/// line after the opening quote.
pub(super) fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn config(text: &str) -> Config {
    match parse(&dedent(text), Path::new(ORIGIN)) {
        Ok(config) => config,
        Err(e) => panic!("expected the config to parse, got: {e}"),
    }
}

fn error(text: &str) -> ConfigError {
    match parse(&dedent(text), Path::new(ORIGIN)) {
        Ok(config) => panic!("expected an error, the config parsed: {config:?}"),
        Err(e) => e,
    }
}

/// The error names `key` on `line` and says `fragment`.
#[track_caller]
pub(super) fn assert_at(e: &ConfigError, line: usize, key: &str, fragment: &str) {
    assert_eq!(e.path, PathBuf::from(ORIGIN), "{e}");
    assert_eq!(e.line, Some(line), "wrong line in: {e}");
    assert_eq!(e.key, key, "wrong key in: {e}");
    assert!(
        e.message.contains(fragment),
        "message lacks {fragment:?}: {e}"
    );
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ports(list: &[(u16, u16)]) -> Vec<PortRange> {
    list.iter()
        .map(|&(first, last)| PortRange { first, last })
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A config with a valid policy, to which a test adds the part it checks.
const POLICY: &str = "
    filter:
      sets:
        cloudflare: { cloudflare: {} }
      allow:
        - { tcp: [443], from: [cloudflare] }
";

// ---- what parses, and into what ----

#[test]
fn the_design_sketch_parses_into_sets_and_bindings() {
    let c = config(
        r#"
        filter:
          interfaces: [eth0]
          sets:
            cloudflare: { cloudflare: { refresh: 6h } }
            nodes:      { cidrs: [10.0.0.1/32, 10.0.0.2/32, 10.0.0.3/32] }
            admins:     { file: /etc/xdpgate/admins.txt }
          allow:
            - { tcp: [80, 443], from: [cloudflare] }
            - { tcp: [22], from: [admins] }
            - { tcp: [6443, 10250], udp: [8472], from: [nodes] }
        admin:
          listen: 127.0.0.1:9901
    "#,
    );
    assert_eq!(c.filter.interfaces, names(&["eth0"]));
    // Sorted by name, whatever the file order.
    assert_eq!(
        c.filter.sets,
        vec![
            SetSpec {
                name: "admins".into(),
                sources: vec![SourceSpec::File("/etc/xdpgate/admins.txt".into())],
                max_shrink: DEFAULT_MAX_SHRINK,
            },
            SetSpec {
                name: "cloudflare".into(),
                sources: vec![SourceSpec::Cloudflare(CloudflareSpec {
                    refresh: Duration::from_secs(6 * 3600),
                    ..CloudflareSpec::default()
                })],
                max_shrink: DEFAULT_MAX_SHRINK,
            },
            SetSpec {
                name: "nodes".into(),
                sources: vec![SourceSpec::Inline(vec![
                    net("10.0.0.1/32"),
                    net("10.0.0.2/32"),
                    net("10.0.0.3/32"),
                ])],
                max_shrink: DEFAULT_MAX_SHRINK,
            },
        ]
    );
    assert_eq!(
        c.filter.allow,
        vec![
            Binding {
                tcp: ports(&[(80, 80), (443, 443)]),
                udp: vec![],
                from: names(&["cloudflare"]),
            },
            Binding {
                tcp: ports(&[(22, 22)]),
                udp: vec![],
                from: names(&["admins"]),
            },
            Binding {
                tcp: ports(&[(6443, 6443), (10250, 10250)]),
                udp: ports(&[(8472, 8472)]),
                from: names(&["nodes"]),
            },
        ]
    );
    assert!(c.filter.deny.is_empty());
    assert_eq!(
        c.admin.listen,
        "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn defaults_apply_to_everything_not_written() {
    let c = config(POLICY);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/xdpgate"));
    assert_eq!(c.watch_interval, Duration::from_millis(500));
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(
        c.admin.listen,
        "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
    );
    assert!(c.filter.interfaces.is_empty());
    assert_eq!(c.filter.pin_dir, PathBuf::from("/sys/fs/bpf/xdpgate"));
    assert!(!c.filter.strict);
    assert_eq!(c.filter.sets[0].max_shrink, DEFAULT_MAX_SHRINK);
    assert_eq!(
        c.filter.sets[0].sources,
        vec![SourceSpec::Cloudflare(CloudflareSpec::default())]
    );
    assert_eq!(c.proxy, None, "no proxy section, no proxy");
}

#[test]
fn every_top_level_key_is_read() {
    let c = config(
        r#"
        state_dir: /run/xdpgate-state
        watch_interval: 2s
        log: { level: "xdpgate=debug,aya=warn", format: json }
        admin: { listen: "[::1]:9000" }
        filter:
          interfaces: [eth0, eth1]
          pin_dir: /sys/fs/bpf/other
          strict: true
          sets:
            cloudflare:
              cloudflare:
                url: http://127.0.0.1:8080/ips
                refresh: 1m
                timeout: 3s
                ca_file: ca.pem
            badguys: { cidrs: [203.0.113.0/24] }
          allow:
            - { tcp: [443], from: [cloudflare] }
          deny: [badguys]
    "#,
    );
    assert_eq!(c.state_dir, PathBuf::from("/run/xdpgate-state"));
    assert_eq!(c.watch_interval, Duration::from_secs(2));
    assert_eq!(c.log.level, "xdpgate=debug,aya=warn");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.admin.listen, "[::1]:9000".parse::<SocketAddr>().unwrap());
    assert_eq!(c.filter.interfaces, names(&["eth0", "eth1"]));
    assert_eq!(c.filter.pin_dir, PathBuf::from("/sys/fs/bpf/other"));
    assert!(c.filter.strict);
    assert_eq!(c.filter.deny, names(&["badguys"]));
    assert_eq!(
        c.filter.sets[1].sources,
        vec![SourceSpec::Cloudflare(CloudflareSpec {
            url: "http://127.0.0.1:8080/ips".into(),
            refresh: Duration::from_secs(60),
            timeout: Duration::from_secs(3),
            ca_file: Some("ca.pem".into()),
        })]
    );
}

#[test]
fn a_set_is_the_union_of_its_sources_in_a_fixed_order() {
    let c = config(
        r#"
        filter:
          sets:
            mixed:
              cloudflare: {}
              files: [b.txt, c.txt]
              file: a.txt
              cidrs: [10.0.0.1, "2001:db8::1", 2001:db8::/64, 192.0.2.0/24]
              max_shrink: 0.25
          allow:
            - { tcp: ["30000-32767"], udp: [8472], from: [mixed] }
    "#,
    );
    let set = &c.filter.sets[0];
    assert_eq!(set.max_shrink, 0.25);
    assert_eq!(
        set.sources,
        vec![
            // Bare addresses are hosts.
            SourceSpec::Inline(vec![
                net("10.0.0.1/32"),
                net("2001:db8::1/128"),
                net("2001:db8::/64"),
                net("192.0.2.0/24"),
            ]),
            SourceSpec::File("a.txt".into()),
            SourceSpec::File("b.txt".into()),
            SourceSpec::File("c.txt".into()),
            SourceSpec::Cloudflare(CloudflareSpec::default()),
        ]
    );
    assert_eq!(c.filter.allow[0].tcp, ports(&[(30000, 32767)]));
    assert_eq!(c.filter.allow[0].udp, ports(&[(8472, 8472)]));
}

#[test]
fn anchors_and_empty_lists_are_understood() {
    let c = config(
        r#"
        filter:
          interfaces:
          sets:
            nodes: { cidrs: &nodes [10.0.0.1, 10.0.0.2] }
            more: { cidrs: *nodes }
          allow:
            - { tcp: &web [80, 443], from: [nodes] }
            - { udp: *web, from: [more] }
    "#,
    );
    assert!(c.filter.interfaces.is_empty());
    assert_eq!(c.filter.sets[0].sources, c.filter.sets[1].sources);
    assert_eq!(c.filter.allow[1].udp, ports(&[(80, 80), (443, 443)]));
}

#[test]
fn the_embedded_default_allows_web_ports_only_from_cloudflare() {
    let c = embedded_default();
    assert_eq!(
        c.filter.sets,
        vec![SetSpec {
            name: "cloudflare".into(),
            sources: vec![SourceSpec::Cloudflare(CloudflareSpec::default())],
            max_shrink: DEFAULT_MAX_SHRINK,
        }]
    );
    assert_eq!(
        c.filter.allow,
        vec![Binding {
            tcp: ports(&[(80, 80), (443, 443)]),
            udp: vec![],
            from: names(&["cloudflare"]),
        }]
    );
    assert!(c.filter.deny.is_empty());
    assert!(!c.filter.strict);
    assert!(c.filter.interfaces.is_empty(), "default route interface");
    assert_eq!(c.admin.listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(c, parse(DEFAULT_YAML, Path::new("x")).unwrap());
}

#[test]
fn policy_spec_carries_the_contents_and_compiles() {
    let c = config(
        "
        filter:
          strict: true
          sets:
            nodes: { cidrs: [10.0.0.1] }
            badguys: { cidrs: [203.0.113.0/24] }
          allow:
            - { udp: [8472], from: [nodes] }
          deny: [badguys]
    ",
    );
    let mut contents = BTreeMap::new();
    contents.insert("nodes".to_string(), vec![net("10.0.0.0/24")]);
    contents.insert("stranger".to_string(), vec![net("10.9.0.0/24")]);
    let spec = c.policy_spec(&contents);
    assert_eq!(spec.sets["nodes"], vec![net("10.0.0.0/24")]);
    assert!(spec.sets["badguys"].is_empty(), "not loaded yet: empty");
    assert!(!spec.sets.contains_key("stranger"));
    assert_eq!(spec.allow, c.filter.allow);
    assert_eq!(spec.deny, names(&["badguys"]));
    assert!(spec.strict);
    let compiled = compile(&spec).expect("an empty deny set compiles");
    assert_eq!(compiled.set_names, names(&["badguys", "nodes"]));
}

#[test]
fn load_reads_a_file_and_names_it_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, DEFAULT_YAML).unwrap();
    assert_eq!(load(&path).unwrap(), embedded_default());

    let missing = dir.path().join("missing.yaml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.path, missing);
    assert_eq!(e.line, None);
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read", missing.display())),
        "{text}"
    );

    std::fs::write(&path, "filter:\n  allow: [{ tcp: [22], from: [admins] }]\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.path, path);
    assert_eq!(e.line, Some(2));
}

// ---- the shape of a message ----

#[test]
fn the_message_reads_file_line_key_then_what_is_wrong() {
    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
            admins: { file: admins.txt }
          allow:
            - { tcp: [80, 443], from: [cloudflare] }
            - { tcp: [22], from: [cloudfare] }
    ",
    );
    assert_eq!(
        e.to_string(),
        "/etc/xdpgate/config.yaml: line 7: filter.allow[1].from[0]: unknown set `cloudfare` \
         (did you mean `cloudflare`?)"
    );
    let bare = ConfigError {
        path: "c.yaml".into(),
        line: None,
        key: String::new(),
        message: "cannot read".into(),
    };
    assert_eq!(bare.to_string(), "c.yaml: cannot read");
    let keyed = ConfigError {
        key: "filter".into(),
        ..bare
    };
    assert_eq!(keyed.to_string(), "c.yaml: filter: cannot read");
}

// ---- structure ----

#[test]
fn unknown_keys_are_named_with_the_nearest_known_key() {
    let e = error(&format!("{POLICY}    fliter: {{}}\n"));
    assert_at(
        &e,
        6,
        "fliter",
        "unknown key `fliter` (did you mean `filter`?)",
    );

    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
          allow:
            - { tcp: [443], from: [cloudflare] }
            - tcp: [22]
              form: [cloudflare]
    ",
    );
    assert_at(&e, 7, "filter.allow[1].form", "did you mean `from`?");

    let e = error(
        "
        filter:
          sets:
            cloudflare:
              cloudflare: { refrsh: 1h }
    ",
    );
    assert_at(
        &e,
        4,
        "filter.sets.cloudflare.cloudflare.refrsh",
        "did you mean `refresh`?",
    );

    // Nothing close: the known keys are listed instead.
    let e = error(&format!("{POLICY}    admin: {{ port: 9901 }}\n"));
    assert_at(
        &e,
        6,
        "admin.port",
        "unknown key `port`; expected one of: listen",
    );
}

#[test]
fn a_key_given_twice_is_refused() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
            nodes: { cidrs: [10.0.0.2] }
          allow:
            - { tcp: [22], from: [nodes] }
    ",
    );
    assert_at(&e, 4, "filter.sets.nodes", "given twice (first on line 3)");
}

#[test]
fn values_of_the_wrong_shape_are_refused() {
    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
          allow:
            - { tcp: 443, from: [cloudflare] }
    ",
    );
    assert_at(&e, 5, "filter.allow[0].tcp", "expected a list like");

    let e = error(
        "
        filter:
          sets: [cloudflare]
    ",
    );
    assert_at(&e, 2, "filter.sets", "expected a mapping");

    let e = error(&format!("{POLICY}      strict: yes\n"));
    assert_at(&e, 6, "filter.strict", "`yes` is not true or false");

    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
          allow:
            - cloudflare
    ",
    );
    assert_at(&e, 5, "filter.allow[0]", "expected a mapping");

    let e = error(&format!("{POLICY}    state_dir:\n"));
    assert_at(&e, 6, "state_dir", "expected a path, found nothing");
}

#[test]
fn broken_yaml_is_refused_with_its_line() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1 }
    ",
    );
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("not valid YAML"), "{e}");

    let e = error(&format!("{POLICY}    ---\n    filter: {{}}\n"));
    assert_at(&e, 6, "", "one YAML document");
}

// ---- values ----

#[test]
fn bad_addresses_are_named() {
    let e = error(
        "
        filter:
          sets:
            nodes:
              cidrs:
                - 10.0.0.1
                - 10.0.0.300/32
          allow:
            - { tcp: [22], from: [nodes] }
    ",
    );
    assert_at(
        &e,
        6,
        "filter.sets.nodes.cidrs[1]",
        "`10.0.0.300/32` is not an IPv4 or IPv6 address or CIDR",
    );
}

#[test]
fn bad_ports_are_named() {
    let rule = |ports: &str| {
        error(&format!(
            "
            filter:
              sets:
                nodes: {{ cidrs: [10.0.0.1] }}
              allow:
                - {{ tcp: [22], from: [nodes] }}
                - {{ {ports}, from: [nodes] }}
        "
        ))
    };
    let e = rule("tcp: [6443], udp: [8472, 0]");
    assert_at(
        &e,
        6,
        "filter.allow[1].udp[1]",
        "port 0 is not a destination port",
    );
    let e = rule(r#"tcp: [6443, "32767-30000"]"#);
    assert_at(
        &e,
        6,
        "filter.allow[1].tcp[1]",
        "port range 32767-30000 runs backwards",
    );
    let e = rule("udp: [70000]");
    assert_at(&e, 6, "filter.allow[1].udp[0]", "`70000` is not a port");
    let e = rule("tcp: [http]");
    assert_at(&e, 6, "filter.allow[1].tcp[0]", "`http` is not a port");
}

#[test]
fn bad_durations_are_named() {
    let e = error(&format!("{POLICY}    watch_interval: 500\n"));
    assert_at(&e, 6, "watch_interval", "`500` is not a duration");
    let e = error(&format!("{POLICY}    watch_interval: 0s\n"));
    assert_at(&e, 6, "watch_interval", "too short");

    let cloudflare = |body: &str| {
        error(&format!(
            "
            filter:
              sets:
                cloudflare:
                  cloudflare:
                    {body}
              allow:
                - {{ tcp: [443], from: [cloudflare] }}
        "
        ))
    };
    let e = cloudflare("refresh: 6 hourz");
    assert_at(
        &e,
        5,
        "filter.sets.cloudflare.cloudflare.refresh",
        "is not a duration",
    );
    let e = cloudflare("refresh: 500ms");
    assert_at(
        &e,
        5,
        "filter.sets.cloudflare.cloudflare.refresh",
        "at least 1s",
    );
    let e = cloudflare("timeout: 0s");
    assert_at(
        &e,
        5,
        "filter.sets.cloudflare.cloudflare.timeout",
        "timeout of 0",
    );
    let e = cloudflare("url: ftp://mirror.example/ips");
    assert_at(
        &e,
        5,
        "filter.sets.cloudflare.cloudflare.url",
        "not an http:// or https:// URL",
    );
    let e = cloudflare("ca_file: ''");
    assert_at(
        &e,
        5,
        "filter.sets.cloudflare.cloudflare.ca_file",
        "the path is empty",
    );
}

#[test]
fn max_shrink_must_be_a_fraction() {
    for bad in ["1.5", "-0.1", "half", "NaN"] {
        let e = error(&format!(
            "
            filter:
              sets:
                nodes:
                  cidrs: [10.0.0.1]
                  max_shrink: {bad}
              allow:
                - {{ tcp: [22], from: [nodes] }}
        "
        ));
        assert_at(
            &e,
            5,
            "filter.sets.nodes.max_shrink",
            "is not a fraction from 0 to 1",
        );
    }
    let c = config(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1], max_shrink: 1 }
          allow:
            - { tcp: [22], from: [nodes] }
    ",
    );
    assert_eq!(c.filter.sets[0].max_shrink, 1.0);
}

#[test]
fn bad_admin_and_log_values_are_named() {
    let e = error(&format!(
        "{POLICY}    admin:\n      listen: localhost:9901\n"
    ));
    assert_at(
        &e,
        7,
        "admin.listen",
        "`localhost:9901` is not an IP address and port",
    );

    let e = error(&format!("{POLICY}    log: {{ format: jsn }}\n"));
    assert_at(
        &e,
        6,
        "log.format",
        "unknown log format `jsn`: expected text or json (did you mean `json`?)",
    );

    // A bare word is a target to EnvFilter, never what a typo meant.
    let e = error(&format!("{POLICY}    log: {{ level: infoo }}\n"));
    assert_at(&e, 6, "log.level", "`infoo` is not a log level");
    assert!(e.message.contains("did you mean `info`?"), "{e}");
    let e = error(&format!("{POLICY}    log: {{ level: \"xdpgate=[\" }}\n"));
    assert_at(&e, 6, "log.level", "is not a log filter directive");
    let c = config(&format!(
        "{POLICY}    log: {{ level: \"warn,xdpgate=trace\" }}\n"
    ));
    assert_eq!(c.log.level, "warn,xdpgate=trace");
}

#[test]
fn empty_paths_are_refused_and_relative_ones_kept() {
    let e = error(&format!("{POLICY}    state_dir: \"\"\n"));
    assert_at(&e, 6, "state_dir", "the path is empty");
    let e = error(
        "
        filter:
          sets:
            admins: { files: [admins.txt, \" \"] }
          allow:
            - { tcp: [22], from: [admins] }
    ",
    );
    assert_at(&e, 3, "filter.sets.admins.files[1]", "the path is empty");
    let c = config(&format!("{POLICY}    state_dir: state\n"));
    assert_eq!(c.state_dir, PathBuf::from("state"));
}

#[test]
fn sets_need_a_source_and_a_usable_name() {
    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
            nodes:
              max_shrink: 0.5
          allow:
            - { tcp: [443], from: [cloudflare] }
    ",
    );
    assert_at(&e, 4, "filter.sets.nodes", "set `nodes` has no source");

    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [] }
    ",
    );
    assert_at(&e, 3, "filter.sets.nodes.cidrs", "lists no addresses");

    let e = error(
        "
        filter:
          sets:
            admins: { file: a.txt, files: [b.txt, a.txt] }
    ",
    );
    assert_at(
        &e,
        3,
        "filter.sets.admins.files[1]",
        "`a.txt` is listed twice",
    );

    let e = error(
        "
        filter:
          sets:
            cloudflare: { cloudflare: {} }
            my nodes: { cidrs: [10.0.0.1] }
    ",
    );
    assert_at(
        &e,
        4,
        "filter.sets.my nodes",
        "`my nodes` is not a valid set name",
    );

    let named = |name: &str| {
        parse(
            &format!("filter:\n  sets:\n    {name}: {{ cidrs: [10.0.0.1] }}\n  deny: [{name}]\n"),
            Path::new(ORIGIN),
        )
    };
    let long = "n".repeat(65);
    let e = named(&long).unwrap_err();
    assert_at(
        &e,
        3,
        &format!("filter.sets.{long}"),
        "is not a valid set name",
    );
    assert!(named(&"n".repeat(64)).is_ok());
    assert!(named("a-b_c.d").is_ok());
    assert!(named("..").is_err());
}

#[test]
fn bad_interface_names_are_refused() {
    let e = error(&format!(
        "{POLICY}      interfaces: [eth0, a-very-long-name0]\n"
    ));
    assert_at(
        &e,
        6,
        "filter.interfaces[1]",
        "is not a network interface name",
    );
    let e = error(&format!(
        "{POLICY}      interfaces:\n        - eth0\n        - eth0\n"
    ));
    assert_at(
        &e,
        8,
        "filter.interfaces[1]",
        "interface `eth0` is listed twice",
    );
}

// ---- the policy, checked by the compiler ----

#[test]
fn unknown_sets_are_named_where_they_are_used() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
            badguys: { cidrs: [203.0.113.0/24] }
          allow:
            - { udp: [8472], from: [nodes] }
          deny:
            - badguys
            - badguy
    ",
    );
    assert_at(
        &e,
        9,
        "filter.deny[1]",
        "unknown set `badguy` (did you mean `badguys`?)",
    );

    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
          allow:
            - tcp: [22]
              from:
                - nodes
                - admins
    ",
    );
    assert_at(
        &e,
        8,
        "filter.allow[0].from[1]",
        "unknown set `admins`: it is not defined under filter.sets",
    );
}

#[test]
fn rules_without_ports_or_sets_are_named() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
          allow:
            - { tcp: [22], from: [nodes] }
            - { from: [nodes] }
    ",
    );
    assert_at(&e, 6, "filter.allow[1]", "lists no tcp or udp ports");

    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
          allow:
            - tcp: [22]
              from: []
    ",
    );
    assert_at(&e, 6, "filter.allow[0].from", "allows no set");
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
          allow:
            - tcp: [22]
    ",
    );
    assert_at(&e, 5, "filter.allow[0]", "allows no set");
}

#[test]
fn a_set_both_denied_and_allowed_is_refused() {
    let e = error(
        "
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
            admins: { cidrs: [10.1.0.0/16] }
          allow:
            - { tcp: [22], from: [nodes, admins] }
          deny: [admins]
    ",
    );
    assert_at(
        &e,
        6,
        "filter.allow[0].from[1]",
        "set `admins` is also in filter.deny",
    );
}

#[test]
fn a_policy_that_enforces_nothing_is_refused() {
    let e = parse("", Path::new(ORIGIN)).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (None, "filter"), "{e}");
    assert!(e.message.contains("nothing to enforce"), "{e}");

    let e = error(
        "
        log: { level: debug }
        filter:
          sets:
            nodes: { cidrs: [10.0.0.1] }
    ",
    );
    assert_at(&e, 2, "filter", "nothing to enforce");
}

#[test]
fn too_many_sets_are_refused() {
    let count = xdpgate_common::MAX_SETS + 1;
    let mut text = String::from("filter:\n  sets:\n");
    for i in 0..count {
        text += &format!("    s{i}: {{ cidrs: [10.0.{i}.0/24] }}\n");
    }
    let all: Vec<String> = (0..count).map(|i| format!("s{i}")).collect();
    text += &format!(
        "  allow:\n    - {{ tcp: [22], from: [{}] }}\n",
        all.join(", ")
    );
    let e = parse(&text, Path::new(ORIGIN)).unwrap_err();
    assert_at(
        &e,
        2,
        "filter.sets",
        &format!("the policy uses {count} sets"),
    );
}

// ---- the reference doc ----

/// Every ```yaml block in docs/config.md is a whole config file.
fn doc_examples() -> Vec<String> {
    let doc = include_str!("../../../docs/config.md");
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
    let doc = include_str!("../../../docs/config.md");
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|key| !doc.contains(&format!("`{key}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys the config reader accepts but docs/config.md never names: {undocumented:?}"
    );
}
