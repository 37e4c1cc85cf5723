use std::collections::{HashMap, HashSet};

use xdpgate_common::{Counter, Family, Reason};

use super::*;
use crate::status::{InterfaceStatus, PolicyStatus, ReloadStatus};

fn source(kind: &str, from: &str, origin: &str) -> SourceStatus {
    SourceStatus {
        kind: kind.into(),
        origin: origin.into(),
        from: from.into(),
        last_result: "error: GET https://user:hunter2@example.net failed".into(),
        etag: Some("\"etag-secret\"".into()),
        ..SourceStatus::default()
    }
}

fn status() -> DaemonStatus {
    DaemonStatus {
        pid: 4242,
        version: "1.2.3".into(),
        started_at: 1_700_000_000,
        updated_at: 1_700_000_500,
        config_path: Some("/etc/xdpgate/config.yaml".into()),
        pin_dir: "/sys/fs/bpf/xdpgate".into(),
        interfaces: vec![
            InterfaceStatus {
                name: "eth0".into(),
                mode: "driver".into(),
                how: "attached".into(),
                wanted_mode: None,
            },
            InterfaceStatus {
                name: "eth1".into(),
                mode: "generic".into(),
                how: "adopted".into(),
                wanted_mode: None,
            },
        ],
        policy: PolicyStatus {
            generation: 7,
            set_names: vec!["cloudflare".into(), "admins".into()],
            applied_at: 1_700_000_100,
            last_error: Some("cannot read /etc/xdpgate/secret".into()),
            refused: 2,
            tunnels: "pass".into(),
        },
        sets: vec![
            SetStatus {
                name: "cloudflare".into(),
                size: 22,
                loaded: true,
                sources: vec![SourceStatus {
                    entries: 22,
                    successes: 5,
                    failures: 1,
                    last_attempt_at: 1_700_000_300,
                    last_success_at: 1_700_000_250,
                    ..source(
                        "cloudflare",
                        "api",
                        "https://api.cloudflare.com/client/v4/ips?token=s3cret",
                    )
                }],
            },
            SetStatus {
                name: "admins".into(),
                size: 3,
                loaded: false,
                sources: vec![
                    SourceStatus {
                        entries: 2,
                        successes: 1,
                        failures: 2,
                        refusals: 1,
                        last_attempt_at: 1_700_000_100,
                        last_success_at: 1_700_000_090,
                        ..source("file", "file", "/etc/xdpgate/admins-a.txt")
                    },
                    SourceStatus {
                        entries: 2,
                        failures: 3,
                        last_attempt_at: 1_700_000_200,
                        last_success_at: 0,
                        ..source("file", "last-known-good", "/etc/xdpgate/admins-b.txt")
                    },
                    SourceStatus {
                        entries: 1,
                        successes: 1,
                        last_attempt_at: 1_700_000_000,
                        last_success_at: 1_700_000_000,
                        ..source("inline", "config", "config")
                    },
                ],
            },
        ],
        reloads: ReloadStatus {
            ok: 3,
            failed: 1,
            last_at: 1_700_000_200,
            last_error: Some("line 3: password: hunter2".into()),
        },
        ingress: None,
        readiness: Default::default(),
    }
}

/// Distinct values per cell, so a mixed-up label shows as a wrong value.
fn counters() -> Counters {
    Counters::from_fn(|reason, family| {
        if (reason, family) == (Reason::DropNotMemberTcp, Family::Ipv4) {
            return Counter {
                packets: 42,
                bytes: 2520,
            };
        }
        let index = u64::from(xdpgate_common::counter_index(reason, family));
        Counter {
            packets: 1000 + index,
            bytes: 100_000 + index,
        }
    })
}

fn lines(text: &str) -> HashSet<&str> {
    text.lines().collect()
}

#[track_caller]
fn assert_has(text: &str, expected: &[&str]) {
    let lines = lines(text);
    for line in expected {
        assert!(lines.contains(line), "missing line {line:?} in:\n{text}");
    }
}

#[test]
fn kernel_counters_are_counters_with_verdict_reason_and_family() {
    let text = render(&status(), Some(&counters()));
    assert_has(
        &text,
        &[
            "xdpgate_kernel_counters_readable 1",
            "# TYPE xdpgate_packets counter",
            "# TYPE xdpgate_bytes counter",
            r#"xdpgate_packets_total{action="drop",reason="not_member_tcp",family="ipv4"} 42"#,
            r#"xdpgate_bytes_total{action="drop",reason="not_member_tcp",family="ipv4"} 2520"#,
        ],
    );
}

#[test]
fn every_reason_and_family_has_a_series_even_at_zero() {
    let zeros = Counters::from_fn(|_, _| Counter::default());
    let with_values = counters();
    for counters in [&zeros, &with_values] {
        let text = render(&status(), Some(counters));
        for reason in Reason::ALL {
            for family in Family::ALL {
                let cell = counters.get(reason, family);
                let labels = format!(
                    r#"{{action="{}",reason="{}",family="{}"}}"#,
                    reason.action(),
                    reason.label(),
                    family.label()
                );
                assert_has(
                    &text,
                    &[
                        &format!("xdpgate_packets_total{labels} {}", cell.packets),
                        &format!("xdpgate_bytes_total{labels} {}", cell.bytes),
                    ],
                );
            }
        }
        let series = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
        let cells = Reason::ALL.len() * Family::ALL.len();
        assert_eq!(series("xdpgate_packets_total{"), cells);
        assert_eq!(series("xdpgate_bytes_total{"), cells);
    }
}

#[test]
fn unreadable_counters_are_left_out_not_zeroed() {
    let text = render(&status(), None);
    assert_has(&text, &["xdpgate_kernel_counters_readable 0"]);
    for family in ["xdpgate_packets", "xdpgate_bytes"] {
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with(family) || l.starts_with(&format!("# TYPE {family} "))),
            "{family} rendered without counters:\n{text}"
        );
    }
    // The rest of the status is still there.
    assert_has(&text, &["xdpgate_policy_generation 7"]);
}

#[test]
fn daemon_policy_and_config_metrics() {
    let text = render(&status(), Some(&counters()));
    assert_has(
        &text,
        &[
            "# TYPE xdpgate_policy_generation gauge",
            "xdpgate_policy_generation 7",
            "# TYPE xdpgate_policy_applied_timestamp_seconds gauge",
            "# UNIT xdpgate_policy_applied_timestamp_seconds seconds",
            "xdpgate_policy_applied_timestamp_seconds 1700000100",
            "# TYPE xdpgate_policy_refused counter",
            "xdpgate_policy_refused_total 2",
            "# TYPE xdpgate_config_reloads counter",
            r#"xdpgate_config_reloads_total{result="ok"} 3"#,
            r#"xdpgate_config_reloads_total{result="failed"} 1"#,
            "xdpgate_config_last_reload_timestamp_seconds 1700000200",
            r#"xdpgate_interface_attached{interface="eth0",mode="driver"} 1"#,
            r#"xdpgate_interface_attached{interface="eth1",mode="generic"} 1"#,
            "# TYPE xdpgate_build info",
            r#"xdpgate_build_info{version="1.2.3"} 1"#,
            "xdpgate_start_time_seconds 1700000000",
        ],
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn sets_and_their_sources() {
    let text = render(&status(), Some(&counters()));
    assert_has(
        &text,
        &[
            r#"xdpgate_set_entries{set="cloudflare"} 22"#,
            r#"xdpgate_set_entries{set="admins"} 3"#,
            r#"xdpgate_set_loaded{set="cloudflare"} 1"#,
            r#"xdpgate_set_loaded{set="admins"} 0"#,
            "# TYPE xdpgate_set_refresh counter",
            r#"xdpgate_set_refresh_total{set="cloudflare",source="cloudflare",result="success"} 5"#,
            r#"xdpgate_set_refresh_total{set="cloudflare",source="cloudflare",result="failure"} 1"#,
            r#"xdpgate_set_refresh_total{set="cloudflare",source="cloudflare",result="refused"} 0"#,
            r#"xdpgate_set_last_refresh_timestamp_seconds{set="cloudflare",source="cloudflare"} 1700000300"#,
            r#"xdpgate_set_last_success_timestamp_seconds{set="cloudflare",source="cloudflare"} 1700000250"#,
            r#"xdpgate_set_source_entries{set="cloudflare",source="cloudflare"} 22"#,
            "# TYPE xdpgate_set_source info",
            r#"xdpgate_set_source_info{set="cloudflare",source="cloudflare",from="api"} 1"#,
            r#"xdpgate_set_source_info{set="admins",source="inline",from="config"} 1"#,
        ],
    );
}

#[test]
fn two_sources_of_one_kind_are_summed_and_report_the_stalest_times() {
    let text = render(&status(), None);
    assert_has(
        &text,
        &[
            r#"xdpgate_set_refresh_total{set="admins",source="file",result="success"} 1"#,
            r#"xdpgate_set_refresh_total{set="admins",source="file",result="failure"} 5"#,
            r#"xdpgate_set_refresh_total{set="admins",source="file",result="refused"} 1"#,
            r#"xdpgate_set_source_entries{set="admins",source="file"} 4"#,
            r#"xdpgate_set_last_refresh_timestamp_seconds{set="admins",source="file"} 1700000100"#,
            // One of the two files never refreshed: the pair is not fresh.
            r#"xdpgate_set_last_success_timestamp_seconds{set="admins",source="file"} 0"#,
            r#"xdpgate_set_source_info{set="admins",source="file",from="file"} 1"#,
            r#"xdpgate_set_source_info{set="admins",source="file",from="last-known-good"} 1"#,
        ],
    );
}

#[test]
fn no_url_path_or_error_text_reaches_the_output() {
    let text = render(&status(), Some(&counters()));
    for secret in [
        "s3cret",
        "hunter2",
        "/etc/xdpgate",
        "https://",
        "etag-secret",
        "4242",
    ] {
        assert!(!text.contains(secret), "{secret:?} leaked into:\n{text}");
    }
}

#[test]
fn label_values_are_escaped() {
    let mut status = status();
    status.sets[0].name = "odd\"set\\with\nbreak".into();
    let text = render(&status, None);
    assert_has(
        &text,
        &[r#"xdpgate_set_entries{set="odd\"set\\with\nbreak"} 22"#],
    );
    parse_exposition(&text);
}

#[test]
fn output_parses_back_as_an_exposition() {
    let with_counters = parse_exposition(&render(&status(), Some(&counters())));
    let without = parse_exposition(&render(&status(), None));
    let cells = Reason::ALL.len() * Family::ALL.len();
    assert_eq!(with_counters, without + 2 * cells);
    // An empty status (before anything happened) is still well formed.
    parse_exposition(&render(&DaemonStatus::default(), None));
}

/// Checks the structure a scraper relies on and returns the sample count:
/// every sample line is `name{labels} value` (or `name value`) under a
/// `# TYPE` for its family, with the suffix the type implies, no series
/// twice, and `# EOF` last.
fn parse_exposition(text: &str) -> usize {
    let mut families: HashMap<String, String> = HashMap::new();
    let mut current: Option<(String, String)> = None;
    let mut series = HashSet::new();
    let mut lines = text.lines().peekable();
    let mut samples = 0;
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "text after # EOF");
            return samples;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                families.insert(name.into(), kind.into()).is_none(),
                "family {name} declared twice"
            );
            current = Some((name.into(), kind.into()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(
            name.starts_with("xdpgate_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        let rest = &line[name_end..];
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => {
                let end = label_block_end(rest).unwrap_or_else(|| panic!("bad labels in {line:?}"));
                (&rest[..end], &rest[end + 1..])
            }
            None => ("", rest),
        };
        let value = value
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (family, kind) = current.as_ref().expect("sample before any # TYPE");
        let suffix = match kind.as_str() {
            "counter" => "_total",
            "info" => "_info",
            _ => "",
        };
        assert_eq!(
            name,
            format!("{family}{suffix}"),
            "sample outside its family"
        );
        assert!(
            series.insert(format!("{name}{{{labels}}}")),
            "duplicate series {line:?}"
        );
        samples += 1;
    }
    panic!("no # EOF at the end of:\n{text}");
}

/// Where the label block that `text` starts inside ends (the index of its
/// closing `}`), checking each `key="value"` pair on the way.
fn label_block_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        let key_end = i + text[i..].find("=\"")?;
        let key = &text[i..key_end];
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        i = key_end + 2;
        loop {
            match *bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                b'\n' => return None,
                _ => i += 1,
            }
        }
        i += 1;
        match *bytes.get(i)? {
            b',' => i += 1,
            b'}' => return Some(i),
            _ => return None,
        }
    }
}
