//! Refusals of bad values: addresses, ports, durations, fractions, admin
//! and log settings, paths, set sources and names, interface names.
use super::*;

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
