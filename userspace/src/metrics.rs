//! The daemon's state as Prometheus metrics, in the OpenMetrics text format.
//!
//! The daemon has one `prometheus-client` registry ([`daemon_registry`]):
//! at its root a collector that reads one [`DaemonStatus`] snapshot and one
//! reading of the kernel's counters at each scrape, so every scrape shows
//! exactly what the daemon knew at that moment without mirroring the status
//! into long-lived atomics; beside it the proxy's live request instruments,
//! and the Ingress source's in the `ingress` sub-registry. [`render`] is the
//! status part alone, for callers without a running daemon. Labels carry only names the operator chose or fixed vocabularies
//! (set, interface, source kind, reason); never a URL, a path or an error text,
//! which could hold a secret. Serving the text is the admin listener's job.
use std::fmt::{self, Write as _};

use prometheus_client::{
    collector::Collector,
    encoding::{
        text, DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder,
        LabelValueEncoder, NoLabelSet,
    },
    metrics::MetricType,
    registry::{Registry, Unit},
};

use crate::{
    filter::{Counters, Sources},
    status::{DaemonStatus, SetStatus, SourceStatus},
};

pub mod text_format;
mod top_sources;

pub use top_sources::TOP_SOURCES;

/// The content type of [`render`]'s output: OpenMetrics text 1.0.0, which is
/// what `prometheus_client::encoding::text` writes (`# EOF`, `info` types,
/// `# UNIT` lines). Prometheus asks for it and parses it natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with this, followed by `_`.
const PREFIX: &str = "xdpgate";

/// Reads the daemon's status and counters at scrape time; `None` when the
/// daemon is gone (then the scrape holds only the live instruments).
type ReadStatus = dyn Fn() -> Option<(DaemonStatus, Option<Counters>)> + Send + Sync;

/// The daemon's registry: the status collector fed by `read`, the heaviest
/// dropped sources fed by `read_sources`, the proxy's instruments beside them
/// and the Ingress source's under `xdpgate_ingress_`.
pub fn daemon_registry(
    read: impl Fn() -> Option<(DaemonStatus, Option<Counters>)> + Send + Sync + 'static,
    read_sources: impl Fn() -> Option<Sources> + Send + Sync + 'static,
    proxy: Option<&crate::proxy::metrics::ProxyMetrics>,
    ingress: Option<&crate::ingress::metrics::IngressMetrics>,
) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(StatusCollector(Box::new(read))));
    registry.register_collector(Box::new(top_sources::TopSourcesCollector(Box::new(
        read_sources,
    ))));
    if let Some(proxy) = proxy {
        proxy.register(&mut registry);
    }
    if let Some(ingress) = ingress {
        ingress.register(registry.sub_registry_with_prefix("ingress"));
    }
    registry
}

/// The text exposition of `registry`, ending in `# EOF`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // The encoder and the collectors only fail when the writer does, and
    // writing into a String does not fail.
    text::encode(&mut out, registry).expect("formatting into a String cannot fail");
    out
}

struct StatusCollector(Box<ReadStatus>);

impl fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusCollector")
    }
}

impl Collector for StatusCollector {
    fn encode(&self, out: DescriptorEncoder) -> fmt::Result {
        match (self.0)() {
            Some((status, counters)) => Snapshot { status, counters }.encode(out),
            None => Ok(()),
        }
    }
}

/// Renders the status and, when they could be read, the kernel counters.
///
/// With `counters` absent the per-reason packet and byte counters are left
/// out (not reported as zeros, which would read as a reset) and
/// `xdpgate_kernel_counters_readable` is 0.
pub fn render(status: &DaemonStatus, counters: Option<&Counters>) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Snapshot {
        status: status.clone(),
        counters: counters.cloned(),
    }));
    encode(&registry)
}

/// What one scrape reports; the registry wants a collector it can own.
#[derive(Debug)]
struct Snapshot {
    status: DaemonStatus,
    counters: Option<Counters>,
}

impl Collector for Snapshot {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        self.encode_kernel(&mut out)?;
        self.encode_policy(&mut out)?;
        self.encode_config(&mut out)?;
        self.encode_sets(&mut out)?;
        self.encode_sources(&mut out)?;
        self.encode_daemon(&mut out)
    }
}

impl Snapshot {
    fn encode_kernel(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        single_gauge(
            out,
            "kernel_counters_readable",
            "1 if the daemon could read the XDP filter's counter map for this scrape, 0 if not \
             (xdpgate_packets_total and xdpgate_bytes_total are then absent)",
            None,
            u64::from(self.counters.is_some()),
        )?;
        let Some(counters) = &self.counters else {
            return Ok(());
        };
        let labels = |reason: xdpgate_common::Reason, family: xdpgate_common::Family| {
            Labels([
                ("action", reason.action()),
                ("reason", reason.label()),
                ("family", family.label()),
            ])
        };
        counter(
            out,
            "packets",
            "Packets the XDP filter judged since it was loaded, by verdict, the reason for it \
             and address family",
            counters
                .iter()
                .map(|(reason, family, cell)| (labels(reason, family), cell.packets)),
        )?;
        counter(
            out,
            "bytes",
            "Bytes (whole frames, Ethernet header included) the XDP filter judged since it was \
             loaded, by verdict, the reason for it and address family",
            counters
                .iter()
                .map(|(reason, family, cell)| (labels(reason, family), cell.bytes)),
        )
    }

    fn encode_policy(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let policy = &self.status.policy;
        single_gauge(
            out,
            "policy_generation",
            "Generation of the policy in force in the kernel; it goes up by one on every swap",
            None,
            policy.generation,
        )?;
        single_gauge(
            out,
            "policy_applied_timestamp",
            "When the policy in force was applied, in Unix seconds; 0 if none has been yet",
            Some(&Unit::Seconds),
            policy.applied_at,
        )?;
        single_counter(
            out,
            "policy_refused",
            "Policies that failed to compile or apply since the daemon started; the previous \
             policy stays in force",
            policy.refused,
        )
    }

    fn encode_config(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let reloads = &self.status.reloads;
        counter(
            out,
            "config_reloads",
            "Configuration reloads since the daemon started: ok = applied, failed = the new \
             file was invalid and the old configuration stayed in force",
            [
                (Labels([("result", "ok")]), reloads.ok),
                (Labels([("result", "failed")]), reloads.failed),
            ],
        )?;
        single_gauge(
            out,
            "config_last_reload_timestamp",
            "When the last configuration reload was attempted, in Unix seconds; 0 if never",
            Some(&Unit::Seconds),
            reloads.last_at,
        )
    }

    fn encode_sets(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let sets = &self.status.sets;
        gauge(
            out,
            "set_entries",
            "Distinct prefixes in the address set (the union of its sources)",
            None,
            sets.iter()
                .map(|set| (Labels([("set", set.name.as_str())]), set.size as u64)),
        )?;
        gauge(
            out,
            "set_loaded",
            "1 once every source of the set has produced a list (fresh, last-known-good or \
             embedded); a set that is not loaded is not enforced",
            None,
            sets.iter()
                .map(|set| (Labels([("set", set.name.as_str())]), u64::from(set.loaded))),
        )
    }

    /// Per (set, source kind). A set with several sources of one kind (two
    /// files, say) gets one series for them: counts and entries are summed,
    /// timestamps are the oldest of them so a stale source cannot hide behind
    /// a fresh sibling, and `set_source_info` has one series per distinct
    /// `from`.
    fn encode_sources(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let groups: Vec<SourceGroup<'_>> = self
            .status
            .sets
            .iter()
            .flat_map(SourceGroup::of_set)
            .collect();
        counter(
            out,
            "set_refresh",
            "Refreshes of a set's source since the daemon started: success = a list now in \
             force or unchanged, failure = no list (I/O, HTTP, parse), refused = a list that \
             failed validation (empty, shrank too much)",
            groups.iter().flat_map(|g| {
                [
                    ("success", g.successes),
                    ("failure", g.failures),
                    ("refused", g.refusals),
                ]
                .map(|(result, n)| {
                    (
                        Labels([("set", g.set), ("source", g.kind), ("result", result)]),
                        n,
                    )
                })
            }),
        )?;
        gauge(
            out,
            "set_last_refresh_timestamp",
            "When the source was last asked for its list, successfully or not, in Unix \
             seconds; 0 if never",
            Some(&Unit::Seconds),
            groups.iter().map(|g| (g.labels(), g.last_attempt_at)),
        )?;
        gauge(
            out,
            "set_last_success_timestamp",
            "When the source last refreshed successfully (including \"not modified\"), in \
             Unix seconds; 0 if never",
            Some(&Unit::Seconds),
            groups.iter().map(|g| (g.labels(), g.last_success_at)),
        )?;
        gauge(
            out,
            "set_source_entries",
            "Prefixes the source contributes to its set now (overlaps with other sources \
             included)",
            None,
            groups.iter().map(|g| (g.labels(), g.entries)),
        )?;
        info(
            out,
            "set_source",
            "Where the entries in force of a set's source came from: api, file, config, \
             last-known-good (persisted by an earlier run) or embedded (compiled into the binary)",
            groups.iter().flat_map(|g| {
                g.from
                    .iter()
                    .map(|from| Labels([("set", g.set), ("source", g.kind), ("from", from)]))
            }),
        )
    }

    fn encode_daemon(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let status = &self.status;
        gauge(
            out,
            "interface_attached",
            "1 for each interface the XDP filter is attached to, with the attach mode \
             (driver or generic)",
            None,
            status.interfaces.iter().map(|i| {
                (
                    Labels([("interface", i.name.as_str()), ("mode", i.mode.as_str())]),
                    1,
                )
            }),
        )?;
        info(
            out,
            "build",
            "The version of the running xdpgate daemon",
            [Labels([("version", status.version.as_str())])],
        )?;
        single_gauge(
            out,
            "start_time",
            "When the daemon started, in Unix seconds",
            Some(&Unit::Seconds),
            status.started_at,
        )
    }
}

/// The sources of one kind in one set, combined (see
/// [`Snapshot::encode_sources`]).
struct SourceGroup<'a> {
    set: &'a str,
    kind: &'a str,
    successes: u64,
    failures: u64,
    refusals: u64,
    entries: u64,
    last_attempt_at: u64,
    last_success_at: u64,
    /// Distinct `from` values, in the order the sources list them.
    from: Vec<&'a str>,
}

impl<'a> SourceGroup<'a> {
    /// One group per source kind, in the order the kinds first appear.
    fn of_set(set: &'a SetStatus) -> Vec<SourceGroup<'a>> {
        let mut groups: Vec<SourceGroup<'a>> = Vec::new();
        for source in &set.sources {
            match groups.iter_mut().find(|g| g.kind == source.kind) {
                Some(group) => group.add(source),
                None => groups.push(SourceGroup::new(&set.name, source)),
            }
        }
        groups
    }

    fn new(set: &'a str, source: &'a SourceStatus) -> SourceGroup<'a> {
        SourceGroup {
            set,
            kind: &source.kind,
            successes: source.successes,
            failures: source.failures,
            refusals: source.refusals,
            entries: source.entries as u64,
            last_attempt_at: source.last_attempt_at,
            last_success_at: source.last_success_at,
            from: vec![&source.from],
        }
    }

    fn add(&mut self, source: &'a SourceStatus) {
        self.successes += source.successes;
        self.failures += source.failures;
        self.refusals += source.refusals;
        self.entries += source.entries as u64;
        self.last_attempt_at = self.last_attempt_at.min(source.last_attempt_at);
        self.last_success_at = self.last_success_at.min(source.last_success_at);
        if !self.from.contains(&source.from.as_str()) {
            self.from.push(&source.from);
        }
    }

    fn labels(&self) -> Labels<'a, 2> {
        Labels([("set", self.set), ("source", self.kind)])
    }
}

/// A fixed set of label pairs whose values are escaped as the text format
/// requires (`prometheus-client` writes label values verbatim).
struct Labels<'a, const N: usize>([(&'static str, &'a str); N]);

impl<const N: usize> EncodeLabelSet for Labels<'_, N> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        for (key, value) in self.0 {
            EncodeLabel::encode(&(key, Escaped(value)), encoder.encode_label())?;
        }
        Ok(())
    }
}

/// A label value with `\`, `"` and line feeds escaped.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A counter family, one `<name>_total` sample per label set.
fn counter<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

fn single_counter(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    out.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A gauge family, one sample per label set. With a unit, the sample names
/// end in it (`_seconds`).
fn gauge<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = out.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in samples {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn single_gauge(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    out.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// An info family: one `<name>_info{labels} 1` sample per label set.
fn info<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label_sets: impl IntoIterator<Item = L>,
) -> fmt::Result {
    let mut metric = out.encode_descriptor(name, help, None, MetricType::Info)?;
    for labels in label_sets {
        metric.encode_info(&labels)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
                },
                InterfaceStatus {
                    name: "eth1".into(),
                    mode: "generic".into(),
                    how: "adopted".into(),
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
                    let end =
                        label_block_end(rest).unwrap_or_else(|| panic!("bad labels in {line:?}"));
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
}
