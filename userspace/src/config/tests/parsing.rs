//! What a valid file parses into: sets, bindings, defaults, every
//! top-level key, the embedded default, and `load` reading a file.
use super::*;

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
